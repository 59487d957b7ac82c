"""genstruct-datasets: grounded instruction datasets from text passages with Genstruct-7B."""

from .errors import GenstructError, InvalidConfigError, MissingColumnsError, MissingDependencyError
from .generate import FINISH_REASONS, GenstructGenerator, genstruct_generate
from .models import clear_model_cache
from .parse import PARSE_ERRORS, ParsedPair, parse_completion, parse_pairs
from .passages import PassageSplitter, split_passages
from .prompt import GENSTRUCT_CHAT_TEMPLATE, format_prompt, passage_id
from .score import RewardScorer, score_pairs
from .select import select_best

__version__ = "0.1.0"

__all__ = [
    "FINISH_REASONS",
    "GENSTRUCT_CHAT_TEMPLATE",
    "PARSE_ERRORS",
    "GenstructError",
    "GenstructGenerator",
    "InvalidConfigError",
    "MissingColumnsError",
    "MissingDependencyError",
    "ParsedPair",
    "PassageSplitter",
    "RewardScorer",
    "__version__",
    "clear_model_cache",
    "format_prompt",
    "genstruct_generate",
    "parse_completion",
    "parse_pairs",
    "passage_id",
    "score_pairs",
    "select_best",
    "split_passages",
]
