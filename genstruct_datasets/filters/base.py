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
    """A filter of the kept pairs: `name` (its stage in the report), `apply(pairs, candidates)`, and `figures()`.

    A new filter is one module with one subclass, made by the recipe from its settings; the run applies the recipe's
    filters in order, each seeing what the one before kept.
    """

    name: ClassVar[str]

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
    >>> found.kept["passage_id"], found.count.dropped, found.drops
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
