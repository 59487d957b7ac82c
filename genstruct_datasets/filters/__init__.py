"""Filters of the kept pairs: one module per filter, over the small interface of [`PairFilter`].

The recipe makes them from its settings (``rip=``, ``decontaminate=``, ``semantic_dedup=``, ``dedup_threshold=``)
and the run applies them in that order; from Python, each is also a class to apply to pairs by hand.
"""

from .base import FILTER_COLUMNS, Drop, FilterOutcome, PairFilter, mark_drops, outcome
from .decontaminate import Decontaminate, parse_benchmark
from .minhash_dedup import MinHashDedup
from .rip import RIPFilter, reward_spread
from .semantic_dedup import SemanticDedup

__all__ = [
    "FILTER_COLUMNS",
    "Decontaminate",
    "Drop",
    "FilterOutcome",
    "MinHashDedup",
    "PairFilter",
    "RIPFilter",
    "SemanticDedup",
    "mark_drops",
    "outcome",
    "parse_benchmark",
    "reward_spread",
]
