"""The default local engine: transformers' `generate` on length-sorted sub-batches (static batching)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from .._checks import check_number
from ._transformers import TransformersModelOptions
from .base import Decoding, ModelRef, PromptRequest, Sample

logger = logging.getLogger(__name__)


@dataclass
class TransformersEngine(TransformersModelOptions):
    """Run `model.generate` in this process on sub-batches of prompts of similar lengths.

    A map batch is sorted by prompt length and cut into sub-batches of `batch_size`; the row order is restored.
    On an out-of-memory error the sub-batch is halved and retried, and the size that worked is kept for the rest of
    the process (and logged); no row is lost or repeated. With a seed, each sample of each passage draws from a
    random stream of its own, so the same seed gives the same completions for a passage whatever else is in its
    batch.

    Args:
        dtype (`str`, *optional*, defaults to `"auto"`): the weights' dtype.
        quantization (`str`, *optional*): ``"8bit"`` or ``"4bit"`` (bitsandbytes).
        device (`str`, *optional*): defaults to ``cuda:{rank % n_gpus}``, else the CPU.
        batch_size (`int`, *optional*, defaults to 8): prompts per `generate` call.

    Example:

    ```py
    >>> from genstruct_datasets import GenstructGenerator
    >>> from genstruct_datasets.engines import TransformersEngine
    >>> GenstructGenerator(backend=TransformersEngine(batch_size=32, dtype="bfloat16")).backend
    'transformers'
    ```
    """

    name = "transformers"
    batching = "static batching"
    run_options = ("device", "batch_size")

    batch_size: int = field(default=8, metadata={"help": "prompts per generate call"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number("batch_size", self.batch_size, integer=True, minimum=1)

    reports_finished = True

    def generate(
        self,
        model: ModelRef,
        requests: list[PromptRequest],
        decoding: Decoding,
        rank: int | None = None,
        on_finished: Callable[[list[int], list[list[Sample]]], None] | None = None,
    ) -> list[list[Sample]]:
        import torch

        from .._tokens import decode, stop_token_ids

        loaded = self.load(model, rank)
        tokenizer = self.tokenizer(model, rank)
        seeded = decoding.sampling and decoding.seed is not None
        generation_config = self.generation_config(loaded, decoding, warp=not seeded)
        stop_ids = stop_token_ids(generation_config, tokenizer)
        order = sorted(range(len(requests)), key=lambda i: len(requests[i].token_ids), reverse=True)
        # What fits in memory depends on the lengths too; the lesson lives with the model, in this process only.
        memory_key = ("batch_size", decoding.num_samples, decoding.max_new_tokens)
        size = min(self.batch_size, loaded.state.get(memory_key, self.batch_size))
        results: list[list[Sample]] = [[] for _ in requests]
        start = 0
        while start < len(order):
            chunk = order[start : start + size]
            try:
                new_tokens = self._generate_chunk(loaded, tokenizer, generation_config, requests, chunk, decoding)
            except torch.OutOfMemoryError:
                if size == 1:
                    raise
                if loaded.device.type == "cuda":
                    torch.cuda.empty_cache()
                logger.warning("Out of memory with %d prompts per generate call; retrying with %d.", size, size // 2)
                size //= 2
                loaded.state[memory_key] = size
                continue
            for row, i in enumerate(chunk):
                samples = new_tokens[row * decoding.num_samples : (row + 1) * decoding.num_samples]
                results[i] = [Sample(*decode(tokenizer, tokens, stop_ids)) for tokens in samples]
            if on_finished is not None:
                on_finished(chunk, [results[i] for i in chunk])
            start += len(chunk)
        return results

    def _generate_chunk(self, loaded, tokenizer, generation_config, requests, chunk, decoding) -> list[list[int]]:
        """Run `generate` on one length-sorted sub-batch and return the new tokens of each sample."""
        import torch

        encoded = tokenizer.pad({"input_ids": [requests[i].token_ids for i in chunk]}, return_tensors="pt")
        input_ids = encoded["input_ids"].to(loaded.device)
        with torch.inference_mode():
            output = loaded.model.generate(
                input_ids=input_ids,
                attention_mask=encoded["attention_mask"].to(loaded.device),
                generation_config=generation_config,
                logits_processor=self._seeded_sampler([requests[i] for i in chunk], decoding, loaded.device),
            )
        return output[:, input_ids.shape[1] :].tolist()

    @staticmethod
    def _seeded_sampler(requests: list[PromptRequest], decoding: Decoding, device):
        """A logits processor that samples each row from its own seed, or None when sampling is not seeded."""
        from transformers import LogitsProcessorList

        from .._sampling import SeededSampler, row_seed

        if not (decoding.sampling and decoding.seed is not None):
            return None
        seeds = [
            row_seed(decoding.seed, request.passage_id, sample_index)
            for request in requests
            for sample_index in range(decoding.num_samples)
        ]
        return LogitsProcessorList([SeededSampler(seeds, decoding.temperature, decoding.top_p, device)])
