"""What each stage of a run saw, kept and dropped by reason: the run report's ``stages`` (datatrove's habit).

A [`StageCount`] is one stage's account, counted once where the stage's outcome can be read: the passages stage by
the builder (documents are not in the output), generation, parsing, scoring and selection by [`run_report`] in its
one pass over the candidates, each filter (MinHash dedup, ...) by the filter. The accounts add up: a stage saw what
it kept and what it dropped, every row dropped is counted once, under one reason, and a stage sees what the stage
before it in the same unit kept.

This module sits at the bottom of the package: it imports nothing of it but its errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidConfigError

STAGE_ORDER = ("passages", "generate", "parse", "score", "select")
"""The stages of a run, in pipeline order; filters (``"dedup"``, ...) come after them."""


@dataclass
class StageCount:
    """One stage's account: what it saw, what it kept and, by reason, what it dropped.

    Args:
        name (`str`): the stage: ``"passages"``, ``"generate"``, ``"parse"``, ``"score"``, ``"select"``, or a
            filter that ran after selection (``"dedup"``).
        unit (`str`): what it counts: ``"documents"``, ``"passages"``, ``"candidates"`` or ``"pairs"``.
        seen (`int`): what reached the stage.
        kept (`int`): what it passed on.
        dropped (`dict[str, int]`, *optional*): what it did not pass on, by reason (only reasons that dropped
            something); ``seen == kept + sum(dropped.values())``.

    Raises:
        [`InvalidConfigError`]: a count is negative, or the counts do not add up ([`check`]).

    Example:

    ```py
    >>> stage = StageCount("parse", "candidates", seen=4, kept=3, dropped={"no_assistant_marker": 1})
    >>> StageCount.from_dict(stage.to_dict()) == stage
    True
    ```
    """

    name: str
    unit: str
    seen: int
    kept: int
    dropped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> StageCount:
        """Raise when the counts do not add up; return the stage otherwise.

        Raises:
            [`InvalidConfigError`]: a count is negative, or `seen` is not `kept` plus every dropped reason.
        """
        negative = {k: v for k, v in {"seen": self.seen, "kept": self.kept, **self.dropped}.items() if v < 0}
        if negative:
            raise InvalidConfigError(f"The counts of stage {self.name!r} cannot be negative: {negative}.")
        if self.seen != self.kept + sum(self.dropped.values()):
            raise InvalidConfigError(
                f"The counts of stage {self.name!r} do not add up: it saw {self.seen} {self.unit} but kept "
                f"{self.kept} and dropped {sum(self.dropped.values())} ({self.dropped}); every row it saw is either "
                "kept or dropped under one reason."
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """The account as plain JSON types: ``{"name", "unit", "seen", "kept", "dropped"}``."""
        return {
            "name": self.name,
            "unit": self.unit,
            "seen": self.seen,
            "kept": self.kept,
            "dropped": dict(self.dropped),
        }

    @classmethod
    def from_dict(cls, figures: Mapping[str, Any]) -> StageCount:
        """The inverse of [`to_dict`]; unknown keys (written by a later version) are ignored."""
        return cls(
            name=str(figures["name"]),
            unit=str(figures.get("unit", "")),
            seen=int(figures["seen"]),
            kept=int(figures["kept"]),
            dropped={str(k): int(v) for k, v in (figures.get("dropped") or {}).items()},
        )


def stage(name: str, unit: str, seen: int, dropped: Mapping[str | None, int]) -> StageCount:
    """A stage's account from what it saw and what it dropped by reason (reasons that dropped nothing left out).

    Example:

    ```py
    >>> stage("score", "pairs", 3, {"unscored": 1, "other": 0})
    StageCount(name='score', unit='pairs', seen=3, kept=2, dropped={'unscored': 1})
    ```
    """
    found = {str(reason): int(n) for reason, n in dropped.items() if n}
    return StageCount(name, unit, seen=seen, kept=seen - sum(found.values()), dropped=found)


def stages_from(figures: Iterable[StageCount | Mapping[str, Any]] | None) -> list[StageCount]:
    """Stage accounts as [`StageCount`]s, from records or from their dicts (a report read from JSON)."""
    return [s if isinstance(s, StageCount) else StageCount.from_dict(s) for s in figures or ()]


def add_stages(ours: Iterable[StageCount], theirs: Iterable[StageCount]) -> list[StageCount]:
    """The accounts of two parts of one run (shards built apart) as one: the counts of stages of one name summed,
    in the order the stages first appear.

    Example:

    ```py
    >>> one = [StageCount("passages", "documents", 2, 1, {"empty": 1})]
    >>> add_stages(one, [StageCount("passages", "documents", 3, 3)])
    [StageCount(name='passages', unit='documents', seen=5, kept=4, dropped={'empty': 1})]
    ```
    """
    summed: dict[str, StageCount] = {}
    for part in (*ours, *theirs):
        found = summed.setdefault(part.name, StageCount(part.name, part.unit, 0, 0))
        dropped = {r: found.dropped.get(r, 0) + part.dropped.get(r, 0) for r in {**found.dropped, **part.dropped}}
        summed[part.name] = StageCount(part.name, part.unit, found.seen + part.seen, found.kept + part.kept, dropped)
    return list(summed.values())
