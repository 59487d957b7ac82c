"""Best-of-n selection: keep the highest-reward pair of each passage."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
    columns = ds.select_columns([column for column in _COLUMNS if column in ds.column_names]).with_format("arrow")
    # The best row of each passage in each batch, then of each passage overall. What is held is an Arrow table
    # of about 40 bytes per passage (id, reward, sample index, row), never a Python object per row.
    best = []
    for index, batch in enumerate(columns.iter(batch_size=batch_size)):
        candidates = _candidates(batch, index * batch_size, min_reward)
        best.append(candidates.take(_best_rows(candidates)))
    best = pa.concat_tables(best) if best else _candidates(pa.table({"passage_id": [], "reward": []}), 0, None)
    best = best.select(["reward", "row"]).take(_best_rows(best))
    kept = np.sort(best.filter(pc.is_valid(best["reward"]))["row"].to_numpy())
    dropped = best.num_rows - len(kept)
    logger.log(
        logging.WARNING if dropped else logging.INFO,
        "select_best: %d passages, %d kept, %d without a valid pair%s left out.",
        best.num_rows,
        len(kept),
        dropped,
        "" if min_reward is None else f" (reward >= {min_reward})",
    )
    return ds.select(kept)


def _candidates(batch: pa.Table, start: int, min_reward: float | None) -> pa.Table:
    """`passage_id`, `reward` (null unless a valid pair's), `sample_index` and `row` of rows from `start` on."""
    reward = batch["reward"].cast(pa.float64())
    # NaN compares false with everything: it is no reward, so never kept and never in the way.
    valid = pc.and_(pc.is_valid(reward), pc.invert(pc.is_nan(reward)))
    if min_reward is not None:
        valid = pc.and_(valid, pc.greater_equal(reward, min_reward))
    if "parse_error" in batch.column_names:
        valid = pc.and_(valid, pc.is_null(batch["parse_error"]))
    if "sample_index" in batch.column_names:
        sample_index = batch["sample_index"].cast(pa.int64())
    else:
        sample_index = np.zeros(batch.num_rows, dtype=np.int64)
    return pa.table(
        {
            "passage_id": batch["passage_id"],
            "reward": pc.if_else(pc.fill_null(valid, False), reward, None),
            "sample_index": sample_index,
            "row": np.arange(start, start + batch.num_rows, dtype=np.int64),
        }
    )


def _best_rows(table: pa.Table) -> pa.Array:
    """Indices of each passage's best row: its first once sorted by reward (highest, nulls last), sample index, row."""
    keys = [("passage_id", "ascending"), ("reward", "descending"), ("sample_index", "ascending"), ("row", "ascending")]
    order = pc.sort_indices(table, sort_keys=keys)  # nulls sort last in either order
    return order.filter(_first_of_each(table["passage_id"].take(order)))


def _first_of_each(values: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """Where each run of equal values starts in sorted `values`, as a boolean mask; nulls count as one value."""
    if len(values) < 2:
        return pa.chunked_array([pa.array([True] * len(values), pa.bool_())])
    before, after = values.slice(0, len(values) - 1), values.slice(1)
    # Where a value is null, the comparison is null: compare nullness instead.
    starts = pc.coalesce(pc.not_equal(before, after), pc.not_equal(pc.is_null(before), pc.is_null(after)))
    chunks = starts.chunks if isinstance(starts, pa.ChunkedArray) else [starts]
    return pa.chunked_array([pa.array([True]), *chunks])
