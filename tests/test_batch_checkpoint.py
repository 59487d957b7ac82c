"""The batch checkpoint: a shard's passages kept as parts as they finish, so that a kill loses a batch, not a shard."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from datasets import load_dataset

from genstruct_datasets import GenstructBuilder, GenstructConfig, RunReport, RunStats, generate
from genstruct_datasets.report.text import cost
from genstruct_datasets.shards import ShardParts

DRIVER = [sys.executable, str(Path(__file__).parent / "cli_driver.py")]


class Killed(Exception):
    """What a test raises in place of a SIGKILL, in this process: nothing of the build's own handling runs."""


@pytest.fixture
def one_shard(tmp_path, recipe, monkeypatch) -> dict:
    """A builder's settings for one shard of eight one-line passages, P0 to P7, generated two at a time and kept two
    at a time (one part per sub-batch)."""
    corpus = tmp_path / "passages.jsonl"
    corpus.write_text(
        "".join(json.dumps({"title": f"P{i}", "content": f"Passage {i} is about the Moon."}) + "\n" for i in range(8))
    )
    monkeypatch.setattr(generate, "WRITE_GROUP", 2)
    settings = {"source": str(corpus), "split_documents": False, "text_column": "content", "shard_size": 8}
    settings["min_tokens"] = 4  # one-line passages, read as they are
    return {**recipe, **settings, "batch_size": 2}


@pytest.fixture
def kill_after_parts(monkeypatch):
    """``kill_after_parts(n)``: the build stops (`Killed`) once it has written its nth part, as a kill would."""

    def kill(count: int) -> None:
        real_write = ShardParts.__call__
        written = []

        def write(parts, rows):
            real_write(parts, rows)
            written.append(rows)
            if len(written) == count:
                raise Killed

        monkeypatch.setattr(ShardParts, "__call__", write)

    return kill


def build(settings: dict, **options) -> GenstructBuilder:
    builder = GenstructBuilder(**settings, **options)
    builder.build_shards()
    return builder


def parts_folder(builder: GenstructBuilder) -> Path:
    return builder.shard_job().parts(0).folder


def test_a_killed_build_keeps_its_finished_batches_and_generates_only_the_rest(
    one_shard, generated, kill_after_parts, monkeypatch
):
    uninterrupted = build({**one_shard, "cache_dir": one_shard["cache_dir"] + "-uninterrupted"})
    (shard,) = uninterrupted.shard_job().paths
    expected = load_dataset("parquet", data_files=str(shard), split="train").to_list()
    generated.clear()

    with monkeypatch.context() as patch:
        kill_after_parts(2)
        with pytest.raises(Killed):
            build(one_shard)
        patch.undo()
    builder = GenstructBuilder(**one_shard)
    assert len(list(parts_folder(builder).glob("part-*.parquet"))) == 2
    generated.clear()
    builder.build_shards()
    # The map batch is generated again for the passages the parts lack (four of eight), and for them alone.
    assert sorted(generated) == sorted(set(generated)) and len(generated) == 4
    stats = builder.built.stats
    assert (stats.reused_passages, stats.generated_passages) == (4, 4)
    (path,) = builder.shard_job().paths
    # The same rows as the uninterrupted build, in the same order; the parts are gone once the shard is written.
    assert load_dataset("parquet", data_files=str(path), split="train").to_list() == expected
    assert not parts_folder(builder).exists()


def test_worker_processes_keep_their_passages_and_a_build_killed_at_its_end_generates_nothing(
    one_shard, generated, monkeypatch
):
    from genstruct_datasets.shards import job

    def killed(rows, path):
        raise Killed

    import multiprocess

    # Spawned workers, as on GPUs: a worker forked from a process whose torch has run its thread pool can hang.
    multiprocess.set_start_method("spawn", force=True)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(job, "write_atomically", killed)
            with pytest.raises(Killed):
                build(one_shard, num_proc=2)  # killed as it writes the shard: every passage is in a part
    finally:
        multiprocess.set_start_method("fork", force=True)
    builder = GenstructBuilder(**one_shard)  # num_proc is not part of the recipe: the same work folder
    assert list(parts_folder(builder).glob("part-*.parquet"))  # written by the two map workers
    builder.build_shards()
    assert generated == [] and builder.built.stats.reused_passages == 8
    (path,) = builder.shard_job().paths
    assert sorted(load_dataset("parquet", data_files=str(path), split="train")["title"]) == sorted(
        f"P{i}" for i in range(8) for _ in range(2)
    )


def test_a_damaged_part_is_ignored_and_its_passages_generated_again(one_shard, generated, kill_after_parts, caplog):
    kill_after_parts(1)
    with pytest.raises(Killed):
        build(one_shard)
    builder = GenstructBuilder(**one_shard)
    (part,) = parts_folder(builder).glob("part-*.parquet")
    part.write_bytes(part.read_bytes()[:50])  # cut short, as by a full disk
    generated.clear()
    with caplog.at_level("WARNING", logger="genstruct_datasets"):
        builder.build_shards()
    assert f"Ignoring {part}: it cannot be read" in caplog.text and "its passages are generated again" in caplog.text
    assert sorted(generated) == [f"P{i}" for i in range(8)]
    assert builder.built.stats.reused_passages == 0


def test_a_part_of_another_block_is_ignored(one_shard, kill_after_parts, caplog):
    kill_after_parts(1)
    settings = {**one_shard, "shard_size": 4}  # two shards: P0-P3, then P4-P7
    with pytest.raises(Killed):
        build(settings)
    job = GenstructBuilder(**settings).shard_job()
    (part,) = job.parts(0).folder.glob("part-*.parquet")
    job.parts(1).folder.mkdir()
    os.replace(part, job.parts(1).folder / part.name)  # shard 0's passages, beside shard 1
    with caplog.at_level("WARNING", logger="genstruct_datasets"):
        builder = build(settings)
    assert "holds 2 passage(s) of another block; its passages are generated again" in caplog.text
    assert builder.built.stats.reused_passages == 0
    assert sorted(load_dataset("parquet", data_files=[str(p) for p in job.paths], split="train")["title"]) == sorted(
        f"P{i}" for i in range(8) for _ in range(2)
    )


def test_a_forced_build_deletes_the_parts(one_shard, generated, kill_after_parts, monkeypatch):
    with monkeypatch.context() as patch:
        kill_after_parts(2)
        with pytest.raises(Killed):
            build(one_shard)
        patch.undo()
    generated.clear()
    builder = build(one_shard, reuse_work=False)
    assert sorted(generated) == [f"P{i}" for i in range(8)]
    assert builder.built.stats.reused_passages == 0 and not parts_folder(builder).exists()


def test_the_checkpoint_can_be_turned_off_and_is_not_part_of_the_recipe(one_shard, kill_after_parts):
    kill_after_parts(1)
    recipe = {name: value for name, value in one_shard.items() if name != "cache_dir"}
    # What the run's cache key hashes (build_genstruct): the same recipe, on or off.
    assert GenstructConfig(**recipe, batch_checkpoint=False).settings() == GenstructConfig(**recipe).settings()
    off = GenstructBuilder(**one_shard, batch_checkpoint=False)
    off.build_shards()  # no part is written, so the build is not stopped
    assert not parts_folder(off).exists()


def test_the_switch_is_a_flag():
    from genstruct_datasets.cli import build_parser

    parsed = vars(build_parser().parse_args(["run", "corpus.jsonl", "--no-batch-checkpoint"]))
    assert parsed["batch_checkpoint"] is False


def test_the_cost_says_how_many_passages_were_reused():
    rows = dict(cost(RunStats(passages=12, generated_passages=4, reused_passages=8, shards=2, shards_reused=1)))
    assert rows["passages generated"] == "4 of 12" and rows["passages reused"] == "8 of 12, from an earlier run"
    assert "passages reused" not in dict(cost(RunStats(passages=12, generated_passages=12, shards=2)))


def run_output(folder: Path) -> list[dict]:
    return load_dataset(str(folder), split="candidates", download_mode="force_redownload").to_list()


def generated_ids(chunks: Path) -> list[str]:
    return chunks.read_text().split()


def kill_when(command: list[str], env: dict, ready, log: Path) -> None:
    """Run `command` until `ready()` holds, then SIGKILL it; its stderr goes to `log`, shown if it never gets there."""
    with log.open("w") as stderr:
        first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 300
        while not ready():
            assert first.poll() is None and time.monotonic() < deadline, f"not ready: {log.read_text()[-3000:]}"
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait()


def environment(cache: Path) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(cache)}
    env.pop("HF_TOKEN", None)
    return env


def corpus(path: Path, count: int) -> Path:
    rows = [
        {"title": f"Passage {i}", "content": f"Passage {i} is about the Moon and its phases."} for i in range(count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.slow
def test_a_sigkilled_run_redoes_only_the_batch_in_flight(tmp_path, taught_generator, tiny_reward_model):
    source = corpus(tmp_path / "passages.jsonl", 12)
    args = [
        "run", str(source), "--no-split", "--text-column", "content", "--min-tokens", "4", "--shard-size", "12",
        "--batch-size", "2",
        "--model", taught_generator, "--reward-model", tiny_reward_model,
        "--num-samples", "2", "--max-new-tokens", "24", "--seed", "0", "--output", str(tmp_path / "pairs"),
    ]  # fmt: skip
    env = environment(tmp_path / "cache")
    first, second, paused = tmp_path / "first.txt", tmp_path / "second.txt", tmp_path / "paused"
    # Sub-batches of two passages, each written as a part once generated; the run holds still after generating the
    # fourth, before the engine hands it over: three parts are written, and the fourth sub-batch is in flight.
    instruments = ["--write-group", "2", "--chunks"]
    command = [*DRIVER, *instruments, str(first), "--pause-after-chunks", "4", "--paused", str(paused), *args]
    kill_when(command, env, paused.exists, tmp_path / "killed.log")
    (parts,) = (tmp_path / "cache" / "genstruct-work").glob("*/candidates-00000-of-00001.parts")
    assert len(list(parts.glob("part-*.parquet"))) == 3

    again = subprocess.run(
        [*DRIVER, *instruments, str(second), *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    # Generated again: the sub-batch in flight (two passages), no more; every other passage once, in one run or other.
    redone = set(generated_ids(first)) & set(generated_ids(second))
    assert len(redone) == 2 and len(set(generated_ids(first)) | set(generated_ids(second))) == 12
    stats = RunReport.load(tmp_path / "pairs").stats
    assert (stats.reused_passages, stats.generated_passages) == (6, 6)
    assert re.search(r"passages reused +6 of 12, from an earlier run", again.stdout)
    assert not list((tmp_path / "cache" / "genstruct-work").glob("*/*"))  # the parts went with the finished build

    uninterrupted = subprocess.run(
        [*DRIVER, *args[:-1], str(tmp_path / "uninterrupted")],
        env=environment(tmp_path / "other-cache"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    assert run_output(tmp_path / "pairs") == run_output(tmp_path / "uninterrupted")


@pytest.mark.slow
def test_a_sigkilled_run_on_a_server_redoes_the_requests_in_flight_and_one_write_group(
    tmp_path, taught_generator, tiny_reward_model
):
    from completion_server import FlakyServer

    server = FlakyServer()
    answered = []

    def completion(body, index):  # answers ten requests, then holds the next ones (in flight) until the kill
        if index == 0:
            answered.append(body["prompt"])
            server.holding = len(answered) == 10
        return " Why?\n[[[Assistant]]] Because."

    server.completion = completion
    source = corpus(tmp_path / "passages.jsonl", 24)
    args = [
        "run", str(source), "--no-split", "--text-column", "content", "--min-tokens", "4", "--shard-size", "24",
        "--model", taught_generator, "--reward-model", tiny_reward_model, "--num-samples", "2", "--seed", "0",
        "--backend", "openai", "--base-url", server.base_url, "--max-concurrency", "4",
        "--output", str(tmp_path / "pairs"),
    ]  # fmt: skip
    env = environment(tmp_path / "cache")
    work = tmp_path / "cache" / "genstruct-work"
    try:
        # Write groups of four: ten answers make two parts (eight passages), two answers wait for a group to fill,
        # and four requests are in flight when the run is killed.
        kill_when(
            [*DRIVER, "--write-group", "4", *args],
            env,
            lambda: len(server.requests) == 14 and len(list(work.glob("*/*.parts/part-*.parquet"))) == 2,
            tmp_path / "killed.log",
        )
        first = {body["prompt"] for body in server.requests}
        server.requests.clear()
        server.holding = False
        again = subprocess.run(
            [*DRIVER, "--write-group", "4", *args], env=env, capture_output=True, text=True, timeout=600
        )
    finally:
        server.close()
    assert again.returncode == 0, again.stderr[-3000:]
    second = {body["prompt"] for body in server.requests}
    # Asked again: the four in flight and the two answered that no part held, at most in flight + one write group.
    assert len(first & second) == 6 and 6 <= 4 + 4
    assert len(server.requests) == 24 - 8
    stats = RunReport.load(tmp_path / "pairs").stats
    assert (stats.reused_passages, stats.generated_passages) == (8, 16)
