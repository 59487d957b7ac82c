"""Drop near-duplicate instructions, keeping the better-rewarded pair."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._checks import check_number
from .errors import MissingColumnsError
from .near_duplicates import NEAR_DUPLICATE_THRESHOLD, minhashes, near_duplicate_index
from .stage_counts import StageCount

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)


def dedup_pairs(
    ds: Dataset,
    *,
    threshold: float = NEAR_DUPLICATE_THRESHOLD,
    num_perm: int = 128,
    column: str = "instruction",
) -> Dataset:
    """Drop rows whose instruction nearly repeats another's, keeping the one with the higher reward.

    Instructions are compared by MinHash (datasketch) over character 5-gram shingles, candidates found by
    LSH: two are near-duplicates when their estimated Jaccard similarity is at least `threshold`. Rows are visited from
    the highest reward down (rows without a reward last, then in their order), and a row is dropped when an
    instruction already kept is its near-duplicate. Rows without an instruction are kept untouched. The
    kept rows stay in their original order, and a log line says how many went.

    Args:
        ds (`datasets.Dataset`): pairs, with an `instruction` column and, ideally, `reward`.
        threshold (`float`, *optional*, defaults to 0.8): Jaccard similarity from which instructions are
            near-duplicates; 1.0 drops exact repeats only (up to case and white space).
        num_perm (`int`, *optional*, defaults to 128): MinHash permutations; more is slower and more precise.
        column (`str`, *optional*, defaults to `"instruction"`): the column compared.

    Returns:
        `datasets.Dataset`: the rows kept.

    Raises:
        [`MissingColumnsError`]: `ds` has no `column`.
        [`InvalidConfigError`]: `threshold` is not in (0, 1].

    Example:

    ```py
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({
    ...     "instruction": ["What is the Moon made of?", "What is the moon made of ?", "Why do bees dance?"],
    ...     "reward": [0.2, 0.9, 0.5],
    ... })
    >>> dedup_pairs(ds)["instruction"]
    ['What is the moon made of ?', 'Why do bees dance?']
    ```
    """
    return dedup_with_count(ds, threshold=threshold, num_perm=num_perm, column=column)[0]


def dedup_with_count(
    ds: Dataset,
    *,
    threshold: float = NEAR_DUPLICATE_THRESHOLD,
    num_perm: int = 128,
    column: str = "instruction",
) -> tuple[Dataset, StageCount]:
    """[`dedup_pairs`], with its account for the run report's stages: the ``dedup`` [`StageCount`].

    The stage sees the rows with an instruction (those it compares; rows without one pass untouched and are not
    counted), keeps those that are not a near-duplicate of a better-rewarded one, and drops the others as
    ``near_duplicate``. Give the account to [`run_report`] as ``filters=[count]``.

    Returns:
        `tuple`: the rows kept (a `datasets.Dataset`, as [`dedup_pairs`] returns them) and the ``dedup`` stage's
        [`StageCount`] (unit ``pairs``).

    Raises:
        [`MissingColumnsError`]: `ds` has no `column`.
        [`InvalidConfigError`]: `threshold` is not in (0, 1].

    Example:

    ```py
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"instruction": ["What is the Moon made of?", "What is the moon made of ?"],
    ...                         "reward": [0.2, 0.9]})
    >>> kept, count = dedup_with_count(ds)
    >>> kept["instruction"], (count.seen, count.kept, count.dropped)
    (['What is the moon made of ?'], (2, 1, {'near_duplicate': 1}))
    ```
    """
    if column not in ds.column_names:
        raise MissingColumnsError("dedup_pairs", [column], ds.column_names, "Run parse_pairs first, or pass column=.")
    check_number("threshold", threshold, above=0, maximum=1)
    texts = ds[column]
    rewards = ds["reward"] if "reward" in ds.column_names else [None] * len(texts)
    repeats = near_duplicate_of(texts, rewards, threshold=threshold, num_perm=num_perm)
    seen = sum(1 for text in texts if text)
    logger.info(
        "dedup_pairs: dropped %d of %d instructions as near-duplicates (threshold %.2f).",
        len(repeats),
        seen,
        threshold,
    )
    count = StageCount(
        "dedup",
        "pairs",
        seen=seen,
        kept=seen - len(repeats),
        dropped={"near_duplicate": len(repeats)} if repeats else {},
    )
    return ds.select([i for i in range(len(texts)) if i not in repeats]), count


def near_duplicate_of(
    texts: Sequence[str | None], rewards: Sequence[float | None], *, threshold: float, num_perm: int = 128
) -> dict[int, int]:
    """Which texts nearly repeat a better-rewarded one (MinHash Jaccard at least `threshold`), and which one.

    The texts are taken best reward first (no reward last, ties in order); each is kept unless it nearly repeats
    one kept before it. Empty texts are neither compared nor dropped.

    Returns:
        `dict[int, int]`: each dropped text's index, mapped to the index of the kept text it repeats.

    Example:

    ```py
    >>> near_duplicate_of(["What is the Moon?", "What is the moon ?", "Why?"], [0.1, 0.9, 0.5], threshold=0.5)
    {0: 1}
    ```
    """

    def rank(i: int) -> tuple:
        reward = rewards[i]
        known = reward is not None and not math.isnan(reward)
        return (not known, -reward if known else 0.0, i)

    order = sorted((i for i, text in enumerate(texts) if text), key=rank)
    signatures = dict(zip(order, minhashes([texts[i] for i in order], num_perm)))
    lsh = near_duplicate_index(threshold, num_perm)
    repeats: dict[int, int] = {}
    for i in order:
        kept = next((k for k in lsh.query(signatures[i]) if signatures[k].jaccard(signatures[i]) >= threshold), None)
        if kept is None:
            lsh.insert(i, signatures[i])
        else:
            repeats[i] = kept
    return repeats
