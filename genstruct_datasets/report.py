"""Show quality figures to people: a headline table, a text report and a picture of the distributions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .quality import DEFAULT_SAMPLE_SIZE, sample_rows, words

if TYPE_CHECKING:
    from datasets import Dataset


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


def plot_quality(
    ds: Dataset, path: str | Path, *, sample_size: int | None = DEFAULT_SAMPLE_SIZE, seed: int = 0
) -> Path:
    """Draw the reward distribution and the length distributions of instructions and responses to a PNG.

    The histograms are drawn from the rows of [`sample_rows`] (`sample_size`, `seed`), so that drawing a
    billion rows takes no more memory than drawing ten thousand; a sampled figure says so in its title.

    Args:
        ds (`datasets.Dataset`): pairs with `instruction`, `response` and, where present, `reward`.
        path (`str` or `Path`): the PNG to write.
        sample_size (`int`, *optional*, defaults to 10000): rows drawn; None draws every row.
        seed (`int`, *optional*, defaults to 0): seed of the sample.

    Returns:
        `Path`: the PNG.

    Raises:
        [`InvalidConfigError`]: `sample_size` is not a positive number of rows or None.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    rows = sample_rows(ds.num_rows, sample_size, seed)
    columns = ds.select_columns([c for c in ("instruction", "response", "reward") if c in ds.column_names])
    data = columns.select(rows).to_dict()
    panels = []
    if "reward" in data:
        rewards = [r for r in data["reward"] if r is not None and r == r]
        panels.append(("reward", rewards, "reward-model score"))
    for name in ("instruction", "response"):
        panels.append((f"{name} length", [len(words(t)) for t in data[name] if t], "words"))
    # The object API draws without pyplot, so the caller's matplotlib backend (a notebook's) is left alone.
    figure = Figure(figsize=(4.2 * len(panels), 3.2), layout="constrained")
    axes = figure.subplots(1, len(panels))
    for axis, (title, values, unit) in zip(axes, panels):
        axis.hist(values, bins=min(30, max(len(set(values)), 1)), color="#4c72b0", edgecolor="white")
        axis.set_title(f"{title} (n={len(values)})")
        axis.set_xlabel(unit)
        axis.set_ylabel("pairs")
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    if len(rows) < ds.num_rows:
        figure.suptitle(f"a uniform sample of {len(rows):,} of {ds.num_rows:,} rows", fontsize="medium")
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path


def _pair(figures: dict[str, float], first: str, second: str, pattern: str) -> str:
    return f"{pattern.format(figures[first])} / {pattern.format(figures[second])}"


def _table(rows: list[tuple[str, str]]) -> list[str]:
    width = max((len(name) for name, _ in rows), default=0)
    return [f"  {name:<{width}}  {value}" for name, value in rows]
