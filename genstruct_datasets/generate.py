"""Generate Genstruct completions for passages, as a batched `Dataset.map` callable."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from dataclasses import KW_ONLY, dataclass
from typing import Any, Literal

from ._fingerprint import hash_only_results
from ._sampling import SeededSampler, row_seed
from ._tokens import context_length, decode, fit_prompt, is_text, prepare_tokenizer, stop_token_ids
from .errors import GenstructError, InvalidConfigError, check_columns
from .models import load_model, resolve_device, validate_quantization
from .prompt import format_prompt, passage_id

logger = logging.getLogger(__name__)

DEFAULT_GENERATOR = "NousResearch/Genstruct-7B"
FINISH_REASONS = ("stop", "length", "invalid_input", "error")
"""Every value `finish_reason` can take: EOS reached, `max_new_tokens` reached, a passage that could not be
prompted (empty or None title or content, or a title longer than the model's context), or (``"openai"``
backend) a request that failed after its retries."""

OUTPUT_COLUMNS = ("passage_id", "sample_index", "completion", "finish_reason", "completion_tokens")

Backend = Literal["transformers", "continuous", "openai"]
BACKENDS = ("transformers", "continuous", "openai")
# generate_batch names a prompt's requests req_{index}, and its further samples req_{index}__child#{k}.
_REQUEST_ID = re.compile(r"req_(?P<index>\d+)(?:__child#(?P<child>\d+))?")

# Sub-batch sizes that fit in memory, learnt from out-of-memory errors, per model, device and lengths.
_WORKING_BATCH_SIZES: dict[tuple, int] = {}


@dataclass
class GenstructGenerator:
    """Batched map callable that writes Genstruct completions for passages.

    Reads the columns `title` and `content` (names configurable) and writes one row per sample: the
    input columns repeated, plus `passage_id` (stable digest of title and content), `sample_index`,
    `completion` (the new text only, leading space stripped), `finish_reason` (``"stop"``, ``"length"``
    or ``"invalid_input"``) and `completion_tokens` (tokens generated, EOS included).

    The model loads on the first call, once per process and device, and is cached outside the
    instance: pickling and hashing see the settings only, so `Dataset.map` caches work across runs.

    Args:
        model (`str`, *optional*, defaults to `"NousResearch/Genstruct-7B"`): Hub id or local folder.
        revision (`str`, *optional*): branch, tag or commit of the model.
        num_samples (`int`, *optional*, defaults to 1): completions per passage, for best-of-n.
        max_new_tokens (`int`, *optional*, defaults to 512): cap on each completion's length.
        do_sample (`bool`, *optional*): sample instead of greedy decoding; defaults to sampling exactly
            when `num_samples > 1`.
        temperature (`float`, *optional*, defaults to 0.7): sampling temperature.
        top_p (`float`, *optional*, defaults to 0.95): nucleus sampling threshold.
        seed (`int`, *optional*): makes sampling repeatable. Each sample of each passage draws from a
            random stream of its own, so the same seed gives the same completions for a passage whatever
            else is in its batch, in any order and with any `batch_size` (up to the last-bit numerical
            differences that padding can make on a GPU).
        quantization (`str`, *optional*): ``"8bit"`` or ``"4bit"`` (bitsandbytes).
        dtype (`str`, *optional*, defaults to `"auto"`): weights' dtype (``"bfloat16"``, ``"float32"``...).
        device (`str`, *optional*): defaults to ``cuda:{rank % n_gpus}`` with `with_rank=True`, else the first
            GPU, else the CPU.
        batch_size (`int`, *optional*, defaults to 8): prompts per `generate` call. A map batch is sorted by
            prompt length and cut into sub-batches of this size; the row order is restored. On an
            out-of-memory error the sub-batch is halved and retried, and the size that worked is kept for
            the rest of the process (and logged); no row is lost or repeated.
        max_prompt_tokens (`int`, *optional*): longest prompt; defaults to the model's context minus
            `max_new_tokens`. A longer passage has its content truncated (never the frame of the prompt).
        backend (`str`, *optional*, defaults to `"transformers"`): ``"transformers"`` runs `generate` on
            length-sorted sub-batches (static batching); ``"continuous"`` submits the whole map batch to
            transformers' continuous batching (`generate_batch`, paged attention), where finished samples
            make room for waiting ones at every step. With ``"continuous"`` a seed makes a run repeatable
            for the same map batch, not per passage, and `batch_size` does not apply. ``"openai"`` sends the
            prompts to an OpenAI-compatible ``/v1/completions`` server (vLLM, SGLang, ``transformers serve``)
            and loads no model here; `model` is the name the server knows. See [`agenerate`].
        base_url (`str`, *optional*): the server's API root, e.g. ``"http://127.0.0.1:8000/v1"``; defaults to
            the `OPENAI_BASE_URL` environment variable.
        api_key (`str`, *optional*): defaults to the `OPENAI_API_KEY` environment variable (read at call time,
            so it stays out of the fingerprint).
        max_concurrency (`int`, *optional*, defaults to 64): requests in flight at once, per map batch.
        request_timeout (`float`, *optional*, defaults to 600): seconds before a request is abandoned and retried.
        max_retries (`int`, *optional*, defaults to 5): retries, with exponential backoff (and the server's
            Retry-After), of a request that timed out, failed to connect, or got 408, 409, 429 or 5xx.
        title_column (`str`, *optional*, defaults to `"title"`): column with the titles.
        content_column (`str`, *optional*, defaults to `"content"`): column with the passages.

    Raises:
        [`InvalidConfigError`]: a setting is out of range.
        [`MissingColumnsError`]: (on call) the batch lacks the title or content column; raised before any
            model loads.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> from genstruct_datasets import GenstructGenerator
    >>> ds = Dataset.from_dict({"title": ["Moon"], "content": ["The Moon is Earth's only natural satellite."]})
    >>> gen = GenstructGenerator(num_samples=4, seed=0)
    >>> ds = ds.map(gen, batched=True)  # doctest: +SKIP
    >>> ds.column_names  # doctest: +SKIP
    ['title', 'content', 'passage_id', 'sample_index', 'completion', 'finish_reason', 'completion_tokens']
    >>> ds.num_rows  # doctest: +SKIP
    4
    ```
    """

    model: str = DEFAULT_GENERATOR
    _: KW_ONLY
    revision: str | None = None
    num_samples: int = 1
    max_new_tokens: int = 512
    do_sample: bool | None = None
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None
    quantization: str | None = None
    dtype: str = "auto"
    device: str | None = None
    batch_size: int = 8
    max_prompt_tokens: int | None = None
    backend: Backend = "transformers"
    base_url: str | None = None
    api_key: str | None = None
    max_concurrency: int = 64
    request_timeout: float = 600.0
    max_retries: int = 5
    title_column: str = "title"
    content_column: str = "content"

    def __post_init__(self) -> None:
        validate_quantization(self.quantization)
        if self.backend not in BACKENDS:
            raise InvalidConfigError(f"backend={self.backend!r} is not one of {BACKENDS}.")
        if self.backend == "openai" and not (self.base_url or os.environ.get("OPENAI_BASE_URL")):
            raise InvalidConfigError(
                "backend='openai' needs the server's address: pass base_url='http://host:8000/v1' or set "
                "OPENAI_BASE_URL."
            )
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise InvalidConfigError(f"max_retries must be a non-negative integer, got {self.max_retries!r}.")
        for name in ("num_samples", "max_new_tokens", "batch_size", "max_concurrency"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InvalidConfigError(f"{name} must be a positive integer, got {value!r}.")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise InvalidConfigError(f"max_prompt_tokens must be a positive integer, got {self.max_prompt_tokens!r}.")
        if self.do_sample is False and self.num_samples > 1:
            raise InvalidConfigError(
                f"num_samples={self.num_samples} with do_sample=False would give {self.num_samples} identical "
                "greedy completions; set do_sample=True (or leave it None) for best-of-n."
            )
        if self.temperature <= 0:
            raise InvalidConfigError(
                f"temperature must be > 0, got {self.temperature!r}; use do_sample=False for greedy."
            )
        if not 0 < self.top_p <= 1:
            raise InvalidConfigError(f"top_p must be in (0, 1], got {self.top_p!r}.")

    @property
    def sampling(self) -> bool:
        """Whether completions are sampled (`do_sample`, or `num_samples > 1` when it is None)."""
        return self.num_samples > 1 if self.do_sample is None else self.do_sample

    def __call__(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        """Generate completions for one map batch; see the class docstring for the columns."""
        if self.backend == "openai":
            return _run_coroutine(self.agenerate(batch, rank))
        titles, contents, valid = self._passages(batch)
        results: dict[int, list[tuple[str, str, int]]] = {}
        if valid:
            loaded = load_model(
                "causal_lm",
                self.model,
                revision=self.revision,
                quantization=self.quantization,
                dtype=self.dtype,
                device=resolve_device(self.device, rank),
            )
            results = self._generate(loaded, {i: (titles[i], contents[i]) for i in valid})
        return self._assemble(batch, titles, contents, results)

    def _passages(self, batch: dict[str, list]) -> tuple[list, list, list[int]]:
        """The batch's titles and contents, and the rows that can be prompted; the others are counted in a warning."""
        check_columns(
            "GenstructGenerator",
            batch,
            [self.title_column, self.content_column],
            "Pass title_column= and content_column= to name yours, or rename them with ds.rename_column().",
        )
        titles, contents = batch[self.title_column], batch[self.content_column]
        valid = [i for i, (t, c) in enumerate(zip(titles, contents)) if is_text(t) and is_text(c)]
        if len(valid) < len(titles):
            logger.warning(
                "%d of %d passages have an empty or missing %r or %r and were not prompted "
                "(finish_reason='invalid_input').",
                len(titles) - len(valid),
                len(titles),
                self.title_column,
                self.content_column,
            )
        return titles, contents, valid

    async def agenerate(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        """The ``"openai"`` backend as an async map function: ``ds.map(gen.agenerate, batched=True)``.

        `datasets` runs several batches of an async function at once; within a batch, up to
        `max_concurrency` requests are in flight. Same columns as the local backends; `finish_reason`
        comes from the server, and ``"error"`` marks a passage whose request failed after `max_retries`.
        """
        from ._openai import CompletionRequest, ServerSettings, complete_all

        if self.backend != "openai":
            raise InvalidConfigError(
                f"agenerate is the 'openai' backend's; this generator has backend={self.backend!r}."
            )
        titles, contents, valid = self._passages(batch)
        prompts = {i: self._remote_prompt(titles[i], contents[i]) for i in valid}
        prompts = {i: prompt for i, prompt in prompts.items() if prompt is not None}
        settings = ServerSettings(
            base_url=self.base_url or os.environ["OPENAI_BASE_URL"],
            api_key=self.api_key or os.environ.get("OPENAI_API_KEY"),
            model=self.model,
            max_tokens=self.max_new_tokens,
            temperature=self.temperature if self.sampling else 0.0,
            top_p=self.top_p if self.sampling else 1.0,
            max_concurrency=self.max_concurrency,
            timeout=self.request_timeout,
            max_retries=self.max_retries,
        )
        requests = [
            CompletionRequest(
                prompt,
                self.num_samples,
                None if self.seed is None else row_seed(self.seed, passage_id(titles[i], contents[i]), 0) % 2**31,
            )
            for i, prompt in prompts.items()
        ]
        samples = await complete_all(requests, settings)
        results = dict(zip(prompts, samples))
        failed = sum(sample[1] == "error" for rows in samples for sample in rows)
        if failed:
            logger.warning("%d sample(s) failed on the server after retries (finish_reason='error').", failed)
        return self._assemble(batch, titles, contents, results)

    def _remote_prompt(self, title: str, content: str) -> str | None:
        """The prompt text for a server, its content cut to `max_prompt_tokens` (needs the tokenizer) when set."""
        if self.max_prompt_tokens is None:
            return format_prompt(title, content)
        from .models import load_tokenizer

        tokenizer = prepare_tokenizer(load_tokenizer(self.model, revision=self.revision))
        ids, _ = fit_prompt(tokenizer, title, content, self.max_prompt_tokens)
        return None if ids is None else tokenizer.decode(ids, skip_special_tokens=True)

    def _assemble(self, batch, titles, contents, results) -> dict[str, list]:
        # Input columns repeat on every sample; columns of the stage's own names are replaced, not doubled.
        passthrough = [key for key in batch if key not in OUTPUT_COLUMNS]
        output: dict[str, list] = {key: [] for key in passthrough}
        output.update({key: [] for key in OUTPUT_COLUMNS})
        for i, (title, content) in enumerate(zip(titles, contents)):
            samples = results.get(i) or [(None, "invalid_input", 0)]
            pid = passage_id(title, content)
            for sample_index, (completion, finish_reason, n_tokens) in enumerate(samples):
                for key in passthrough:
                    output[key].append(batch[key][i])
                output["passage_id"].append(pid)
                output["sample_index"].append(sample_index)
                output["completion"].append(completion)
                output["finish_reason"].append(finish_reason)
                output["completion_tokens"].append(n_tokens)
        return output

    def _generate(self, loaded, passages: dict[int, tuple[str, str]]) -> dict[int, list[tuple]]:
        import torch

        tokenizer = prepare_tokenizer(loaded.tokenizer)
        budget = self.max_prompt_tokens or context_length(loaded.model, tokenizer) - self.max_new_tokens
        if budget < 1:
            raise InvalidConfigError(
                f"max_new_tokens={self.max_new_tokens} leaves no room for a prompt in the model's context "
                f"of {context_length(loaded.model, tokenizer)} tokens; lower max_new_tokens."
            )
        prompts: dict[int, list[int]] = {}
        results: dict[int, list[tuple]] = {}
        truncated = 0
        # One batched tokenizer call for all prompts; only the few that overflow are fitted one by one.
        rendered = [
            tokenizer.apply_chat_template([{"title": t, "content": c}], tokenize=False) for t, c in passages.values()
        ]
        encoded = tokenizer(rendered, add_special_tokens=False)["input_ids"]
        for (i, (title, content)), ids in zip(passages.items(), encoded):
            was_truncated = False
            if len(ids) > budget:
                ids, was_truncated = fit_prompt(tokenizer, title, content, budget)
            if ids is None:
                logger.warning(
                    "The prompt frame for title %r alone is longer than %d tokens; marked invalid_input.",
                    title[:80],
                    budget,
                )
                continue
            truncated += was_truncated
            prompts[i] = ids
        if truncated:
            logger.warning(
                "%d passage(s) were longer than the prompt budget of %d tokens; their content was truncated.",
                truncated,
                budget,
            )
        generation_config = self._generation_config(loaded.model, tokenizer)
        stop_ids = stop_token_ids(generation_config, tokenizer)
        if self.backend == "continuous":
            return self._generate_continuous(loaded, tokenizer, generation_config, prompts, stop_ids)
        order = sorted(prompts, key=lambda i: len(prompts[i]), reverse=True)
        memory_key = (self.model, self.revision, self.quantization, self.dtype, str(loaded.device))
        memory_key += (self.num_samples, self.max_new_tokens)
        size = min(self.batch_size, _WORKING_BATCH_SIZES.get(memory_key, self.batch_size))
        start = 0
        while start < len(order):
            chunk = order[start : start + size]
            try:
                new_tokens = self._generate_chunk(loaded, tokenizer, generation_config, prompts, passages, chunk)
            except torch.OutOfMemoryError:
                if size == 1:
                    raise
                if loaded.device.type == "cuda":
                    torch.cuda.empty_cache()
                logger.warning("Out of memory with %d prompts per generate call; retrying with %d.", size, size // 2)
                size //= 2
                _WORKING_BATCH_SIZES[memory_key] = size
                continue
            for row, i in enumerate(chunk):
                samples = new_tokens[row * self.num_samples : (row + 1) * self.num_samples]
                results[i] = [decode(tokenizer, tokens, stop_ids) for tokens in samples]
            start += len(chunk)
        return results

    def _generate_continuous(self, loaded, tokenizer, generation_config, prompts, stop_ids) -> dict[int, list[tuple]]:
        """Submit every prompt of the map batch at once to transformers' continuous batching (paged attention)."""
        from transformers.generation import ContinuousBatchingConfig

        rows = list(prompts)
        outputs = loaded.model.generate_batch(
            inputs=[prompts[i] for i in rows],
            generation_config=generation_config,
            continuous_batching_config=ContinuousBatchingConfig(seed=self.seed),
            progress_bar=False,
        )
        results: dict[int, list] = {i: [None] * self.num_samples for i in rows}
        for request_id, output in outputs.items():
            match = _REQUEST_ID.fullmatch(request_id)
            if match is None or output.error:
                raise GenstructError(f"continuous batching failed on request {request_id!r}: {output.error}")
            sample = 0 if match["child"] is None else int(match["child"]) + 1
            results[rows[int(match["index"])]][sample] = decode(tokenizer, output.generated_tokens, stop_ids)
        missing = [i for i, samples in results.items() if None in samples]
        if missing:
            raise GenstructError(f"continuous batching returned no result for {len(missing)} of {len(rows)} prompts.")
        return results

    def _generate_chunk(self, loaded, tokenizer, generation_config, prompts, passages, chunk) -> list[list[int]]:
        """Run `generate` on one length-sorted sub-batch and return the new tokens of each sample."""
        import torch

        encoded = tokenizer.pad({"input_ids": [prompts[i] for i in chunk]}, return_tensors="pt")
        input_ids = encoded["input_ids"].to(loaded.device)
        sampler = self._seeded_sampler([passages[i] for i in chunk], loaded.device)
        with torch.inference_mode():
            output = loaded.model.generate(
                input_ids=input_ids,
                attention_mask=encoded["attention_mask"].to(loaded.device),
                generation_config=generation_config,
                logits_processor=sampler,
            )
        return output[:, input_ids.shape[1] :].tolist()

    def _generation_config(self, model, tokenizer):
        from transformers import GenerationConfig

        settings: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "num_return_sequences": self.num_samples,
            "do_sample": self.sampling,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": model.generation_config.eos_token_id or tokenizer.eos_token_id,
            "bos_token_id": tokenizer.bos_token_id,
        }
        if self.sampling and (self.seed is None or self.backend == "continuous"):
            settings.update(temperature=self.temperature, top_p=self.top_p, top_k=0)
        elif self.sampling:
            # The seeded sampler applies temperature and top-p itself and hands generate a single choice.
            settings.update(temperature=1.0, top_p=1.0, top_k=0)
        return GenerationConfig(**settings)

    def _seeded_sampler(self, passages: list[tuple[str, str]], device):
        """A logits processor that samples each row from its own seed, or None when sampling is not seeded."""
        from transformers import LogitsProcessorList

        if not (self.sampling and self.seed is not None):
            return None
        seeds = [
            row_seed(self.seed, passage_id(title, content), sample_index)
            for title, content in passages
            for sample_index in range(self.num_samples)
        ]
        return LogitsProcessorList([SeededSampler(seeds, self.temperature, self.top_p, device)])


hash_only_results(
    GenstructGenerator, ("batch_size", "device", "api_key", "max_concurrency", "request_timeout", "max_retries")
)

genstruct_generate = GenstructGenerator()
"""The default [`GenstructGenerator`]: NousResearch/Genstruct-7B, one greedy sample per passage.

Example:

```py
>>> ds = ds.map(genstruct_generate, batched=True)  # doctest: +SKIP
```
"""


def _run_coroutine(coroutine):
    """Run a coroutine to completion from sync code, also where an event loop is already running (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    result: dict = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coroutine)
        except BaseException as err:  # handed back to the caller's thread
            result["error"] = err

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]
