"""RIP (Rejecting Instruction Preferences, arXiv 2501.18578): drop the passages whose samples the reward model rated
poorly or unevenly.

Best-of-n already scores n samples of each passage; [`reward_spread`] turns those rewards into three signals per
passage (the lowest reward, the gap between the best and the lowest, and the length of the lowest-rated response),
and [`RIPFilter`] drops the pairs whose lowest reward is low, or whose gap is wide, compared with the whole run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._checks import check_number
from ..errors import MissingColumnsError
from ..quality import words
from .base import Drop, FilterOutcome, PairFilter, outcome

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)

PAPER = "arXiv 2501.18578"
"""Where the rule comes from: Yu et al., "RIP: Better Models by Survival of the Fittest Prompts"."""

SPREAD_COLUMNS = ("reward_min", "reward_gap", "rejected_words")
"""The columns [`reward_spread`] writes, in order."""

_READ = ("passage_id", "sample_index", "reward", "parse_error", "response")


def _spread_features() -> dict[str, Any]:
    import datasets

    return {
        "reward_min": datasets.Value("float64"),
        "reward_gap": datasets.Value("float64"),
        "rejected_words": datasets.Value("int32"),
    }


def reward_spread(best: Dataset, candidates: Dataset, *, batch_size: int = 10_000) -> tuple[Dataset, Dataset]:
    """Add each passage's reward spread to its kept pair and to every one of its candidates.

    A candidate is scored when its `parse_error` is None (where that column exists) and its `reward` is a number,
    neither None nor NaN: the pairs [`select_best`] chooses from. For each passage (by `passage_id`), over its scored
    candidates:

    - `reward_min`: the lowest reward;
    - `reward_gap`: the highest reward (the one best-of-n keeps) minus the lowest, 0.0 for a passage with one scored
      candidate;
    - `rejected_words`: the words (as [`quality.words`] counts them) of the response of the lowest-rated candidate;
      where two tie, the one with the higher `sample_index`, so that the rejected sample is not the one kept.

    A passage without a scored candidate gets None in all three. Both datasets get the same three columns, because
    the splits of one dataset config share their features. The candidates are read once, `batch_size` rows of their
    few small columns at a time (the responses only of each batch's lowest-rated rows); what is held is one entry of
    three numbers per passage.

    Reads: `passage_id`, `reward`, `response`, and `sample_index`, `parse_error` where present (of `candidates`);
    `passage_id` (of `best`). Writes: `reward_min` (float64), `reward_gap` (float64), `rejected_words` (int32), to
    both; a dataset that already has them gets them anew.

    Args:
        best (`datasets.Dataset`): the kept pairs, one per passage (e.g. [`select_best`]'s), with `passage_id`.
        candidates (`datasets.Dataset`): every sample of the run, scored.
        batch_size (`int`, *optional*, defaults to 10000): rows read, and rows mapped, at a time.

    Returns:
        `tuple[datasets.Dataset, datasets.Dataset]`: `best` and `candidates`, in that order, each with the three
        columns added.

    Raises:
        [`MissingColumnsError`]: `candidates` lack `passage_id`, `reward` or `response`, or `best` lacks
            `passage_id`.
        [`InvalidConfigError`]: `batch_size` is not a positive integer.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> from genstruct_datasets import select_best
    >>> candidates = Dataset.from_dict({
    ...     "passage_id": ["m", "m"], "sample_index": [0, 1], "instruction": ["What is the Moon?", "Why?"],
    ...     "response": ["Rock and dust.", "It is."], "reward": [2.0, 0.5],
    ... })
    >>> best, candidates = reward_spread(select_best(candidates), candidates)
    >>> best.column_names
    ['passage_id', 'sample_index', 'instruction', 'response', 'reward', 'reward_min', 'reward_gap', 'rejected_words']
    >>> best[0]["reward"], best[0]["reward_min"], best[0]["reward_gap"], best[0]["rejected_words"]
    (2.0, 0.5, 1.5, 2)
    ```
    """
    check_number("batch_size", batch_size, integer=True, minimum=1)
    missing = [c for c in ("passage_id", "reward", "response") if c not in candidates.column_names]
    if missing:
        raise MissingColumnsError(
            "reward_spread", missing, candidates.column_names, "Give the scored candidates of a best-of-n run."
        )
    if "passage_id" not in best.column_names:
        raise MissingColumnsError("reward_spread", ["passage_id"], best.column_names, "Give select_best's pairs.")
    spread = _per_passage(candidates, batch_size)
    logger.info("reward_spread: %d passages with a scored candidate.", len(spread))
    kept = _with_spread(best, spread, "best", candidates, batch_size)
    return kept, _with_spread(candidates, spread, "candidates", best, batch_size)


def _scored_lowest(batch: pa.Table) -> pa.Table:
    """Of one batch: each passage's lowest and highest reward, and the sample index and words of its lowest."""
    reward = batch["reward"].cast(pa.float64())
    scored = pc.and_(pc.is_valid(reward), pc.invert(pc.is_nan(reward)))
    if "parse_error" in batch.column_names:
        scored = pc.and_(scored, pc.is_null(batch["parse_error"]))
    scored = pc.fill_null(scored, False)
    if "sample_index" in batch.column_names:
        sample_index = batch["sample_index"].cast(pa.int64())
    else:
        sample_index = pa.array(np.zeros(batch.num_rows, dtype=np.int64))
    table = pa.table({"passage_id": batch["passage_id"], "reward": reward, "sample_index": sample_index})
    table = table.append_column("response", batch["response"]).filter(scored)
    lowest = _lowest_of_each(table, {"response": "first"})
    counted = pa.array([len(words(text or "")) for text in lowest["response_first"].to_pylist()], pa.int32())
    return lowest.drop_columns(["response_first"]).append_column("words_first", counted)


def _lowest_of_each(table: pa.Table, carried: dict[str, str]) -> pa.Table:
    """Per passage: `reward_min`, `reward_max` and, of its lowest-rated row, `sample_index_first` and the `carried`
    columns (each aggregated as its value says); ties go to the highest sample index."""
    order = pc.sort_indices(table, sort_keys=[("reward", "ascending"), ("sample_index", "descending")])
    # Ordered aggregations ("first") follow the input order only on one thread.
    aggregations = [("reward", "min"), ("reward", "max"), ("sample_index", "first")]
    aggregations += list(carried.items())
    return table.take(order).group_by("passage_id", use_threads=False).aggregate(aggregations)


def _per_passage(candidates: Dataset, batch_size: int) -> dict[str, tuple[float, float, int]]:
    """`passage_id` -> (lowest reward, gap, words of the lowest-rated response), in one pass over the candidates."""
    columns = candidates.select_columns([c for c in _READ if c in candidates.column_names]).with_format("arrow")
    found = [_scored_lowest(batch) for batch in columns.iter(batch_size=batch_size)]
    if not found:
        return {}
    parts = pa.concat_tables(found)
    # Each batch's lowest of each passage, then the lowest overall; the highest is the highest of the highest.
    merged = pa.table(
        {
            "passage_id": parts["passage_id"],
            "reward": parts["reward_min"],
            "sample_index": parts["sample_index_first"],
            "high": parts["reward_max"],
            "words": parts["words_first"],
        }
    )
    total = _lowest_of_each(merged, {"high": "max", "words": "first"})
    low, high = total["reward_min"].to_pylist(), total["high_max"].to_pylist()
    return {
        passage: (lowest, highest - lowest, rejected)
        for passage, lowest, highest, rejected in zip(
            total["passage_id"].to_pylist(), low, high, total["words_first"].to_pylist()
        )
    }


class _AddSpread:
    """The batched map of [`reward_spread`]: each row gets its passage's three values (None for a passage without)."""

    def __init__(self, spread: dict[str, tuple[float, float, int]]) -> None:
        self.spread = spread

    def __call__(self, passage_ids: list[str]) -> dict[str, list]:
        values = [self.spread.get(passage, (None, None, None)) for passage in passage_ids]
        return {name: [value[i] for value in values] for i, name in enumerate(SPREAD_COLUMNS)}


def _with_spread(ds: Dataset, spread: dict, role: str, other: Dataset, batch_size: int) -> Dataset:
    from datasets.fingerprint import Hasher

    features = ds.features.copy()
    features.update(_spread_features())
    # The per-passage values are the other dataset's doing: named by both fingerprints, the map is never hashed
    # (a dict of one entry per passage would take as long to hash as to build).
    fingerprint = Hasher.hash(["reward_spread", role, ds._fingerprint, other._fingerprint])
    if not ds.num_rows:  # map adds no column to an empty dataset
        ds = ds.remove_columns([c for c in SPREAD_COLUMNS if c in ds.column_names])
        for name, feature in _spread_features().items():
            ds = ds.add_column(name, [], feature=feature)
        return ds
    return ds.map(
        _AddSpread(spread),
        batched=True,
        batch_size=batch_size,
        input_columns="passage_id",
        features=features,
        new_fingerprint=fingerprint,
        desc=f"reward spread ({role})",
    )


@dataclass
class RIPFilter(PairFilter):
    """Drop the pairs of passages whose samples were rated poorly or unevenly (RIP, arXiv 2501.18578).

    The rule: a pair is dropped when its passage's lowest reward is below the run's `quantile` quantile of lowest
    rewards (``reward_min_below``), or else when its gap between best and lowest reward is above the run's
    ``1 - quantile`` quantile of gaps (``reward_gap_above``); one reason per pair, the first that applies. The cut
    points are computed over every pair given (the whole run, every shard: give the whole selection at once), with
    numpy's linear interpolation. At the default 0.5 both cut points are medians, as in the paper's ablations; a larger
    `quantile` raises the lowest-reward cut and lowers the gap cut, so it drops more: each rule on its own drops about
    a `quantile` share of the pairs. A pair without the signals (None: its passage had no scored candidate) is kept
    and counts for no cut point; a passage with one scored candidate has a gap of 0.

    Reads: `passage_id`, `sample_index`, `reward_min`, `reward_gap` (of the pairs; [`reward_spread`] writes them).

    Args:
        quantile (`float`, *optional*, defaults to 0.5): where both cut points sit, in (0, 1): the quantile of lowest
            rewards below which a pair goes, and (1 - `quantile`) the quantile of gaps above which it goes.

    Raises:
        [`InvalidConfigError`]: `quantile` is not in (0, 1).

    Example:

    ```py
    >>> from datasets import Dataset
    >>> pairs = Dataset.from_dict({
    ...     "passage_id": ["a", "b"], "sample_index": [0, 0], "reward_min": [0.1, 1.0], "reward_gap": [0.5, 0.5],
    ... })
    >>> found = RIPFilter().apply(pairs)
    >>> list(found.kept["passage_id"]), found.drops
    (['b'], {('a', 0): Drop(reason='reward_min_below', detail='reward_min 0.1 < 0.55')})
    >>> found.figures["reward_min_cut"], found.figures["reward_gap_cut"]
    (0.55, 0.5)
    ```
    """

    name: ClassVar[str] = "rip"
    quantile: float = 0.5

    def __post_init__(self) -> None:
        # An open interval: at 1 every pair but the best-rated would go, at 0 none.
        check_number("rip_quantile", self.quantile, above=0, below=1)

    def apply(self, pairs: Dataset, candidates: Dataset | None = None) -> FilterOutcome:
        """Drop the pairs the RIP rule rejects; `candidates` are not read (the spread is on the pairs already).

        Returns:
            [`FilterOutcome`]: the pairs kept, the drops (with the value and its cut point as detail), the count
            and the figures: ``quantile``, ``reward_min_cut``, ``reward_gap_cut`` (None where no pair has the
            signal), ``paper``.

        Raises:
            [`MissingColumnsError`]: the pairs lack `reward_min` or `reward_gap`.
        """
        missing = [c for c in ("reward_min", "reward_gap") if c not in pairs.column_names]
        if missing:
            raise MissingColumnsError(
                "the RIP filter",
                missing,
                pairs.column_names,
                "Run reward_spread(best, candidates) on a best-of-n selection first (RIP needs several scored "
                "samples per passage).",
            )
        signals = pairs.select_columns(["reward_min", "reward_gap"]).with_format("arrow")[:]
        lowest = _floats(signals["reward_min"])
        gap = _floats(signals["reward_gap"])
        min_cut = _quantile(lowest, self.quantile)
        gap_cut = _quantile(gap, 1 - self.quantile)
        drops: list[Drop | None] = []
        for low, spread in zip(lowest, gap):
            if min_cut is not None and low == low and low < min_cut:  # NaN (no signal) compares false
                drops.append(Drop("reward_min_below", f"reward_min {low:.4g} < {min_cut:.4g}"))
            elif gap_cut is not None and spread == spread and spread > gap_cut:
                drops.append(Drop("reward_gap_above", f"reward_gap {spread:.4g} > {gap_cut:.4g}"))
            else:
                drops.append(None)
        figures = {"quantile": self.quantile, "reward_min_cut": min_cut, "reward_gap_cut": gap_cut, "paper": PAPER}
        found = outcome(self.name, pairs, drops, figures)
        logger.info(
            "RIP (quantile %g): reward_min cut %s, reward_gap cut %s; %d of %d pairs kept.",
            self.quantile,
            min_cut,
            gap_cut,
            found.count.kept,
            found.count.seen,
        )
        return found


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    """A column of numbers as float64, None as NaN."""
    return pc.fill_null(column.cast(pa.float64()), float("nan")).to_numpy()


def _quantile(values: np.ndarray, q: float) -> float | None:
    """The `q` quantile of the values that are numbers, or None when none is."""
    present = values[~np.isnan(values)]
    return float(np.quantile(present, q)) if len(present) else None
