import logging
from pathlib import Path

import pytest
from datasets import Dataset

from genstruct_datasets import InvalidConfigError, MissingColumnsError, PassageSplitter, passage_id

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory, mistral_tokenizer) -> str:
    folder = tmp_path_factory.mktemp("mistral-tokenizer")
    mistral_tokenizer.save_pretrained(folder)
    return str(folder)


def token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def split(folder, name, **settings) -> list[str]:
    text = (DATA / name).read_text()
    out = PassageSplitter(folder, **settings)({"title": [name], "text": [text]})
    assert out["passage_index"] == list(range(len(out["content"])))
    return out["content"]


def test_wikipedia_article_with_headings_and_lists(tokenizer_folder, mistral_tokenizer):
    passages = split(tokenizer_folder, "moon_wikipedia.txt", min_tokens=32, max_tokens=160)
    assert passages[0].startswith("The Moon is Earth's only natural satellite.")
    assert passages[0].endswith("the main driver of Earth's tides.")
    # Headings lead into the paragraph that follows them.
    assert passages[1].startswith("Names and etymology\nThe usual English proper name")
    assert passages[2].startswith("Natural history\nFormation\nIsotope dating of lunar samples")
    # The long Formation paragraph is cut at a sentence boundary into two pieces of similar size.
    assert passages[2].endswith("the energy of the passing Moon.")
    assert passages[3].startswith("The prevailing giant-impact hypothesis")
    # A list stays with its lead-in, the caption joins it, and the trailing "See also" heading is dropped.
    assert passages[-1].startswith("Surface features include:\n- maria, the dark basaltic plains;")
    assert passages[-1].endswith(
        "- craters, from impacts over billions of years.\nFigure 1: The near side of the Moon."
    )
    assert not any("See also" in p or "Moon landing" in p for p in passages)
    sizes = [token_count(mistral_tokenizer, p) for p in passages]
    assert all(32 <= n <= 160 for n in sizes), sizes


def test_markdown_file(tokenizer_folder):
    passages = split(tokenizer_folder, "genstruct_guide.md", min_tokens=24, max_tokens=200)
    assert len(passages) == 4
    assert passages[0].startswith("Building an instruction dataset\nThis guide explains")
    assert passages[2] == (
        "Headings and lists\nHeadings carry little content by themselves:\n"
        "- a heading is joined to the paragraph after it;\n- a caption is joined to the paragraph before it."
    )
    assert not any("#" in p for p in passages)


def test_plain_text_file(tokenizer_folder):
    passages = split(tokenizer_folder, "plain_essay.txt", min_tokens=32, max_tokens=384)
    assert len(passages) == 2
    assert passages[0].startswith("On the keeping of bees\nBeekeeping is among the oldest")
    assert passages[1].endswith("an older one flies out to forage.\nThank you for reading.")


def test_a_sentence_longer_than_max_tokens_is_cut_between_words(tokenizer_folder, mistral_tokenizer):
    text = "word " * 300 + "end."
    passages = PassageSplitter(tokenizer_folder, min_tokens=8, max_tokens=64).split(text, mistral_tokenizer)
    assert all(token_count(mistral_tokenizer, p) <= 64 for p in passages)
    assert " ".join(passages).split() == text.split()


def test_as_a_batched_map(tokenizer_folder, caplog):
    docs = Dataset.from_dict(
        {
            "name": ["Moon", "Bees", "Empty", "Short"],
            "body": [
                (DATA / "moon_wikipedia.txt").read_text(),
                (DATA / "plain_essay.txt").read_text(),
                "",
                "Too short.",
            ],
            "url": ["https://en.wikipedia.org/wiki/Moon", "file://bees", None, None],
        }
    )
    splitter = PassageSplitter(
        tokenizer_folder, min_tokens=32, max_tokens=160, title_column="name", text_column="body"
    )
    with caplog.at_level(logging.WARNING, logger="genstruct_datasets"):
        passages = docs.map(splitter, batched=True, batch_size=2)
    assert passages.column_names == ["name", "body", "url", "title", "content", "document_id", "passage_index"]
    assert passages["body"] == [None] * 8  # emptied, not repeated on every passage
    assert passages["title"] == ["Moon"] * 6 + ["Bees"] * 2
    assert passages["url"][6] == "file://bees"
    assert set(passages["document_id"][:6]) == {passage_id("Moon", docs[0]["body"])}
    assert passages["passage_index"] == [0, 1, 2, 3, 4, 5, 0, 1]
    assert "1 document(s) have an empty or missing 'body'" in caplog.text
    assert "1 document(s) are shorter than min_tokens=32 in all and gave no passage" in caplog.text


def test_missing_column_is_named(tokenizer_folder):
    with pytest.raises(MissingColumnsError, match=r"'text'.*it has: title, content"):
        PassageSplitter(tokenizer_folder)({"title": ["x"], "content": ["y"]})


def test_bad_sizes_are_refused():
    with pytest.raises(InvalidConfigError, match="min_tokens=500 is larger than max_tokens=384"):
        PassageSplitter(min_tokens=500)


def test_columns_the_stage_writes_are_replaced_not_doubled(tokenizer_folder):
    batch = {
        "title": ["Bees"],
        "text": [(DATA / "plain_essay.txt").read_text()],
        "document_id": ["old-id"],
        "passage_index": [7],
    }
    out = PassageSplitter(tokenizer_folder, min_tokens=32, max_tokens=384)(batch)
    assert out["passage_index"] == [0, 1] and len(out["document_id"]) == 2
    assert "old-id" not in out["document_id"]


def test_a_text_column_named_content(tokenizer_folder):
    text = (DATA / "plain_essay.txt").read_text()
    out = PassageSplitter(tokenizer_folder, text_column="content")({"title": ["Bees"], "content": [text]})
    assert len(out["content"]) == len(out["title"]) == 2 and None not in out["content"]


class CountingTokenizer:
    """A tokenizer that counts the characters it is given: the splitter's work, without a clock."""

    def __init__(self, tokenizer):
        self.tokenizer, self.characters = tokenizer, 0
        self.is_fast = tokenizer.is_fast

    def __call__(self, text, **kwargs):
        self.characters += sum(map(len, text)) if isinstance(text, list) else len(text)
        return self.tokenizer(text, **kwargs)


CJK_SENTENCE = "月球是地球唯一的天然卫星，也是太阳系中第五大的卫星。"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(CJK_SENTENCE * 200, id="cjk"),
        pytest.param("「月球是地球唯一的天然卫星。」" * 200, id="cjk-quotes"),
        pytest.param(CJK_SENTENCE.rstrip("。") * 200, id="cjk-without-sentence-ends"),
        pytest.param("abcdefghij" * 600, id="one-long-word"),
        pytest.param("word " * 2000, id="no-sentence-end"),
    ],
)
def test_any_text_is_cut_within_the_budget_and_nothing_is_lost(tokenizer_folder, mistral_tokenizer, text):
    passages = PassageSplitter(tokenizer_folder, min_tokens=8, max_tokens=64).split(text, mistral_tokenizer)
    assert len(passages) > 10
    assert max(token_count(mistral_tokenizer, p) for p in passages) <= 64
    assert "".join("".join(passages).split()) == "".join(text.split())


def test_cjk_is_cut_between_sentences_into_pieces_of_about_equal_size(tokenizer_folder, mistral_tokenizer):
    passages = PassageSplitter(tokenizer_folder, min_tokens=8, max_tokens=64).split(
        CJK_SENTENCE * 20, mistral_tokenizer
    )
    assert all(p.endswith("。") for p in passages)
    sizes = [token_count(mistral_tokenizer, p) for p in passages]
    assert max(sizes) <= 64 and min(sizes) >= 64 / 2, sizes


def test_a_long_paragraph_is_split_in_linear_time(tokenizer_folder, mistral_tokenizer):
    # A single paragraph without a sentence end: the splitter once tokenized a growing piece per word (4 minutes
    # for 5 MB). Now each character is tokenized about twice: once in the paragraph, once in its piece.
    text = "word " * 20000
    tokenizer = CountingTokenizer(mistral_tokenizer)
    passages = PassageSplitter(tokenizer_folder, min_tokens=8, max_tokens=64).split(text, tokenizer)
    assert max(token_count(mistral_tokenizer, p) for p in passages) <= 64
    assert tokenizer.characters < 3 * len(text)


def test_passages_read_as_is_shorter_than_min_tokens_are_left_out(tokenizer_folder, mistral_tokenizer, caplog):
    long = "The Moon is Earth's only natural satellite; it always shows one face to Earth because of tidal locking."
    rows = {"title": ["Short", "Empty", "Missing", "Moon"], "content": ["Too short.", " ", None, long]}
    stage = PassageSplitter(tokenizer_folder, min_tokens=8, max_tokens=12, text_column="content")
    assert token_count(mistral_tokenizer, long) > 12  # longer than max_tokens: kept whole, not cut
    with caplog.at_level(logging.WARNING):
        out = Dataset.from_dict(rows).map(stage.read_as_is, batched=True, remove_columns=["title", "content"])
    assert out.to_dict() == {
        "title": ["Moon"],
        "content": [long],
        "document_id": [passage_id("Moon", long)],
        "passage_index": [0],
    }
    assert "3 passage(s) read as they are have an empty 'content' or one shorter than min_tokens=8" in caplog.text
