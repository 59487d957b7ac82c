import json
import pickle

import pytest
from datasets import Dataset

from genstruct_datasets.errors import InvalidConfigError, InvalidSourceError, MissingColumnsError, SourceError
from genstruct_datasets.filters.decontaminate import BenchmarkSpec, Decontaminate, parse_benchmark, words

QUESTION = (
    "Which of the following best explains why the early Roman republic expanded its network of roads "
    "across the Italian peninsula during the fourth century?"
)
# 13 consecutive words of QUESTION, in other case and punctuation.
PLANTED = "The EARLY Roman-Republic expanded its network, of ROADS across the Italian... peninsula"
# 12 consecutive words only: one short of an n-gram.
NEAR_MISS = "why the early Roman republic expanded its network of roads across the"
ANSWER = "Trade and troops moved faster between the colonies the Senate founded along the coast of Latium"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture
def bench(tmp_path):
    return write_jsonl(
        tmp_path / "bench.jsonl",
        [
            {"question": QUESTION, "answer": ANSWER, "id": 1},
            {"question": "What is two plus two?", "answer": "Four.", "id": 2},
        ],
    )


def pairs(*responses, instructions=None):
    count = len(responses)
    return Dataset.from_dict(
        {
            "passage_id": [f"p{i}" for i in range(count)],
            "sample_index": [0] * count,
            "instruction": instructions or ["Explain the passage."] * count,
            "response": list(responses),
            "reward": [0.5] * count,
        }
    )


def test_a_planted_overlap_is_found_and_a_near_miss_kept(bench):
    found = Decontaminate([bench]).apply(
        pairs(
            f"As the textbook puts it, {PLANTED}, which helped trade.",
            f"Some ask {NEAR_MISS} and the answer is unclear.",
            "A clean answer about something else entirely, long enough to make many n-grams of thirteen words.",
        )
    )
    assert found.kept["passage_id"] == ["p1", "p2"]
    drop = found.drops[("p0", 0)]
    assert drop.reason == f"contaminated:{bench}"
    assert drop.detail == "the early roman republic expanded its network of roads across the italian peninsula"
    assert len(drop.detail.split()) == 13
    assert found.count.seen == 3 and found.count.kept == 2 and found.count.dropped == {f"contaminated:{bench}": 1}
    assert found.figures == {"ngram": 13, "benchmarks": {bench: {"rows": 2, "ngrams": 12 + 4, "removed": 1}}}


def test_the_instruction_is_looked_up_too_and_columns_can_be_chosen(bench):
    rows = pairs("A clean response.", instructions=[f"Please explain: {PLANTED}?"])
    assert Decontaminate([bench]).apply(rows).kept.num_rows == 0
    assert Decontaminate([bench], columns=("response",)).apply(rows).kept.num_rows == 1


@pytest.mark.parametrize(
    ("spec", "dropped"),
    [
        pytest.param("{}#question", ["p0"], id="question-only"),
        pytest.param("{}#answer", ["p1"], id="answer-only"),
        pytest.param("{}#question, answer", ["p0", "p1"], id="both-named"),
        pytest.param("{}", ["p0", "p1"], id="every-string-column"),
    ],
)
def test_columns_of_the_benchmark(bench, spec, dropped):
    found = Decontaminate([spec.format(bench)]).apply(pairs(PLANTED, ANSWER))
    assert sorted(key for key, _ in found.drops) == dropped


def test_several_benchmarks_count_each_and_the_first_given_wins(bench, tmp_path):
    other = write_jsonl(tmp_path / "other.jsonl", [{"prompt": ANSWER}, {"prompt": QUESTION}])
    found = Decontaminate([bench + "#question", other], ngram=8).apply(
        pairs(PLANTED, ANSWER, "Nothing in common with any benchmark here at all, just words.", NEAR_MISS)
    )
    # p0 and p3 share an 8-gram with both benchmarks: the first given names them. p1 is only in `other`.
    assert {key: drop.reason for key, drop in found.drops.items()} == {
        ("p0", 0): f"contaminated:{bench}",
        ("p1", 0): f"contaminated:{other}",
        ("p3", 0): f"contaminated:{bench}",
    }
    benchmarks = found.figures["benchmarks"]
    assert list(benchmarks) == [bench, other]
    assert benchmarks[bench]["removed"] == 2 and benchmarks[other]["removed"] == 1
    assert benchmarks[other]["rows"] == 2
    assert found.count.seen == found.count.kept + sum(found.count.dropped.values()) == 4
    assert found.kept.num_rows + len(found.drops) == 4
    assert sum(figure["removed"] for figure in benchmarks.values()) == len(found.drops)


def test_texts_shorter_than_n_words_give_no_ngram(tmp_path):
    short = write_jsonl(tmp_path / "short.jsonl", [{"answer": "Paris"}, {"answer": "four words long here"}])
    found = Decontaminate([short], ngram=5).apply(pairs("Paris", "four words long here"))
    assert found.kept.num_rows == 2 and found.figures["benchmarks"][short]["ngrams"] == 0
    assert Decontaminate([short], ngram=1).apply(pairs("Paris is far", "Lyon")).kept["passage_id"] == ["p1"]


def test_words_are_unicode_letters_and_digits():
    assert words("Ölçüm: 東京 — ＡＢＣ’s 3.14 under_score") == [
        "ölçüm",
        "東京",
        "abc",
        "s",
        "3",
        "14",
        "under",
        "score",
    ]
    assert words("cafe\u0301") == words("café") == ["café"]


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        pytest.param("cais/mmlu:all:test", BenchmarkSpec("cais/mmlu", "all", "test"), id="hub-config-split"),
        pytest.param(
            "openai/openai_humaneval::test#prompt",
            BenchmarkSpec("openai/openai_humaneval", None, "test", ("prompt",)),
            id="hub-default-config",
        ),  # fmt: skip
        pytest.param("gsm8k", BenchmarkSpec("gsm8k"), id="hub-bare"),
        pytest.param("evals/bench.jsonl#q,a", BenchmarkSpec("evals/bench.jsonl", columns=("q", "a")), id="local"),
        pytest.param("./evals/", BenchmarkSpec("./evals/"), id="local-folder"),
    ],
)
def test_parse_benchmark(spec, parsed):
    assert parse_benchmark(spec) == parsed


def test_labels_name_the_config_and_split():
    assert parse_benchmark("cais/mmlu:all:test#question").label == "cais/mmlu:all:test"
    assert parse_benchmark("openai/openai_humaneval::test").label == "openai/openai_humaneval::test"
    assert parse_benchmark("evals/bench.jsonl#q").label == "evals/bench.jsonl"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        pytest.param("", "must name a benchmark", id="empty"),
        pytest.param("cais/mmlu#question,", "empty column after '#'", id="empty-column"),
        pytest.param("a/b:c:d:e", "at most a config and a split", id="too-many-colons"),
        pytest.param(":all:test", "at most a config and a split", id="no-name"),
        pytest.param("evals/bench.jsonl:all:test", "local files 'evals/bench.jsonl' take no config", id="local-split"),
    ],
)
def test_malformed_specs(spec, match):
    with pytest.raises(InvalidConfigError, match=match):
        parse_benchmark(spec)


def test_a_missing_benchmark_file_is_one_clear_error(tmp_path):
    missing = str(tmp_path / "nowhere.jsonl")
    with pytest.raises(SourceError, match=rf"Benchmark '{missing}' does not exist; pass an existing file"):
        Decontaminate([missing]).check()


def test_an_unknown_hub_benchmark_offline_says_how_to_pass_a_local_copy():
    with pytest.raises(SourceError) as caught:
        Decontaminate(["nobody-here/no-such-benchmark:main:test"]).check()
    message = str(caught.value)
    assert "\n" not in message
    assert "'nobody-here/no-such-benchmark:main:test' is not a local file or folder" in message
    assert "cannot be had now (ConnectionError: offline or unreachable)" in message
    assert "datasets.load_dataset('nobody-here/no-such-benchmark', 'main', split='test')" in message
    assert message.endswith("--decontaminate no-such-benchmark.jsonl")


def test_a_column_the_benchmark_lacks_names_what_it_has(bench):
    with pytest.raises(MissingColumnsError, match=r"'questoin'.*it has: question, answer, id"):
        Decontaminate([bench + "#questoin"]).check()
    with pytest.raises(InvalidConfigError, match=r"column\(s\) 'id' hold no text; its text columns are: question, an"):
        Decontaminate([bench + "#id"]).check()


def test_an_unreadable_benchmark_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok"}\nnot json\n')
    with pytest.raises(InvalidSourceError, match="line 2: not valid JSON"):
        Decontaminate([str(bad)]).check()


def test_a_benchmark_named_twice_is_refused(bench):
    with pytest.raises(InvalidConfigError, match="given more than once"):
        Decontaminate([bench + "#question", bench + "#answer"]).check()


@pytest.mark.parametrize("ngram", [0, -1, 2.5, True, None])
def test_ngram_bounds_refused(bench, ngram):
    with pytest.raises(
        InvalidConfigError, match=rf"ngram must be a positive integer \(words per n-gram\), got {ngram}"
    ):
        Decontaminate([bench], ngram=ngram)


def test_pairs_without_the_columns(bench):
    rows = Dataset.from_dict({"passage_id": ["a"], "sample_index": [0], "text": ["x"]})
    with pytest.raises(MissingColumnsError, match="'instruction', 'response'.*has: passage_id, sample_index"):
        Decontaminate([bench]).apply(rows)


def test_the_index_is_built_once_and_never_pickled(bench, tmp_path):
    decontaminate = Decontaminate([bench])
    decontaminate.check()
    index = decontaminate._indexes
    decontaminate.apply(pairs(PLANTED))
    assert decontaminate._indexes is index
    copy = pickle.loads(pickle.dumps(decontaminate))
    assert copy._indexes is None and copy == decontaminate
    assert copy.apply(pairs(PLANTED)).kept.num_rows == 0


def test_a_text_file_benchmark_and_none_values(tmp_path):
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "one.txt").write_text(QUESTION)
    found = Decontaminate([str(tmp_path / "evals")]).apply(pairs(PLANTED, None))
    assert found.kept["passage_id"] == ["p1"]
