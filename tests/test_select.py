import logging

import pytest
from datasets import Dataset

from genstruct_datasets import MissingColumnsError, select_best

CANDIDATES = {
    "passage_id": ["moon", "moon", "moon", "tea", "tea", "rome", "rome", "sun"],
    "sample_index": [0, 1, 2, 0, 1, 0, 1, 0],
    "instruction": ["M0", "M1", "M2", "T0", "T1", "R0", "R1", None],
    "reward": [0.5, 2.0, 1.0, 0.7, 0.7, 3.0, -1.0, None],
    "parse_error": [None, None, None, None, None, None, None, "no_assistant_marker"],
}


def test_keeps_the_best_pair_of_each_passage_in_order(caplog):
    with caplog.at_level(logging.INFO, logger="genstruct_datasets"):
        best = select_best(Dataset.from_dict(CANDIDATES))
    assert best["instruction"] == ["M1", "T0", "R0"]  # ties go to the lowest sample_index
    assert best.column_names == list(CANDIDATES)
    assert "4 passages, 3 kept, 1 without a valid pair left out" in caplog.text


def test_min_reward_and_parse_errors(caplog):
    data = dict(CANDIDATES, parse_error=["empty_response", None, None, None, None, None, None, None])
    data["reward"] = [9.0, 2.0, 1.0, 0.7, 0.7, 3.0, -1.0, None]
    with caplog.at_level(logging.WARNING, logger="genstruct_datasets"):
        best = select_best(Dataset.from_dict(data), min_reward=1.5)
    # The 9.0 row has a parse error: never kept. Tea's pairs are under the bar.
    assert best["instruction"] == ["M1", "R0"]
    assert "4 passages, 2 kept, 2 without a valid pair (reward >= 1.5) left out" in caplog.text


def test_a_nan_reward_is_never_kept_nor_in_the_way():
    ds = Dataset.from_dict({"passage_id": ["a", "a", "b"], "reward": [float("nan"), 0.4, float("nan")]})
    assert select_best(ds)["reward"] == [0.4]


def test_works_on_a_filtered_dataset_in_small_batches():
    ds = Dataset.from_dict(CANDIDATES).filter(lambda row: row["sample_index"] != 1)
    best = select_best(ds, batch_size=2)
    assert best["instruction"] == ["M2", "T0", "R0"]


def test_without_sample_index_or_parse_error_columns():
    ds = Dataset.from_dict({"passage_id": ["a", "a", "b"], "reward": [0.1, 0.4, 0.2], "instruction": ["x", "y", "z"]})
    assert select_best(ds)["instruction"] == ["y", "z"]


def test_missing_columns_are_named():
    with pytest.raises(MissingColumnsError, match=r"'passage_id', 'reward'.*it has: instruction"):
        select_best(Dataset.from_dict({"instruction": ["x"]}))
