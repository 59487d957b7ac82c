"""Generate Genstruct completions for passages, as a batched `Dataset.map` callable."""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ._checks import check_number
from ._fingerprint import hash_only_results
from ._tokens import fit_prompt, is_text
from .engines import BACKENDS, Decoding, Engine, ModelRef, PromptRequest, Sample, make_engine
from .errors import InvalidConfigError, check_columns
from .progress import BatchFigures, report_batch
from .prompt import format_prompt, passage_id

logger = logging.getLogger(__name__)

DEFAULT_GENERATOR = "NousResearch/Genstruct-7B"
FINISH_REASONS = ("stop", "length", "invalid_input", "error")
"""Every value `finish_reason` can take: EOS reached, `max_new_tokens` reached, a passage that could not be
prompted (empty or None title or content, or a title longer than the model's context), or (``"openai"``
backend) a request that failed after its retries."""

OUTPUT_COLUMNS = (
    "passage_id",
    "sample_index",
    "completion",
    "finish_reason",
    "completion_tokens",
    "content_truncated",
)
_INVALID = Sample(None, "invalid_input", 0)

BACKEND_HELP = (
    "the engine: auto (vllm with a CUDA GPU and vLLM installed, else transformers), static batches in transformers, "
    "transformers' continuous batching, vLLM in this process, or an OpenAI-compatible server"
)


MAX_SAMPLES = 64
"""The most completions a passage may ask for (`num_samples`, a server request's `n`). Each one is generated and
scored, so a run's cost grows with it while the best reward grows ever more slowly; 64 is well past the best-of-4 the
recipe uses, and a typo (an extra digit or several) is refused before it sends requests no server should get."""


@dataclass
class GenerationSettings:
    """The generation stage's settings, each with its default and its checks; [`GenstructGenerator`] takes them,
    beside its engine's options.

    The defaults are those of one call of the map callable: one completion per passage (`genstruct_generate` as
    written). A recipe ([`GenstructConfig`]) asks for best-of-4 instead: `RECIPE_DEFAULTS` in
    `genstruct_datasets.recipe` is the one place where the two differ. The command line's flags are made from these
    fields and their `help`, so that a setting added here is a flag, a part of the recipe's key and a line of the
    card, with nothing else to change.

    Raises:
        [`InvalidConfigError`]: a setting out of range, or sampling settings that contradict each other.

    Example:

    ```py
    >>> GenerationSettings(num_samples=4).num_samples
    4
    ```
    """

    model: str = field(
        default=DEFAULT_GENERATOR,
        metadata={"help": "generator model: a Hub id or a local folder (with --backend openai, the server's name)"},
    )
    revision: str | None = field(
        default=None,
        metadata={
            "help": "generator model revision (branch, tag or commit)",
            "recipe_name": "model_revision",
            "flag": "--revision",
        },
    )
    num_samples: int = field(default=1, metadata={"help": "completions per passage, for best-of-n"})
    max_new_tokens: int = field(default=512, metadata={"help": "cap on each completion's length, in tokens"})
    do_sample: bool | None = field(
        default=None,
        metadata={"help": "sample instead of greedy decoding (default: when num_samples > 1 and temperature > 0)"},
    )
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature; 0 is greedy decoding"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling threshold"})
    seed: int | None = field(default=None, metadata={"help": "makes sampling repeatable, per passage"})
    max_prompt_tokens: int | None = field(
        default=None,
        metadata={"help": "longest prompt; a longer passage is truncated (default: the context minus max_new_tokens)"},
    )
    backend: Any = field(default="auto", metadata={"help": BACKEND_HELP, "choices": BACKENDS})
    title_column: str = field(default="title", metadata={"help": "column with the titles", "cli": False})
    content_column: str = field(default="content", metadata={"help": "column with the passages", "cli": False})

    def __post_init__(self) -> None:
        check_number("num_samples", self.num_samples, integer=True, minimum=1)
        check_number(
            "num_samples",
            self.num_samples,
            maximum=MAX_SAMPLES,
            rule=f"at most {MAX_SAMPLES}",
            detail="(completions per passage: each is generated and scored, and best-of-n gains little past a few "
            "dozen)",
        )
        check_number("max_new_tokens", self.max_new_tokens, integer=True, minimum=1)
        check_number("max_prompt_tokens", self.max_prompt_tokens, integer=True, minimum=1, optional=True)
        check_number("temperature", self.temperature, minimum=0, detail="(0 for greedy decoding)")
        check_number("top_p", self.top_p, above=0, maximum=1)
        if self.temperature == 0 and self.do_sample:
            raise InvalidConfigError("temperature=0 means greedy decoding; it cannot go with do_sample=True.")
        if not _sampling(self.num_samples, self.temperature, self.do_sample) and self.num_samples > 1:
            why = "do_sample=False" if self.do_sample is False else "temperature=0"
            raise InvalidConfigError(
                f"num_samples={self.num_samples} with {why} would give {self.num_samples} identical greedy "
                "completions; sample for best-of-n (temperature > 0, do_sample left None)."
            )


def generation_setting_names() -> tuple[str, ...]:
    """The names of [`GenerationSettings`]' fields: what [`GenstructGenerator`] keeps for itself (its other keyword
    arguments are its engine's options)."""
    return tuple(f.name for f in dataclasses.fields(GenerationSettings))


def _sampling(num_samples: int, temperature: float, do_sample: bool | None) -> bool:
    if temperature == 0:
        return False
    return num_samples > 1 if do_sample is None else do_sample


PROGRESS_INTERVAL = 30.0
"""Seconds of generation between two progress lines (INFO) of the generators of one process, when no run's view
([`RunProgress`]) is open in it."""


class _GenerationMeter:
    """What the generators of this process have generated; each map batch goes to the run's view open in this process
    ([`report_batch`]), else a progress line every `PROGRESS_INTERVAL` seconds.

    It lives in the module, never in a generator, so that pickling and hashing a generator do not see it. The clock is
    read after each map batch: no thread, no timer. A forked worker starts from zero.
    """

    def __init__(self) -> None:
        self._pid: int | None = None

    def _start(self) -> None:
        self._pid = os.getpid()
        self.passages = self.tokens = self.prompt_tokens = 0
        self.seconds = 0.0  # of generation: batches that overlap (async) count once
        self._last_end = 0.0
        self._logged = (0, 0, 0.0)  # passages, tokens and seconds at the last line

    def counted_prompt_tokens(self) -> int:
        """Prompt tokens of the passages generated in this process so far."""
        return self.prompt_tokens if self._pid == os.getpid() else 0

    def record(self, started: float, samples: list[list[Sample]], prompts: list[PromptRequest]) -> None:
        """Count a batch of `samples` (a list per passage of `prompts`) whose generation started at `started`
        (`time.monotonic`)."""
        if self._pid != os.getpid():
            self._start()
        now = time.monotonic()
        self.seconds += max(0.0, now - max(started, self._last_end))
        self._last_end = now
        tokens = sum(sample.tokens or 0 for rows in samples for sample in rows)
        prompt_tokens = sum(prompt.tokens or 0 for prompt in prompts)
        failed = sum(any(sample.finish_reason == "error" for sample in rows) for rows in samples)
        self.passages += len(samples)
        self.tokens += tokens
        self.prompt_tokens += prompt_tokens
        batch = BatchFigures(len(samples) - failed, sum(map(len, samples)), failed, tokens, prompt_tokens)
        if report_batch(batch):
            return
        passages, tokens, seconds = self._logged
        interval = self.seconds - seconds
        if interval < PROGRESS_INTERVAL:
            return
        logger.info(
            "Generated %d passages and %d tokens so far in this process; %.1f passages/s and %.0f tokens/s over the "
            "last %.0f s of generation.",
            self.passages,
            self.tokens,
            (self.passages - passages) / max(interval, 1e-9),
            (self.tokens - tokens) / max(interval, 1e-9),
            interval,
        )
        self._logged = (self.passages, self.tokens, self.seconds)


_METER = _GenerationMeter()

WRITE_GROUP = 16
"""Finished passages handed together to a map call's `keep` (the batch checkpoint): where the engine reports its
requests as they finish (an OpenAI-compatible server, transformers' sub-batches), a kill loses at most the requests in
flight and fewer than this many finished passages."""

KeepRows = Callable[[dict[str, list]], None]
"""What keeps the rows of finished passages as they finish (a shard's parts): called with a column dict, in the
process that generated them."""


class _Checkpoint:
    """Hands `keep` the rows of the passages of one map batch as the engine finishes them, `WRITE_GROUP` or more at
    a time, then the rest when the batch is done."""

    def __init__(self, keep: KeepRows, assemble: Callable[..., dict[str, list]], rows: list[int]) -> None:
        self.keep, self.assemble, self.rows = keep, assemble, rows
        self.pending: dict[int, list[Sample]] = {}
        self.kept: set[int] = set()

    def finished(self, requests: list[int], samples: list[list[Sample]]) -> None:
        """The engine finished `requests` (their positions in its list) with `samples`."""
        self.pending.update((self.rows[j], rows) for j, rows in zip(requests, samples))
        if len(self.pending) >= WRITE_GROUP:
            self.keep(self.assemble(self.pending, only=set(self.pending)))
            self.kept.update(self.pending)
            self.pending = {}

    def finish(self, results: dict[int, list[Sample]], size: int) -> None:
        """The map batch of `size` rows is done: keep the rows not kept yet (unprompted ones too)."""
        rest = set(range(size)) - self.kept
        if rest:
            self.keep(self.assemble(results, only=rest))


def counted_prompt_tokens() -> int:
    """Prompt tokens of the passages that the generators of this process have generated so far (those of prompts
    that were tokenized: a server's prompt sent as text without a prompt budget is not counted)."""
    return _METER.counted_prompt_tokens()


class GenstructGenerator:
    """Batched map callable that writes Genstruct completions for passages.

    Reads the columns `title` and `content` (names configurable) and writes one row per sample: the
    input columns repeated, plus `passage_id` (stable digest of title and content), `sample_index`,
    `completion` (the new text only, leading space stripped), `finish_reason` (see [`FINISH_REASONS`]),
    `completion_tokens` (tokens generated, EOS included) and `content_truncated` (True where the passage was longer
    than the prompt budget and the model saw only its beginning; `content` keeps the whole passage).

    The stage builds each prompt once and fits it to the model's context; an engine runs the model (see
    `backend`). Models load on the first call, once per process and device, and are cached outside the
    instance: pickling and hashing see the settings only, so `Dataset.map` caches work across runs, and a
    setting that does not change the rows (a batch size, a device, a timeout) does not change the fingerprint.

    Args:
        model (`str`, *optional*, defaults to `"NousResearch/Genstruct-7B"`): Hub id or local folder (with the
            ``"openai"`` backend, the name the server knows).
        revision (`str`, *optional*): branch, tag or commit of the model.
        num_samples (`int`, *optional*, defaults to 1): completions per passage, for best-of-n.
        max_new_tokens (`int`, *optional*, defaults to 512): cap on each completion's length.
        do_sample (`bool`, *optional*): sample instead of greedy decoding; defaults to sampling exactly
            when `num_samples > 1` and `temperature > 0`.
        temperature (`float`, *optional*, defaults to 0.7): sampling temperature; 0 means greedy decoding, as in
            vLLM, SGLang and OpenAI's API.
        top_p (`float`, *optional*, defaults to 0.95): nucleus sampling threshold.
        seed (`int`, *optional*): makes sampling repeatable, per passage: the same seed gives the same completions
            for a passage whatever else is in its batch (``"continuous"``: for the same map batch).
        max_prompt_tokens (`int`, *optional*): longest prompt; defaults to the model's context minus
            `max_new_tokens`. A longer passage has its content truncated (never the frame of the prompt).
        backend (`str` or [`Engine`], *optional*, defaults to `"auto"`): the engine that runs the model:
            ``"transformers"`` (static batching in this process), ``"continuous"`` (transformers' continuous
            batching), ``"vllm"`` (vLLM in this process), ``"openai"`` (an OpenAI-compatible server), or an engine
            instance from `genstruct_datasets.engines`. ``"auto"`` is vLLM with a CUDA GPU and vLLM installed, else
            transformers.
        title_column (`str`, *optional*, defaults to `"title"`): column with the titles.
        content_column (`str`, *optional*, defaults to `"content"`): column with the passages.
        **engine_options: the engine's own options, e.g. ``batch_size=``, ``dtype=``, ``quantization=``,
            ``device=`` (transformers), ``gpu_memory_utilization=``, ``max_model_len=`` (vLLM), ``base_url=``,
            ``max_concurrency=``, ``request_timeout=``, ``max_retries=`` (openai). See each engine's docstring.

    Raises:
        [`InvalidConfigError`]: a setting is out of range, or an option the engine does not take.
        [`MissingColumnsError`]: (on call) the batch lacks the title or content column; raised before any
            model loads.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> from genstruct_datasets import GenstructGenerator
    >>> ds = Dataset.from_dict({"title": ["Moon"], "content": ["The Moon is Earth's only natural satellite."]})
    >>> gen = GenstructGenerator(num_samples=4, seed=0, backend="transformers", batch_size=16)
    >>> gen.engine
    TransformersEngine(dtype='auto', quantization=None, device=None, batch_size=16)
    >>> ds = ds.map(gen, batched=True)  # doctest: +SKIP
    >>> ds.column_names  # doctest: +SKIP
    ['title', 'content', 'passage_id', 'sample_index', 'completion', 'finish_reason', 'completion_tokens']
    >>> ds.num_rows  # doctest: +SKIP
    4
    ```
    """

    def __init__(self, model: str = DEFAULT_GENERATOR, **settings: Any) -> None:
        stage = {name: settings.pop(name) for name in generation_setting_names() if name in settings}
        resolved = GenerationSettings(model, **stage)  # the stage's own checks
        backend, engine_options = resolved.backend, settings
        for name in generation_setting_names():
            if name != "backend":
                setattr(self, name, getattr(resolved, name))
        self._backend, self._engine_options = backend, engine_options
        self._engine: Engine | None = None
        self._keep: KeepRows | None = None
        # "auto" without options is resolved on first use: looking for a GPU imports torch, and `import
        # genstruct_datasets` (which makes `genstruct_generate`) stays light. Anything else is checked now.
        if backend != "auto" or engine_options:
            self._engine = make_engine(backend, engine_options)

    @property
    def engine(self) -> Engine:
        """The engine that runs the model (``"auto"`` is resolved here, on first use)."""
        if self._engine is None:
            self._engine = make_engine(self._backend, self._engine_options)
        return self._engine

    @property
    def backend(self) -> str:
        """The engine's name: ``"transformers"``, ``"continuous"``, ``"vllm"`` or ``"openai"``."""
        return self.engine.name

    @property
    def sampling(self) -> bool:
        """Whether completions are sampled: `do_sample`, or else `num_samples > 1` with `temperature > 0`."""
        return _sampling(self.num_samples, self.temperature, self.do_sample)

    @property
    def decoding(self) -> Decoding:
        """The decoding settings that every engine gets."""
        return Decoding(
            num_samples=self.num_samples,
            max_new_tokens=self.max_new_tokens,
            sampling=self.sampling,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
        )

    def settings(self) -> dict[str, Any]:
        """What makes the rows: the stage's settings and the engine's, as the dataset card shows them."""
        stage = {k: v for k, v in self._arguments().items() if k not in ("title_column", "content_column")}
        return {**stage, "do_sample": self.sampling, "backend": self.backend, **self.engine.settings()}

    def _arguments(self) -> dict[str, Any]:
        """The stage's own settings as its constructor took them (its public attributes), the engine aside."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def fingerprint_settings(self) -> dict[str, Any]:
        """What `datasets` hashes: every setting, the engine resolved (its own hashing leaves its run options out)."""
        return {**self._arguments(), "engine": self.engine}

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self._arguments().items())
        return f"{type(self).__name__}({shown}, engine={self._engine or self._backend!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GenstructGenerator):
            return NotImplemented
        return self.fingerprint_settings() == other.fingerprint_settings()

    __hash__ = None  # type: ignore[assignment]  # mutable, like a dataclass

    def keeping(self, keep: KeepRows | None) -> GenstructGenerator:
        """This generator, handing `keep` the rows of its passages as they finish (the batch checkpoint: a shard's
        [`ShardParts`]), `WRITE_GROUP` or more at a time where the engine reports its requests as they finish, else
        at the end of each map batch. `keep` travels with the generator to the map's worker processes; it is not a
        setting (the fingerprint leaves it out) and changes nothing in the rows.

        Returns:
            [`GenstructGenerator`]: a copy (sharing the engine); this generator is left as it was.
        """
        twin = copy.copy(self)
        twin._keep = keep
        return twin

    def __call__(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        """Generate completions for one map batch; see the class docstring for the columns."""
        titles, contents, valid = self._passages(batch)
        prompts = self._prompts(titles, contents, valid, rank) if valid else {}
        checkpoint = None
        if self._keep is not None:
            assemble = functools.partial(self._assemble, batch, titles, contents, prompts=prompts)
            checkpoint = _Checkpoint(self._keep, assemble, list(prompts))
        results: dict[int, list[Sample]] = {}
        if prompts:
            options = {"on_finished": checkpoint.finished} if checkpoint and self.engine.reports_finished else {}
            started = time.monotonic()
            samples = self.engine.generate(self._model_ref, list(prompts.values()), self.decoding, rank, **options)
            _METER.record(started, samples, list(prompts.values()))
            results = self._results(prompts, samples)
        if checkpoint is not None:
            checkpoint.finish(results, len(titles))
        return self._assemble(batch, titles, contents, results, prompts)

    async def agenerate(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        """The ``"openai"`` backend as an async map function: ``ds.map(gen.agenerate, batched=True)``.

        `datasets` runs several batches of an async function at once; within a batch, up to
        `max_concurrency` requests are in flight. Same columns as [`__call__`].
        """
        if not hasattr(self.engine, "agenerate"):
            raise InvalidConfigError(
                f"agenerate is the 'openai' backend's; this generator has backend={self.backend!r}."
            )
        titles, contents, valid = self._passages(batch)
        prompts = self._prompts(titles, contents, valid, rank) if valid else {}
        started = time.monotonic()
        samples = await self.engine.agenerate(self._model_ref, list(prompts.values()), self.decoding)
        _METER.record(started, samples, list(prompts.values()))
        return self._assemble(batch, titles, contents, self._results(prompts, samples), prompts)

    @property
    def _model_ref(self) -> ModelRef:
        return ModelRef(self.model, self.revision)

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

    def _prompts(self, titles: list, contents: list, valid: list[int], rank: int | None) -> dict[int, PromptRequest]:
        """Each valid row's prompt, built once and fitted to the budget; a title too long for it is left out."""
        engine, model = self.engine, self._model_ref
        budget = self.max_prompt_tokens
        if budget is None:
            context = engine.context_length(model, rank)
            if context is not None:
                budget = context - self.max_new_tokens
                if budget < 1:
                    raise InvalidConfigError(
                        f"max_new_tokens={self.max_new_tokens} leaves no room for a prompt in the model's context "
                        f"of {context} tokens; lower max_new_tokens."
                    )
        ids = [passage_id(titles[i], contents[i]) for i in valid]
        if budget is None and not engine.needs_token_ids:
            return {i: PromptRequest(pid, format_prompt(titles[i], contents[i])) for i, pid in zip(valid, ids)}
        tokenizer = engine.tokenizer(model, rank)
        # One batched tokenizer call for all prompts; only the few that overflow are fitted one by one.
        rendered = [
            tokenizer.apply_chat_template([{"title": titles[i], "content": contents[i]}], tokenize=False)
            for i in valid
        ]
        encoded = tokenizer(rendered, add_special_tokens=False)["input_ids"]
        prompts: dict[int, PromptRequest] = {}
        truncated = 0
        for i, pid, text, token_ids in zip(valid, ids, rendered, encoded):
            was_truncated = False
            if budget is not None and len(token_ids) > budget:
                token_ids, was_truncated = fit_prompt(tokenizer, titles[i], contents[i], budget)
                if token_ids is None:
                    logger.warning(
                        "The prompt frame for title %r alone is longer than %d tokens; marked invalid_input.",
                        titles[i][:80],
                        budget,
                    )
                    continue
                truncated += was_truncated
                text = tokenizer.decode(token_ids, skip_special_tokens=True)
            else:
                text = text.removeprefix(tokenizer.bos_token or "")
            ids_sent = token_ids if engine.needs_token_ids else None
            prompts[i] = PromptRequest(pid, text, ids_sent, truncated=was_truncated, tokens=len(token_ids))
        if truncated:
            logger.warning(
                "%d passage(s) were longer than the prompt budget of %d tokens; their content was truncated.",
                truncated,
                budget,
            )
        return prompts

    @staticmethod
    def _results(prompts: dict[int, PromptRequest], samples: list[list[Sample]]) -> dict[int, list[Sample]]:
        results = dict(zip(prompts, samples))
        failed = sum(sample.finish_reason == "error" for rows in samples for sample in rows)
        if failed:
            logger.warning("%d sample(s) failed after retries (finish_reason='error').", failed)
        return results

    def _assemble(
        self,
        batch,
        titles,
        contents,
        results: dict[int, list[Sample]],
        prompts: dict[int, PromptRequest],
        only: set[int] | None = None,
    ) -> dict[str, list]:
        """The output columns of the batch's rows (those in `only`, where given)."""
        # Input columns repeat on every sample; columns of the stage's own names are replaced, not doubled.
        passthrough = [key for key in batch if key not in OUTPUT_COLUMNS]
        output: dict[str, list] = {key: [] for key in passthrough}
        output.update({key: [] for key in OUTPUT_COLUMNS})
        for i, (title, content) in enumerate(zip(titles, contents)):
            if only is not None and i not in only:
                continue
            pid = passage_id(title, content)
            for sample_index, sample in enumerate(results.get(i) or [_INVALID]):
                for key in passthrough:
                    output[key].append(batch[key][i])
                output["passage_id"].append(pid)
                output["sample_index"].append(sample_index)
                output["completion"].append(sample.text)
                output["finish_reason"].append(sample.finish_reason)
                output["completion_tokens"].append(sample.tokens)
                output["content_truncated"].append(i in prompts and prompts[i].truncated)
        return output


hash_only_results(GenstructGenerator, ())

genstruct_generate = GenstructGenerator()
"""The default [`GenstructGenerator`]: NousResearch/Genstruct-7B, one greedy sample per passage, on the default engine.

Example:

```py
>>> ds = ds.map(genstruct_generate, batched=True)  # doctest: +SKIP
```
"""
