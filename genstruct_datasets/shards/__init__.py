"""Checkpointing: a run's shards, built and written whole ([`ShardJob`]), their passages kept as they finish
([`ShardParts`]), and the stores that keep them for other machines and later runs ([`FolderStore`], [`HubShards`]).

It sits below the executors and the builder, and imports neither: the column schema comes from `columns`, the
stages from `pipeline`.
"""

from .hub import WORK_FOLDER, HubShards, with_retries
from .job import ShardJob, ShardOutcome, block_of, finish_uploads, upload_leftovers, write_atomically
from .parts import ShardParts
from .store import FORCED_MARKER, FolderStore, ShardStore

__all__ = [
    "FORCED_MARKER",
    "WORK_FOLDER",
    "FolderStore",
    "HubShards",
    "ShardJob",
    "ShardOutcome",
    "ShardParts",
    "ShardStore",
    "block_of",
    "finish_uploads",
    "upload_leftovers",
    "with_retries",
    "write_atomically",
]
