"""Writing a Genstruct dataset: to a folder ([`save_local`], [`publish.folder`]) or to the Hub in one commit
([`publish`], [`publish.hub`]). Every name is importable from `genstruct_datasets.publish` as it was when this
was one module."""

from .folder import (
    CANDIDATES_SPLIT,
    DEFAULT_MAX_SHARD_SIZE,
    ROW_GROUP_ROWS,
    STAGING_PREFIX,
    check_output_folder,
    save_local,
)
from .hub import LiveCard, publish

__all__ = [
    "CANDIDATES_SPLIT",
    "DEFAULT_MAX_SHARD_SIZE",
    "LiveCard",
    "ROW_GROUP_ROWS",
    "STAGING_PREFIX",
    "check_output_folder",
    "publish",
    "save_local",
]
