"""Near-duplicate instructions in spelling (MinHash), as a filter of the kept pairs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from .._checks import check_number
from ..dedup import near_duplicate_of
from ..errors import MissingColumnsError
from ..near_duplicates import NEAR_DUPLICATE_THRESHOLD
from .base import Drop, FilterOutcome, PairFilter, outcome

if TYPE_CHECKING:
    from datasets import Dataset


@dataclass
class MinHashDedup(PairFilter):
    """Drop pairs whose instruction nearly repeats a better-rewarded one in spelling (MinHash Jaccard of word
    shingles at least `threshold`): ``--dedup-threshold``. [`dedup_pairs`] as a filter of the run.

    Each dropped pair keeps, as its detail, the `passage_id` of the pair it repeats.

    Args:
        threshold (`float`, *optional*, defaults to 0.8): the Jaccard similarity, in (0, 1], from which two
            instructions are near-duplicates.
        num_perm (`int`, *optional*, defaults to 128): MinHash permutations.

    Raises:
        [`InvalidConfigError`]: `threshold` is not in (0, 1].

    Example:

    ```py
    >>> from datasets import Dataset
    >>> pairs = Dataset.from_dict({"passage_id": ["a", "b"], "sample_index": [0, 0],
    ...                            "instruction": ["What is the Moon made of?", "What is the moon made of ?"],
    ...                            "reward": [0.2, 0.9]})
    >>> found = MinHashDedup().apply(pairs)
    >>> list(found.kept["passage_id"]), found.drops
    (['b'], {('a', 0): Drop(reason='near_duplicate', detail='b')})
    ```
    """

    name: ClassVar[str] = "dedup"

    threshold: float = NEAR_DUPLICATE_THRESHOLD
    num_perm: int = 128

    def __post_init__(self) -> None:
        check_number("dedup_threshold", self.threshold, above=0, maximum=1)

    def apply(self, pairs: Dataset, candidates: Dataset | None = None) -> FilterOutcome:
        if "instruction" not in pairs.column_names:
            raise MissingColumnsError("MinHashDedup", ["instruction"], pairs.column_names, "Run parse_pairs first.")
        columns = pairs.select_columns([c for c in ("passage_id", "instruction", "reward") if c in pairs.column_names])
        data = columns.to_dict()
        rewards = data.get("reward") or [None] * pairs.num_rows
        repeats = near_duplicate_of(data["instruction"], rewards, threshold=self.threshold, num_perm=self.num_perm)
        drops = [None] * pairs.num_rows
        for dropped, kept in repeats.items():
            drops[dropped] = Drop("near_duplicate", data["passage_id"][kept])
        return outcome(self.name, pairs, drops, {"threshold": self.threshold, "method": "MinHash, word 5-shingles"})
