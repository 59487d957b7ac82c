"""genstruct-datasets: grounded instruction datasets from text passages with Genstruct-7B."""

from .builder import GenstructBuilder, load_genstruct
from .dedup import dedup_pairs, dedup_with_count
from .engines import (
    ContinuousEngine,
    Engine,
    OpenAIServerEngine,
    Sample,
    TransformersEngine,
    VLLMEngine,
    default_backend,
)
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
    OutputExistsError,
    SourceError,
)
from .executors import EXECUTORS, BuiltShards, Executor, LocalExecutor, RayExecutor, TorchrunExecutor, make_executor
from .generate import FINISH_REASONS, GenstructGenerator, genstruct_generate
from .hub_shards import HubShards, with_retries
from .models import clear_model_cache
from .parse import PARSE_ERRORS, ParsedPair, parse_completion, parse_pairs
from .passages import PassageSplitter, split_passages
from .pipeline import PipelineResult, run_pipeline
from .prompt import GENSTRUCT_CHAT_TEMPLATE, format_prompt, passage_id
from .publish import publish, save_local
from .quality import quality_report, validity_report
from .recipe import GenstructConfig
from .report import (
    CardInfo,
    RunReport,
    build_card,
    dataset_stats,
    distributions,
    plot_quality,
    quality_figure,
    run_report,
)
from .runstats import RunStats
from .score import RewardScorer, score_pairs
from .select import select_best
from .shards import FolderStore, ShardJob, ShardOutcome, ShardStore
from .stage_counts import StageCount

__version__ = "0.1.0"

__all__ = [
    "EXECUTORS",
    "FINISH_REASONS",
    "GENSTRUCT_CHAT_TEMPLATE",
    "PARSE_ERRORS",
    "BuiltShards",
    "CardInfo",
    "ContinuousEngine",
    "Engine",
    "EngineStartError",
    "Executor",
    "ExecutorError",
    "FailedPassagesError",
    "FolderStore",
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
    "OpenAIServerEngine",
    "OutputExistsError",
    "ParsedPair",
    "PassageSplitter",
    "PipelineResult",
    "RayExecutor",
    "RewardScorer",
    "RunReport",
    "RunStats",
    "Sample",
    "ShardJob",
    "ShardOutcome",
    "ShardStore",
    "SourceError",
    "StageCount",
    "TorchrunExecutor",
    "TransformersEngine",
    "VLLMEngine",
    "__version__",
    "build_card",
    "clear_model_cache",
    "dataset_stats",
    "dedup_pairs",
    "dedup_with_count",
    "default_backend",
    "distributions",
    "format_prompt",
    "genstruct_generate",
    "load_genstruct",
    "make_executor",
    "parse_completion",
    "parse_pairs",
    "passage_id",
    "plot_quality",
    "publish",
    "quality_figure",
    "quality_report",
    "run_pipeline",
    "run_report",
    "save_local",
    "score_pairs",
    "select_best",
    "split_passages",
    "validity_report",
    "with_retries",
]
