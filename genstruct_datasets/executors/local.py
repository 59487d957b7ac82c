"""The local executor: every shard in this process, one after the other."""

from __future__ import annotations

from dataclasses import dataclass

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
