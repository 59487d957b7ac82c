"""Generation engines: one module per way of running the generator, behind the small interface of [`Engine`].

A new engine is a new module with an [`Engine`] subclass, listed in `ENGINES`; nothing else changes.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from ..errors import InvalidConfigError
from .base import Decoding, Engine, ModelRef, PromptRequest, Sample
from .openai_server import OpenAIServerEngine
from .transformers_continuous import ContinuousEngine
from .transformers_static import TransformersEngine
from .vllm_engine import VLLMEngine

ENGINES: dict[str, type[Engine]] = {
    engine.name: engine for engine in (TransformersEngine, ContinuousEngine, VLLMEngine, OpenAIServerEngine)
}
"""Every engine, by the name that `backend=` takes."""

BACKENDS = ("auto", *ENGINES)


def default_backend() -> str:
    """The engine a run uses when none is named: vLLM with a CUDA GPU and vLLM installed, else transformers.

    Example:

    ```py
    >>> default_backend()  # on a machine without a GPU
    'transformers'
    ```
    """
    if importlib.util.find_spec("vllm") is None:
        return "transformers"
    import torch

    return "vllm" if torch.cuda.is_available() else "transformers"


def make_engine(backend: str | Engine, options: dict[str, Any] | None = None) -> Engine:
    """Turn a backend name and its options into an engine: the one place where the name is read.

    Args:
        backend (`str` or [`Engine`]): ``"auto"`` (see [`default_backend`]), an engine's name (``"transformers"``,
            ``"continuous"``, ``"vllm"``, ``"openai"``), or an engine already made, which is returned as it is.
        options (`dict`, *optional*): the engine's own options (``batch_size``, ``base_url``...).

    Returns:
        [`Engine`]: the engine.

    Raises:
        [`InvalidConfigError`]: an unknown backend, an option the engine does not take, or one out of range.

    Example:

    ```py
    >>> make_engine("transformers", {"batch_size": 16})
    TransformersEngine(dtype='auto', quantization=None, device=None, batch_size=16)
    ```
    """
    options = dict(options or {})
    if isinstance(backend, Engine):
        if options:
            raise InvalidConfigError(
                f"{', '.join(sorted(options))}: give the options to the engine itself, not beside an engine instance."
            )
        return backend
    if backend not in BACKENDS:
        raise InvalidConfigError(f"backend={backend!r} is not one of {BACKENDS}.")
    name = default_backend() if backend == "auto" else backend
    return ENGINES[name].from_options(options)


def engine_options() -> dict[str, Any]:
    """Every option of every engine, by name, with the field that declares it (the first engine's, where shared)."""
    import dataclasses

    options: dict[str, Any] = {}
    for engine in ENGINES.values():
        for field in dataclasses.fields(engine):  # type: ignore[arg-type]
            options.setdefault(field.name, field)
    return options


__all__ = [
    "BACKENDS",
    "ENGINES",
    "ContinuousEngine",
    "Decoding",
    "Engine",
    "ModelRef",
    "OpenAIServerEngine",
    "PromptRequest",
    "Sample",
    "TransformersEngine",
    "VLLMEngine",
    "default_backend",
    "engine_options",
    "make_engine",
]
