"""Quality figures of a Genstruct dataset: validity, diversity, grounding, question form, lengths, rewards."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datasets import Dataset

_WORD = re.compile(r"[0-9]+(?:[.,][0-9]+)*|[^\W\d_]+(?:['’][^\W\d_]+)*")
_SENTENCE = re.compile(r"(?<=[.!?:;])\s+|\n+")

STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have having he
    her here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not
    now of off on once only or other our ours ourselves out over own same she should so some such than that the
    their theirs them themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves one two many much
    may might must shall let us""".split()
)
"""Common English function words left out of the grounding measure."""

ASKING_WORDS = frozenset(
    """what why how which who whom whose when where is are was were do does did can could should would will shall
    may might explain describe compare contrast calculate compute determine identify list name discuss evaluate
    analyze analyse summarize summarise suggest estimate predict justify outline give find tell show propose
    assess consider imagine suppose""".split()
)
"""Words that open a question or a request ("Why...", "Explain...")."""

NEAR_DUPLICATE_THRESHOLD = 0.8


def words(text: str) -> list[str]:
    """Lower-cased words and numbers of `text` (punctuation dropped)."""
    return [w.lower() for w in _WORD.findall(text)]


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Distinct-n: the number of distinct word n-grams over the number of n-grams, across all `texts`.

    n-grams do not cross text boundaries. 1.0 means no n-gram repeats anywhere; returns 0.0 when the texts
    have no n-gram at all.
    """
    total, distinct = 0, set()
    for text in texts:
        tokens = words(text)
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        distinct.update(grams)
    return len(distinct) / total if total else 0.0


def _content_words(text: str) -> set[str]:
    found = set()
    for word in words(text):
        word = word.removesuffix("'s").removesuffix("’s")
        if word in STOPWORDS or (len(word) < 2 and not word.isdigit()):
            continue
        found.add(word[:-1] if len(word) > 3 and word.endswith("s") else word)
    return found


def grounding(response: str, passage: str) -> float | None:
    """How much of a response its passage supports: the share of its content words found in the passage.

    Content words are the response's distinct lower-cased words and numbers, without the words of
    `STOPWORDS` and one-letter words, with a possessive "'s" and then a final "s" removed from words of
    four letters or more (so "orbits" matches "orbit" and "Earth's" matches "Earth"). The figure is the
    share of them that also occur, so normalised, in the passage: 1.0 means every content word of the
    response comes from the passage, 0.0 that none does. It measures lexical support, not correctness: a
    response that reasons beyond the passage in new words scores lower.

    Returns:
        `float` or `None`: None when the response has no content word.

    Example:

    ```py
    >>> grounding("The Moon orbits Earth.", "The Moon is Earth's satellite; it orbits once a month.")
    1.0
    >>> grounding("Jupiter has rings.", "The Moon orbits Earth.")
    0.0
    ```
    """
    response_words = _content_words(response)
    if not response_words:
        return None
    return len(response_words & _content_words(passage)) / len(response_words)


def asks_something(instruction: str) -> bool:
    """Whether an instruction asks a question or makes a request.

    True when it contains a question mark, or when one of its sentences opens with a word of
    `ASKING_WORDS` ("Why ...", "Explain ...", "Compare ..."). A statement alone ("The Moon orbits Earth.")
    is False.
    """
    if "?" in instruction:
        return True
    return any((first := words(sentence)) and first[0] in ASKING_WORDS for sentence in _SENTENCE.split(instruction))


def shingles(text: str, size: int = 5) -> set[str]:
    """Character `size`-grams of the lower-cased text with its white space folded: the unit of near-duplicates."""
    folded = " ".join(text.lower().split())
    return {folded[i : i + size] for i in range(max(len(folded) - size + 1, 1))}


def minhashes(texts: Sequence[str], num_perm: int = 128) -> list:
    """MinHash signatures (datasketch) of the texts' character shingles."""
    from datasketch import MinHash

    signatures = []
    for text in texts:
        signature = MinHash(num_perm=num_perm, seed=1)
        signature.update_batch([s.encode("utf-8") for s in shingles(text)])
        signatures.append(signature)
    return signatures


def near_duplicate_share(
    texts: Sequence[str], threshold: float = NEAR_DUPLICATE_THRESHOLD, num_perm: int = 128
) -> float:
    """The share of texts that have a near-duplicate among the others.

    Two texts are near-duplicates when the Jaccard similarity of their character 5-gram shingles, as
    estimated by MinHash (datasketch, candidates found by LSH), is at least `threshold`. Exact duplicates
    count too.
    """
    if len(texts) < 2:
        return 0.0
    signatures = minhashes(texts, num_perm)
    lsh = near_duplicate_index(threshold, num_perm)
    for index, signature in enumerate(signatures):
        lsh.insert(index, signature)
    duplicated = sum(
        any(other != index and signatures[other].jaccard(signature) >= threshold for other in lsh.query(signature))
        for index, signature in enumerate(signatures)
    )
    return duplicated / len(texts)


def near_duplicate_index(threshold: float, num_perm: int = 128):
    """A MinHash LSH index that finds the candidates of near-duplicates at `threshold`.

    LSH cannot be banded for thresholds close to 1, so the index is built at no more than 0.9 and callers
    confirm each candidate with the MinHash estimate of the Jaccard similarity.
    """
    from datasketch import MinHashLSH

    return MinHashLSH(threshold=min(threshold, 0.9), num_perm=num_perm)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Mean, standard deviation and quantiles (min, 25%, 50%, 75%, 90%, max) of numbers; NaN and None are skipped."""
    clean = sorted(v for v in values if v is not None and not math.isnan(v))
    if not clean:
        return {}
    mean = sum(clean) / len(clean)

    def quantile(q: float) -> float:
        position = (len(clean) - 1) * q
        low, high = math.floor(position), math.ceil(position)
        return clean[low] + (clean[high] - clean[low]) * (position - low)

    return {
        "mean": mean,
        "std": math.sqrt(sum((v - mean) ** 2 for v in clean) / len(clean)),
        "min": clean[0],
        "25%": quantile(0.25),
        "50%": quantile(0.5),
        "75%": quantile(0.75),
        "90%": quantile(0.9),
        "max": clean[-1],
    }


def compute_quality(
    *,
    instruction: Sequence[str | None],
    response: Sequence[str | None],
    content: Sequence[str | None] | None = None,
    parse_error: Sequence[str | None] | None = None,
    finish_reason: Sequence[str | None] | None = None,
    reward: Sequence[float | None] | None = None,
    near_duplicate_threshold: float = NEAR_DUPLICATE_THRESHOLD,
) -> dict[str, Any]:
    """Compute every quality figure from columns; see [`quality_report`] for what each one means.

    Empty strings count as missing, like None, and NaN rewards are skipped.
    """
    pairs = _pair_rows(instruction, response, parse_error)
    instructions = [instruction[i] for i in pairs]
    responses = [response[i] for i in pairs]
    report: dict[str, Any] = {
        "validity": _validity(len(instruction), pairs, parse_error, finish_reason),
        "diversity": {
            "distinct_1": distinct_n(instructions, 1),
            "distinct_2": distinct_n(instructions, 2),
            "near_duplicate_share": near_duplicate_share(instructions, near_duplicate_threshold),
        },
        "question_share": sum(map(asks_something, instructions)) / len(pairs) if pairs else 0.0,
        "lengths": {
            "instruction_words": summary([len(words(text)) for text in instructions]),
            "response_words": summary([len(words(text)) for text in responses]),
        },
    }
    if content is not None:
        scores = [grounding(response[i], content[i]) for i in pairs if content[i]]
        report["grounding"] = summary([s for s in scores if s is not None])
    if reward is not None:
        report["reward"] = summary([reward[i] for i in pairs])
    return report


def _pair_rows(instruction, response, parse_error) -> list[int]:
    return [
        i
        for i in range(len(instruction))
        if instruction[i] and response[i] and (parse_error is None or not parse_error[i])
    ]


def _validity(rows: int, pairs: list[int], parse_error, finish_reason) -> dict[str, Any]:
    return {
        "candidates": rows,
        "pairs": len(pairs),
        "pair_share": len(pairs) / rows if rows else 0.0,
        "parse_error": dict(Counter(e for e in parse_error if e).most_common()) if parse_error else {},
        "finish_reason": dict(Counter(f for f in finish_reason if f).most_common()) if finish_reason else {},
    }


def validity_report(ds: Dataset) -> dict[str, Any]:
    """The ``validity`` part of [`quality_report`] alone: cheap enough for every candidate of a run."""
    _check_pair_columns("validity_report", ds)
    columns = [c for c in ("instruction", "response", "parse_error", "finish_reason") if c in ds.column_names]
    data = ds.select_columns(columns).to_dict()
    pairs = _pair_rows(data["instruction"], data["response"], data.get("parse_error"))
    return _validity(ds.num_rows, pairs, data.get("parse_error"), data.get("finish_reason"))


def quality_report(
    ds: Dataset, *, candidates: Dataset | None = None, near_duplicate_threshold: float = NEAR_DUPLICATE_THRESHOLD
) -> dict[str, Any]:
    """Measure a Genstruct dataset: whether it is worth fine-tuning on, at a glance.

    Reads `instruction` and `response`, and where present `content`, `parse_error`, `finish_reason` and
    `reward`. A row is a pair when it has an instruction and a response (and no `parse_error`). Give it
    the candidates (every sample) for validity figures that mean something, as `ds` or as `candidates`; the
    best-of-n rows alone are all pairs by construction.

    Args:
        ds (`datasets.Dataset`): the pairs to measure.
        candidates (`datasets.Dataset`, *optional*): every candidate before selection; when given, the
            ``validity`` figures are measured over them ([`validity_report`]) and the rest over `ds`.
        near_duplicate_threshold (`float`, *optional*, defaults to 0.8): see [`near_duplicate_share`].

    Returns:
        `dict`:
        - ``validity``: ``candidates`` (rows), ``pairs``, ``pair_share``, and the count of each
          ``parse_error`` and ``finish_reason``.
        - ``diversity`` of instructions: ``distinct_1`` and ``distinct_2`` ([`distinct_n`]), and
          ``near_duplicate_share`` ([`near_duplicate_share`], MinHash over character 5-grams).
        - ``question_share``: the share of instructions that ask something ([`asks_something`]).
        - ``lengths``: words per instruction and per response ([`summary`]: mean, std, quantiles).
        - ``grounding`` (with `content`): the [`grounding`] of each response in its passage, summarised.
        - ``reward`` (with `reward`): the pairs' rewards, summarised.

    Raises:
        [`MissingColumnsError`]: `ds` has no `instruction` or `response` column.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({
    ...     "instruction": ["Why does the Moon show phases?", None],
    ...     "response": ["Sunlight lights half of the Moon.", None],
    ...     "content": ["The Moon shows phases as sunlight lights half of it.", "x"],
    ...     "parse_error": [None, "no_assistant_marker"],
    ... })
    >>> quality_report(ds)["validity"]["pair_share"]
    0.5
    ```
    """
    _check_pair_columns("quality_report", ds)
    optional = ("content", "parse_error", "finish_reason", "reward")
    columns = ds.select_columns([c for c in ("instruction", "response", *optional) if c in ds.column_names])
    data = columns.to_dict()
    report = compute_quality(
        instruction=data["instruction"],
        response=data["response"],
        near_duplicate_threshold=near_duplicate_threshold,
        **{c: data[c] for c in optional if c in data},
    )
    if candidates is not None:
        report["validity"] = validity_report(candidates)
    return report


def _check_pair_columns(stage: str, ds: Dataset) -> None:
    from .errors import MissingColumnsError

    missing = [c for c in ("instruction", "response") if c not in ds.column_names]
    if missing:
        raise MissingColumnsError(stage, missing, ds.column_names, "Run parse_pairs first.")
