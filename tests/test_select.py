import logging
import math
import random

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


def reference_best_rows(rows: list[dict], min_reward: float | None) -> list[int]:
    """select_best's rule, written plainly: per passage, the highest valid reward, then the lowest sample_index,
    then the first row."""
    best: dict = {}
    for row, candidate in enumerate(rows):
        reward = candidate["reward"]
        valid = candidate.get("parse_error") is None and reward is not None and not math.isnan(reward)
        if valid and (min_reward is None or reward >= min_reward):
            rank = (reward, -candidate.get("sample_index", 0), -row)
            if candidate["passage_id"] not in best or rank > best[candidate["passage_id"]][0]:
                best[candidate["passage_id"]] = (rank, row)
    return sorted(row for _, row in best.values())


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_the_plain_rule_in_any_batch_size(seed):
    rng = random.Random(seed)
    size = rng.randint(1, 60)
    columns = {
        # few ids, so that a passage's rows land in several batches; None is a passage id too
        "passage_id": [rng.choice(["moon", "tea", "rome", "sun", None]) for _ in range(size)],
        "sample_index": [rng.randint(0, 3) for _ in range(size)],
        "reward": [rng.choice([None, float("nan"), -1.0, 0.0, -0.0, 0.5, 2.0]) for _ in range(size)],
        "parse_error": [rng.choice([None, None, "empty_response"]) for _ in range(size)],
        "row": list(range(size)),
    }
    if seed % 2:
        del columns["sample_index"], columns["parse_error"]
    ds = Dataset.from_dict(columns)
    rows = ds.to_list()
    for min_reward in (None, 0.0):
        expected = reference_best_rows(rows, min_reward)
        for batch_size in (1, 3, 10_000):
            assert select_best(ds, min_reward=min_reward, batch_size=batch_size)["row"] == expected
