import json
import re

import evaluate
import pytest
from datasets import Dataset

from genstruct_datasets import MissingColumnsError, quality_report, validity_report
from genstruct_datasets.metrics import GENSTRUCT_QUALITY
from genstruct_datasets.quality import asks_something, distinct_n, grounding, near_duplicate_share, summary, words
from genstruct_datasets.report import format_report, headline


def test_words_drop_punctuation_and_keep_numbers():
    assert words("Dr. Smith's p-value: 0.03, not 3,000!") == ["dr", "smith's", "p", "value", "0.03", "not", "3,000"]


def test_distinct_n_counts_repeats_across_texts():
    texts = ["the moon orbits", "the moon glows"]
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)  # the, moon, orbits, glows over six words
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)  # "the moon" twice, "moon orbits", "moon glows"
    assert distinct_n(["a b", "b a"], 2) == 1.0  # no n-gram across texts
    assert distinct_n(["one"], 2) == 0.0


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
