"""OpenAI-compatible `/v1/completions` servers (vLLM, SGLang, `transformers serve`) through the `openai` client."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._checks import check_number
from ..errors import InvalidConfigError, MissingDependencyError, ServerRefusedError, ServerUnreachableError
from ._throttle import MAX_RETRY_AFTER, Throttle, estimate_tokens, retry_after
from .base import FAILED, Decoding, Engine, ModelRef, PromptRequest, Sample, finish_reason

if TYPE_CHECKING:
    from ..runstats import Concurrency

logger = logging.getLogger(__name__)

THROTTLED = (429, 503)
"""The answers that say the server is asked too much: the throttle, not the client, sends those requests again."""


@dataclass
class OpenAIServerEngine(Engine):
    """Send the prompts to an OpenAI-compatible completions server; no model loads here.

    Requests go through the official async client (`openai.AsyncOpenAI`), which retries timeouts, connection errors
    and 408, 409 and 5xx answers with exponential backoff. Answers 429 and 503 go to the engine's throttle instead
    (`engines/_throttle.py`): it halves the requests in flight, sends nothing until the server's Retry-After has
    passed, and sends the request again (at most `max_retries` times); while requests are answered it lets one more
    in flight per round, up to `max_concurrency`. A request that still fails gives samples with finish_reason
    ``"error"``. A server that answers fewer choices than `n` (``transformers serve`` ignores `n`) is asked again
    for the missing samples, at most `num_samples` requests a passage; samples still missing then fail the same way.
    A server that refuses the key (401, 403) stops the run at once; one that cannot be reached for any request of a
    batch stops it there. `model` is the name the server knows.

    Args:
        base_url (`str`, *optional*): the server's API root, e.g. ``"http://127.0.0.1:8000/v1"``; defaults to the
            `OPENAI_BASE_URL` environment variable.
        api_key (`str`, *optional*): defaults to the `OPENAI_API_KEY` environment variable. Never part of the
            fingerprint nor of the card.
        max_concurrency (`int`, *optional*, defaults to 64): the most requests in flight at once (those of every map
            batch running in this process together); fewer while the server answers 429 or 503.
        request_timeout (`float`, *optional*, defaults to 600): seconds before a request is abandoned and retried.
        max_retries (`int`, *optional*, defaults to 5): retries of a request that failed in a way retrying can fix.
        stall_warning (`float`, *optional*, defaults to 60): seconds without any answer after which a warning says
            how many requests are in flight (and the progress is logged at that pace otherwise).
        max_requests_per_minute (`int`, *optional*): no more requests sent in any minute; None: no such limit.
        max_tokens_per_minute (`int`, *optional*): no more tokens in any minute, each request counting its prompt
            (about 4 characters a token) and `max_new_tokens` for each sample before it goes, and the tokens the
            server says it used once answered; None: no such limit.

    Raises:
        [`InvalidConfigError`]: no address, or a setting out of range.
        [`ServerRefusedError`]: (when generating) the server answered 401 or 403.
        [`ServerUnreachableError`]: (when generating) no request of a batch reached the server, past the retries.

    Example:

    ```py
    >>> from genstruct_datasets import GenstructGenerator
    >>> gen = GenstructGenerator("NousResearch/Genstruct-7B", backend="openai", base_url="http://127.0.0.1:8000/v1")
    >>> gen.engine.max_concurrency
    64
    ```
    """

    name = "openai"
    loads_model = False
    run_options = (
        "base_url",
        "api_key",
        "max_concurrency",
        "request_timeout",
        "max_retries",
        "stall_warning",
        "max_requests_per_minute",
        "max_tokens_per_minute",
    )

    base_url: str | None = field(
        default=None, metadata={"help": "the server's API root, e.g. http://127.0.0.1:8000/v1 (or OPENAI_BASE_URL)"}
    )
    api_key: str | None = field(default=None, repr=False, metadata={"cli": False})
    max_concurrency: int = field(
        default=64, metadata={"help": "the most requests in flight at once (fewer while the server throttles)"}
    )
    request_timeout: float = field(default=600.0, metadata={"help": "seconds before a request is retried"})
    max_retries: int = field(default=5, metadata={"help": "retries of a failed request"})
    stall_warning: float = field(default=60.0, metadata={"help": "seconds without an answer before a warning says so"})
    max_requests_per_minute: int | None = field(
        default=None, metadata={"help": "the most requests sent in any minute (default: no limit)"}
    )
    max_tokens_per_minute: int | None = field(
        default=None,
        metadata={"help": "the most prompt and completion tokens in any minute, counted before and settled after "
                  "each request (default: no limit)"},
    )  # fmt: skip

    def __post_init__(self) -> None:
        url = self.base_url or os.environ.get("OPENAI_BASE_URL")
        if not url:
            raise InvalidConfigError(
                "backend='openai' needs the server's address: pass base_url='http://host:8000/v1' or set "
                "OPENAI_BASE_URL."
            )
        if not url.startswith(("http://", "https://")):
            raise InvalidConfigError(
                f"base_url={url!r} is not an http(s) address; pass the server's API root, e.g. "
                "'http://127.0.0.1:8000/v1' (--base-url)."
            )
        check_number("max_retries", self.max_retries, integer=True, minimum=0)
        check_number("max_concurrency", self.max_concurrency, integer=True, minimum=1)
        check_number("stall_warning", self.stall_warning, above=0, detail="seconds")
        check_number("request_timeout", self.request_timeout, above=0, detail="seconds")
        check_number("max_requests_per_minute", self.max_requests_per_minute, integer=True, minimum=1, optional=True)
        check_number("max_tokens_per_minute", self.max_tokens_per_minute, integer=True, minimum=1, optional=True)
        self._throttle: Throttle | None = None

    @property
    def needs_token_ids(self) -> bool:
        return False

    def version(self) -> str:
        import openai

        return f"an OpenAI-compatible server (openai {openai.__version__} client)"

    def describe(self, rank: int | None = None) -> str:
        return f"the OpenAI-compatible server at {self.url}"

    @property
    def url(self) -> str:
        """The server's API root."""
        return self.base_url or os.environ["OPENAI_BASE_URL"]

    reports_finished = True

    def generate(
        self,
        model: ModelRef,
        requests: list[PromptRequest],
        decoding: Decoding,
        rank: int | None = None,
        on_finished: Callable[[list[int], list[list[Sample]]], None] | None = None,
    ) -> list[list[Sample]]:
        return run_coroutine(self.agenerate(model, requests, decoding, on_finished))

    def take_concurrency(self) -> Concurrency | None:
        """How the requests in flight moved since the last call (the throttle keeps its limit across map batches
        and shards); None when no request was sent since."""
        return None if self._throttle is None else self._throttle.take()

    @property
    def throttle(self) -> Throttle:
        """The throttle of this process's requests to the server, made on first use in each process."""
        if self._throttle is None:
            self._throttle = Throttle(
                self.max_concurrency,
                requests_per_minute=self.max_requests_per_minute,
                tokens_per_minute=self.max_tokens_per_minute,
                server=f"The server at {self.url}",
            )
        return self._throttle

    async def agenerate(
        self,
        model: ModelRef,
        requests: list[PromptRequest],
        decoding: Decoding,
        on_finished: Callable[[list[int], list[list[Sample]]], None] | None = None,
    ) -> list[list[Sample]]:
        """[`generate`] as a coroutine: every request, at most `max_concurrency` in flight at a time; `on_finished`
        gets each request's position and samples as it finishes."""
        try:
            from openai import AsyncOpenAI, DefaultAsyncHttpxClient
        except ImportError as err:
            raise MissingDependencyError(
                "backend='openai' needs the openai client: pip install 'genstruct-datasets[openai]'"
            ) from err

        semaphore = asyncio.Semaphore(self.max_concurrency)
        client = AsyncOpenAI(
            base_url=self.url,
            # Local servers take any key; the client insists on one.
            api_key=self.api_key or os.environ.get("OPENAI_API_KEY") or "none",
            max_retries=self.max_retries,
            timeout=self.request_timeout,
            http_client=DefaultAsyncHttpxClient(event_hooks={"response": [_leave_to_the_throttle]}),
        )
        progress = _Progress(len(requests))

        async def one(position: int, request: PromptRequest) -> list[Sample]:
            async with semaphore:
                progress.in_flight += 1
                try:
                    samples = await self._complete(client, model, request, decoding, progress)
                finally:
                    progress.in_flight -= 1
                    progress.answered += 1
            if on_finished is not None:
                on_finished([position], [samples])
            return samples

        async with client:
            watch = asyncio.create_task(self._watch(progress))
            tasks = [asyncio.ensure_future(one(position, request)) for position, request in enumerate(requests)]
            try:
                samples = list(await asyncio.gather(*tasks))
            except BaseException:  # a refused key: the requests still in flight would only be refused too
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            finally:
                watch.cancel()
        if requests and len(progress.unreachable) == len(requests):
            raise ServerUnreachableError(
                f"the server at {self.url} could not be reached for any of the {len(requests)} request(s) of this "
                f"batch, after max_retries={self.max_retries} retries each ({progress.unreachable[-1]}): check the "
                "address (--base-url or OPENAI_BASE_URL) and that the server is up and serving it. Finished shards "
                "are kept; the same command resumes once it answers."
            )
        return samples

    async def _watch(self, progress: _Progress) -> None:
        """Every `stall_warning` seconds: a warning if no request was answered meanwhile, else the progress."""
        answered = 0
        while True:
            await asyncio.sleep(self.stall_warning)
            if progress.answered == answered:
                logger.warning(
                    "No answer from %s for %g s: %d request(s) in flight, %d of %d answered (each is abandoned "
                    "after request_timeout=%g s and retried up to max_retries=%d times).",
                    self.url, self.stall_warning, progress.in_flight, progress.answered, progress.total,
                    self.request_timeout, self.max_retries,
                )  # fmt: skip
            else:
                logger.info("%d of %d requests answered, %d in flight.", progress.answered, progress.total,
                            progress.in_flight)  # fmt: skip
            answered = progress.answered

    async def _complete(
        self, client, model: ModelRef, request: PromptRequest, decoding: Decoding, progress: _Progress
    ) -> list[Sample]:
        """The samples of one passage. A server that answers fewer choices than `n` is asked again for the rest, at
        most `num_samples` requests in all (enough for a server that answers one at a time, as ``transformers
        serve`` does); what is still missing then fails (finish_reason ``"error"``), so the next run asks again.

        Raises:
            [`ServerRefusedError`]: the server refused the key (401 or 403); no other request can succeed.
        """
        import openai

        from .._sampling import row_seed

        samples: list[Sample] = []
        seed = None if decoding.seed is None else row_seed(decoding.seed, request.passage_id, 0) % 2**31
        for _ in range(decoding.num_samples):
            wanted = decoding.num_samples - len(samples)
            settings: dict[str, Any] = {
                "model": model.name,
                "prompt": request.text,
                "max_tokens": decoding.max_new_tokens,
                "temperature": decoding.temperature if decoding.sampling else 0.0,
                "top_p": decoding.top_p if decoding.sampling else 1.0,
                "n": wanted,
            }
            if seed is not None:
                settings["seed"] = seed + len(samples)
            try:
                raw = await self._send(client, settings)
            except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
                raise ServerRefusedError(
                    f"the server at {self.url} refused the API key ({err.status_code}: {err.response.text:.200}); "
                    "set OPENAI_API_KEY (or the engine's api_key) to a key it accepts."
                ) from None
            except openai.APIStatusError as err:
                logger.warning("The server refused a request (%d): %.300s", err.status_code, err.response.text)
                return samples + [FAILED] * wanted
            except openai.APIError as err:  # timeouts and connection errors, after the client's retries
                logger.warning(
                    "A request failed after %d retries (%s: %s).", self.max_retries, type(err).__name__, err
                )
                if isinstance(err, openai.APIConnectionError) and not samples:
                    progress.unreachable.append(f"{type(err).__name__}: {err}")
                return samples + [FAILED] * wanted
            new = _samples(raw.http_response, wanted)
            if new is None:  # not a completion: asking again would get the same
                return samples + [FAILED] * wanted
            samples.extend(new)
            if len(samples) == decoding.num_samples:
                return samples
        missing = decoding.num_samples - len(samples)
        logger.warning(
            "The server at %s gave %d of the %d samples asked for passage %s in %d requests (it answers fewer "
            "choices than n); the %d missing fail, and the next run asks for them again.",
            self.url, len(samples), decoding.num_samples, request.passage_id, decoding.num_samples, missing,
        )  # fmt: skip
        return samples + [FAILED] * missing

    async def _send(self, client, settings: dict[str, Any]):
        """One completions request, sent when the throttle lets it, and again after a 429 or 503 (at most
        `max_retries` times, and not when the server asks to wait more than `MAX_RETRY_AFTER` seconds).

        Returns:
            The client's raw response of the answer.

        Raises:
            `openai.APIError`: the request's last failure.
        """
        import openai

        tokens = estimate_tokens(settings["prompt"], settings["max_tokens"], settings["n"])
        retries = 0
        while True:
            async with self.throttle.slot(tokens) as ticket:
                try:
                    raw = await client.completions.with_raw_response.create(**settings)
                except openai.APITimeoutError:
                    self.throttle.timed_out(ticket)
                    raise
                except openai.APIStatusError as err:
                    if err.status_code not in THROTTLED:
                        raise
                    wait = retry_after(err.response.headers)
                    self.throttle.throttled(ticket, err.status_code, wait)
                    if retries == self.max_retries or (wait is not None and wait > MAX_RETRY_AFTER):
                        raise
                else:
                    self.throttle.succeeded(ticket, _tokens_used(raw.http_response))
                    return raw
            retries += 1


@dataclass
class _Progress:
    """How far the requests of one map batch are, for the watch of a stalled server."""

    total: int
    answered: int = 0
    in_flight: int = 0
    unreachable: list[str] = field(default_factory=list)
    """Why each request that never reached the server failed (a connection error or a timeout past the retries)."""


async def _leave_to_the_throttle(response) -> None:
    """Tell the client not to retry a 429 or 503 itself (``x-should-retry``, a header it obeys): the engine's
    throttle sends the request again, once fewer are in flight and the Retry-After has passed."""
    if response.status_code in THROTTLED:
        response.headers["x-should-retry"] = "false"


def _tokens_used(response) -> int | None:
    """The prompt and completion tokens a completions reply says it used, or None where it does not say."""
    try:
        usage = response.json().get("usage") or {}
        return int(usage.get("total_tokens") or usage["prompt_tokens"] + usage["completion_tokens"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _samples(response, wanted: int) -> list[Sample] | None:
    """The samples of a completions reply (at most `wanted`; an empty list where it has no choices), or None (with
    a warning that quotes it) when it has another shape."""
    try:
        reply = response.json()
        choices = sorted(reply["choices"], key=lambda choice: choice.get("index", 0))[:wanted]
        texts = [choice["text"] for choice in choices]
        if not isinstance(reply["choices"], list) or not all(isinstance(text, str) for text in texts):
            raise TypeError
    except (ValueError, TypeError, KeyError, AttributeError):
        logger.warning("The server's reply is not a completion: %.300s", response.text)
        return None
    texts = [text.lstrip(" ") for text in texts]
    total = (reply.get("usage") or {}).get("completion_tokens")
    if total is None:
        counts: list[int | None] = [None] * len(texts)
    elif len(texts) == 1:
        counts = [total]
    else:  # usage covers all choices together: share it out by length, an estimate
        length = sum(map(len, texts)) or 1
        counts = [round(total * len(text) / length) for text in texts]
    return [
        Sample(text, finish_reason(choice.get("finish_reason")), count)
        for text, choice, count in zip(texts, choices, counts)
    ]


def run_coroutine(coroutine):
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
