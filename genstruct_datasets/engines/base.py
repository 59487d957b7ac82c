"""What every generation engine shares: the requests it takes, the samples it returns, its small interface."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from .._fingerprint import hash_only_results

if TYPE_CHECKING:
    from ..runstats import Concurrency

FinishReason = Literal["stop", "length", "invalid_input", "error"]


@dataclass(frozen=True)
class ModelRef:
    """The generator model: a Hub id or a local folder (or the name a server knows it by), and its revision."""

    name: str
    revision: str | None = None


@dataclass(frozen=True)
class Decoding:
    """How to decode, the same for every engine.

    Args:
        num_samples (`int`): completions per prompt.
        max_new_tokens (`int`): cap on each completion's length.
        sampling (`bool`): sample (with `temperature` and `top_p`) instead of greedy decoding.
        temperature (`float`): sampling temperature.
        top_p (`float`): nucleus sampling threshold.
        seed (`int`, *optional*): the run's seed; each engine derives its per-passage or per-sample seeds from it.
    """

    num_samples: int
    max_new_tokens: int
    sampling: bool
    temperature: float
    top_p: float
    seed: int | None = None


@dataclass(frozen=True)
class PromptRequest:
    """One prompt to complete `Decoding.num_samples` times.

    Args:
        passage_id (`str`): the passage's stable id, from which seeded engines derive its seeds.
        text (`str`): the prompt text without the BOS token (what a server gets).
        token_ids (`list[int]`, *optional*): the fitted prompt's ids, BOS included (what local engines get); None
            when no tokenizer was needed (a server, without a prompt budget).
        truncated (`bool`, *optional*, defaults to `False`): the passage's content was cut to fit the prompt budget.
        tokens (`int`, *optional*): the fitted prompt's length in tokens, for the run's cost; None when it was not
            tokenized.
    """

    passage_id: str
    text: str
    token_ids: list[int] | None = None
    truncated: bool = False
    tokens: int | None = None


@dataclass(frozen=True)
class Sample:
    """One completion, as every engine returns it.

    Args:
        text (`str`, *optional*): the new text, leading space stripped; None when the request failed.
        finish_reason (`str`): ``"stop"`` (EOS), ``"length"`` (`max_new_tokens` reached) or ``"error"`` (a server
            request that failed after its retries).
        tokens (`int`, *optional*): tokens generated, EOS included; None where the engine cannot tell.
    """

    text: str | None
    finish_reason: FinishReason
    tokens: int | None


FAILED = Sample(None, "error", None)


def finish_reason(reason: str | None) -> FinishReason:
    """One of our finish reasons for a library's or a server's: a request aborted or failed is an ``"error"``; EOS,
    a stop string and any other end (a content filter, a repetition guard) are ``"stop"``."""
    if reason == "length":
        return "length"
    return "error" if reason in ("abort", "error") else "stop"


class Engine(ABC):
    """A way to run the generator: in this process (transformers, vLLM) or on a server.

    An engine is a dataclass of its own options only (a server has a URL and retries, a local engine a dtype and a
    device); the decoding settings that every engine shares come with each call, in [`Decoding`]. It holds no model:
    models load on first use into a per-process cache, so that pickling and hashing an engine see settings only.
    A subclass sets `name` (the `backend=` string that selects it) and lists in `run_options` the options that do
    not change the rows it writes (batch sizes, devices, timeouts), which stay out of the `datasets` fingerprint.
    """

    name: ClassVar[str]
    run_options: ClassVar[tuple[str, ...]] = ()
    loads_model: ClassVar[bool] = True
    """Whether the engine loads the model's weights in this process, so that a model named as a local folder must be
    one here, and one named as a Hub id must be reachable from here (False for a server, which has its own)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            hash_only_results(cls, cls.run_options)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The options this engine takes, in declaration order."""
        return tuple(field.name for field in dataclasses.fields(cls) if field.init)  # type: ignore[arg-type]

    def settings(self) -> dict[str, Any]:
        """The options that change the rows (not `run_options`), as the dataset card shows them."""
        return {name: getattr(self, name) for name in self.option_names() if name not in self.run_options}

    def context_length(self, model: ModelRef, rank: int | None = None) -> int | None:
        """The model's context in tokens, or None where it is unknown here (a server)."""
        return None

    def tokenizer(self, model: ModelRef, rank: int | None = None) -> Any:
        """The tokenizer that renders and fits prompts (with Genstruct's template if the model has none)."""
        from .._tokens import prepare_tokenizer
        from ..models import load_tokenizer

        return prepare_tokenizer(load_tokenizer(model.name, revision=model.revision))

    @property
    def needs_token_ids(self) -> bool:
        """Whether prompts must come as token ids (local engines) rather than text (servers)."""
        return True

    @property
    def gpus_per_model(self) -> int:
        """The GPUs one copy of the model takes (one for a local engine; none for a server), so that an executor
        gives a worker what its model needs."""
        return 1 if self.loads_model else 0

    reports_finished: ClassVar[bool] = False
    """Whether `generate` takes ``on_finished=``, a callable it calls with ``(positions, samples)`` of requests as they
    finish (a server's, one by one; a sub-batch's), so that the batch checkpoint keeps them before the batch ends."""

    @abstractmethod
    def generate(
        self, model: ModelRef, requests: list[PromptRequest], decoding: Decoding, rank: int | None = None
    ) -> list[list[Sample]]:
        """Complete every request `decoding.num_samples` times; one list of samples per request, in order."""

    def take_concurrency(self) -> Concurrency | None:
        """How the requests in flight to a server moved since the last call, for the run's figures; None for an
        engine that sends none (every local one)."""
        return None

    @abstractmethod
    def version(self) -> str:
        """What made the data, for the summary and the card: the library and its version."""

    def describe(self, rank: int | None = None) -> str:
        """The engine, its version and where it runs, in a few words."""
        return self.version()
