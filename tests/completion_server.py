"""A real OpenAI-compatible completions server on 127.0.0.1 for tests: it fails on demand, then recovers."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable

COMPLETION = " Why?\n[[[Assistant]]] Because."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FlakyServer:
    """Answers `status` to the first `failures` requests and to those that `failing(body)` picks, then completes.

    Every request body is kept in `requests`. `answer` replaces the completion with raw text (a malformed reply).
    `completion(body, index)` writes the text of the request's `index`th choice (default: `COMPLETION` for all), so
    that samples can differ. Set `failing` to None to make a failing server recover. While `holding` is true,
    requests are accepted and not answered (a stalled server). `choices` caps the choices of a reply, whatever `n`
    asks (a server that gives fewer).

    A rate-limited server: with `concurrent`, a request that arrives while that many are being answered is refused
    with `status` and ``Retry-After: {retry_after}``, among the first `limited` requests (all, by default); each
    answer then takes `delay` seconds, so that requests overlap. `answered` lists the bodies answered 200.
    """

    def __init__(
        self,
        failures: int = 0,
        status: int = 503,
        answer: str | None = None,
        failing: Callable[[dict], bool] | None = None,
        choices: int | None = None,
        completion: Callable[[dict, int], str] | None = None,
        concurrent: int | None = None,
        limited: int | None = None,
        retry_after: str = "0",
        delay: float = 0.0,
    ) -> None:
        self.failures, self.status, self.answer, self.failing = failures, status, answer, failing
        self.choices = choices
        self.concurrent, self.limited, self.retry_after, self.delay = concurrent, limited, retry_after, delay
        self.answering = 0
        self.answered: list[dict] = []
        self.completion = completion or (lambda body, index: COMPLETION)
        self.requests: list[dict] = []
        self.holding = False
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(started,), daemon=True)
        self.thread.start()
        started.wait(10)

    def _serve(self, started) -> None:
        from aiohttp import web

        async def completions(request):
            body = await request.json()
            self.requests.append(body)
            while self.holding:
                await asyncio.sleep(0.01)
            if len(self.requests) <= self.failures or (self.failing is not None and self.failing(body)):
                return web.Response(status=self.status, headers={"Retry-After": "0"}, text="busy")
            if (
                self.concurrent is not None
                and self.answering >= self.concurrent
                and (self.limited is None or len(self.requests) <= self.limited)
            ):
                return web.Response(status=self.status, headers={"Retry-After": self.retry_after}, text="slow down")
            self.answering += 1
            try:
                await asyncio.sleep(self.delay)
            finally:
                self.answering -= 1
            self.answered.append(body)
            if self.answer is not None:
                return web.Response(status=200, text=self.answer)
            choices = [
                {"index": i, "text": self.completion(body, i), "finish_reason": "stop"}
                for i in range(body.get("n", 1))
            ][: self.choices]
            return web.json_response({"choices": choices, "usage": {"completion_tokens": 9 * len(choices)}})

        app = web.Application()
        app.router.add_post("/v1/completions", completions)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        started.set()
        self.loop.run_forever()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
