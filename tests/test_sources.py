import json
import logging
from pathlib import Path

import pytest
from datasets import Dataset

from genstruct_datasets import GenstructConfig, InvalidSourceError, MissingColumnsError, SourceError
from genstruct_datasets.sources import passage_columns, read_source, source_fingerprint

DATA = Path(__file__).parent / "data"


def read(source, **settings) -> Dataset:
    return read_source(GenstructConfig(source=str(source), **settings))


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_structured_files(tmp_path, kind):
    ds = Dataset.from_dict({"title": ["Bees"], "text": [(DATA / "plain_essay.txt").read_text()]})
    path = tmp_path / f"documents.{kind}"
    getattr(ds, f"to_{kind}")(str(path))
    assert read(path).to_list() == ds.to_list()


def test_a_folder_of_text_and_markdown_files():
    documents = read(DATA)
    # Markdown files take their title from the first heading, text files from their name.
    assert documents["title"] == ["Building an instruction dataset", "moon wikipedia", "plain essay"]
    assert documents["text"][2] == (DATA / "plain_essay.txt").read_text()


@pytest.mark.parametrize(
    ("make", "match"),
    [
        pytest.param(lambda root: root / "missing.jsonl", "does not exist", id="missing-file"),
        pytest.param(lambda root: root, "holds no supported files", id="empty-folder"),
        # A path, not a Hub id: reported as missing rather than looked up on the Hub.
        pytest.param(lambda root: f"./{root.name}-not-here", "does not exist", id="missing-folder"),
    ],
)
def test_bad_sources(tmp_path, make, match):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=match):
        read(make(tmp_path / "empty"))


def test_a_folder_of_mixed_kinds_is_refused(tmp_path):
    (tmp_path / "a.md").write_text("# A\n\ntext")
    (tmp_path / "b.csv").write_text("title,text\nB,text\n")
    with pytest.raises(SourceError, match=r"mixes files of kinds \['csv', 'text'\]"):
        read(tmp_path)


def test_a_missing_column_is_named(tmp_path):
    path = tmp_path / "documents.jsonl"
    path.write_text(json.dumps({"title": "Tea", "body": "Tea is a beverage."}) + "\n")
    with pytest.raises(MissingColumnsError, match=r"'text'.*it has: title, body\. Name yours with title_column="):
        read(path)


GOOD = json.dumps({"title": "Tea", "text": "Tea is an aromatic beverage."}) + "\n"


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        pytest.param("empty.jsonl", b"", r"'.*empty\.jsonl' is empty; add documents to it", id="empty-jsonl"),
        pytest.param("blank.jsonl", b"\n \n", r"'.*blank\.jsonl' is empty", id="blank-jsonl"),
        pytest.param(
            "latin.jsonl",
            GOOD.encode() + '{"title": "Café", "text": "Un café."}\n'.encode("latin-1"),
            r"'.*latin\.jsonl' is not UTF-8 text \(byte 0xe9 on line 2\); convert it, e\.g\. iconv",
            id="latin-1-jsonl",
        ),
        pytest.param(
            "latin.txt",
            "Un café.".encode("latin-1"),
            r"'.*latin\.txt' is not UTF-8 text \(byte 0xe9 on line 1\)",
            id="latin-1-txt",
        ),
        pytest.param(
            "broken.jsonl",
            (GOOD + GOOD + '{"title": "Tea", "text": \n' + GOOD).encode(),
            r"'.*broken\.jsonl', line 3: not valid JSON \(Expecting value\); fix or remove that line",
            id="malformed-line",
        ),
        pytest.param(
            "list.jsonl", (GOOD + "[1, 2]\n").encode(), r"'.*list\.jsonl', line 2: not a JSON object", id="not-object"
        ),
        pytest.param(
            "pretty.json",
            b'[\n  {"title": "Tea", "text": "x"},\n  {"title": oops}\n]\n',
            r"'.*pretty\.json', line 3: not valid JSON",
            id="malformed-json-document",
        ),
        pytest.param("empty.csv", b"", r"'.*empty\.csv' is empty", id="empty-csv"),
        pytest.param("header.csv", b"title,text\n", r"'.*header\.csv' holds no documents", id="header-only-csv"),
        pytest.param(
            "bad.parquet", b"not parquet", r"'.*bad\.parquet' is not a readable parquet file", id="bad-parquet"
        ),
    ],
)
def test_a_file_that_cannot_be_used_is_named_with_its_line(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidSourceError, match=match):
        read(path)


def test_a_bad_file_in_a_folder_is_named(tmp_path):
    for name in ("a.jsonl", "b.jsonl", "c.jsonl"):
        (tmp_path / name).write_text(GOOD)
    (tmp_path / "b.jsonl").write_text(GOOD + "{oops\n")
    with pytest.raises(InvalidSourceError, match=r"'.*b\.jsonl', line 2: not valid JSON"):
        read(tmp_path)


def test_invalid_source_errors_are_source_errors_and_value_errors(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(SourceError):
        read(path)
    with pytest.raises(ValueError):
        read(path)


def test_passages_in_title_and_content_need_neither_text_column_nor_splitting(tmp_path, caplog):
    passages = tmp_path / "passages.jsonl"
    passages.write_text(json.dumps({"title": "Tea", "content": "Tea is an aromatic beverage."}) + "\n")
    with caplog.at_level(logging.INFO, logger="genstruct_datasets"):
        assert passage_columns(str(passages)) == {"text_column": "content", "split_documents": False}
    lines = [r.getMessage() for r in caplog.records if "'content' column" in r.getMessage()]
    assert len(lines) == 1 and "read as passages, without splitting" in lines[0]


@pytest.mark.parametrize(
    "row",
    [
        pytest.param({"title": "Tea", "text": "Tea.", "content": "Tea."}, id="text-and-content"),
        pytest.param({"title": "Tea", "text": "Tea."}, id="text"),
        pytest.param({"title": "Tea", "body": "Tea."}, id="neither"),
    ],
)
def test_other_sources_keep_the_default_columns(tmp_path, row):
    path = tmp_path / "documents.jsonl"
    path.write_text(json.dumps(row) + "\n")
    assert passage_columns(str(path)) == {}


def test_text_files_and_unknown_hub_datasets_keep_the_default_columns():
    assert passage_columns(str(DATA)) == {}
    assert passage_columns("someone/not-on-this-machine") == {}  # offline: its columns are not known


def test_a_trial_run_on_a_hub_source_streams_only_what_it_needs(monkeypatch):
    from datasets import IterableDataset

    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))

        def documents():
            for i in range(1000):
                yield {"title": f"Doc {i}", "text": "Some text."}

        assert kwargs.get("streaming"), "a limited Hub source must be streamed"
        return IterableDataset.from_generator(documents)

    monkeypatch.setattr("genstruct_datasets.sources.datasets.load_dataset", fake_load_dataset)
    documents = read("someone/corpus", source_name="en", source_revision="v1", limit=2)
    assert documents["title"] == ["Doc 0", "Doc 1"]
    assert calls == [("someone/corpus", "en", {"split": "train", "revision": "v1", "token": None, "streaming": True})]


def test_the_fingerprint_follows_the_files(tmp_path):
    path = tmp_path / "documents.jsonl"
    path.write_text(GOOD)
    first = source_fingerprint(str(path))
    assert source_fingerprint(str(path)) == first and source_fingerprint("someone/corpus") is None
    path.write_text(GOOD + GOOD)
    assert source_fingerprint(str(path)) != first


ESSAY = (DATA / "plain_essay.txt").read_text()
JSON_TYPES = [
    pytest.param(1000, "1000", id="int"),
    pytest.param(2.5, "2.5", id="float"),
    pytest.param(1000.0, "1000", id="integral-float"),
    pytest.param(True, "a boolean", id="bool"),
    pytest.param(None, None, id="null"),
    pytest.param(["Bees", "Wasps"], "a list", id="list"),
    pytest.param({"name": "Bees"}, "an object", id="object"),
    pytest.param("Bees", "Bees", id="string"),
]
REFUSED = ("a boolean", "a list", "an object")


@pytest.mark.parametrize(("value", "read_as"), JSON_TYPES)
@pytest.mark.parametrize(
    ("column", "settings"),
    [
        pytest.param("title", {"split_documents": True}, id="title"),
        pytest.param("text", {"split_documents": True}, id="text"),
        pytest.param("title", {"text_column": "content", "split_documents": False}, id="passage-title"),
        pytest.param("content", {"text_column": "content", "split_documents": False}, id="content"),
    ],
)
def test_each_json_type_in_each_text_column(tmp_path, tiny_generator, column, settings, value, read_as):
    from genstruct_datasets.sources import read_passages

    text_column = settings.get("text_column", "text")
    good = {"title": "Essay", text_column: ESSAY}
    source = tmp_path / "c.jsonl"
    source.write_text(json.dumps(good) + "\n" + json.dumps(good | {column: value}) + "\n")
    config = GenstructConfig(source=str(source), model=tiny_generator, reward_model=None, best_of_n=False, **settings)
    if read_as in REFUSED:
        shown = json.dumps(value).replace("[", r"\[").replace("{", r"\{")
        match = rf"'.*c\.jsonl', line 2: '{column}' holds {read_as} \({shown}\), not text; .*\(title_column=, "
        with pytest.raises(InvalidSourceError, match=match):
            read_passages(config, cache_dir=tmp_path / "cache")
        return
    passages = read_passages(config, cache_dir=tmp_path / "cache").rows
    rows = passages.filter(lambda row: row["document_id"] != passages[0]["document_id"])
    if column == "title":  # the second document's passages, under the title read as text
        assert rows.num_rows and set(rows["title"]) == {read_as}
    elif column == "content":  # a passage as it is, shorter than min_tokens (or None): left out as too short
        assert rows.num_rows == 0 and passages["content"] == [ESSAY]
    else:  # a short or missing text gives no passage; the other document's passages are all there
        assert rows.num_rows == 0 and set(passages["title"]) == {"Essay"}


def test_numbers_in_a_csv_and_its_booleans_are_text(tmp_path):
    source = tmp_path / "c.csv"
    source.write_text(f"title,text\n1000,{json.dumps(ESSAY)}\nTrue,{json.dumps(ESSAY)}\n")
    assert read(source)["title"] == ["1000", "True"]


def test_a_hub_like_source_names_the_row_index(tmp_path):
    Dataset.from_dict({"title": [["a"], ["b"]], "text": ["x", "y"]}).to_parquet(tmp_path / "c.parquet")
    with pytest.raises(InvalidSourceError, match=r"'.*c\.parquet', row index 0: 'title' holds a list"):
        read(tmp_path / "c.parquet")
