"""Load models lazily, once per process and device, outside any pickled state.

`datasets` pickles and hashes map callables to fingerprint their results. The callables of this
package therefore hold settings only; the models they use live in the process-wide cache of this
module, keyed by everything that changes what is loaded.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import InvalidConfigError, MissingDependencyError

logger = logging.getLogger(__name__)

Quantization = Literal["8bit", "4bit"]
QUANTIZATIONS = ("8bit", "4bit")

_CACHE: dict[tuple, Any] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class LoadedModel:
    """A model and its tokenizer, placed on one device, and what its users learnt about it in this process.

    `state` holds such lessons, e.g. the largest sub-batch that fits in memory: it lives and dies with the model.
    """

    model: Any
    tokenizer: Any
    device: Any
    state: dict = field(default_factory=dict, compare=False)


def resolve_device(device: str | None, rank: int | None = None) -> str:
    """Pick the device a model runs on.

    Args:
        device (`str`, *optional*): an explicit device (``"cpu"``, ``"cuda:1"``); wins when given.
        rank (`int`, *optional*): the worker rank that `Dataset.map(..., with_rank=True)` passes.

    Returns:
        `str`: ``"cuda:{(LOCAL_RANK + rank) % n}"`` with n visible GPUs, where `LOCAL_RANK` is set by
        `torchrun` / `accelerate launch` (0 otherwise) and `rank` defaults to 0; else ``"cpu"``.

    Example:

    ```py
    >>> resolve_device("cpu", rank=3)
    'cpu'
    ```
    """
    if device is not None:
        return device
    import torch

    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        return f"cuda:{(local_rank + (rank or 0)) % torch.cuda.device_count()}"
    return "cpu"


def distributed_node() -> tuple[int, int]:
    """(rank, world size) of this process under `torchrun` / `accelerate launch`, from `RANK` and `WORLD_SIZE`; (0, 1)
    otherwise.

    Example:

    ```py
    >>> distributed_node()  # a plain `python` process
    (0, 1)
    ```
    """
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def validate_quantization(quantization: str | None) -> None:
    """Raise `InvalidConfigError` for a quantization other than None, ``"8bit"`` or ``"4bit"``."""
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise InvalidConfigError(
            f"quantization={quantization!r} is not supported; use one of {QUANTIZATIONS} or None (no quantization)."
        )


def _quantization_config(quantization: str | None, dtype: Any) -> Any:
    if quantization is None:
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise MissingDependencyError(
            f"quantization={quantization!r} needs bitsandbytes: pip install 'genstruct-datasets[quantization]'"
        ) from err
    import torch
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute_dtype = dtype if isinstance(dtype, torch.dtype) else torch.bfloat16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)


def _torch_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        return "auto"
    try:
        resolved = getattr(torch, dtype)
    except AttributeError:
        resolved = None
    if not isinstance(resolved, torch.dtype):
        raise InvalidConfigError(
            f"dtype={dtype!r} is not a torch dtype; use 'auto', 'bfloat16', 'float16' or 'float32'."
        )
    if device == "cpu" and resolved is torch.float16:
        logger.warning("dtype='float16' is slow and imprecise on the CPU; 'float32' or 'bfloat16' are better there.")
    return resolved


def load_model(
    kind: Literal["causal_lm", "sequence_classification"],
    name: str,
    *,
    revision: str | None = None,
    quantization: str | None = None,
    dtype: str = "auto",
    device: str = "cpu",
) -> LoadedModel:
    """Load a model and its tokenizer once per process and device, and return the cached pair.

    Args:
        kind (`str`): ``"causal_lm"`` for a generator, ``"sequence_classification"`` for a reward model.
        name (`str`): a Hub model id or a local folder.
        revision (`str`, *optional*): branch, tag or commit of the model on the Hub.
        quantization (`str`, *optional*): ``"8bit"`` or ``"4bit"`` through bitsandbytes.
        dtype (`str`, *optional*, defaults to `"auto"`): the weights' dtype; ``"auto"`` keeps the checkpoint's.
        device (`str`, *optional*, defaults to `"cpu"`): where the model is placed (by accelerate).

    Returns:
        [`LoadedModel`]: the model in eval mode, its tokenizer and the device of its inputs.

    Raises:
        [`InvalidConfigError`]: an unknown quantization or dtype.
        [`MissingDependencyError`]: quantization without bitsandbytes installed.

    Example:

    ```py
    >>> loaded = load_model("causal_lm", "NousResearch/Genstruct-7B", device="cuda:0")  # doctest: +SKIP
    >>> loaded is load_model("causal_lm", "NousResearch/Genstruct-7B", device="cuda:0")  # doctest: +SKIP
    True
    ```
    """
    validate_quantization(quantization)
    key = (kind, name, revision, quantization, dtype, device)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load(kind, name, revision=revision, quantization=quantization, dtype=dtype, device=device)
        return _CACHE[key]


def _load(kind: str, name: str, *, revision: str | None, quantization: str | None, dtype: str, device: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    torch_dtype = _torch_dtype(dtype, device)
    auto_class = AutoModelForCausalLM if kind == "causal_lm" else AutoModelForSequenceClassification
    logger.info("Loading %s (revision %s, quantization %s) on %s", name, revision or "main", quantization, device)
    tokenizer = AutoTokenizer.from_pretrained(name, revision=revision)
    model = auto_class.from_pretrained(
        name,
        revision=revision,
        dtype=torch_dtype,
        quantization_config=_quantization_config(quantization, torch_dtype),
        device_map={"": device},
    )
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, device=torch.device(device))


def load_tokenizer(name: str, *, revision: str | None = None) -> Any:
    """Load a tokenizer once per process and return the cached one.

    Args:
        name (`str`): a Hub model id or a local folder.
        revision (`str`, *optional*): branch, tag or commit of the model on the Hub.

    Returns:
        `transformers.PreTrainedTokenizerBase`: the tokenizer.
    """
    key = ("tokenizer", name, revision)
    with _LOCK:
        if key not in _CACHE:
            from transformers import AutoTokenizer

            _CACHE[key] = AutoTokenizer.from_pretrained(name, revision=revision)
        return _CACHE[key]


def load_once(key: tuple, load: Callable[[], Any]) -> Any:
    """Return the object cached under `key` in this process, calling `load()` to make it the first time.

    For models that `load_model` does not make (a `vllm.LLM`, say): they live in the same cache, outside any pickled
    state, and [`clear_model_cache`] forgets them too.
    """
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = load()
        return _CACHE[key]


def clear_model_cache() -> None:
    """Forget every cached model of this process, so that the next call loads it anew."""
    with _LOCK:
        _CACHE.clear()
