"""Near-duplicate texts: character shingles, MinHash signatures and an LSH index (datasketch).

The one definition of "near-duplicate" in the package: [`near_duplicate_share`] measures it for the quality
figures, [`dedup_pairs`] drops by it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

NEAR_DUPLICATE_THRESHOLD = 0.8
"""Jaccard similarity of character 5-gram shingles from which two texts are near-duplicates."""


def shingles(text: str, size: int = 5) -> set[str]:
    """Character `size`-grams of the lower-cased text with its white space folded: the unit of near-duplicates."""
    folded = " ".join(text.lower().split())
    return {folded[i : i + size] for i in range(max(len(folded) - size + 1, 1))}


def minhashes(texts: Iterable[str], num_perm: int = 128) -> list:
    """MinHash signatures (datasketch) of the texts' character shingles, made with one shared set of permutations."""
    from datasketch import MinHash

    shingled = ([s.encode("utf-8") for s in shingles(text)] for text in texts)
    return list(MinHash.generator(shingled, num_perm=num_perm, seed=1))


def near_duplicate_share(
    texts: Sequence[str], threshold: float = NEAR_DUPLICATE_THRESHOLD, num_perm: int = 128
) -> float:
    """The share of texts that have a near-duplicate among the others.

    Two texts are near-duplicates when the Jaccard similarity of their character 5-gram shingles, as
    estimated by MinHash (datasketch, candidates found by LSH), is at least `threshold`. Exact duplicates
    count too. Texts that are equal up to case and white space share one signature, so that many copies
    of one text cost one signature and one entry of the index.
    """
    if len(texts) < 2:
        return 0.0
    groups: dict[str, list] = {}  # folded text: [copies, first text]
    for text in texts:
        groups.setdefault(" ".join(text.lower().split()), [0, text])[0] += 1
    signatures = minhashes((text for _, text in groups.values()), num_perm)
    lsh = near_duplicate_index(threshold, num_perm)
    for index, signature in enumerate(signatures):
        lsh.insert(index, signature)
    duplicated = sum(
        copies
        for index, ((copies, _), signature) in enumerate(zip(groups.values(), signatures))
        if copies > 1
        or any(other != index and signatures[other].jaccard(signature) >= threshold for other in lsh.query(signature))
    )
    return duplicated / len(texts)


def near_duplicate_index(threshold: float, num_perm: int = 128):
    """A MinHash LSH index that finds the candidates of near-duplicates at `threshold`.

    LSH cannot be banded for thresholds close to 1, so the index is built at no more than 0.9 and callers
    confirm each candidate with the MinHash estimate of the Jaccard similarity.
    """
    from datasketch import MinHashLSH

    return MinHashLSH(threshold=min(threshold, 0.9), num_perm=num_perm)
