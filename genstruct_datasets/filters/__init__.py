"""Filters of the kept pairs: one module per filter, over the small interface of [`PairFilter`]."""

from .base import FILTER_COLUMNS, Drop, FilterOutcome, PairFilter, mark_drops, outcome
from .minhash_dedup import MinHashDedup

__all__ = ["FILTER_COLUMNS", "Drop", "FilterOutcome", "MinHashDedup", "PairFilter", "mark_drops", "outcome"]
