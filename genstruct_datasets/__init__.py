"""genstruct-datasets: grounded instruction datasets from text passages with Genstruct-7B.

What a user calls is here, listed in `__all__` and documented in docs/api.md: the map stages, the one run entry point
and the recipe, the builder, the output and its report, the engines, executors and shard stores, and the errors.
Everything else lives in its module (``genstruct_datasets.shards.ShardJob``, ``genstruct_datasets.report.data``...).
"""

import importlib
import warnings

from .builder import GenstructBuilder, load_genstruct
from .dedup import dedup_pairs, dedup_with_count
from .engines import ContinuousEngine, Engine, OpenAIServerEngine, TransformersEngine, VLLMEngine
from .errors import (
    EngineStartError,
    ExecutorError,
    FailedPassagesError,
    GenstructError,
    InvalidConfigError,
    InvalidSourceError,
    MissingColumnsError,
    MissingDependencyError,
    MissingTokenError,
    ModelNotFoundError,
    ModelUnreachableError,
    NothingKeptError,
    OutputExistsError,
    ServerRefusedError,
    ServerUnreachableError,
    SourceError,
)
from .executors import Executor, LocalExecutor, RayExecutor, TorchrunExecutor
from .generate import FINISH_REASONS, GenerationSettings, GenstructGenerator, genstruct_generate
from .models import clear_model_cache
from .parse import PARSE_ERRORS, ParsedPair, parse_completion, parse_pairs
from .passages import PassageSplitter, split_passages
from .pipeline import PipelineResult, run_pipeline
from .plan import RunPlan
from .prompt import format_prompt, passage_id
from .publish import publish, save_local
from .quality import quality_report
from .recipe import RECIPE_DEFAULTS, GenstructConfig, resolve_recipe
from .report import CardInfo, RunReport, build_card, plot_quality, run_report
from .run import RunOptions, RunResult, run_recipe
from .runstats import RunStats
from .score import RewardScorer, score_pairs
from .select import select_best
from .shards import FolderStore, HubShards, ShardStore
from .stage_counts import StageCount

__version__ = "0.1.0"

__all__ = [
    "FINISH_REASONS",
    "PARSE_ERRORS",
    "RECIPE_DEFAULTS",
    "CardInfo",
    "ContinuousEngine",
    "Engine",
    "EngineStartError",
    "Executor",
    "ExecutorError",
    "FailedPassagesError",
    "FolderStore",
    "GenerationSettings",
    "GenstructBuilder",
    "GenstructConfig",
    "GenstructError",
    "GenstructGenerator",
    "HubShards",
    "InvalidConfigError",
    "InvalidSourceError",
    "LocalExecutor",
    "MissingColumnsError",
    "MissingDependencyError",
    "MissingTokenError",
    "ModelNotFoundError",
    "ModelUnreachableError",
    "NothingKeptError",
    "OpenAIServerEngine",
    "OutputExistsError",
    "ParsedPair",
    "PassageSplitter",
    "PipelineResult",
    "RayExecutor",
    "RewardScorer",
    "RunOptions",
    "RunPlan",
    "RunReport",
    "RunResult",
    "RunStats",
    "ServerRefusedError",
    "ServerUnreachableError",
    "ShardStore",
    "SourceError",
    "StageCount",
    "TorchrunExecutor",
    "TransformersEngine",
    "VLLMEngine",
    "__version__",
    "build_card",
    "clear_model_cache",
    "dedup_pairs",
    "dedup_with_count",
    "format_prompt",
    "genstruct_generate",
    "load_genstruct",
    "parse_completion",
    "parse_pairs",
    "passage_id",
    "plot_quality",
    "publish",
    "quality_report",
    "resolve_recipe",
    "run_pipeline",
    "run_recipe",
    "run_report",
    "save_local",
    "score_pairs",
    "select_best",
    "split_passages",
]

_MOVED = {
    "EXECUTORS": "executors",
    "BuiltShards": "executors",
    "make_executor": "executors",
    "Sample": "engines",
    "default_backend": "engines",
    "with_retries": "shards",
    "ShardJob": "shards",
    "ShardOutcome": "shards",
    "dataset_stats": "report",
    "distributions": "report",
    "quality_figure": "report",
    "validity_report": "quality",
    "GENSTRUCT_CHAT_TEMPLATE": "prompt",
}
"""Names that `genstruct_datasets` exported before 0.1.0 settled its API, by the module that has them now: they still
import from here, with a DeprecationWarning that names their module."""


def __getattr__(name: str):
    if name not in _MOVED:
        raise AttributeError(f"module 'genstruct_datasets' has no attribute {name!r}")
    module = f"genstruct_datasets.{_MOVED[name]}"
    warnings.warn(
        f"import {name} from {module}; it is no longer part of genstruct_datasets' API.",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(module), name)
