"""What the two transformers engines share: the options of a local model, its loading and its `GenerationConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..models import LoadedModel, Quantization, load_model, resolve_device, validate_quantization
from .base import Decoding, Engine, ModelRef


@dataclass
class TransformersModelOptions(Engine):
    """The options of a transformers model loaded in this process.

    Args:
        dtype (`str`, *optional*, defaults to `"auto"`): the weights' dtype (``"bfloat16"``, ``"float32"``...).
        quantization (`str`, *optional*): ``"8bit"`` or ``"4bit"`` (bitsandbytes).
        device (`str`, *optional*): defaults to ``cuda:{rank % n_gpus}`` with `with_rank=True`, else the first GPU,
            else the CPU.
    """

    batching: ClassVar[str]

    dtype: str = field(default="auto", metadata={"help": "the weights' dtype: auto, bfloat16, float16, float32"})
    quantization: Quantization | None = field(default=None, metadata={"help": "load the generator in 8 or 4 bits"})
    device: str | None = field(default=None, metadata={"help": "e.g. cuda:1 or cpu (default: a GPU if any)"})

    def __post_init__(self) -> None:
        validate_quantization(self.quantization)

    def load(self, model: ModelRef, rank: int | None = None) -> LoadedModel:
        """The model and its tokenizer, loaded once per process and device."""
        return load_model(
            "causal_lm",
            model.name,
            revision=model.revision,
            quantization=self.quantization,
            dtype=self.dtype,
            device=resolve_device(self.device, rank),
        )

    def context_length(self, model: ModelRef, rank: int | None = None) -> int | None:
        from .._tokens import context_length

        loaded = self.load(model, rank)
        return context_length(loaded.model, loaded.tokenizer)

    def tokenizer(self, model: ModelRef, rank: int | None = None) -> Any:
        from .._tokens import prepare_tokenizer

        return prepare_tokenizer(self.load(model, rank).tokenizer)

    def version(self) -> str:
        import transformers

        return f"transformers {transformers.__version__}"

    def describe(self, rank: int | None = None) -> str:
        quantized = f", {self.quantization}" if self.quantization else ""
        return f"{self.version()} ({self.batching}{quantized}) on {resolve_device(self.device, rank)}"

    def generation_config(self, loaded: LoadedModel, decoding: Decoding, *, warp: bool = True) -> Any:
        """The `GenerationConfig` of `decoding`; with `warp=False` the sampler applies temperature and top-p itself."""
        from transformers import GenerationConfig

        tokenizer = loaded.tokenizer
        settings: dict[str, Any] = {
            "max_new_tokens": decoding.max_new_tokens,
            "num_return_sequences": decoding.num_samples,
            "do_sample": decoding.sampling,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": loaded.model.generation_config.eos_token_id or tokenizer.eos_token_id,
            "bos_token_id": tokenizer.bos_token_id,
        }
        if decoding.sampling and warp:
            settings.update(temperature=decoding.temperature, top_p=decoding.top_p, top_k=0)
        elif decoding.sampling:
            settings.update(temperature=1.0, top_p=1.0, top_k=0)
        return GenerationConfig(**settings)
