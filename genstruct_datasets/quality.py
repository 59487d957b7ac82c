"""Quality figures of a Genstruct dataset: validity, diversity, grounding, question form, lengths, rewards.

The figures and the sample they are measured on live here; finding near-duplicates (MinHash) is
[`near_duplicates`]'s job, shared with [`dedup_pairs`].
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._checks import check_number
from .near_duplicates import NEAR_DUPLICATE_THRESHOLD, near_duplicate_share

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

DEFAULT_SAMPLE_SIZE = 10_000
"""Rows measured by the figures that need every value at once: distinct-n, near-duplicates, the summaries, the plot."""


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


def sample_rows(num_rows: int, sample_size: int | None = DEFAULT_SAMPLE_SIZE, seed: int = 0) -> Sequence[int]:
    """The rows that the sampled quality figures measure: a seeded, uniform sample of a fixed size, in order.

    Distinct-n, the near-duplicate share, the summaries of lengths, grounding and rewards, and the plot need
    every value they measure at once; measured on this sample, they take the same memory and time for a
    thousand rows as for a billion. Counts are never sampled.

    Args:
        num_rows (`int`): rows of the dataset.
        sample_size (`int`, *optional*, defaults to 10000): rows to measure; None measures every row.
        seed (`int`, *optional*, defaults to 0): seed of the draw.

    Returns:
        `Sequence[int]`: every row, ``range(num_rows)``, when there are no more than `sample_size`; otherwise
        `sample_size` distinct rows, drawn uniformly, in increasing order, the same for the same arguments.

    Raises:
        [`InvalidConfigError`]: `sample_size` is not a positive number of rows or None.

    Example:

    ```py
    >>> sample_rows(3, 10)
    range(0, 3)
    >>> rows = sample_rows(1_000_000, 5)
    >>> len(rows), rows == sorted(rows), rows == sample_rows(1_000_000, 5)
    (5, True, True)
    ```
    """
    check_number(
        "sample_size", sample_size, integer=True, minimum=1, optional=True, rule="a positive number of rows or None"
    )
    if sample_size is None or num_rows <= sample_size:
        return range(num_rows)
    return sorted(random.Random(seed).sample(range(num_rows), sample_size))


def compute_quality(
    *,
    instruction: Sequence[str | None],
    response: Sequence[str | None],
    content: Sequence[str | None] | None = None,
    parse_error: Sequence[str | None] | None = None,
    finish_reason: Sequence[str | None] | None = None,
    reward: Sequence[float | None] | None = None,
    near_duplicate_threshold: float = NEAR_DUPLICATE_THRESHOLD,
    sample_size: int | None = DEFAULT_SAMPLE_SIZE,
    seed: int = 0,
) -> dict[str, Any]:
    """Compute every quality figure from columns; see [`quality_report`] for what each one means.

    Empty strings count as missing, like None, and NaN rewards are skipped. Counts cover every row; the
    figures that need every value at once are measured on [`sample_rows`] (`sample_size`, `seed`).
    """
    named = {"content": content, "parse_error": parse_error, "finish_reason": finish_reason, "reward": reward}
    columns = {"instruction": instruction, "response": response}
    columns |= {name: values for name, values in named.items() if values is not None}
    rows = sample_rows(len(instruction), sample_size, seed)
    sample = columns if len(rows) == len(instruction) else {k: [v[i] for i in rows] for k, v in columns.items()}
    return _measure([columns], sample, near_duplicate_threshold, seed=seed)


def _measure(
    batches: Iterable[Mapping[str, Sequence]],
    sample: Mapping[str, Sequence],
    near_duplicate_threshold: float,
    *,
    seed: int,
) -> dict[str, Any]:
    """The report from the counts over `batches` (every row) and the figures measured on the `sample` rows."""
    validity, asking = _tally(batches, questions=True)
    pairs = _pair_rows(sample["instruction"], sample["response"], sample.get("parse_error"))
    instructions = [sample["instruction"][i] for i in pairs]
    responses = [sample["response"][i] for i in pairs]
    report: dict[str, Any] = {
        "validity": validity,
        "diversity": {
            "distinct_1": distinct_n(instructions, 1),
            "distinct_2": distinct_n(instructions, 2),
            "near_duplicate_share": near_duplicate_share(instructions, near_duplicate_threshold),
        },
        "question_share": asking / validity["pairs"] if validity["pairs"] else 0.0,
        "lengths": {
            "instruction_words": summary([len(words(text)) for text in instructions]),
            "response_words": summary([len(words(text)) for text in responses]),
        },
    }
    if "content" in sample:
        content = sample["content"]
        scores = [grounding(sample["response"][i], content[i]) for i in pairs if content[i]]
        report["grounding"] = summary([s for s in scores if s is not None])
    if "reward" in sample:
        report["reward"] = summary([sample["reward"][i] for i in pairs])
    measured, total = len(sample["instruction"]), validity["candidates"]
    if measured < total:
        report["sample"] = {"rows": measured, "of": total, "pairs": len(pairs), "seed": seed}
    return report


def _pair_rows(instruction, response, parse_error) -> list[int]:
    return [
        i
        for i in range(len(instruction))
        if instruction[i] and response[i] and (parse_error is None or not parse_error[i])
    ]


def _tally(batches: Iterable[Mapping[str, Sequence]], *, questions: bool = False) -> tuple[dict[str, Any], int]:
    """The ``validity`` counts over batches of columns, and how many pairs ask something (with `questions`)."""
    rows = pairs = asking = 0
    errors: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for batch in batches:
        instruction, parse_error = batch["instruction"], batch.get("parse_error")
        found = _pair_rows(instruction, batch["response"], parse_error)
        rows += len(instruction)
        pairs += len(found)
        if questions:
            asking += sum(asks_something(instruction[i]) for i in found)
        errors.update(e for e in parse_error or () if e)
        reasons.update(f for f in batch.get("finish_reason") or () if f)
    validity = {
        "candidates": rows,
        "pairs": pairs,
        "pair_share": pairs / rows if rows else 0.0,
        "parse_error": dict(errors.most_common()),
        "finish_reason": dict(reasons.most_common()),
    }
    return validity, asking


def validity_report(ds: Dataset, *, batch_size: int = 1000) -> dict[str, Any]:
    """The ``validity`` part of [`quality_report`] alone: counts over every row, read `batch_size` rows at a time."""
    _check_pair_columns("validity_report", ds)
    columns = [c for c in ("instruction", "response", "parse_error", "finish_reason") if c in ds.column_names]
    validity, _ = _tally(ds.select_columns(columns).iter(batch_size=batch_size))
    return validity


def quality_report(
    ds: Dataset,
    *,
    candidates: Dataset | None = None,
    near_duplicate_threshold: float = NEAR_DUPLICATE_THRESHOLD,
    sample_size: int | None = DEFAULT_SAMPLE_SIZE,
    seed: int = 0,
    batch_size: int = 1000,
) -> dict[str, Any]:
    """Measure a Genstruct dataset: whether it is worth fine-tuning on, at a glance.

    Reads `instruction` and `response`, and where present `content`, `parse_error`, `finish_reason` and
    `reward`. A row is a pair when it has an instruction and a response (and no `parse_error`). Give it
    the candidates (every sample) for validity figures that mean something, as `ds` or as `candidates`; the
    best-of-n rows alone are all pairs by construction.

    Its memory does not grow with the dataset: the counts (``validity``, ``question_share``) are read
    `batch_size` rows at a time over every row, and the figures that need every value at once (``diversity``,
    ``lengths``, ``grounding``, ``reward``) are measured on a uniform sample of `sample_size` rows
    ([`sample_rows`]). A dataset of no more than `sample_size` rows is measured whole.

    Args:
        ds (`datasets.Dataset`): the pairs to measure.
        candidates (`datasets.Dataset`, *optional*): every candidate before selection; when given, the
            ``validity`` figures are measured over them ([`validity_report`]) and the rest over `ds`.
        near_duplicate_threshold (`float`, *optional*, defaults to 0.8): see [`near_duplicate_share`].
        sample_size (`int`, *optional*, defaults to 10000): rows of `ds` that the sampled figures measure;
            None measures every row (memory and time then grow with the dataset).
        seed (`int`, *optional*, defaults to 0): seed of the sample.
        batch_size (`int`, *optional*, defaults to 1000): rows read at a time for the counts.

    Returns:
        `dict`:
        - ``validity``: ``candidates`` (rows), ``pairs``, ``pair_share``, and the count of each
          ``parse_error`` and ``finish_reason``, over every row.
        - ``diversity`` of instructions: ``distinct_1`` and ``distinct_2`` ([`distinct_n`]), and
          ``near_duplicate_share`` ([`near_duplicate_share`], MinHash over character 5-grams).
        - ``question_share``: the share of instructions that ask something ([`asks_something`]), over every pair.
        - ``lengths``: words per instruction and per response ([`summary`]: mean, std, quantiles).
        - ``grounding`` (with `content`): the [`grounding`] of each response in its passage, summarised.
        - ``reward`` (with `reward`): the pairs' rewards, summarised.
        - ``sample`` (only when `ds` has more than `sample_size` rows): the ``rows`` measured ``of`` the
          rows of `ds`, the ``pairs`` among them, and the ``seed``.

    Raises:
        [`MissingColumnsError`]: `ds` has no `instruction` or `response` column.
        [`InvalidConfigError`]: `sample_size` is not a positive number of rows or None.

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
    >>> quality_report(ds, sample_size=1)["sample"]
    {'rows': 1, 'of': 2, 'pairs': 0, 'seed': 0}
    ```
    """
    _check_pair_columns("quality_report", ds)
    optional = ("content", "parse_error", "finish_reason", "reward")
    columns = ds.select_columns([c for c in ("instruction", "response", *optional) if c in ds.column_names])
    rows = sample_rows(ds.num_rows, sample_size, seed)
    sample = columns.select(rows).to_dict()
    if len(rows) == ds.num_rows:
        batches = [sample]
    else:
        counted = [c for c in ("instruction", "response", "parse_error", "finish_reason") if c in ds.column_names]
        batches = columns.select_columns(counted).iter(batch_size=batch_size)
    report = _measure(batches, sample, near_duplicate_threshold, seed=seed)
    if candidates is not None:
        report["validity"] = validity_report(candidates, batch_size=batch_size)
    return report


def _check_pair_columns(stage: str, ds: Dataset) -> None:
    from .errors import MissingColumnsError

    missing = [c for c in ("instruction", "response") if c not in ds.column_names]
    if missing:
        raise MissingColumnsError(stage, missing, ds.column_names, "Run parse_pairs first.")
