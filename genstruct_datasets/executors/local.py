"""The local executor: every shard in this process, one after the other."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..shards import ShardJob, ShardOutcome
from .base import Executor


@dataclass
class LocalExecutor(Executor):
    """Build the shards one after the other in this process (its maps may use worker processes: ``num_proc``).

    Example:

    ```py
    >>> from genstruct_datasets import LocalExecutor, load_genstruct
    >>> pairs = load_genstruct("passages.jsonl", executor=LocalExecutor())  # doctest: +SKIP
    ```
    """

    name = "local"

    def build(self, job: ShardJob, shards: list[int]) -> Iterator[ShardOutcome]:
        for k in shards:
            yield job.build(k)
