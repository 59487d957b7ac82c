"""An asynchronous client for OpenAI-compatible `/v1/completions` servers (vLLM, SGLang, `transformers serve`)."""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class CompletionRequest:
    """One prompt and how many samples it needs."""

    prompt: str
    n: int
    seed: int | None = None


@dataclass(frozen=True)
class ServerSettings:
    base_url: str
    api_key: str | None
    model: str
    max_tokens: int
    temperature: float
    top_p: float
    max_concurrency: int
    timeout: float
    max_retries: int


Sample = tuple[Any, str, Any]  # (completion or None, finish_reason, completion_tokens or None)


async def complete_all(requests: list[CompletionRequest], settings: ServerSettings) -> list[list[Sample]]:
    """Send every request, at most `max_concurrency` at a time, and return each one's samples in order.

    A request that still fails after `max_retries` retries (or fails with a status that retrying cannot
    fix) gives samples with completion None and finish_reason ``"error"``; the caller counts them.
    """
    import aiohttp

    semaphore = asyncio.Semaphore(settings.max_concurrency)
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    timeout = aiohttp.ClientTimeout(total=settings.timeout)
    # As many connections as requests in flight, so that no request waits for a pooled one (aiohttp's default
    # is 100) and its timeout covers only the request itself.
    connector = aiohttp.TCPConnector(limit=settings.max_concurrency)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as session:

        async def one(request: CompletionRequest) -> list[Sample]:
            async with semaphore:
                return await _complete(session, request, settings)

        return list(await asyncio.gather(*(one(request) for request in requests)))


async def _complete(session, request: CompletionRequest, settings: ServerSettings) -> list[Sample]:
    samples: list[Sample] = []
    # Servers that ignore `n` (transformers serve does) return fewer choices: ask again for the rest.
    while len(samples) < request.n:
        wanted = request.n - len(samples)
        body = {
            "model": settings.model,
            "prompt": request.prompt,
            "max_tokens": settings.max_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "n": wanted,
        }
        if request.seed is not None:
            body["seed"] = request.seed + len(samples)
        reply = await _post(session, f"{settings.base_url.rstrip('/')}/completions", body, settings.max_retries)
        try:
            choices = sorted(reply["choices"], key=lambda choice: choice.get("index", 0))[:wanted]
            new = _samples(choices, reply.get("usage") or {})
        except (TypeError, KeyError, AttributeError):  # no reply, or not the shape of a completion
            new = []
        if not new:
            if reply is not None:
                logger.warning("The server's reply has no completion: %.300s", reply)
            return samples + [(None, "error", None)] * wanted
        samples.extend(new)
    return samples


def _samples(choices: list[dict], usage: dict) -> list[Sample]:
    texts = [(choice.get("text") or "").lstrip(" ") for choice in choices]
    total = usage.get("completion_tokens")
    if total is None:
        counts = [None] * len(texts)
    elif len(texts) == 1:
        counts = [total]
    else:  # usage covers all choices together: share it out by length, an estimate
        length = sum(map(len, texts)) or 1
        counts = [round(total * len(text) / length) for text in texts]
    return [
        (text, choice.get("finish_reason") or "stop", count) for text, choice, count in zip(texts, choices, counts)
    ]


async def _post(session, url: str, body: dict, max_retries: int) -> dict | None:
    import aiohttp

    for attempt in range(max_retries + 1):
        retry_after = None
        try:
            async with session.post(url, json=body) as response:
                if response.status == 200:
                    try:
                        return await response.json(content_type=None)
                    except ValueError:
                        logger.warning("The server answered 200 with a body that is not JSON.")
                        return None
                detail = (await response.text())[:300]
                if response.status not in RETRY_STATUSES:
                    logger.warning("The server refused a request (%d): %s", response.status, detail)
                    return None
                retry_after = response.headers.get("Retry-After")
                problem = f"status {response.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:
            problem = f"{type(err).__name__}: {err}"
        if attempt == max_retries:
            logger.warning("A request failed after %d retries (%s).", max_retries, problem)
            return None
        delay = min(60.0, float(retry_after)) if retry_after and retry_after.isdigit() else min(30.0, 0.5 * 2**attempt)
        await asyncio.sleep(delay * (0.5 + random.random()))
    return None
