"""The server throttle alone: AIMD steps and bounds, Retry-After, request and token windows, on an injected clock."""

import asyncio
import logging
import math
from email.utils import formatdate

import pytest

from genstruct_datasets.engines._throttle import DEFAULT_PAUSE, Throttle, estimate_tokens, retry_after
from genstruct_datasets.runstats import Concurrency


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def test_a_round_of_429s_halves_the_requests_in_flight_once_down_to_one(clock, caplog):
    throttle = Throttle(8, server="The server at X", clock=clock)
    burst = [throttle.admit(10) for _ in range(8)]
    assert throttle.wait(10) == math.inf  # all 8 in flight
    with caplog.at_level(logging.INFO, logger="genstruct_datasets"):
        for ticket in burst:  # answers to requests sent together: one signal
            throttle.throttled(ticket, 429, retry_after=0)
    assert throttle.concurrency == 4 and throttle.in_flight == 0
    assert caplog.messages == ["The server at X answered 429: 8 → 4 requests in flight."]
    lowered = []
    for _ in range(4):  # each later round that is refused halves it again, never below 1
        throttle.throttled(throttle.admit(10), 503, retry_after=0)
        lowered.append(throttle.concurrency)
    assert lowered == [2, 1, 1, 1]
    throttle.timed_out(throttle.admit(10))
    assert throttle.take() == Concurrency(start=8, lowest=1, end=1, rate_limited=8, overloaded=4, timeouts=1)
    assert throttle.take() is None  # nothing sent since


def test_answers_raise_the_limit_by_one_per_round_up_to_the_most(clock, caplog):
    throttle = Throttle(4, server="S", clock=clock)
    throttle.throttled(throttle.admit(10), 429, retry_after=0)
    throttle.throttled(throttle.admit(10), 429, retry_after=0)
    assert throttle.concurrency == 1
    raised = []
    caplog.clear()  # the lowering's lines, where an earlier test left the package's logger at INFO
    with caplog.at_level(logging.INFO, logger="genstruct_datasets"):
        for _ in range(12):
            throttle.succeeded(throttle.admit(10))
            raised.append(throttle.concurrency)
    # 1 answer at 1 in flight, then 2 at 2, 3 at 3: one more per round of answers, and no more than 4.
    assert raised == [2, 2, 2, 3, 3, 3, 4, 4, 4, 4, 4, 4]
    assert caplog.messages == ["S answers again: up to 2 requests in flight (of 4).",
                               "S answers again: up to 4 requests in flight (of 4)."]  # fmt: skip
    figures = throttle.take()
    assert (figures.start, figures.lowest, figures.end) == (4, 1, 4)


def test_a_failure_that_says_nothing_of_the_load_changes_nothing(clock):
    throttle = Throttle(4, clock=clock)
    throttle.failed(throttle.admit(10))
    assert throttle.concurrency == 4 and throttle.in_flight == 0 and throttle.wait(10) == 0
    ticket = throttle.admit(10)
    throttle.succeeded(ticket)
    with pytest.raises(RuntimeError, match="already told how this request went"):
        throttle.failed(ticket)


def test_nothing_is_sent_before_the_retry_after_and_the_wait_is_counted_once(clock):
    throttle = Throttle(8, clock=clock)
    sent = [throttle.admit(10), throttle.admit(10)]
    throttle.throttled(sent[0], 429, retry_after=2.0)
    assert throttle.wait(10) == 2.0
    clock.now += 1
    assert throttle.wait(10) == 1.0
    throttle.throttled(sent[1], 429, retry_after=2.0)
    assert throttle.wait(10) == 2.0  # the pauses overlap: 3 s in all, not 4
    clock.now += 2
    assert throttle.wait(10) == 0
    throttle.throttled(throttle.admit(10), 503, retry_after=None)
    assert throttle.wait(10) == DEFAULT_PAUSE
    assert throttle.take().retry_after_seconds == 3.0 + DEFAULT_PAUSE


def test_a_retry_after_longer_than_the_most_is_not_waited_for(clock):
    throttle = Throttle(8, clock=clock)
    throttle.throttled(throttle.admit(10), 429, retry_after=3600.0)
    assert throttle.wait(10) == 0 and throttle.take().retry_after_seconds == 0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"retry-after": "2.5"}, 2.5, id="seconds"),
        pytest.param({"retry-after": "0"}, 0.0, id="zero"),
        pytest.param({"retry-after": "-3"}, 0.0, id="negative"),
        pytest.param({"retry-after": formatdate(1030.0, usegmt=True)}, 30.0, id="http-date"),
        pytest.param({"retry-after": formatdate(900.0, usegmt=True)}, 0.0, id="http-date-past"),
        pytest.param({"retry-after-ms": "250", "retry-after": "9"}, 0.25, id="milliseconds-first"),
        pytest.param({"retry-after": "soon"}, None, id="unreadable"),
        pytest.param({"retry-after": "nan"}, None, id="nan"),
        pytest.param({}, None, id="absent"),
    ],
)
def test_retry_after_in_seconds_or_as_an_http_date(headers, expected):
    assert retry_after(headers, now=1000.0) == expected


def test_retry_after_reads_headers_whatever_their_case():
    httpx = pytest.importorskip("httpx")
    assert retry_after(httpx.Headers({"Retry-After": "4"})) == 4.0


def test_no_more_requests_a_minute_than_asked(clock):
    throttle = Throttle(100, requests_per_minute=3, clock=clock)
    for _ in range(3):
        throttle.succeeded(throttle.admit(10))
        clock.now += 10
    assert throttle.wait(10) == 30.0  # the first leaves the window 60 s after it went
    clock.now += 30
    assert throttle.wait(10) == 0


def test_tokens_are_counted_before_sending_and_settled_on_the_real_usage(clock):
    throttle = Throttle(100, tokens_per_minute=1000, clock=clock)
    ticket = throttle.admit(600)  # the prompt and max_tokens, before it goes
    clock.now += 1
    assert throttle.wait(600) == 59.0
    throttle.succeeded(ticket, tokens=300)  # what the server says it used
    assert throttle.wait(600) == 0
    throttle.throttled(throttle.admit(600), 429, retry_after=0)  # a refused request used nothing
    assert throttle.wait(700) == 0
    throttle.admit(700)
    assert throttle.wait(1) == 59.0
    clock.now += 59
    assert throttle.wait(300) == 0 and throttle.wait(400) == 1.0  # the first left the window, the 700 still count
    clock.now += 1
    assert throttle.wait(5000) == 0  # a request above the budget goes alone
    slow = throttle.admit(100)
    clock.now += 61
    assert throttle.wait(100) == 0
    throttle.admit(100)
    throttle.succeeded(slow, tokens=900)  # answered after it left the window: it counts no more
    assert throttle.wait(900) == 0 and throttle.wait(901) == 60.0


def test_estimated_tokens_count_the_prompt_and_every_sample():
    assert estimate_tokens("x" * 400, max_tokens=50, n=2) == 101 + 100


def test_a_slot_waits_for_one_to_end_and_a_cancelled_wait_leaves_nothing_behind():
    async def scenario():
        throttle = Throttle(1)
        answer = asyncio.Event()
        order = []

        async def request(name):
            async with throttle.slot(10) as ticket:
                order.append(name)
                await answer.wait()
                throttle.succeeded(ticket)

        first, second, third = (asyncio.create_task(request(name)) for name in ("first", "second", "third"))
        for _ in range(5):
            await asyncio.sleep(0)  # let every task run to where it waits
        assert order == ["first"] and throttle.in_flight == 1
        third.cancel()
        answer.set()
        await asyncio.gather(first, second, third, return_exceptions=True)
        assert order == ["first", "second"] and throttle.in_flight == 0 and not throttle._waiting

        async def failing():
            async with throttle.slot(10):
                raise ValueError("lost connection")

        with pytest.raises(ValueError):
            await failing()
        assert throttle.in_flight == 0 and throttle.concurrency == 1  # an error untold is a failure: no decrease

    asyncio.run(scenario())
