"""Executors: where a recipe's shards are built (this process, the ranks of `torchrun`, a Ray cluster).

The user's choice (``executor="ray"``, ``--executor ray``) becomes an executor here, in [`make_executor`], and
nowhere else.
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidConfigError
from ..models import distributed_node
from .base import BuiltShards, Executor
from .local import LocalExecutor
from .ray import RayExecutor
from .torchrun import TorchrunExecutor

EXECUTORS = ("local", "torchrun", "ray")
"""The executors' names, as ``executor=`` and ``--executor`` take them."""


def make_executor(executor: str | Executor | None = None, **options: Any) -> Executor:
    """Turn an executor's name (or None: ``"torchrun"`` when `WORLD_SIZE` is above 1, else ``"local"``) into an
    executor; an [`Executor`] is returned as it is.

    Args:
        executor (`str` or [`Executor`], *optional*): ``"local"``, ``"torchrun"`` or ``"ray"``.
        **options: the executor's own options (``address=`` and ``num_gpus=`` for Ray).

    Raises:
        [`InvalidConfigError`]: an unknown name, or options the executor does not take.

    Example:

    ```py
    >>> make_executor().name
    'local'
    ```
    """
    if isinstance(executor, Executor):
        if options:
            raise InvalidConfigError(f"Executor options {sorted(options)} go to the executor's constructor.")
        return executor
    if executor is None:
        executor = "torchrun" if distributed_node()[1] > 1 else "local"
    if executor not in EXECUTORS:
        raise InvalidConfigError(f"executor={executor!r} is not one of {EXECUTORS}.")
    cls: type[Executor] = {"local": LocalExecutor, "torchrun": TorchrunExecutor, "ray": RayExecutor}[executor]
    try:
        return cls(**options)
    except TypeError as err:
        raise InvalidConfigError(f"executor={executor!r} does not take {sorted(options)}: {err}.") from err


__all__ = ["EXECUTORS", "BuiltShards", "Executor", "LocalExecutor", "RayExecutor", "TorchrunExecutor", "make_executor"]
