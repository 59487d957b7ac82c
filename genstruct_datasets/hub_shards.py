"""Kept for imports written before the shards became a package: [`HubShards`] and [`with_retries`] live in
`genstruct_datasets.shards.hub` (``from genstruct_datasets.shards import HubShards, with_retries``)."""

from .shards.hub import WORK_FOLDER, HubShards, with_retries

__all__ = ["WORK_FOLDER", "HubShards", "with_retries"]
