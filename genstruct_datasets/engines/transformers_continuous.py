"""transformers' continuous batching (`generate_batch`, paged attention) over a whole map batch."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import GenstructError
from ._transformers import TransformersModelOptions
from .base import Decoding, ModelRef, PromptRequest, Sample

# generate_batch names a prompt's requests req_{index}, and its further samples req_{index}__child#{k}.
_REQUEST_ID = re.compile(r"req_(?P<index>\d+)(?:__child#(?P<child>\d+))?")


@dataclass
class ContinuousEngine(TransformersModelOptions):
    """Submit every prompt of a map batch at once to transformers' continuous batching.

    Finished samples make room for waiting ones at every step (paged attention), so no sample waits for the longest
    one of its batch. With a seed, a run is repeatable for the same map batch, not per passage.

    Args:
        dtype (`str`, *optional*, defaults to `"auto"`): the weights' dtype.
        quantization (`str`, *optional*): ``"8bit"`` or ``"4bit"`` (bitsandbytes).
        device (`str`, *optional*): defaults to ``cuda:{rank % n_gpus}``, else the CPU.

    Example:

    ```py
    >>> from genstruct_datasets import GenstructGenerator
    >>> GenstructGenerator(backend="continuous", dtype="bfloat16").backend
    'continuous'
    ```
    """

    name = "continuous"
    batching = "continuous batching"
    run_options = ("device",)

    def generate(
        self, model: ModelRef, requests: list[PromptRequest], decoding: Decoding, rank: int | None = None
    ) -> list[list[Sample]]:
        from transformers.generation import ContinuousBatchingConfig

        from .._tokens import decode, stop_token_ids

        loaded = self.load(model, rank)
        tokenizer = self.tokenizer(model, rank)
        generation_config = self.generation_config(loaded, decoding)
        stop_ids = stop_token_ids(generation_config, tokenizer)
        outputs = loaded.model.generate_batch(
            inputs=[request.token_ids for request in requests],
            generation_config=generation_config,
            continuous_batching_config=ContinuousBatchingConfig(seed=decoding.seed),
            progress_bar=False,
        )
        results: list[list[Sample | None]] = [[None] * decoding.num_samples for _ in requests]
        for request_id, output in outputs.items():
            match = _REQUEST_ID.fullmatch(request_id)
            if match is None or output.error:
                raise GenstructError(f"continuous batching failed on request {request_id!r}: {output.error}")
            sample = 0 if match["child"] is None else int(match["child"]) + 1
            results[int(match["index"])][sample] = Sample(*decode(tokenizer, output.generated_tokens, stop_ids))
        missing = sum(None in samples for samples in results)
        if missing:
            raise GenstructError(f"continuous batching returned no result for {missing} of {len(requests)} prompts.")
        return results  # type: ignore[return-value]
