"""Best-of-n selection: keep the highest-reward pair of each passage."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from .errors import MissingColumnsError

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)

_COLUMNS = ("passage_id", "sample_index", "reward", "parse_error")


def select_best(ds: Dataset, *, min_reward: float | None = None, batch_size: int = 10_000) -> Dataset:
    """Keep one row per passage: its valid pair with the highest reward.

    A row is a valid pair when its `parse_error` is None (where that column exists) and its `reward` is
    a number, neither None nor NaN (and at least `min_reward` when given). Ties go to the lowest
    `sample_index`. Passages with no valid pair are left out and counted in a log line. Rows are grouped
    by `passage_id`, a digest of title and content: a passage that occurs twice in the input is one
    passage here, and keeps one pair. Only the four small columns are read into
    memory; the rows kept are selected from `ds`, in their original order.

    Args:
        ds (`datasets.Dataset`): scored candidates, with `passage_id` and `reward` (and `sample_index`,
            `parse_error` where present).
        min_reward (`float`, *optional*): pairs scored below this are not kept.
        batch_size (`int`, *optional*, defaults to 10000): rows read at a time.

    Returns:
        `datasets.Dataset`: one row per passage that has a valid pair, with the same columns as `ds`.

    Raises:
        [`MissingColumnsError`]: `ds` lacks `passage_id` or `reward`.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({
    ...     "passage_id": ["a", "a", "b"], "sample_index": [0, 1, 0],
    ...     "instruction": ["Q1", "Q2", "Q3"], "reward": [0.1, 0.9, None],
    ... })
    >>> select_best(ds)["instruction"]
    ['Q2']
    ```
    """
    missing = [column for column in ("passage_id", "reward") if column not in ds.column_names]
    if missing:
        raise MissingColumnsError(
            "select_best", missing, ds.column_names, "Run genstruct_generate, parse_pairs and score_pairs first."
        )
    columns = [column for column in _COLUMNS if column in ds.column_names]
    best: dict[str, tuple[float, int, int]] = {}
    row = 0
    for batch in ds.select_columns(columns).iter(batch_size=batch_size):
        size = len(batch["passage_id"])
        sample_indices = batch.get("sample_index") or [0] * size
        errors = batch.get("parse_error") or [None] * size
        for pid, sample_index, reward, error in zip(batch["passage_id"], sample_indices, batch["reward"], errors):
            best.setdefault(pid, None)
            # NaN compares false with everything: it is no reward, so never kept and never in the way.
            if (
                error is None
                and reward is not None
                and not math.isnan(reward)
                and (min_reward is None or reward >= min_reward)
            ):
                current = best[pid]
                if current is None or (reward, -sample_index) > (current[0], -current[1]):
                    best[pid] = (reward, sample_index, row)
            row += 1
    kept = sorted(entry[2] for entry in best.values() if entry is not None)
    dropped = len(best) - len(kept)
    logger.log(
        logging.WARNING if dropped else logging.INFO,
        "select_best: %d passages, %d kept, %d without a valid pair%s left out.",
        len(best),
        len(kept),
        dropped,
        "" if min_reward is None else f" (reward >= {min_reward})",
    )
    return ds.select(kept)
