"""Generation engines: one module per way of running the generator, behind the small interface of [`Engine`].

A new engine is a new module with an [`Engine`] subclass, listed in `ENGINES`; nothing else changes.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping
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


def default_backend(options: Mapping[str, Any] | None = None) -> str:
    """The engine that ``backend="auto"`` picks: vLLM with a CUDA GPU and vLLM installed, else transformers.

    Options that only the transformers engines take (`batch_size`, `device`), or a `quantization` (bitsandbytes),
    ask for transformers whatever the machine.

    Args:
        options (`dict`, *optional*): the engine options given with ``"auto"``.

    Returns:
        `str`: ``"vllm"`` or ``"transformers"``.

    Example:

    ```py
    >>> default_backend()  # on a machine without a GPU
    'transformers'
    ```
    """
    options = options or {}
    if importlib.util.find_spec("vllm") is None or options.get("quantization") is not None:
        return "transformers"
    if not set(options) <= set(VLLMEngine.option_names()):
        return "transformers"
    import torch

    return "vllm" if torch.cuda.is_available() else "transformers"


def make_engine(backend: str | Engine, options: Mapping[str, Any] | None = None) -> Engine:
    """Turn a backend name and its options into an engine: the one place where the name is read.

    Args:
        backend (`str` or [`Engine`]): ``"auto"`` (see [`default_backend`]), an engine's name (``"transformers"``,
            ``"continuous"``, ``"vllm"``, ``"openai"``), or an engine already made, which is returned as it is.
        options (`dict`, *optional*): the engine's own options (``batch_size``, ``base_url``...).

    Returns:
        [`Engine`]: the engine.

    Raises:
        [`InvalidConfigError`]: an unknown backend, an option the engine does not take, or one out of range.
        [`MissingDependencyError`]: the engine's library is not installed (vLLM).

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
    engine = ENGINES[default_backend(options) if backend == "auto" else backend]
    unknown = sorted(set(options) - set(engine.option_names()))
    if unknown:
        raise InvalidConfigError(_not_options(unknown, engine, backend))
    return engine(**options)


def _not_options(unknown: list[str], engine: type[Engine], backend: str) -> str:
    """Why `unknown` options are refused, and what to do: name the engines that take them, or say none does."""
    takers = {name: engines_taking(name) for name in unknown}
    picked = f" (backend={backend!r} picked it here)" if backend == "auto" else ""
    problems = []
    for name, engines in takers.items():
        if engines:
            owners = " and ".join(map(repr, engines)) + (" engines" if len(engines) > 1 else " engine")
            choices = " or ".join(f"backend={e!r}" for e in engines)
            problems.append(
                f"{name} is an option of the {owners}, not of the {engine.name!r} engine{picked}: pass {choices}, "
                f"or leave {name} out"
            )
        else:
            problems.append(f"{name} is neither a setting of GenstructGenerator nor an option of any engine")
    return "; ".join(problems) + f". The {engine.name!r} engine's options are: {', '.join(engine.option_names())}."


def engine_options() -> dict[str, dataclasses.Field]:
    """Every option of every engine, by name, with the field that declares it (the first engine's, where shared)."""
    options: dict[str, dataclasses.Field] = {}
    for engine in ENGINES.values():
        for field in dataclasses.fields(engine):  # type: ignore[arg-type]
            options.setdefault(field.name, field)
    return options


def engines_taking(option: str) -> list[str]:
    """The names of the engines that take `option`, e.g. ``["transformers"]`` for ``"batch_size"``."""
    return [engine.name for engine in ENGINES.values() if option in engine.option_names()]


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
    "engines_taking",
    "make_engine",
]
