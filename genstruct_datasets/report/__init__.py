"""One run report, measured once, and its renderings.

- [`report.data`]: the report as data: [`RunReport`], measured by [`run_report`] (counts, stages, quality figures,
  distributions, cost and recipe), saved as ``genstruct-report.json``.
- [`report.text`]: the summary and the ``report`` command's tables.
- [`report.plot`]: the picture of the distributions, ``quality.png``.
- [`report.card`]: the dataset card.

Every name is importable from `genstruct_datasets.report` as it was when the report was one module.
"""

from .card import CardInfo, build_card, sample_pairs, size_category
from .data import REPORT_FILE, RunReport, counted_report, dataset_stats, distributions, run_report
from .plot import QUALITY_FIGURE, plot_quality, quality_figure
from .text import (
    cost,
    filter_rows,
    format_cost,
    format_filters,
    format_headline,
    format_report,
    format_run_report,
    format_stages,
    format_summary,
    headline,
    stage_rows,
)

__all__ = [
    "QUALITY_FIGURE",
    "REPORT_FILE",
    "CardInfo",
    "RunReport",
    "build_card",
    "cost",
    "counted_report",
    "dataset_stats",
    "distributions",
    "filter_rows",
    "format_cost",
    "format_filters",
    "format_headline",
    "format_report",
    "format_run_report",
    "format_stages",
    "format_summary",
    "headline",
    "plot_quality",
    "quality_figure",
    "run_report",
    "sample_pairs",
    "size_category",
    "stage_rows",
]
