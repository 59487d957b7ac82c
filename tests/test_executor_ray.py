"""The Ray executor on a local Ray of two CPUs: the same rows as the local executor, a worker that dies, a driver
killed and started again, and the stages' own errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import worker_faults
from datasets import Dataset, load_dataset

from genstruct_datasets import (
    ExecutorError,
    GenstructBuilder,
    InvalidConfigError,
    RayExecutor,
    RunReport,
    RunStats,
    load_genstruct,
)
from genstruct_datasets.cli import main

pytestmark = pytest.mark.ray  # skipped where Ray is not installed (conftest.py)

TESTS = Path(__file__).parent
DRIVER = [sys.executable, str(TESTS / "cli_driver.py")]


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A local Ray of two CPUs for the module, started as the executor starts one; its workers read the faults file
    this fixture returns (`worker_faults`) and import this package as this process does (`PYTHONPATH`)."""
    import ray

    faults = tmp_path_factory.mktemp("ray") / "faults.json"
    with pytest.MonkeyPatch.context() as patch:
        # The local Ray's workers inherit this process's environment, and so import the same copy of the package.
        patch.setenv(worker_faults.FAULTS, str(faults))
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
        hook = {"worker_process_setup_hook": "worker_faults.install"}
        RayExecutor(init_options={"num_cpus": 2, "include_dashboard": False, "runtime_env": hook}).connect()
        try:
            yield faults
        finally:
            worker_faults.write(faults)
            ray.shutdown()


@pytest.fixture
def faults(local_ray):
    """``faults(**settings)``: what the Ray workers' generator does from now on (see `worker_faults`)."""
    yield lambda **settings: worker_faults.write(local_ray, **settings)
    worker_faults.write(local_ray)


def corpus(path: Path, count: int) -> Path:
    rows = [{"title": f"P{i}", "content": f"Passage {i} is about the Moon."} for i in range(count)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def recipe(tmp_path, taught_generator, tiny_reward_model) -> dict:
    """Four one-line passages, P0 to P3, two shards; one greedy sample each."""
    return {
        "source": str(corpus(tmp_path / "passages.jsonl", 4)),
        "split_documents": False,
        "text_column": "content",
        "min_tokens": 4,  # one-line passages, read as they are
        "model": taught_generator,
        "reward_model": tiny_reward_model,
        "num_samples": 1,
        "temperature": 0.0,
        "max_new_tokens": 24,
        "shard_size": 2,
    }


@pytest.mark.slow
def test_ray_builds_the_same_rows_as_the_local_executor(tmp_path, recipe, local_ray):
    local = load_genstruct(**recipe, cache_dir=str(tmp_path / "local"), executor="local")
    on_ray = load_genstruct(**recipe, cache_dir=str(tmp_path / "ray"), executor=RayExecutor())
    for split in ("train", "candidates"):
        assert on_ray[split].to_list() == local[split].to_list()
    assert sorted(on_ray["candidates"]["title"]) == ["P0", "P1", "P2", "P3"]
    stats = RunStats.of(on_ray["train"])
    assert stats.executor == "ray" and stats.shards == 2 and stats.generated_passages == 4


@pytest.mark.slow
def test_ray_samples_the_same_rows_as_the_local_executor(tmp_path, recipe, local_ray, tiny_generator):
    # Sampled, three samples a passage, from a random model whose samples differ: the seeds are per passage and
    # sample, so where a shard is built does not change its rows.
    sampled = {**recipe, "model": tiny_generator, "num_samples": 3, "temperature": 1.0, "seed": 0, "max_new_tokens": 8}
    local = load_genstruct(**sampled, cache_dir=str(tmp_path / "local"), executor="local")
    on_ray = load_genstruct(**sampled, cache_dir=str(tmp_path / "ray"), executor=RayExecutor())
    assert on_ray["candidates"].num_rows == 4 * 3
    for split in ("train", "candidates"):
        assert on_ray[split].to_list() == local[split].to_list()
    samples = {}
    for row in local["candidates"]:
        samples.setdefault(row["title"], set()).add(row["completion"])
    assert all(len(texts) == 3 for texts in samples.values())  # sampled: no two samples of a passage alike


@pytest.mark.slow
def test_a_worker_that_dies_mid_shard_is_retried_and_every_passage_is_built_once(tmp_path, recipe, faults):
    died, calls = tmp_path / "died", tmp_path / "calls.txt"
    faults(die_once_at="P2", died=died, calls=calls)
    builder = GenstructBuilder(**recipe, cache_dir=str(tmp_path / "builds"), executor=RayExecutor(max_retries=1))
    built = builder.build_shards()
    assert died.exists()  # a worker died in the middle of the second shard, before its file was written
    # Its task ran again on another worker: the second shard's passages were generated twice, the first's once.
    assert sorted(calls.read_text().splitlines()) == ["P0", "P1", "P2", "P2", "P3", "P3"]
    assert built.stats.generated_passages == 4
    candidates = Dataset.from_parquet([str(path) for path in builder.shard_job().paths])
    assert sorted(candidates["title"]) == ["P0", "P1", "P2", "P3"]  # every passage exactly once


@pytest.mark.slow
def test_a_shard_lost_past_its_retries_is_one_error_that_says_how_to_resume(tmp_path, recipe, faults):
    faults(die_once_at="P2", died=tmp_path / "died")
    builder = GenstructBuilder(**recipe, cache_dir=str(tmp_path / "builds"), executor=RayExecutor(max_retries=0))
    with pytest.raises(ExecutorError, match=r"shard 2 was lost in Ray past 0 retries \(.*run the same command again"):
        builder.build_shards()


@pytest.mark.slow
def test_an_error_in_a_shard_goes_up_as_itself_and_is_not_retried(tmp_path, recipe, faults):
    import ray

    calls = tmp_path / "calls.txt"
    faults(raise_at="P3", calls=calls)
    builder = GenstructBuilder(**recipe, cache_dir=str(tmp_path / "builds"), executor=RayExecutor())
    with pytest.raises(OSError, match="No space left on device") as raised:
        builder.build_shards()
    assert not isinstance(raised.value, ray.exceptions.RayError)  # the stages' error, not Ray's wrapping of it
    assert calls.read_text().splitlines().count("P3") == 1


@pytest.mark.slow
def test_a_killed_driver_started_again_reuses_the_finished_shards(tmp_path, taught_generator, tiny_reward_model):
    source = corpus(tmp_path / "passages.jsonl", 4)
    args = [
        "run", str(source), "--no-split", "--text-column", "content", "--shard-size", "1", "--min-tokens", "4",
        "--model", taught_generator, "--reward-model", tiny_reward_model,
        "--num-samples", "1", "--temperature", "0", "--max-new-tokens", "24",
        "--executor", "ray", "--output", str(tmp_path / "pairs"),
    ]  # fmt: skip
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    environment.pop("HF_TOKEN", None)
    environment.pop(worker_faults.FAULTS, None)
    work = tmp_path / "cache" / "genstruct-work"
    paused, first_calls, calls = tmp_path / "paused", tmp_path / "first-calls.txt", tmp_path / "calls.txt"
    # One CPU: one shard task at a time. The driver's Ray workers hold still at P2, with the shards before it written.
    command = [*DRIVER, "--ray", "--calls", str(first_calls), "--pause-at", "P2", "--paused", str(paused), *args]
    with (tmp_path / "killed.log").open("w") as log:
        first = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 300
        while not paused.exists():
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "killed.log").read_text()[-3000:]
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait()
    finished = {int(path.name.split("-")[1]): Dataset.from_parquet(str(path)).to_list() for path in work.glob("*/c*")}
    # The shards of the passages that came before P2 in the tasks' order (the first, at least), and nothing else.
    before = {line for line in first_calls.read_text().splitlines() if line != "P2"}
    assert finished and sorted(f"P{k}" for k in finished) == sorted(before)
    # Without the maps' caches a shard built again calls the generator: reuse is seen in the calls, not hidden.
    for path in (tmp_path / "cache").rglob("cache-*.arrow"):
        if "genstruct-work" not in path.parts:
            path.unlink()

    second = subprocess.run(
        [*DRIVER, "--ray", "--calls", str(calls), *args], env=environment, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"Resuming: {len(finished)} of 4 shards were finished by an earlier run and are reused." in second.stderr
    # The generator ran on the passages of the unfinished shards only, and the finished shards' rows are in the output
    # as the killed run wrote them.
    assert sorted(calls.read_text().splitlines()) == sorted({"P0", "P1", "P2", "P3"} - before)
    stats = RunReport.load(tmp_path / "pairs").stats
    assert (stats.shards_reused, stats.generated_passages) == (len(finished), 4 - len(finished))
    pairs = load_dataset(str(tmp_path / "pairs"), split="train", download_mode="force_redownload")
    assert sorted(pairs["title"]) == ["P0", "P1", "P2", "P3"]  # every passage exactly once
    columns = ["title", "completion", "instruction", "response", "reward"]
    by_title = {row["title"]: row for row in pairs.select_columns(columns).to_list()}
    for (row,) in finished.values():
        assert by_title[row["title"]] == {column: row[column] for column in columns}


def test_ray_address_needs_the_ray_executor(tmp_path, capsys):
    source = corpus(tmp_path / "passages.jsonl", 1)
    assert main(["run", str(source), "--ray-address", "auto", "--executor", "local"]) == 2
    assert "--ray-address auto connects to a Ray cluster; add --executor ray" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"num_gpus": -1}, "num_gpus must be a non-negative number", id="num_gpus"),
        pytest.param({"max_retries": 1.5}, "max_retries must be a non-negative integer", id="max_retries"),
    ],
)
def test_ray_executor_refuses_bad_options(options, message):
    with pytest.raises(InvalidConfigError, match=message):
        RayExecutor(**options)


def test_with_a_shard_store_the_passages_travel_in_memory(tmp_path, recipe):
    import pickle

    from genstruct_datasets import FolderStore, HubShards

    hub = GenstructBuilder(**recipe, cache_dir=str(tmp_path / "builds"), shard_store=HubShards("me/pairs"))
    job = hub.shard_job()
    assert job.store.api is not None  # a client made in this process stays here
    portable = pickle.loads(pickle.dumps(RayExecutor.portable(job)))
    # Nodes that may share no disk: the passages are in the job itself, not paths to this machine's cache files.
    assert portable.passages.cache_files == [] and portable.passages.to_list() == job.passages.to_list()
    assert portable.store.repo_id == "me/pairs" and portable.store._api is None
    # A folder mounted for the shards alone: the cache folder may not be shared either.
    folder = GenstructBuilder(**recipe, cache_dir=str(tmp_path / "builds"), shard_store=FolderStore(tmp_path / "s"))
    assert RayExecutor.portable(folder.shard_job()).passages.cache_files == []
    # No store: the cache folder is shared (or one machine), and the paths of its files will do.
    alone = GenstructBuilder(**recipe, cache_dir=str(tmp_path / "builds"))
    assert RayExecutor.portable(alone.shard_job()).passages.cache_files


def test_without_ray_the_error_gives_the_install_command(monkeypatch):
    from genstruct_datasets import MissingDependencyError

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as where it is not installed
    with pytest.raises(MissingDependencyError, match=r'pip install "genstruct-datasets\[ray\]"'):
        RayExecutor().connect()


def test_ray_failing_at_the_driver_is_our_error_that_says_what_to_check(tmp_path, recipe, local_ray, monkeypatch):
    # Killing the raylet under a test takes the local Ray down for the tests after it: Ray's own error type, raised
    # where the driver waits, stands for it. The CLI prints an ExecutorError as its one last line, exit 1.
    import ray

    def raylet_died(*args, **kwargs):
        raise ray.exceptions.RaySystemError("The raylet died unexpectedly.")

    monkeypatch.setattr(ray, "wait", raylet_died)
    message = (
        r"Ray stopped answering while 2 shard\(s\) were being built \(RaySystemError: System error: The raylet died "
        r"unexpectedly.\)\. Check that the Ray cluster is up \(`ray status`\)"
    )
    with pytest.raises(ExecutorError, match=message):
        load_genstruct(**recipe, cache_dir=str(tmp_path / "ray"), executor=RayExecutor())


def test_the_figures_of_shards_built_side_by_side_keep_the_driver_s_wall_time():
    from genstruct_datasets.report.text import cost

    # Two shards built at once by two workers, in 5 s of the driver's time: 8 s of generation between them.
    run = RunStats(executor="ray", build_seconds=5.0, wall_seconds=6.0, seconds={"passages": 0.5, "select": 0.2})
    for _ in range(2):
        run.add(RunStats(generated_tokens=100, generated_passages=2, seconds={"generate": 4.0, "score": 1.0}))
    assert run.seconds == {"passages": 0.5, "select": 0.2, "generate": 8.0, "score": 2.0}  # worker-seconds
    assert (run.build_seconds, run.tokens_per_second, run.passages_per_second) == (5.0, 40.0, 0.8)
    rows = dict(cost(run))
    assert rows["wall time"] == "passages 0.5 s, shards 5.0 s, select 0.2 s; 6.0 s in all"
    assert rows["worker time"] == "generate 8.0 s, score 2.0 s, summed over the shards' workers"
    # The ranks of torchrun build side by side too: the run's build took as long as the slowest rank's.
    ranks = RunStats(executor="torchrun")
    for seconds in (3.0, 5.0, 4.0):
        ranks.add(RunStats(build_seconds=seconds))
    assert ranks.build_seconds == 5.0
