"""The run report as data: every figure of one run, measured once ([`run_report`]), saved and read back.

[`run_report`] measures a run once: its counts and per-stage accounts ([`dataset_stats`], one pass over the
candidates), its quality figures ([`quality_report`]), the distributions the picture draws, the build's [`RunStats`]
and its recipe, in one [`RunReport`]. Its renderings live beside it: the summary text in [`report.text`], the
picture in [`report.plot`], the dataset card in [`report.card`].
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from .._atomic import atomic_path
from .._paths import looks_local
from ..errors import InvalidConfigError
from ..progress import RunCost
from ..quality import DEFAULT_SAMPLE_SIZE, quality_report, sample_rows, summary, words
from ..runstats import RunStats
from ..stage_counts import StageCount, stage, stages_from

if TYPE_CHECKING:
    from datasets import Dataset

REPORT_FILE = "genstruct-report.json"
"""The file, next to a written dataset's card, that holds the [`RunReport`] of the split written last."""

_GENERATED = pa.array(["stop", "length"])
"""The `finish_reason`s of a completion: a passage with one of them was generated."""


def dataset_stats(
    ds: Dataset,
    candidates: Dataset | None = None,
    *,
    sample_size: int | None = DEFAULT_SAMPLE_SIZE,
    seed: int = 0,
    batch_size: int = 10_000,
    selected: bool | None = None,
    filters: Sequence[StageCount] = (),
) -> dict[str, Any]:
    """Count what a run made, stage by stage, and summarise its rewards.

    The counts are exact, read `batch_size` rows at a time in one pass over the candidates; the distinct passage
    ids are the one thing held, as Arrow strings of about 20 bytes per passage. The rewards are summarised on the
    rows of [`sample_rows`] (`sample_size`, `seed`): the same rows as the reward figures of [`quality_report`].

    The same pass counts the stages, each once, in pipeline order, where the candidates have their columns:

    - ``generate`` (passages, with `passage_id` and `finish_reason`): a passage is kept when one of its samples
      ended with ``stop`` or ``length``; the others are dropped under the `finish_reason` of a sample.
    - ``parse`` (candidates, with `parse_error`): the rows of the passages kept; a row is kept when it holds a pair,
      dropped under its `finish_reason` when it was not generated, else under its `parse_error`.
    - ``score`` (pairs, where a `reward` holds a value): a pair is kept when it has a reward (not NaN).
    - ``select`` (pairs, with `selected`): best-of-n keeps one pair of each passage (``not_best`` for the others)
      unless it fell below the reward floor (``below_min_reward``); what it kept is `ds` and what `filters` dropped.
    - then the `filters`, as they are given.

    Args:
        ds (`datasets.Dataset`): the dataset to publish.
        candidates (`datasets.Dataset`, *optional*): every candidate before best-of-n selection; by default
            `ds` itself is taken as the candidates.
        sample_size (`int`, *optional*, defaults to 10000): rows of `ds` whose rewards are summarised; None
            summarises every row.
        seed (`int`, *optional*, defaults to 0): seed of the sample.
        batch_size (`int`, *optional*, defaults to 10000): rows read at a time for the counts.
        selected (`bool`, *optional*): `ds` is the best-of-n selection of `candidates` (then filtered by
            `filters`); defaults to whether `candidates` are given apart from `ds`.
        filters (`Sequence[StageCount]`, *optional*): the accounts of the filters that ran after selection, in order
            (e.g. [`dedup_with_count`]'s).

    Returns:
        `dict`: ``counts`` (passages, candidates, parsed, kept), ``outcomes`` (how many candidates ended
        with each `finish_reason` and `parse_error`), ``rewards`` (mean, std and quantiles of the kept
        rows' rewards; empty without a `reward` column), ``stages`` (a list of [`StageCount`]) and, only when `ds`
        has more than `sample_size` rows, ``sample`` (the ``rows`` whose rewards were summarised, ``of`` how many,
        and the ``seed``).

    Raises:
        [`InvalidConfigError`]: `sample_size` is not a positive number of rows or None, or the stages do not add
            up (`ds` holds more rows than best-of-n can have kept of `candidates`).

    Example:

    ```py
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"passage_id": ["a", "b"], "parse_error": [None, "empty_response"]})
    >>> dataset_stats(ds)["counts"]
    {'passages': 2, 'candidates': 2, 'parsed': 1, 'kept': 2}
    ```
    """
    rows = sample_rows(ds.num_rows, sample_size, seed)
    source = ds if candidates is None else candidates
    names = [
        c
        for c in ("passage_id", "finish_reason", "parse_error", "content_truncated", "reward")
        if c in source.column_names
    ]
    tally = _Tally(names)
    if names:
        for batch in source.select_columns(names).with_format("arrow").iter(batch_size=batch_size):
            tally.add(batch)
    counts: dict[str, int] = {}
    if "passage_id" in names:
        counts["passages"] = _distinct(tally.ids)
    counts["candidates"] = source.num_rows
    outcomes = {f"finish_reason: {reason}": n for reason, n in tally.reasons.most_common()}
    if "parse_error" in names:
        errors = tally.errors.copy()
        counts["parsed"] = errors.pop(None, 0)
        outcomes |= {f"parse_error: {error}": n for error, n in errors.most_common()}
    if tally.truncated:  # the model saw only the beginning of these candidates' passages
        outcomes["content truncated to the prompt budget"] = tally.truncated
    counts["kept"] = ds.num_rows
    if selected is None:
        selected = candidates is not None and candidates is not ds
    stages = tally.stages(counts, selected=selected, kept=ds.num_rows, filters=filters)
    stats: dict[str, Any] = {"counts": counts, "outcomes": outcomes, "rewards": {}, "stages": stages}
    if "reward" in ds.column_names:
        stats["rewards"] = summary(ds.select_columns(["reward"]).select(rows)["reward"])
    if len(rows) < ds.num_rows:
        stats["sample"] = {"rows": len(rows), "of": ds.num_rows, "seed": seed}
    return stats


class _Tally:
    """What [`dataset_stats`]'s one pass over the candidates counts, batch by batch, and the stages made of it."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = set(names)
        self.ids: list[pa.Array] = []  # the distinct passage ids of each batch, as compact Arrow strings
        self.generated_ids: list[pa.Array] = []  # ... of the passages with a generated sample
        self.failed: list[pa.Table] = []  # (passage, finish_reason, rows) of the samples not generated
        self.pair_ids: list[pa.Array] = []  # ... of the passages with a pair (a scored one, with rewards)
        self.reasons: Counter = Counter()
        self.errors: Counter = Counter()  # parse_error of every row
        self.generated_errors: Counter = Counter()  # parse_error of the rows generated
        self.truncated = self.pairs = self.scored = self.rewarded = 0

    def add(self, batch: pa.Table) -> None:
        """Count one batch."""
        generated = pa.array([True] * batch.num_rows)
        if "finish_reason" in self.names:
            reason = batch["finish_reason"]
            self.reasons.update(reason.to_pylist())
            generated = pc.fill_null(pc.is_in(reason, value_set=_GENERATED), False)
        pair = generated
        if "parse_error" in self.names:
            error = batch["parse_error"]
            self.errors.update(error.to_pylist())
            self.generated_errors.update(error.filter(generated).to_pylist())
            pair = pc.and_(generated, pc.is_null(error))
        self.pairs += pc.sum(pair.cast(pa.int64())).as_py() or 0
        scored = pair
        if "reward" in self.names:
            reward = batch["reward"].cast(pa.float64())
            valid = pc.fill_null(pc.and_(pc.is_valid(reward), pc.invert(pc.is_nan(reward))), False)
            self.rewarded += pc.sum(pc.is_valid(reward).cast(pa.int64())).as_py() or 0
            scored = pc.and_(pair, valid)
            self.scored += pc.sum(scored.cast(pa.int64())).as_py() or 0
        if "content_truncated" in self.names:
            self.truncated += pc.sum(batch["content_truncated"]).as_py() or 0
        if "passage_id" in self.names:
            passage = batch["passage_id"]
            self.ids.append(pc.unique(passage))
            self.pair_ids.append(pc.unique(passage.filter(scored)))
            if "finish_reason" in self.names:
                self.generated_ids.append(pc.unique(passage.filter(generated)))
                lost = pa.table({"passage": passage, "reason": batch["finish_reason"]}).filter(pc.invert(generated))
                self.failed.append(lost.group_by(["passage", "reason"]).aggregate([([], "count_all")]))

    def stages(
        self, counts: Mapping[str, int], *, selected: bool, kept: int, filters: Sequence[StageCount]
    ) -> list[StageCount]:
        """The stages counted, in pipeline order (see [`dataset_stats`]), then the `filters`."""
        found: list[StageCount] = []
        lost_rows: Counter = Counter()  # rows of the passages dropped by generation, by finish_reason
        if {"passage_id", "finish_reason"} <= self.names:
            lost_passages, lost_rows = self._lost()
            found.append(stage("generate", "passages", counts["passages"], lost_passages))
        if "parse_error" in self.names:
            not_generated = {r: n - lost_rows[r] for r, n in self.reasons.items() if r not in ("stop", "length")}
            dropped = Counter({str(r): n for r, n in not_generated.items()})
            dropped.update({str(e): n for e, n in self.generated_errors.items() if e is not None})
            found.append(stage("parse", "candidates", counts["candidates"] - sum(lost_rows.values()), dropped))
            if self.rewarded:
                found.append(stage("score", "pairs", self.pairs, {"unscored": self.pairs - self.scored}))
            if selected and "passage_id" in self.names:
                seen = self.scored if self.rewarded else self.pairs
                passages = _distinct(self.pair_ids)
                kept_by_select = kept + sum(sum(f.dropped.values()) for f in filters)
                if kept_by_select > passages:
                    raise InvalidConfigError(
                        f"The rows kept ({kept}, and {kept_by_select - kept} dropped by the filters given) are more "
                        f"than best-of-n keeps of these candidates: one pair of each of {passages} passages. Give "
                        "the rows select_best kept, the accounts of the filters that ran after it (filters=), or "
                        "recipe={'selection': {'best_of_n': False}} for rows that were not selected."
                    )
                below = {"not_best": seen - passages, "below_min_reward": passages - kept_by_select}
                found.append(stage("select", "pairs", seen, below))
        return [*found, *filters]

    def _lost(self) -> tuple[Counter, Counter]:
        """The passages without a generated sample, by the `finish_reason` of one of them, and their rows by reason."""
        if not self.failed:
            return Counter(), Counter()
        failed = pa.concat_tables(self.failed)
        generated = pa.chunked_array(self.generated_ids, type=failed["passage"].type)
        failed = failed.filter(pc.invert(pc.is_in(failed["passage"], value_set=generated.combine_chunks())))
        rows = Counter()
        for reason, n in zip(failed["reason"].to_pylist(), failed["count_all"].to_pylist()):
            rows[reason] += n
        # One reason per passage: the least of its samples' reasons, so that the same data gives the same count.
        per_passage = failed.group_by("passage").aggregate([("reason", "min")])["reason_min"]
        return Counter(per_passage.to_pylist()), rows


def _distinct(ids: list[pa.Array]) -> int:
    return pc.count_distinct(pa.chunked_array(ids), mode="all").as_py() if ids else 0


SPREAD_PANELS = ("reward_min", "reward_gap")
"""The distributions of the reward spread, drawn from the pairs before the filters (see [`run_report`])."""


def distributions(
    ds: Dataset, *, sample_size: int | None = DEFAULT_SAMPLE_SIZE, seed: int = 0, bins: int = 30
) -> dict[str, dict[str, Any]]:
    """Histograms of the rewards, of the words per instruction and per response and, where the rows have them, of the
    reward spread of RIP (`reward_min`, `reward_gap`): what the picture draws.

    Measured on the rows of [`sample_rows`] (`sample_size`, `seed`), so that a billion rows take no more memory
    than ten thousand. Values that differ only by rounding noise (a reward of 0.0078 give or take 1e-9) make one
    bar, one unit wide, centred on their value.

    Args:
        ds (`datasets.Dataset`): pairs with `instruction`, `response` and, where present, `reward`, `reward_min` and
            `reward_gap` ([`reward_spread`]).
        sample_size (`int`, *optional*, defaults to 10000): rows measured; None measures every row.
        seed (`int`, *optional*, defaults to 0): seed of the sample.
        bins (`int`, *optional*, defaults to 30): the most bars of a histogram.

    Returns:
        `dict`: ``reward`` (with a `reward` column), ``instruction_words``, ``response_words``, ``reward_min`` and
        ``reward_gap`` (with those columns; None, the value of a passage without a scored sample, is not counted),
        each with the ``edges`` (one more than the bars) and the ``counts`` of its bars, and ``rows`` and ``of``: the
        rows measured, of how many.

    Raises:
        [`InvalidConfigError`]: `sample_size` is not a positive number of rows or None.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"instruction": ["Why?", "Why not?"], "response": ["Because.", "It is so."]})
    >>> distributions(ds)["response_words"]
    {'edges': [1.0, 1.5, 2.0], 'counts': [1, 1]}
    ```
    """
    rows = sample_rows(ds.num_rows, sample_size, seed)
    numbers = ("reward", "reward_min", "reward_gap")
    columns = ds.select_columns([c for c in ("instruction", "response", *numbers) if c in ds.column_names])
    data = columns.select(rows).to_dict()
    values: dict[str, list[float]] = {}
    if "reward" in data:
        values["reward"] = [r for r in data["reward"] if r is not None and r == r]
    for name in ("instruction", "response"):
        values[f"{name}_words"] = [len(words(text)) for text in data[name] if text]
    for name in numbers[1:]:
        if name in data:
            values[name] = [r for r in data[name] if r is not None and r == r]
    found: dict[str, Any] = {name: _histogram(numbers, bins) for name, numbers in values.items()}
    return found | {"rows": len(rows), "of": ds.num_rows}


def _histogram(values: list[float], bins: int) -> dict[str, list]:
    import numpy as np

    if not values:
        return {"edges": [], "counts": []}
    low, high = min(values), max(values)
    if high - low <= 1e-6 * max(1.0, abs(low), abs(high)):  # one value, up to rounding noise
        low, high, bins = (low + high) / 2 - 0.5, (low + high) / 2 + 0.5, 1
    counts, edges = np.histogram(values, bins=min(bins, len(set(values))), range=(low, high))
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


@dataclass
class RunReport:
    """Every figure of one run, measured once by [`run_report`]; the summary, the card, the picture and
    ``report --json`` are renderings of it.

    Args:
        counts (`dict[str, int]`): passages, candidates, parsed and kept rows ([`dataset_stats`]).
        outcomes (`dict[str, int]`): how many candidates ended with each `finish_reason` and `parse_error`.
        stages (`list[StageCount]`): what each stage saw, kept and dropped by reason, in pipeline order: the
            build's (``passages``), then ``generate``, ``parse``, ``score``, ``select`` and the filters.
        rewards (`dict[str, float]`): mean, std and quantiles of the kept rows' rewards; empty without rewards.
        reward_sample (`dict`, *optional*): the ``rows`` whose rewards were summarised, ``of`` how many, and the
            ``seed``, when they are a sample.
        quality (`dict`, *optional*): the [`quality_report`] of the kept pairs, validity over the candidates when
            `validity_over_candidates`; None for rows without pairs.
        validity_over_candidates (`bool`, *optional*, defaults to `False`): the validity figures count every
            candidate, not only the rows kept.
        distributions (`dict`, *optional*): the histograms the picture draws ([`distributions`]).
        stats ([`RunStats`], *optional*): what the build cost; None when it was not measured (a dataset that
            this package did not build, or an older build).
        recipe (`dict`, *optional*): how the rows were made, as sections of settings
            ([`GenstructConfig.recipe`]).
        filters (`dict[str, dict]`, *optional*): the figures of each filter that ran, by its name (a
            [`FilterOutcome`]'s `figures`: its settings and the thresholds it computed, e.g. RIP's
            ``reward_min_cut``); the picture marks a figure named ``{histogram}_cut`` on that histogram.
        cost ([`RunCost`], *optional*): what the build cost at the run's prices (``--price-per-million-tokens``,
            ``--price-per-gpu-hour``); None without prices.

    Example:

    ```py
    >>> report = RunReport(counts={"candidates": 2, "kept": 1}, stats=RunStats(generated_tokens=10))
    >>> RunReport.from_dict(report.to_dict()) == report
    True
    ```
    """

    counts: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    stages: list[StageCount] = field(default_factory=list)
    rewards: dict[str, float] = field(default_factory=dict)
    reward_sample: dict[str, int] | None = None
    quality: dict[str, Any] | None = None
    validity_over_candidates: bool = False
    distributions: dict[str, Any] = field(default_factory=dict)
    stats: RunStats | None = None
    recipe: dict[str, dict[str, Any]] | None = None
    filters: dict[str, dict[str, Any]] = field(default_factory=dict)
    cost: RunCost | None = None

    def __post_init__(self) -> None:
        self.stages = stages_from(self.stages)
        if isinstance(self.cost, Mapping):
            self.cost = RunCost(**self.cost)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON types; the run's figures with their derived speeds."""
        figures = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        stats = self.stats.to_dict() if self.stats is not None else None
        cost = dataclasses.asdict(self.cost) if self.cost is not None else None
        return figures | {"stages": [s.to_dict() for s in self.stages], "stats": stats, "cost": cost}

    @classmethod
    def from_dict(cls, figures: Mapping[str, Any]) -> RunReport:
        """The inverse of [`to_dict`]; unknown keys (written by a later version) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        report = cls(**{key: value for key, value in figures.items() if key in names})
        if isinstance(report.stats, Mapping):
            report.stats = RunStats.from_dict(report.stats)
        return report

    def save(self, folder: str | os.PathLike, *, config_name: str = "default", split: str = "train") -> Path:
        """Write the report to ``{folder}/genstruct-report.json``, naming the config and split it describes.

        Returns:
            `Path`: the file.
        """
        path = Path(folder) / REPORT_FILE
        figures = {"config_name": config_name, "split": split, **self.to_dict()}
        with atomic_path(path) as partial:  # whole or not at all
            partial.write_text(json.dumps(figures, indent=2, default=str))  # a recipe's odd value (a path) as text
        return path

    @classmethod
    def load(
        cls, folder: str | os.PathLike, *, config_name: str | None = None, split: str = "train"
    ) -> RunReport | None:
        """The report saved in `folder` for that config (None: any) and split, or None when there is none.

        A report that cannot be read, or that describes another config or split, is None too: the caller then
        measures the data instead.
        """
        try:
            figures = json.loads((Path(folder) / REPORT_FILE).read_text())
            if figures.get("split") != split or config_name not in (None, figures.get("config_name")):
                return None
            return cls.from_dict(figures)
        except (OSError, ValueError, TypeError, AttributeError):
            return None


def run_report(
    best: Dataset,
    candidates: Dataset | None = None,
    *,
    stats: RunStats | None = None,
    recipe: Mapping[str, Mapping[str, Any]] | None = None,
    filters: Sequence[StageCount] = (),
    filters_figures: Mapping[str, Mapping[str, Any]] | None = None,
    selection: Dataset | None = None,
    sample_size: int | None = DEFAULT_SAMPLE_SIZE,
    seed: int = 0,
    full_paths: bool = False,
) -> RunReport:
    """Measure a run once: its counts and stages, its quality figures and its distributions, with its cost and recipe.

    Each figure is computed here and nowhere else in a run: [`dataset_stats`] once (the counts and the stages, in one
    pass over the candidates), [`quality_report`] once (for rows with `instruction` and `response`),
    [`distributions`] once. Give the report to [`save_local`], [`publish`] and [`build_card`] so that they render it
    instead of measuring again.

    Args:
        best (`datasets.Dataset`): the rows kept (after best-of-n, a reward floor, deduplication).
        candidates (`datasets.Dataset`, *optional*): every candidate before selection; the counts, the outcomes, the
            stages and the validity figures are measured over them. By default `best` is taken as the candidates.
        stats ([`RunStats`], *optional*): what the build cost, e.g. ``RunStats.of(pairs["train"])``; None when it
            was not measured. Its `stages` (the ``passages`` stage) come first in the report's.
        recipe (`Mapping`, *optional*): how the rows were made ([`GenstructConfig.recipe`]). A recipe whose
            ``selection`` says ``best_of_n: False`` has no ``select`` stage, even with `candidates`. Its local paths
            are named as [`published_settings`] names them, unless `full_paths`.
        filters (`Sequence[StageCount]`, *optional*): the accounts of the filters that ran on the selection, in
            order (e.g. MinHash dedup's, from [`dedup_with_count`]); they end the stages.
        filters_figures (`Mapping[str, Mapping]`, *optional*): the figures of the filters that ran, by name
            (``{outcome.count.name: outcome.figures}`` of each [`FilterOutcome`]): their settings and thresholds,
            kept as they are in [`RunReport.filters`].
        selection (`datasets.Dataset`, *optional*): the pairs as selection kept them, before the filters: the
            picture draws their reward spread (`reward_min`, `reward_gap`), on which RIP placed its cut points; the
            other distributions are of `best`.
        sample_size (`int`, *optional*, defaults to 10000): rows that the sampled figures measure; see
            [`sample_rows`].
        seed (`int`, *optional*, defaults to 0): seed of the sample.
        full_paths (`bool`, *optional*, defaults to `False`): keep the full paths of local models and sources in
            the recipe and the filters' figures, rather than their names and content hashes.

    Returns:
        [`RunReport`]: the run's figures.

    Raises:
        [`MissingColumnsError`]: `candidates` lack the `instruction` or `response` column that `best` has.
        [`InvalidConfigError`]: `sample_size` is not a positive number of rows or None, or the stages do not add up.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> candidates = Dataset.from_dict({
    ...     "passage_id": ["m", "m"], "instruction": ["Why does the Moon show phases?", None],
    ...     "response": ["Sunlight lights half of it.", None], "parse_error": [None, "no_assistant_marker"],
    ... })
    >>> report = run_report(candidates.select([0]), candidates)
    >>> report.counts, report.quality["validity"]["pair_share"]
    ({'passages': 1, 'candidates': 2, 'parsed': 1, 'kept': 1}, 0.5)
    >>> [(s.name, s.seen, s.kept, s.dropped) for s in report.stages]
    [('parse', 2, 1, {'no_assistant_marker': 1}), ('select', 1, 1, {})]
    ```
    """
    best_of_n = (recipe or {}).get("selection", {}).get("best_of_n", True) is not False
    selected = candidates is not None and candidates is not best and best_of_n
    report = counted_report(
        best, candidates, stats=stats, selected=selected, filters=filters, sample_size=sample_size, seed=seed
    )
    shown = (lambda settings: dict(settings)) if full_paths else published_settings
    report.recipe = {str(name): shown(settings) for name, settings in recipe.items()} if recipe is not None else None
    report.filters = {str(name): shown(figures) for name, figures in (filters_figures or {}).items()}
    if {"instruction", "response"} <= set(best.column_names) and best.num_rows:
        report.quality = quality_report(best, candidates=candidates, sample_size=sample_size, seed=seed)
        report.validity_over_candidates = candidates is not None
        report.distributions = distributions(best, sample_size=sample_size, seed=seed)
        if selection is not None and selection is not best:  # the spread as the filters saw it, cut points and all
            before = distributions(selection, sample_size=sample_size, seed=seed)
            report.distributions |= {name: before[name] for name in SPREAD_PANELS if name in before}
    return report


PATH_SETTINGS = frozenset({"source", "model", "tokenizer", "embedding_model", "against", "benchmarks"})
"""The settings that name a model, a source or a dataset: a Hub id, or local files, relative paths included."""
_LOCAL_LABEL = re.compile(r" \(local(, sha256 [0-9a-f]{12})?\)$")
_WHOLE_FILE_BYTES = 2**20
"""[`local_name`] hashes the first and the last this many bytes of a file (the whole of a file up to twice that)."""


def published_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """`settings` (a section of a recipe, or a filter's figures) as the card and the run report publish them: each
    local path named by [`local_name`], never as a path of this machine; other values as they are.

    A value is a local path when it is one of [`PATH_SETTINGS`] and names something here, or when it can only be a
    path (``/...``, ``./...``, ``~/...``: see [`looks_local`]) whatever its setting; a URL is not.

    Example:

    ```py
    >>> published_settings({"model": "/home/me/models/genstruct", "revision": None, "num_samples": 4})
    {'model': 'genstruct (local)', 'revision': None, 'num_samples': 4}
    >>> published_settings({"model": "NousResearch/Genstruct-7B"})
    {'model': 'NousResearch/Genstruct-7B'}
    ```
    """
    return {name: _published(name, value) for name, value in settings.items()}


def _published(name: str, value: Any) -> Any:
    if isinstance(value, Mapping):
        return published_settings(value)
    if isinstance(value, (list, tuple)):
        return [_published(name, item) for item in value]
    if not isinstance(value, str) or "://" in value or is_local_name(value):
        return value
    if looks_local(value) or (name in PATH_SETTINGS and Path(value).exists()):
        return local_name(value)
    return value


def local_name(path: str | os.PathLike) -> str:
    """A local file or folder as the card and the run report name it: its name and a short hash of its content
    (the same files, the same name, on any machine), e.g. ``passages.jsonl (local, sha256 3f9a1c2b7d4e)``; its name
    alone, ``(local)``, where it is not here.

    The hash covers each file's path within the folder, its size, and its bytes: whole up to 2 MiB, else the first
    and the last MiB (weights are told apart by those without reading gigabytes). Hidden files are left out.
    """
    path = Path(path).expanduser()
    name = path.resolve().name or str(path)
    if not path.exists():
        return f"{name} (local)"
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        relative = file.relative_to(path).as_posix() if file != path else ""
        if any(part.startswith(".") for part in Path(relative).parts):
            continue
        size = file.stat().st_size
        digest.update(f"{relative}\0{size}\0".encode())
        with file.open("rb") as content:
            digest.update(content.read(_WHOLE_FILE_BYTES))
            if size > 2 * _WHOLE_FILE_BYTES:
                content.seek(-_WHOLE_FILE_BYTES, os.SEEK_END)
            digest.update(content.read(_WHOLE_FILE_BYTES))
    return f"{name} (local, sha256 {digest.hexdigest()[:12]})"


def is_local_name(value: str) -> bool:
    """Whether `value` is a name that [`local_name`] made (so not a Hub id to link to)."""
    return bool(_LOCAL_LABEL.search(value))


def counted_report(
    best: Dataset,
    candidates: Dataset | None = None,
    *,
    stats: RunStats | None = None,
    selected: bool | None = None,
    filters: Sequence[StageCount] = (),
    sample_size: int | None = DEFAULT_SAMPLE_SIZE,
    seed: int = 0,
) -> RunReport:
    """A [`RunReport`] of the counts alone: passages, candidates, outcomes, stages and rewards ([`dataset_stats`]),
    with the build's `stats` and nothing else measured; [`run_report`] adds the rest."""
    counted = dataset_stats(best, candidates, sample_size=sample_size, seed=seed, selected=selected, filters=filters)
    return RunReport(
        counts=counted["counts"],
        outcomes=counted["outcomes"],
        stages=[*(stats.stages if stats is not None else ()), *counted["stages"]],
        rewards=counted["rewards"],
        reward_sample=counted.get("sample"),
        stats=stats,
    )
