"""The picture of a run: the reward and length distributions of its pairs, drawn with matplotlib."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

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
