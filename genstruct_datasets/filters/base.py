"""What every filter of the kept pairs shares: its interface, its outcome, and how a mask becomes an outcome.

A filter runs after selection, on the pairs a run kept (the built dataset, read from the cache: changing a filter's
setting never generates again). It drops pairs on purpose: each dropped pair stays in the ``candidates`` split with
the filter's name and a detail (the id of the row it repeats, the n-gram it shares with a benchmark), and the filter
counts what it saw, kept and dropped by reason, once, as its [`StageCount`].
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..stage_counts import StageCount

if TYPE_CHECKING:
    from datasets import Dataset


@dataclass
class Drop:
    """Why one pair was dropped: the filter's reason (its `StageCount` key) and a detail (or None)."""

    reason: str
    detail: str | None = None


@dataclass
class FilterOutcome:
    """What a filter made of the pairs it saw.

    Args:
        kept (`datasets.Dataset`): the pairs kept, in their order.
        drops (`dict[tuple[str, int], Drop]`): each dropped pair, by its `(passage_id, sample_index)`, with why.
        count ([`StageCount`]): what the filter saw, kept and dropped by reason (unit ``pairs``).
        figures (`dict`): what the report and the card show of the filter beside its count: its settings and the
            thresholds it computed (RIP's cut points, per-benchmark counts).
    """

    kept: Dataset
    drops: dict[tuple[str, int], Drop]
    count: StageCount
    figures: dict[str, Any] = field(default_factory=dict)


class PairFilter(ABC):
    """A filter of the kept pairs: `name` (its stage in the report), `check()` before any work, `apply(pairs,
    candidates)` after the build.

    A new filter is one module with one subclass, made by the recipe from its settings; the run applies the recipe's
    filters in order, each seeing what the one before kept.
    """

    name: ClassVar[str]

    def check(self) -> None:
        """Refuse, before any work, what would make the filter fail after the build: a model or a dataset that
        cannot be had. Nothing to check by default."""
        return None

    @abstractmethod
    def apply(self, pairs: Dataset, candidates: Dataset | None = None) -> FilterOutcome:
        """Filter `pairs` (the kept rows); `candidates` are every candidate of the run, for filters that need them.

        Returns:
            [`FilterOutcome`]: the pairs kept, the drops and the count.
        """


def outcome(
    name: str, pairs: Dataset, drops: Sequence[Drop | None], figures: dict[str, Any] | None = None
) -> FilterOutcome:
    """The outcome of a filter that decided row by row: `drops[i]` is None for a pair kept, else why it went.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> pairs = Dataset.from_dict({"passage_id": ["a", "b"], "sample_index": [0, 1], "instruction": ["Q", "Q"]})
    >>> found = outcome("dedup", pairs, [None, Drop("near_duplicate", "a")])
    >>> list(found.kept["passage_id"]), found.count.dropped, found.drops
    (['a'], {'near_duplicate': 1}, {('b', 1): Drop(reason='near_duplicate', detail='a')})
    ```
    """
    ids = pairs.select_columns(["passage_id", "sample_index"]).to_dict()
    keys = list(zip(ids["passage_id"], ids["sample_index"]))
    found = {keys[i]: drop for i, drop in enumerate(drops) if drop is not None}
    reasons = Counter(drop.reason for drop in found.values())
    count = StageCount(name, "pairs", seen=len(keys), kept=len(keys) - len(found), dropped=dict(reasons))
    kept = pairs.select([i for i, drop in enumerate(drops) if drop is None])
    return FilterOutcome(kept, found, count, dict(figures or {}))


FILTER_COLUMNS = ("filtered_by", "filter_detail")
"""The columns that say why a filter dropped a pair: the filter's name, and its reason and detail. Both splits of an
output have them (None on every row a filter did not drop), so that the splits share their features."""


def mark_drops(rows: Dataset, outcomes: Sequence[FilterOutcome], *, desc: str = "Marking filtered pairs") -> Dataset:
    """Add `filtered_by` and `filter_detail` to `rows`: for a row that a filter dropped, its name and
    ``"{reason}: {detail}"``; None elsewhere.

    Args:
        rows (`datasets.Dataset`): the candidates (or the kept pairs, whose cells stay None).
        outcomes (`Sequence[FilterOutcome]`): the filters' outcomes, in the order they ran.

    Returns:
        `datasets.Dataset`: `rows` with the two columns.
    """
    import datasets

    found = {key: (filtered.count.name, drop) for filtered in outcomes for key, drop in filtered.drops.items()}

    def mark(batch: dict[str, list]) -> dict[str, list]:
        hits = [found.get(key) for key in zip(batch["passage_id"], batch["sample_index"])]
        return {
            "filtered_by": [hit[0] if hit else None for hit in hits],
            "filter_detail": [_detail(hit[1]) if hit else None for hit in hits],
        }

    features = rows.features.copy()
    features.update({name: datasets.Value("string") for name in FILTER_COLUMNS})
    return rows.map(mark, batched=True, features=features, desc=desc, load_from_cache_file=False)


def _detail(drop: Drop) -> str:
    return drop.reason if drop.detail is None else f"{drop.reason}: {drop.detail}"
