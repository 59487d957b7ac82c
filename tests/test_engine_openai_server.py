"""The "openai" engine against real servers on 127.0.0.1: `transformers serve`, and a flaky one for retries."""

import logging
import os
import shutil
import subprocess
import time
import urllib.request

import pytest
from completion_server import FlakyServer, free_port
from datasets import Dataset

from genstruct_datasets import GenstructGenerator, InvalidConfigError, testing

SERVE = shutil.which("transformers")


@pytest.fixture(scope="session")
def served_model(taught_generator, tmp_path_factory):
    """`transformers serve` with the taught generator on a free local port; yields (base_url, model)."""
    if SERVE is None or shutil.which("uvicorn") is None:
        pytest.skip("needs transformers[serving]: pip install 'genstruct-datasets[testing]'")
    port = free_port()
    log = (tmp_path_factory.mktemp("serve") / "serve.log").open("w")
    server = subprocess.Popen(
        [SERVE, "serve", taught_generator, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.monotonic() + 180
    while True:  # wait for the server to answer, within a bound
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"transformers serve did not start; see {log.name}")
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}/v1", taught_generator
    server.terminate()
    server.wait(timeout=30)
    log.close()


def test_greedy_completions_match_the_local_backend(served_model, passages):
    base_url, model = served_model
    remote = GenstructGenerator(model, backend="openai", base_url=base_url, max_new_tokens=40)(passages)
    local = GenstructGenerator(model, max_new_tokens=40)(passages)
    assert remote == local
    assert remote["completion"][0] == testing.TAUGHT_COMPLETION.strip().removesuffix("</s>")


def test_samples_and_the_async_map(served_model, passages):
    base_url, model = served_model
    gen = GenstructGenerator(model, backend="openai", base_url=base_url, max_new_tokens=30, num_samples=2, seed=0)
    out = Dataset.from_dict(passages).map(gen.agenerate, batched=True, batch_size=2)
    # transformers serve ignores `n`: the client asks again until each passage has its samples.
    assert out["sample_index"] == [0, 1] * 4
    assert out["title"] == [t for t in passages["title"] for _ in range(2)]
    assert set(out["finish_reason"]) <= {"stop", "length"} and all(out["completion"])


@pytest.mark.parametrize(
    ("failures", "status", "retries", "expected", "requests"),
    [
        pytest.param(2, 503, 3, ("Why?\n[[[Assistant]]] Because.", "stop", 9), 3, id="retried-then-answered"),
        pytest.param(2, 429, 1, (None, "error", None), 2, id="rate-limited-past-the-retries"),
        pytest.param(1, 400, 3, (None, "error", None), 1, id="bad-request-not-retried"),
    ],
)
def test_retries_with_backoff(failures, status, retries, expected, requests, caplog):
    server = FlakyServer(failures, status)
    try:
        gen = GenstructGenerator(
            "tiny", backend="openai", base_url=f"http://127.0.0.1:{server.port}/v1", max_retries=retries
        )
        out = gen({"title": ["Moon"], "content": ["The Moon orbits Earth."]})
    finally:
        server.close()
    assert (out["completion"][0], out["finish_reason"][0], out["completion_tokens"][0]) == expected
    assert len(server.requests) == requests
    assert server.requests[0]["prompt"].endswith("[[[User]]] ") and server.requests[0]["model"] == "tiny"
    if expected[1] == "error":
        assert "1 sample(s) failed after retries" in caplog.text


def test_openai_needs_an_address(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(InvalidConfigError, match="backend='openai' needs the server's address"):
        GenstructGenerator(backend="openai")


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param("not json", id="not-json"),
        pytest.param('{"choices": "none"}', id="choices-not-a-list"),
        pytest.param('{"object": "error"}', id="no-choices"),
        pytest.param('{"choices": [{"index": 0, "message": {"content": "Hi"}}]}', id="chat-shaped"),
    ],
)
def test_a_malformed_answer_marks_the_row_and_spares_the_batch(answer, caplog):
    server = FlakyServer(0, answer=answer)
    try:
        gen = GenstructGenerator("tiny", backend="openai", base_url=f"http://127.0.0.1:{server.port}/v1")
        out = gen({"title": ["Moon", "Tea"], "content": ["The Moon orbits Earth.", "Tea is a drink."]})
    finally:
        server.close()
    assert out["finish_reason"] == ["error", "error"] and out["completion"] == [None, None]
    assert f"The server's reply is not a completion: {answer}" in caplog.text


def test_a_stalled_server_is_reported_while_it_stalls(caplog):
    import threading

    server = FlakyServer()
    server.holding = True
    gen = GenstructGenerator("tiny", backend="openai", base_url=server.base_url, stall_warning=0.2)
    out = {}
    worker = threading.Thread(target=lambda: out.update(gen({"title": ["Moon"], "content": ["The Moon."]})))
    try:
        with caplog.at_level(logging.WARNING, logger="genstruct_datasets"):
            worker.start()
            deadline = time.monotonic() + 30
            while "No answer from" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
            server.holding = False  # the server answers at last
            worker.join(30)
    finally:
        server.holding = False
        server.close()
    assert f"No answer from {server.base_url} for 0.2 s: 1 request(s) in flight, 0 of 1 answered" in caplog.text
    assert out["finish_reason"] == ["stop"]


@pytest.mark.parametrize(
    ("choices", "expected", "requests"),
    [
        pytest.param(1, ["stop"] * 3, 3, id="one-choice-a-reply"),
        pytest.param(0, ["error"] * 3, 3, id="no-choices-ever"),
    ],
)
def test_a_server_that_gives_fewer_choices_is_asked_a_bounded_number_of_times(choices, expected, requests, caplog):
    server = FlakyServer(choices=choices)
    try:
        gen = GenstructGenerator("tiny", backend="openai", base_url=server.base_url, num_samples=3)
        out = gen({"title": ["Moon"], "content": ["The Moon orbits Earth."]})
    finally:
        server.close()
    assert out["finish_reason"] == expected
    assert [body["n"] for body in server.requests] == ([3, 2, 1] if choices else [3, 3, 3])
    assert len(server.requests) == requests
    if not choices:
        assert "gave 0 of the 3 samples asked for passage" in caplog.text


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_stops_at_once(status):
    from genstruct_datasets import ServerRefusedError

    server = FlakyServer(status=status, failing=lambda body: True)
    try:
        gen = GenstructGenerator("tiny", backend="openai", base_url=server.base_url, max_concurrency=1)
        with pytest.raises(ServerRefusedError, match=rf"refused the API key \({status}: busy\); set OPENAI_API_KEY"):
            gen({"title": [f"Passage {i}" for i in range(5)], "content": [f"Passage {i}." for i in range(5)]})
    finally:
        server.close()
    # Not retried, and the passages not yet sent are not sent (one in flight at a time: at most the next one went).
    assert len(server.requests) <= 2


def test_a_server_that_cannot_be_reached_stops_the_batch():
    from genstruct_datasets import ServerUnreachableError

    gen = GenstructGenerator("tiny", backend="openai", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0)
    with pytest.raises(ServerUnreachableError, match=r"could not be reached for any of the 2 request\(s\)"):
        gen({"title": ["Moon", "Tea"], "content": ["The Moon.", "Tea."]})


@pytest.mark.parametrize(
    ("status", "wait"),
    [
        pytest.param(429, "0.05", id="429-retry-after-seconds"),
        pytest.param(503, "Thu, 01 Jan 1970 00:00:00 GMT", id="503-retry-after-date"),
    ],
)
def test_a_rate_limited_server_gets_fewer_requests_then_more_and_every_passage_once(status, wait, caplog):
    from collections import Counter

    from genstruct_datasets import run_pipeline

    # Two requests at a time during its first 30 requests; above that it refuses, then it takes all.
    server = FlakyServer(status=status, concurrent=2, limited=30, retry_after=wait, delay=0.05)
    titles = [f"Passage {i}" for i in range(40)]
    passages = Dataset.from_dict({"title": titles, "content": [f"Passage {i} says little." for i in titles]})
    gen = GenstructGenerator("tiny", backend="openai", base_url=server.base_url, max_concurrency=8)
    try:
        with caplog.at_level(logging.INFO, logger="genstruct_datasets"):
            result = run_pipeline(passages, gen, load_from_cache_file=False)
    finally:
        server.close()
    assert result.failed == 0 and result.rows["finish_reason"] == ["stop"] * 40
    answered = Counter(body["prompt"] for body in server.answered)
    assert len(answered) == 40 and set(answered.values()) == {1}  # each prompt answered once: none lost or doubled
    refused = len(server.requests) - len(server.answered)
    figures = result.stats.concurrency
    assert refused > 0 and figures.rate_limited + figures.overloaded == refused  # the client retried none itself
    assert figures.start == 8 and figures.lowest <= 2 and figures.end > figures.lowest  # lowered, then raised again
    assert f"The server at {server.base_url} answered {status}: 8 → 4 requests in flight." in caplog.messages
    assert any("answers again: up to" in message for message in caplog.messages)
