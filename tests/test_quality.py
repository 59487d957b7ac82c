import json
import re
from collections import Counter

import evaluate
import pytest
from datasets import Dataset

from genstruct_datasets import InvalidConfigError, MissingColumnsError, quality_report
from genstruct_datasets.metrics import GENSTRUCT_QUALITY
from genstruct_datasets.quality import (
    asks_something,
    compute_quality,
    distinct_n,
    grounding,
    near_duplicate_share,
    sample_rows,
    summary,
    validity_report,
    words,
)
from genstruct_datasets.report import dataset_stats, format_headline, format_report, headline, plot_quality


def test_words_drop_punctuation_and_keep_numbers():
    assert words("Dr. Smith's p-value: 0.03, not 3,000!") == ["dr", "smith's", "p", "value", "0.03", "not", "3,000"]


def test_distinct_n_counts_repeats_across_texts():
    texts = ["the moon orbits", "the moon glows"]
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)  # the, moon, orbits, glows over six words
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)  # "the moon" twice, "moon orbits", "moon glows"
    assert distinct_n(["a b", "b a"], 2) == 1.0  # no n-gram across texts
    assert distinct_n(["one"], 2) == 0.0


def test_distinct_n_counts_repeats_inside_one_text():
    assert distinct_n(["the moon the moon the moon"], 1) == pytest.approx(2 / 6)
    assert distinct_n(["the moon the moon the moon"], 2) == pytest.approx(2 / 5)  # "the moon" thrice, "moon the" twice
    assert distinct_n(["go go go", "stop"], 1) == pytest.approx(2 / 4)


@pytest.mark.parametrize(
    ("response", "passage", "expected"),
    [
        pytest.param("The Moon orbits Earth.", "Earth's Moon orbits it.", 1.0, id="all-supported"),
        pytest.param("Jupiter has rings.", "The Moon orbits Earth.", 0.0, id="none-supported"),
        # content words: moon, orbit, jupiter, ring; the passage has moon and orbit
        pytest.param("The moons orbit Jupiter's rings.", "The Moon orbits.", 0.5, id="half"),
        pytest.param("It is what it is.", "Anything.", None, id="no-content-words"),
        pytest.param("Founded in 1453 and 476.", "It fell in 1453.", 1 / 3, id="numbers"),
    ],
)
def test_grounding(response, passage, expected):
    assert grounding(response, passage) == (expected if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("instruction", "expected"),
    [
        pytest.param("Why does the Moon show phases?", True, id="question-mark"),
        pytest.param(
            "Dr. Smith obtains p = 0.03 at alpha 0.05. Explain what she should conclude.", True, id="request"
        ),
        pytest.param("Compare the eastern and western halves of the empire", True, id="imperative"),
        pytest.param("The Moon orbits Earth.", False, id="statement"),
        pytest.param("Tidal locking: the same face always points at Earth", False, id="fragment"),
    ],
)
def test_asks_something(instruction, expected):
    assert asks_something(instruction) is expected


def test_near_duplicate_share():
    texts = [
        "What is the Moon made of?",
        "what is the moon  made of?",  # case and spacing only: a near-duplicate
        "Why do honey bees dance inside the hive?",
        "How far is the Sun from the Earth in kilometres?",
    ]
    assert near_duplicate_share(texts) == 0.5
    assert near_duplicate_share(texts[2:]) == 0.0
    assert near_duplicate_share(["one text"]) == 0.0


def test_every_copy_of_a_repeated_text_is_a_duplicate():
    texts = ["What is the Moon made of?"] * 3 + ["WHAT is the moon made  of?", "Why do honey bees dance?"]
    assert near_duplicate_share(texts) == 0.8
    assert near_duplicate_share(texts[:1] + texts[-1:]) == 0.0


def test_summary_skips_missing_values():
    assert summary([1.0, None, 3.0, float("nan"), 2.0, 4.0]) == {
        "mean": 2.5,
        "std": pytest.approx(1.118, abs=1e-3),
        "min": 1.0,
        "25%": 1.75,
        "50%": 2.5,
        "75%": 3.25,
        "90%": pytest.approx(3.7),
        "max": 4.0,
    }
    assert summary([None]) == {}


@pytest.fixture
def candidates() -> Dataset:
    return Dataset.from_dict(
        {
            "content": ["The Moon orbits Earth and shows phases."] * 2 + ["Bees dance to share food sources."] * 2,
            "instruction": ["Why does the Moon show phases?", None, "How do bees share food sources?", "Bees dance."],
            "response": ["The Moon orbits Earth.", None, "Bees dance.", "Indeed."],
            "finish_reason": ["stop", "length", "stop", "stop"],
            "parse_error": [None, "no_assistant_marker", None, "empty_response"],
            "reward": [2.0, None, 1.0, None],
        }
    )


def test_quality_report_on_known_rows(candidates):
    report = quality_report(candidates)
    assert report["validity"] == {
        "candidates": 4,
        "pairs": 2,
        "pair_share": 0.5,
        "parse_error": {"no_assistant_marker": 1, "empty_response": 1},
        "finish_reason": {"stop": 3, "length": 1},
    }
    # Instructions: "why does the moon show phases" and "how do bees share food sources": 12 words, all distinct.
    assert report["diversity"] == {"distinct_1": 1.0, "distinct_2": 1.0, "near_duplicate_share": 0.0}
    assert report["question_share"] == 1.0
    assert report["grounding"]["mean"] == 1.0
    assert report["lengths"]["instruction_words"]["mean"] == 6.0
    assert report["lengths"]["response_words"]["max"] == 4
    assert report["reward"]["mean"] == 1.5
    assert validity_report(candidates) == report["validity"]
    best = quality_report(candidates.select([0, 2]), candidates=candidates)
    assert best["validity"] == report["validity"] and best["diversity"] == report["diversity"]
    json.dumps(report)  # plain types, for --json


def test_headline_and_text_report(candidates):
    report = quality_report(candidates)
    assert dict(headline(report))["pairs among candidates"] == "50.0%"
    assert dict(headline(report))["reward (mean / median)"] == "1.500 / 1.500"
    text = format_report(report)
    assert text.startswith("quality\n  pairs among candidates")
    assert re.search(r"\n  parse_error: empty_response +1\n", text)


def test_report_without_optional_columns():
    report = quality_report(Dataset.from_dict({"instruction": ["Why?"], "response": ["Because."]}))
    assert "grounding" not in report and "reward" not in report
    assert report["validity"]["pair_share"] == 1.0
    with pytest.raises(MissingColumnsError, match=r"'response'.*it has: instruction"):
        quality_report(Dataset.from_dict({"instruction": ["Why?"]}))
    with pytest.raises(MissingColumnsError, match=r"validity_report needs the column\(s\) 'instruction'"):
        validity_report(Dataset.from_dict({"response": ["Because."]}))


def test_the_evaluate_measurement_loads_offline_and_agrees(candidates):
    measurement = evaluate.load(GENSTRUCT_QUALITY)
    columns = candidates.to_dict()
    assert measurement.compute(**columns) == quality_report(candidates)


def _letters(number: int) -> str:
    return "".join(chr(ord("a") + int(digit)) for digit in str(number))


def many_rows(count: int) -> dict[str, list]:
    """`count` candidates, every fifth without a pair; row i's instruction has i + 1 words, so lengths name rows."""
    return {
        "instruction": [None if i % 5 == 4 else " ".join(["why"] * i + [_letters(i)]) + "?" for i in range(count)],
        "response": [None if i % 5 == 4 else f"Because {i}." for i in range(count)],
        "content": [f"Passage {i} says {i}." for i in range(count)],
        "parse_error": ["no_assistant_marker" if i % 5 == 4 else None for i in range(count)],
        "finish_reason": ["length" if i % 5 == 4 else "stop" for i in range(count)],
        "reward": [None if i % 5 == 4 else float(i) for i in range(count)],
    }


def test_sample_rows():
    assert sample_rows(5, 10) == range(5)
    assert sample_rows(5, None) == range(5)
    rows = sample_rows(1000, 30, seed=3)
    assert len(rows) == len(set(rows)) == 30 and rows == sorted(rows) and rows[0] >= 0 and rows[-1] < 1000
    assert rows == sample_rows(1000, 30, seed=3) and rows != sample_rows(1000, 30, seed=4)
    with pytest.raises(InvalidConfigError, match=r"sample_size must be a positive number of rows or None, got 0"):
        sample_rows(10, 0)


def test_a_dataset_larger_than_the_sample_is_measured_on_exactly_that_many_rows():
    ds = Dataset.from_dict(many_rows(200))
    report = quality_report(ds, sample_size=40, seed=7)
    rows = sample_rows(200, 40, seed=7)
    pairs = [i for i in rows if i % 5 != 4]
    assert report["sample"] == {"rows": 40, "of": 200, "pairs": len(pairs), "seed": 7}
    # Row i's instruction has i + 1 words and its reward is i: the figures come from the sampled pairs alone.
    assert report["lengths"]["instruction_words"] == summary([i + 1 for i in pairs])
    assert report["reward"] == summary([float(i) for i in pairs])
    assert report["diversity"]["distinct_1"] == distinct_n([ds[i]["instruction"] for i in pairs], 1)
    # Counts are never sampled.
    assert report["validity"]["candidates"] == 200 and report["validity"]["pairs"] == 160
    assert report["validity"]["finish_reason"] == {"stop": 160, "length": 40}
    assert report["question_share"] == 1.0
    assert quality_report(ds, sample_size=40, seed=7) == report  # the same rows in every call
    assert quality_report(ds, sample_size=40, seed=8)["lengths"] != report["lengths"]
    assert "sample" not in quality_report(ds, sample_size=200) and "sample" not in quality_report(ds, sample_size=None)


def test_streamed_counts_equal_whole_column_counts():
    columns = many_rows(23)
    columns["parse_error"][3] = "empty_response"  # a pair no more
    columns["instruction"][6] = "The Moon orbits Earth."  # a pair that asks nothing
    ds = Dataset.from_dict(columns)
    pairs = [
        i for i in range(23) if columns["instruction"][i] and columns["response"][i] and not columns["parse_error"][i]
    ]
    whole = {
        "candidates": 23,
        "pairs": len(pairs),
        "pair_share": len(pairs) / 23,
        "parse_error": dict(Counter(e for e in columns["parse_error"] if e).most_common()),
        "finish_reason": dict(Counter(columns["finish_reason"]).most_common()),
    }
    for batch_size in (1, 4, 1000):
        assert validity_report(ds, batch_size=batch_size) == whole
        report = quality_report(ds, sample_size=5, batch_size=batch_size)
        assert report["validity"] == whole
        assert report["question_share"] == (len(pairs) - 1) / len(pairs)


def test_columns_and_datasets_are_sampled_alike():
    columns = many_rows(60)
    for sample_size in (None, 25):
        assert compute_quality(**columns, sample_size=sample_size) == quality_report(
            Dataset.from_dict(columns), sample_size=sample_size
        )


def test_a_sampled_report_says_so():
    ds = Dataset.from_dict(many_rows(30))
    assert "measured on a sample of" not in format_headline(quality_report(ds))
    row = dict(headline(quality_report(ds, sample_size=10)))["measured on a sample of"]
    assert row == "10 of 30 rows (diversity, grounding, lengths, reward)"


def test_dataset_stats_counts_every_row_and_summarises_a_sample_of_rewards():
    columns = many_rows(30)
    columns["passage_id"] = [None if i % 7 == 0 else f"p{i % 11}" for i in range(30)]  # repeats across batches
    ds = Dataset.from_dict(columns)
    whole = dataset_stats(ds)
    assert whole["counts"] == {"passages": len(set(columns["passage_id"])), "candidates": 30, "parsed": 24, "kept": 30}
    assert whole["outcomes"] == {
        "finish_reason: stop": 24,
        "finish_reason: length": 6,
        "parse_error: no_assistant_marker": 6,
    }
    assert whole["rewards"] == summary(columns["reward"]) and "sample" not in whole
    sampled = dataset_stats(ds, sample_size=8, batch_size=4)
    assert sampled["counts"] == whole["counts"] and sampled["outcomes"] == whole["outcomes"]
    assert sampled["rewards"] == summary([columns["reward"][i] for i in sample_rows(30, 8)])
    assert sampled["sample"] == {"rows": 8, "of": 30, "seed": 0}
    # The card's rewards and the quality report's are measured on the same rows.
    assert sampled["rewards"] == quality_report(ds, sample_size=8)["reward"]


def test_plot_quality_draws_a_sample(tmp_path):
    ds = Dataset.from_dict(many_rows(30))
    assert plot_quality(ds, tmp_path / "q.png", sample_size=10).read_bytes().startswith(b"\x89PNG")
    with pytest.raises(InvalidConfigError, match="sample_size"):
        plot_quality(ds, tmp_path / "q.png", sample_size=-1)
