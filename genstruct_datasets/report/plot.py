"""The picture of a run: the reward and length distributions of its pairs (and RIP's reward spread), drawn with
matplotlib."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..quality import DEFAULT_SAMPLE_SIZE
from .data import RunReport, distributions

if TYPE_CHECKING:
    from datasets import Dataset
    from matplotlib.figure import Figure

QUALITY_FIGURE = "quality.png"
"""The picture of the distributions, next to a written dataset's card."""


_PANELS = {
    "reward": ("reward", "reward-model score"),
    "instruction_words": ("instruction length", "words per instruction"),
    "response_words": ("response length", "words per response"),
    "reward_min": ("lowest reward", "lowest reward of the passage's samples"),
    "reward_gap": ("reward gap", "best minus lowest reward"),
}

_COLUMNS = 3
"""Panels side by side; more go on another row."""


def _cut_points(filters: Mapping[str, Mapping[str, Any]], panel: str) -> list[tuple[str, float]]:
    """The thresholds the filters computed on a panel's values: each filter's figure named ``{panel}_cut``."""
    cuts = [(name, figures.get(f"{panel}_cut")) for name, figures in filters.items()]
    return [(name, float(cut)) for name, cut in cuts if isinstance(cut, (int, float)) and math.isfinite(cut)]


def _one_value(edges: list[float], counts: list[int]) -> float | None:
    """The value of a histogram whose values are all the same (one bar, see [`distributions`]), else None."""
    return (edges[0] + edges[1]) / 2 if len(counts) == 1 else None


def _span(value: float) -> float:
    """Half the width of the axis around a single value: a tenth of it, and no less than 0.01."""
    return max(abs(value) * 0.1, 0.01)


def quality_figure(
    source: Dataset | RunReport, *, sample_size: int | None = DEFAULT_SAMPLE_SIZE, seed: int = 0
) -> Figure:
    """The picture of the reward and length distributions, as a matplotlib `Figure` (e.g. to show in a notebook).

    Its axes read plainly: numbers as they are, without a shared offset or a power of ten over the axis; a
    distribution of one value (every reward the same) spans a tenth of it on either side, and its axis and title name
    the value. Given a run
    report whose filters computed a threshold on a drawn distribution (RIP's ``reward_min_cut`` and
    ``reward_gap_cut``), the threshold is a dashed vertical line on that panel, named in its legend.

    Args:
        source (`datasets.Dataset` or [`RunReport`]): pairs to measure ([`distributions`]), or a run report whose
            distributions are drawn as they are.
        sample_size (`int`, *optional*, defaults to 10000): rows of a dataset drawn; None draws every row.
        seed (`int`, *optional*, defaults to 0): seed of the sample.

    Returns:
        `matplotlib.figure.Figure`: one panel per distribution, three to a row.

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
    filters = source.filters if isinstance(source, RunReport) else {}
    panels = [(name, found[name]) for name in _PANELS if name in found]
    columns = min(max(len(panels), 1), _COLUMNS)
    rows = max(math.ceil(len(panels) / columns), 1)
    # The object API draws without pyplot, so the caller's matplotlib backend (a notebook's) is left alone.
    figure = Figure(figsize=(4.2 * columns, 3.2 * rows), layout="constrained")
    axes = list(figure.subplots(rows, columns, squeeze=False).flat)
    for spare in axes[max(len(panels), 1) :]:
        figure.delaxes(spare)
    for axis, (name, histogram) in zip(axes, panels):
        title, unit = _PANELS[name]
        edges, counts = histogram["edges"], histogram["counts"]
        same = _one_value(edges, counts)
        if same is not None:  # one bar: a span around the value, which the axis names
            half = _span(same)
            axis.bar([same], counts, width=half / 5, color="#4c72b0", edgecolor="white")
            axis.set_xlim(same - half, same + half)
            axis.set_xticks([same])
        elif counts:
            widths = [high - low for low, high in zip(edges, edges[1:])]
            axis.bar(edges[:-1], counts, width=widths, align="edge", color="#4c72b0", edgecolor="white")
        axis.set_title(f"{title} (n={sum(counts):,}" + (f", all {same:.4g})" if same is not None else ")"))
        axis.set_xlabel(unit)
        axis.set_ylabel("pairs")
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
        axis.ticklabel_format(axis="both", style="plain", useOffset=False)
        for filter_name, cut in _cut_points(filters, name):
            axis.axvline(cut, color="#c44e52", linestyle="--", label=f"{filter_name} cut {cut:.4g}")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize="small")
    if found.get("rows", 0) < found.get("of", 0):
        figure.suptitle(f"a uniform sample of {found['rows']:,} of {found['of']:,} rows", fontsize="medium")
    return figure


def plot_quality(
    ds: Dataset | RunReport, path: str | Path, *, sample_size: int | None = DEFAULT_SAMPLE_SIZE, seed: int = 0
) -> Path:
    """Draw the reward distribution and the length distributions of instructions and responses to a PNG (and the
    reward spread of RIP, with its cut points, where the rows or the report have them).

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
