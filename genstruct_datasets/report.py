"""One run report, measured once, and its renderings: the summary's tables, the text report and the picture.

[`run_report`] measures a run once: its counts ([`dataset_stats`]), its quality figures ([`quality_report`]), the
distributions the picture draws, the build's [`RunStats`] and its recipe, in one [`RunReport`]. The summary that
`genstruct-datasets run` prints, the dataset card, the picture and ``report --json`` are rendered from it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from .quality import DEFAULT_SAMPLE_SIZE, quality_report, sample_rows, summary, words
from .runstats import STAGES, RunStats, format_duration

if TYPE_CHECKING:
    from datasets import Dataset
    from matplotlib.figure import Figure

REPORT_FILE = "genstruct-report.json"
"""The file, next to a written dataset's card, that holds the [`RunReport`] of the split written last."""

QUALITY_FIGURE = "quality.png"
"""The picture of the distributions, next to a written dataset's card."""


def headline(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The figures worth a glance, as (name, value) rows, from a [`quality_report`].

    A report measured on a sample ends with a row that says how many rows the sampled figures measured.
    """
    rows = [
        ("pairs among candidates", f"{report['validity']['pair_share']:.1%}"),
        ("distinct-1 / distinct-2 of instructions", _pair(report["diversity"], "distinct_1", "distinct_2", "{:.3f}")),
        ("near-duplicate instructions", f"{report['diversity']['near_duplicate_share']:.1%}"),
        ("instructions that ask something", f"{report['question_share']:.1%}"),
    ]
    if report.get("grounding"):
        rows.append(("grounding in the passage (mean / median)", _pair(report["grounding"], "mean", "50%", "{:.3f}")))
    for name in ("instruction", "response"):
        lengths = report["lengths"][f"{name}_words"]
        if lengths:
            rows.append((f"{name} words (mean / median)", _pair(lengths, "mean", "50%", "{:.1f}")))
    if report.get("reward"):
        rows.append(("reward (mean / median)", _pair(report["reward"], "mean", "50%", "{:.3f}")))
    if report.get("sample"):
        sample = f"{report['sample']['rows']:,} of {report['sample']['of']:,} rows"
        rows.append(("measured on a sample of", f"{sample} (diversity, grounding, lengths, reward)"))
    return rows


def format_headline(report: dict[str, Any]) -> str:
    """The [`headline`] figures as an aligned plain-text table, for a terminal."""
    return "\n".join(["quality", *_table(headline(report))])


def format_report(report: dict[str, Any]) -> str:
    """The whole report as aligned plain-text tables, for a terminal."""
    lines = [format_headline(report)]
    validity = report["validity"]
    counts = [("candidates", str(validity["candidates"])), ("pairs", str(validity["pairs"]))]
    counts += [(f"finish_reason: {k}", str(v)) for k, v in validity["finish_reason"].items()]
    counts += [(f"parse_error: {k}", str(v)) for k, v in validity["parse_error"].items()]
    lines += ["", "counts", *_table(counts)]
    for section, figures in (
        ("grounding", report.get("grounding")),
        ("reward", report.get("reward")),
        ("instruction words", report["lengths"]["instruction_words"]),
        ("response words", report["lengths"]["response_words"]),
    ):
        if figures:
            lines += ["", section, *_table([(k, f"{v:.3f}") for k, v in figures.items()])]
    return "\n".join(lines)


def cost(stats: RunStats) -> list[tuple[str, str]]:
    """What a build cost, as (name, value) rows, from a [`RunStats`]: for the summary, the text report and the card.

    The rows give the engine, the tokens and passages generated, the speed, the wall time of each stage and the
    shards reused, so that a reader can estimate what a larger run of the same recipe would take.

    Example:

    ```py
    >>> stats = RunStats(engine="vllm 0.11.0 on cuda", passages=10, generated_passages=10, generated_tokens=4000,
    ...                  seconds={"generate": 8.0}, wall_seconds=10.0, shards=1)
    >>> dict(cost(stats))["speed"]
    '500.0 tokens/s, 1.25 passages/s'
    ```
    """
    rows = [("engine", stats.engine or "not recorded"), ("executor", stats.executor)]
    per_passage = (
        f" ({stats.generated_tokens / stats.generated_passages:,.0f} per passage)" if stats.generated_passages else ""
    )
    rows.append(("generated tokens", f"{stats.generated_tokens:,}{per_passage}"))
    rows.append(("passages generated", f"{stats.generated_passages:,} of {stats.passages:,}"))
    if stats.tokens_per_second is not None:
        passages = f", {stats.passages_per_second:.2f} passages/s" if stats.passages_per_second is not None else ""
        rows.append(("speed", f"{stats.tokens_per_second:,.1f} tokens/s{passages}"))
    else:
        rows.append(("speed", "nothing generated by this run"))
    stages = [*STAGES, *(s for s in stats.seconds if s not in STAGES)]
    times = ", ".join(f"{stage} {format_duration(stats.seconds[stage])}" for stage in stages if stage in stats.seconds)
    rows.append(
        (
            "wall time",
            f"{times}; {format_duration(stats.wall_seconds)} in all" if times else format_duration(stats.wall_seconds),
        )
    )
    rows.append(("shards reused", f"{stats.shards_reused} of {stats.shards}"))
    return rows


def format_cost(stats: RunStats) -> str:
    """The [`cost`] of a build as an aligned plain-text table, for a terminal."""
    return "\n".join(["cost", *_table(cost(stats))])


def format_run_report(report: RunReport) -> str:
    """The whole run report as aligned plain-text tables, for a terminal: quality, counts, summaries and cost."""
    lines = [format_report(report.quality)] if report.quality else ["quality", "  no pairs to measure"]
    if not report.quality:
        lines += ["", "counts", *_table([(name, str(value)) for name, value in report.counts.items()])]
    if report.stats is not None:
        lines += ["", format_cost(report.stats)]
    return "\n".join(lines)


def dataset_stats(
    ds: Dataset,
    candidates: Dataset | None = None,
    *,
    sample_size: int | None = DEFAULT_SAMPLE_SIZE,
    seed: int = 0,
    batch_size: int = 10_000,
) -> dict[str, Any]:
    """Count what a run made and summarise its rewards.

    The counts are exact, read `batch_size` rows at a time; the distinct passage ids are the one thing held,
    as Arrow strings of about 20 bytes per passage. The rewards are summarised on the rows of
    [`sample_rows`] (`sample_size`, `seed`): the same rows as the reward figures of [`quality_report`].

    Args:
        ds (`datasets.Dataset`): the dataset to publish.
        candidates (`datasets.Dataset`, *optional*): every candidate before best-of-n selection; by default
            `ds` itself is taken as the candidates.
        sample_size (`int`, *optional*, defaults to 10000): rows of `ds` whose rewards are summarised; None
            summarises every row.
        seed (`int`, *optional*, defaults to 0): seed of the sample.
        batch_size (`int`, *optional*, defaults to 10000): rows read at a time for the counts.

    Returns:
        `dict`: ``counts`` (passages, candidates, parsed, kept), ``outcomes`` (how many candidates ended
        with each `finish_reason` and `parse_error`), ``rewards`` (mean, std and quantiles of the kept
        rows' rewards; empty without a `reward` column) and, only when `ds` has more than `sample_size`
        rows, ``sample`` (the ``rows`` whose rewards were summarised, ``of`` how many, and the ``seed``).

    Raises:
        [`InvalidConfigError`]: `sample_size` is not a positive number of rows or None.

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
        c for c in ("passage_id", "finish_reason", "parse_error", "content_truncated") if c in source.column_names
    ]
    ids: list[pa.Array] = []  # the distinct passage ids of each batch, as compact Arrow strings
    reasons: Counter = Counter()
    errors: Counter = Counter()
    truncated = 0
    batches = source.select_columns(names).with_format("arrow").iter(batch_size=batch_size) if names else ()
    for batch in batches:
        if "passage_id" in names:
            ids.append(pc.unique(batch["passage_id"]))
        if "finish_reason" in names:
            reasons.update(batch["finish_reason"].to_pylist())
        if "parse_error" in names:
            errors.update(batch["parse_error"].to_pylist())
        if "content_truncated" in names:
            truncated += pc.sum(batch["content_truncated"]).as_py() or 0
    counts: dict[str, int] = {}
    if "passage_id" in names:
        counts["passages"] = pc.count_distinct(pa.chunked_array(ids), mode="all").as_py() if ids else 0
    counts["candidates"] = source.num_rows
    outcomes = {f"finish_reason: {reason}": n for reason, n in reasons.most_common()}
    if "parse_error" in names:
        counts["parsed"] = errors.pop(None, 0)
        outcomes |= {f"parse_error: {error}": n for error, n in errors.most_common()}
    if truncated:  # the model saw only the beginning of these candidates' passages
        outcomes["content truncated to the prompt budget"] = truncated
    counts["kept"] = ds.num_rows
    stats: dict[str, Any] = {"counts": counts, "outcomes": outcomes, "rewards": {}}
    if "reward" in ds.column_names:
        stats["rewards"] = summary(ds.select_columns(["reward"]).select(rows)["reward"])
    if len(rows) < ds.num_rows:
        stats["sample"] = {"rows": len(rows), "of": ds.num_rows, "seed": seed}
    return stats


def distributions(
    ds: Dataset, *, sample_size: int | None = DEFAULT_SAMPLE_SIZE, seed: int = 0, bins: int = 30
) -> dict[str, dict[str, Any]]:
    """Histograms of the rewards and of the words per instruction and per response: what the picture draws.

    Measured on the rows of [`sample_rows`] (`sample_size`, `seed`), so that a billion rows take no more memory
    than ten thousand. Values that differ only by rounding noise (a reward of 0.0078 give or take 1e-9) make one
    bar, one unit wide, centred on their value.

    Args:
        ds (`datasets.Dataset`): pairs with `instruction`, `response` and, where present, `reward`.
        sample_size (`int`, *optional*, defaults to 10000): rows measured; None measures every row.
        seed (`int`, *optional*, defaults to 0): seed of the sample.
        bins (`int`, *optional*, defaults to 30): the most bars of a histogram.

    Returns:
        `dict`: ``reward`` (with a `reward` column), ``instruction_words`` and ``response_words``, each with the
        ``edges`` (one more than the bars) and the ``counts`` of its bars, and ``rows`` and ``of``: the rows
        measured, of how many.

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
    columns = ds.select_columns([c for c in ("instruction", "response", "reward") if c in ds.column_names])
    data = columns.select(rows).to_dict()
    values: dict[str, list[float]] = {}
    if "reward" in data:
        values["reward"] = [r for r in data["reward"] if r is not None and r == r]
    for name in ("instruction", "response"):
        values[f"{name}_words"] = [len(words(text)) for text in data[name] if text]
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

    Example:

    ```py
    >>> report = RunReport(counts={"candidates": 2, "kept": 1}, stats=RunStats(generated_tokens=10))
    >>> RunReport.from_dict(report.to_dict()) == report
    True
    ```
    """

    counts: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    rewards: dict[str, float] = field(default_factory=dict)
    reward_sample: dict[str, int] | None = None
    quality: dict[str, Any] | None = None
    validity_over_candidates: bool = False
    distributions: dict[str, Any] = field(default_factory=dict)
    stats: RunStats | None = None
    recipe: dict[str, dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON types; the run's figures with their derived speeds."""
        figures = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return figures | {"stats": self.stats.to_dict() if self.stats is not None else None}

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
        path.write_text(json.dumps(figures, indent=2, default=str))  # a recipe's odd value (a path) as text
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
    quality: dict[str, Any] | None = None,
    sample_size: int | None = DEFAULT_SAMPLE_SIZE,
    seed: int = 0,
) -> RunReport:
    """Measure a run once: its counts, its quality figures and its distributions, with its cost and recipe.

    Each figure is computed here and nowhere else in a run: [`dataset_stats`] once, [`quality_report`] once (for
    rows with `instruction` and `response`), [`distributions`] once. Give the report to [`save_local`],
    [`publish`] and [`build_card`] so that they render it instead of measuring again.

    Args:
        best (`datasets.Dataset`): the rows kept (after best-of-n, a reward floor, deduplication).
        candidates (`datasets.Dataset`, *optional*): every candidate before selection; the counts, the outcomes and
            the validity figures are measured over them. By default `best` is taken as the candidates.
        stats ([`RunStats`], *optional*): what the build cost, e.g. ``RunStats.of(pairs["train"])``; None when it
            was not measured.
        recipe (`Mapping`, *optional*): how the rows were made ([`GenstructConfig.recipe`]).
        quality (`dict`, *optional*): a [`quality_report`] measured already, taken as it is instead of measured.
        sample_size (`int`, *optional*, defaults to 10000): rows that the sampled figures measure; see
            [`sample_rows`].
        seed (`int`, *optional*, defaults to 0): seed of the sample.

    Returns:
        [`RunReport`]: the run's figures.

    Raises:
        [`MissingColumnsError`]: `candidates` lack the `instruction` or `response` column that `best` has.
        [`InvalidConfigError`]: `sample_size` is not a positive number of rows or None.

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
    ```
    """
    report = counted_report(best, candidates, sample_size=sample_size, seed=seed)
    report.stats = stats
    report.recipe = {str(name): dict(settings) for name, settings in recipe.items()} if recipe is not None else None
    has_pairs = {"instruction", "response"} <= set(best.column_names) and best.num_rows
    if quality is None and has_pairs:
        quality = quality_report(best, candidates=candidates, sample_size=sample_size, seed=seed)
    if quality is not None:
        report.quality, report.validity_over_candidates = quality, candidates is not None
    if has_pairs:
        report.distributions = distributions(best, sample_size=sample_size, seed=seed)
    return report


def counted_report(
    best: Dataset, candidates: Dataset | None = None, *, sample_size: int | None = DEFAULT_SAMPLE_SIZE, seed: int = 0
) -> RunReport:
    """A [`RunReport`] of the counts alone: passages, candidates, outcomes and rewards ([`dataset_stats`]), with
    nothing else measured; [`run_report`] adds the rest."""
    counted = dataset_stats(best, candidates, sample_size=sample_size, seed=seed)
    return RunReport(
        counts=counted["counts"],
        outcomes=counted["outcomes"],
        rewards=counted["rewards"],
        reward_sample=counted.get("sample"),
    )


_PANELS = {
    "reward": ("reward", "reward-model score"),
    "instruction_words": ("instruction length", "words per instruction"),
    "response_words": ("response length", "words per response"),
}


def quality_figure(
    source: Dataset | RunReport, *, sample_size: int | None = DEFAULT_SAMPLE_SIZE, seed: int = 0
) -> Figure:
    """The picture of the reward and length distributions, as a matplotlib `Figure` (e.g. to show in a notebook).

    Its axes read plainly: numbers as they are, without a shared offset or a power of ten over the axis.

    Args:
        source (`datasets.Dataset` or [`RunReport`]): pairs to measure ([`distributions`]), or a run report whose
            distributions are drawn as they are.
        sample_size (`int`, *optional*, defaults to 10000): rows of a dataset drawn; None draws every row.
        seed (`int`, *optional*, defaults to 0): seed of the sample.

    Returns:
        `matplotlib.figure.Figure`: one panel per distribution.

    Raises:
        [`InvalidConfigError`]: `sample_size` is not a positive number of rows or None.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    found = (
        source.distributions
        if isinstance(source, RunReport)
        else distributions(source, sample_size=sample_size, seed=seed)
    )
    panels = [(name, found[name]) for name in _PANELS if name in found]
    # The object API draws without pyplot, so the caller's matplotlib backend (a notebook's) is left alone.
    figure = Figure(figsize=(4.2 * max(len(panels), 1), 3.2), layout="constrained")
    axes = figure.subplots(1, max(len(panels), 1), squeeze=False)[0]
    for axis, (name, histogram) in zip(axes, panels):
        title, unit = _PANELS[name]
        edges, counts = histogram["edges"], histogram["counts"]
        if counts:
            widths = [high - low for low, high in zip(edges, edges[1:])]
            axis.bar(edges[:-1], counts, width=widths, align="edge", color="#4c72b0", edgecolor="white")
        axis.set_title(f"{title} (n={sum(counts):,})")
        axis.set_xlabel(unit)
        axis.set_ylabel("pairs")
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        axis.ticklabel_format(axis="both", style="plain", useOffset=False)
    if found.get("rows", 0) < found.get("of", 0):
        figure.suptitle(f"a uniform sample of {found['rows']:,} of {found['of']:,} rows", fontsize="medium")
    return figure


def plot_quality(
    ds: Dataset | RunReport, path: str | Path, *, sample_size: int | None = DEFAULT_SAMPLE_SIZE, seed: int = 0
) -> Path:
    """Draw the reward distribution and the length distributions of instructions and responses to a PNG.

    The histograms are those of [`distributions`]: drawn from the rows of [`sample_rows`] (`sample_size`, `seed`),
    so that drawing a billion rows takes no more memory than drawing ten thousand; a sampled figure says so in its
    title. Given a [`RunReport`], the picture is drawn from its distributions, without reading any row.

    Args:
        ds (`datasets.Dataset` or [`RunReport`]): pairs with `instruction`, `response` and, where present,
            `reward`; or the report of a run.
        path (`str` or `Path`): the PNG to write.
        sample_size (`int`, *optional*, defaults to 10000): rows drawn; None draws every row.
        seed (`int`, *optional*, defaults to 0): seed of the sample.

    Returns:
        `Path`: the PNG.

    Raises:
        [`InvalidConfigError`]: `sample_size` is not a positive number of rows or None.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"instruction": ["Why?"], "response": ["Because."], "reward": [1.5]})
    >>> plot_quality(ds, "quality.png")  # doctest: +SKIP
    PosixPath('quality.png')
    ```
    """
    path = Path(path)
    quality_figure(ds, sample_size=sample_size, seed=seed).savefig(path, dpi=100)
    return path


def _pair(figures: dict[str, float], first: str, second: str, pattern: str) -> str:
    return f"{pattern.format(figures[first])} / {pattern.format(figures[second])}"


def _table(rows: list[tuple[str, str]]) -> list[str]:
    width = max((len(name) for name, _ in rows), default=0)
    return [f"  {name:<{width}}  {value}" for name, value in rows]
