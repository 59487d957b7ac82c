"""How hard to press a server: requests in flight that adapt (AIMD), pauses on Retry-After, request and token windows.

[`Throttle`] decides from numbers and a clock it is given, so that it is tested without a server or a sleep; its
[`Throttle.slot`] waits for its go-ahead in an event loop. The figures it keeps are a [`Concurrency`] record.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timezone

from ..runstats import Concurrency

logger = logging.getLogger(__name__)

WINDOW = 60.0
"""Seconds of the request and token windows (the limits are per minute)."""

DECREASE = 0.5
"""What a throttling signal multiplies the requests in flight by (TCP's and DataDesigner's halving)."""

DEFAULT_PAUSE = 1.0
"""Seconds without a new request after a 429 or 503 that gave no Retry-After."""

MAX_RETRY_AFTER = 120.0
"""The longest Retry-After waited for (as the `openai` client does); a server that asks more is not asked again."""

CHARS_PER_TOKEN = 4
"""Characters of English text per token, to estimate a prompt's tokens before sending it (the server counts)."""


def estimate_tokens(prompt: str, max_tokens: int, n: int = 1) -> int:
    """The tokens a completions request may use, counted before it is sent: its prompt's (about one a
    `CHARS_PER_TOKEN` characters) and `max_tokens` for each of its `n` choices.

    Example:

    ```py
    >>> estimate_tokens("x" * 400, max_tokens=50, n=2)
    201
    ```
    """
    return len(prompt) // CHARS_PER_TOKEN + 1 + max_tokens * n


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """The seconds a server asks to wait before the next request: its ``retry-after-ms``, or its ``Retry-After`` in
    seconds or as an HTTP date (RFC 9110); None when it asks nothing or cannot be read.

    Args:
        headers (`Mapping[str, str]`): the answer's headers (an `httpx.Headers`, case-insensitive, or a dict of
            lowercase names).
        now (`float`, *optional*): the time (seconds since the epoch) a date is counted from; defaults to now.

    Returns:
        `float` or `None`: seconds, never negative (a date in the past is 0).

    Example:

    ```py
    >>> retry_after({"retry-after": "2.5"})
    2.5
    >>> retry_after({"retry-after": "Thu, 01 Jan 1970 00:01:00 GMT"}, now=15.0)
    45.0
    ```
    """
    milliseconds = headers.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return _seconds(float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return _seconds(float(value))
    except ValueError:
        pass
    try:
        date = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if date.tzinfo is None:  # "-0000": UTC, as HTTP dates are
        date = date.replace(tzinfo=timezone.utc)
    return max(0.0, date.timestamp() - (time.time() if now is None else now))


def _seconds(value: float) -> float | None:
    return None if math.isnan(value) else max(0.0, value)


@dataclass
class _Spent:
    """Tokens counted in the token window for a request sent at `at`: its estimate, then what it really used."""

    at: float
    tokens: int
    in_window: bool = True


@dataclass
class Ticket:
    """One request let through by a [`Throttle`]; the throttle is told how it went, once."""

    spent: _Spent
    epoch: int
    """The throttle's epoch when it was sent: a signal from a request sent before the last decrease is not counted
    again (a burst of 429s halves the requests in flight once, not once per answer)."""
    released: bool = False


class Throttle:
    """Requests in flight to one server, adapted to how it answers, within request and token budgets per minute.

    Additive increase, multiplicative decrease (AIMD, as in TCP and DataDesigner): each request answered raises the
    limit by 1/limit (one more request in flight per round of answers), up to `max_concurrency`; a 429, a 503 or a
    timeout halves it, down to 1, once per round (answers to requests sent before the last decrease do not halve it
    again). After a 429 or 503, no request is sent before the time its Retry-After gives (`DEFAULT_PAUSE` without
    one). A request is sent while fewer than the limit are in flight, fewer than `requests_per_minute` were sent in
    the last minute, and the tokens counted in the last minute (each request's prompt and `max_tokens` before it
    goes, what it used once answered) leave room for its own; a request larger than the token budget goes alone.

    Args:
        max_concurrency (`int`): the most requests in flight, and where the limit starts.
        requests_per_minute (`int`, *optional*): no more requests sent in any 60 s; None: no such limit.
        tokens_per_minute (`int`, *optional*): no more tokens counted in any 60 s; None: no such limit.
        server (`str`, *optional*, defaults to `"the server"`): how log lines name the server.
        clock (`Callable[[], float]`, *optional*, defaults to `time.monotonic`): the time in seconds.

    Example:

    ```py
    >>> now = [0.0]
    >>> throttle = Throttle(8, clock=lambda: now[0])
    >>> ticket = throttle.admit(tokens=100)
    >>> throttle.throttled(ticket, 429, retry_after=2.0)
    >>> throttle.concurrency, throttle.wait(tokens=100)
    (4, 2.0)
    ```
    """

    def __init__(
        self,
        max_concurrency: int,
        *,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        server: str = "the server",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_concurrency = max_concurrency
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self.server = server
        self.clock = clock
        self.limit = float(max_concurrency)
        self.in_flight = 0
        self.paused_until = -math.inf
        self._epoch = 0
        self._logged = max_concurrency
        self._sent: deque[float] = deque()
        self._spent: deque[_Spent] = deque()
        self._tokens = 0
        """The tokens of `_spent`, the requests of the last minute."""
        self._waiting: list[asyncio.Future] = []
        self._figures: Concurrency | None = None

    @property
    def concurrency(self) -> int:
        """Requests allowed in flight now."""
        return max(1, int(self.limit))

    def wait(self, tokens: int) -> float:
        """Seconds before a request that counts `tokens` may be sent: 0 now, `math.inf` until one in flight ends.

        Args:
            tokens (`int`): what the request counts in the token window ([`estimate_tokens`]).
        """
        now = self.clock()
        while self._sent and self._sent[0] <= now - WINDOW:
            self._sent.popleft()
        while self._spent and self._spent[0].at <= now - WINDOW:
            gone = self._spent.popleft()
            gone.in_window = False
            self._tokens -= gone.tokens
        if now < self.paused_until:
            return self.paused_until - now
        if self.in_flight >= self.concurrency:
            return math.inf
        if self.requests_per_minute is not None and len(self._sent) >= self.requests_per_minute:
            return self._sent[0] + WINDOW - now
        if self.tokens_per_minute is not None and self._spent and self._tokens + tokens > self.tokens_per_minute:
            return self._spent[0].at + WINDOW - now
        return 0.0

    def admit(self, tokens: int) -> Ticket:
        """Count a request as sent now (once [`wait`] said 0), with the `tokens` it may use."""
        now = self.clock()
        self._figures_now()
        self.in_flight += 1
        self._sent.append(now)
        spent = _Spent(now, tokens)
        self._spent.append(spent)
        self._tokens += tokens
        return Ticket(spent, self._epoch)

    def succeeded(self, ticket: Ticket, tokens: int | None = None) -> None:
        """The request was answered, having used `tokens` (None: unknown, its estimate stays): one more in flight
        per round of answers."""
        self._release(ticket, tokens)
        if self.limit >= self.max_concurrency:
            return
        self.limit = min(float(self.max_concurrency), self.limit + 1 / self.limit)
        if self.concurrency >= min(2 * self._logged, self.max_concurrency):
            self._logged = self.concurrency
            logger.info("%s answers again: up to %d requests in flight (of %d).", self.server,
                        self.concurrency, self.max_concurrency)  # fmt: skip

    def throttled(self, ticket: Ticket, status: int, retry_after: float | None) -> None:
        """The server answered 429 (too many requests) or 503 (overloaded): no request before `retry_after` seconds
        (`DEFAULT_PAUSE` when None; none when more than `MAX_RETRY_AFTER`, as the request is not sent again), and
        half as many in flight. A refused request used no tokens."""
        self._release(ticket, 0)
        figures = self._figures_now()
        if status == 429:
            figures.rate_limited += 1
        else:
            figures.overloaded += 1
        pause = DEFAULT_PAUSE if retry_after is None else retry_after
        if pause <= MAX_RETRY_AFTER:
            now = self.clock()
            figures.retry_after_seconds += max(0.0, now + pause - max(self.paused_until, now))
            self.paused_until = max(self.paused_until, now + pause)
        self._decrease(ticket, f"answered {status}")

    def timed_out(self, ticket: Ticket) -> None:
        """The request got no answer in time (past the client's retries): half as many in flight."""
        self._release(ticket, None)
        self._figures_now().timeouts += 1
        self._decrease(ticket, "did not answer in time")

    def failed(self, ticket: Ticket) -> None:
        """The request failed in a way that says nothing of the server's load (a refusal, a lost connection)."""
        self._release(ticket, None)

    @asynccontextmanager
    async def slot(self, tokens: int) -> AsyncIterator[Ticket]:
        """Wait in the running event loop until a request that counts `tokens` may be sent, and count it as sent.

        Tell the throttle how the request went ([`succeeded`], [`throttled`], [`timed_out`], [`failed`]); one that
        leaves the block untold (an error, a cancellation) counts as [`failed`].

        Example:

        ```py
        >>> async def send(throttle):
        ...     async with throttle.slot(tokens=300) as ticket:
        ...         throttle.succeeded(ticket, tokens=250)
        >>> asyncio.run(send(Throttle(4)))
        ```
        """
        loop = asyncio.get_running_loop()
        while (wait := self.wait(tokens)) > 0:
            woken = loop.create_future()
            self._waiting.append(woken)
            try:
                await asyncio.wait_for(woken, None if math.isinf(wait) else wait)
            except asyncio.TimeoutError:
                pass
            finally:
                if woken in self._waiting:
                    self._waiting.remove(woken)
        ticket = self.admit(tokens)
        try:
            yield ticket
        finally:
            if not ticket.released:
                self.failed(ticket)

    def take(self) -> Concurrency | None:
        """The figures since the last call, the limit now as their `end`; None when no request was sent since."""
        figures, self._figures = self._figures, None
        if figures is not None:
            figures.end = self.concurrency
        return figures

    def _figures_now(self) -> Concurrency:
        if self._figures is None:
            self._figures = Concurrency(start=self.concurrency, lowest=self.concurrency)
        return self._figures

    def _release(self, ticket: Ticket, tokens: int | None) -> None:
        if ticket.released:
            raise RuntimeError("the throttle was already told how this request went")
        ticket.released = True
        self.in_flight -= 1
        if tokens is not None:
            if ticket.spent.in_window:
                self._tokens += tokens - ticket.spent.tokens
            ticket.spent.tokens = tokens
        waiting, self._waiting = self._waiting, []
        for woken in waiting:
            if not woken.done():
                woken.set_result(None)

    def _decrease(self, ticket: Ticket, why: str) -> None:
        if ticket.epoch != self._epoch:
            return
        self._epoch += 1
        before = self.concurrency
        self.limit = max(1.0, self.limit * DECREASE)
        self._logged = self.concurrency
        figures = self._figures_now()
        figures.lowest = min(figures.lowest, self.concurrency)
        if self.concurrency < before:
            logger.info("%s %s: %d → %d requests in flight.", self.server, why, before, self.concurrency)
