import logging

import pytest
from datasets import Dataset

from genstruct_datasets import InvalidConfigError, MissingColumnsError, dedup_pairs, dedup_with_count

ROWS = {
    "instruction": [
        "What is the Moon made of?",
        "Why do honey bees dance inside the hive?",
        "What is the moon made of ?",
        None,
        "WHAT IS THE MOON MADE OF?",
        "How far is the Sun from the Earth in kilometres?",
    ],
    "reward": [0.2, 0.5, 0.9, None, None, 0.1],
}


def test_keeps_the_better_rewarded_of_near_duplicates_in_order(caplog):
    with caplog.at_level(logging.INFO, logger="genstruct_datasets"):
        kept = dedup_pairs(Dataset.from_dict(ROWS))
    assert kept["instruction"] == [
        "Why do honey bees dance inside the hive?",
        "What is the moon made of ?",  # reward 0.9 beats 0.2 and the unscored copy
        None,  # rows without an instruction are left alone
        "How far is the Sun from the Earth in kilometres?",
    ]
    assert "dropped 2 of 5 instructions as near-duplicates (threshold 0.80)" in caplog.text


def test_without_rewards_the_first_stays():
    ds = Dataset.from_dict(
        {"instruction": ["Explain tidal locking.", "Explain tidal locking!", "Why is the sky blue?"]}
    )
    assert dedup_pairs(ds)["instruction"] == ["Explain tidal locking.", "Why is the sky blue?"]


def test_a_strict_threshold_keeps_similar_but_different_questions():
    ds = Dataset.from_dict(
        {"instruction": ["What is the capital of France today?", "What is the capital of Spain today?"]}
    )
    assert dedup_pairs(ds, threshold=0.95).num_rows == 2


def test_bad_arguments():
    with pytest.raises(MissingColumnsError, match="'instruction'.*it has: question"):
        dedup_pairs(Dataset.from_dict({"question": ["x"]}))
    with pytest.raises(InvalidConfigError, match=r"threshold must be in \(0, 1\], got 1.5"):
        dedup_pairs(Dataset.from_dict(ROWS), threshold=1.5)


def test_a_threshold_of_one_drops_exact_repeats_only():
    ds = Dataset.from_dict(
        {"instruction": ["Why is the sky blue?", "why is the  SKY blue?", "Why is the sky blue today?"]}
    )
    assert dedup_pairs(ds, threshold=1.0)["instruction"] == ["Why is the sky blue?", "Why is the sky blue today?"]


def test_dedup_with_count_keeps_the_same_rows_and_counts_what_it_compared():
    ds = Dataset.from_dict(ROWS)
    kept, count = dedup_with_count(ds)
    assert kept["instruction"] == dedup_pairs(ds)["instruction"]
    # The five rows with an instruction were compared; the one without passes untouched, uncounted.
    assert count.to_dict() == {
        "name": "dedup",
        "unit": "pairs",
        "seen": 5,
        "kept": 3,
        "dropped": {"near_duplicate": 2},
    }
    _, none_dropped = dedup_with_count(ds.select([1, 5]))
    assert none_dropped.dropped == {} and none_dropped.seen == none_dropped.kept == 2
