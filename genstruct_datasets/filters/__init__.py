"""Filters of the kept pairs: one module per filter, over the small interface of [`PairFilter`]."""

from .base import Drop, FilterOutcome, PairFilter, outcome

__all__ = ["Drop", "FilterOutcome", "PairFilter", "outcome"]
