"""The Ray executor: each missing shard is one Ray task, placed on a GPU of a Ray cluster (or of a local one)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._checks import check_number
from ..errors import ExecutorError, InvalidConfigError, MissingDependencyError
from ..shards import ShardJob, ShardOutcome
from .base import Executor

if TYPE_CHECKING:
    from types import ModuleType

logger = logging.getLogger(__name__)

INSTALL = 'pip install "genstruct-datasets[ray]"'


@dataclass
class RayExecutor(Executor):
    """Build each missing shard as a Ray task, on the GPUs of a Ray cluster; the driver assembles the dataset.

    One task per shard, as many at once as the cluster has room for (a GPU each, by default). A task writes its
    shard to the work folder, and to the shard store when there is one, before it returns; the driver only waits,
    reuses and assembles, as the local executor does. Models load once per Ray worker process (Ray reuses its
    workers, and each keeps the models it loaded), not once per shard. A task whose worker process or node dies is
    run again, up to `max_retries` times; an exception raised by the stages is not retried and goes up as it is.

    The workers read the passages (cache files of `datasets`) and write the shards where the driver says, so on a
    cluster of several machines the cache folder (``--cache-dir``) must be on a file system that every node mounts,
    or the shards go through the Hub (``--push-to-hub``), with the passages still on the shared folder.

    Args:
        address (`str`, *optional*): the cluster to connect to: ``"auto"`` (the one `ray start` runs on this
            machine), ``"ray://host:10001"`` or ``"host:port"``. None: the Ray already initialised in this process,
            else as `ray.init()` does: `RAY_ADDRESS`, a cluster of `ray start` on this machine, or a new local Ray.
        num_gpus (`float`, *optional*): GPUs per shard task; by default none on a cluster without GPUs, else the
            engine's `tensor_parallel_size` or the maps' `num_proc`, one at least.
        num_cpus (`float`, *optional*): CPUs per shard task; defaults to Ray's (1).
        max_retries (`int`, *optional*, defaults to 3): how many times a shard task is run again when its worker
            process or its node dies.
        init_options (`dict`, *optional*): more arguments of `ray.init` (``num_cpus=``, ``runtime_env=``...), used when
            this executor initialises Ray.

    Raises:
        [`InvalidConfigError`]: a negative `num_gpus`, `num_cpus` or `max_retries`.
        [`MissingDependencyError`]: Ray is not installed (as the run starts).
        [`ExecutorError`]: the cluster cannot be reached, or a shard was lost past `max_retries`.

    Example:

    ```py
    >>> # ray start --head on one node, ray start --address HEAD:6379 on the others, then on any of them:
    >>> from genstruct_datasets import RayExecutor, load_genstruct
    >>> pairs = load_genstruct("passages.jsonl", executor=RayExecutor(address="auto"))  # doctest: +SKIP
    ```
    """

    name = "ray"

    address: str | None = None
    num_gpus: float | None = None
    num_cpus: float | None = None
    max_retries: int = 3
    init_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for option in ("num_gpus", "num_cpus"):
            check_number(option, getattr(self, option), minimum=0, optional=True, rule="a non-negative number",
                         detail="per shard task")  # fmt: skip
        check_number("max_retries", self.max_retries, integer=True, minimum=0)

    def build(self, job: ShardJob, shards: list[int]) -> Iterator[ShardOutcome]:
        """Submit a task per shard of `shards` and yield each one's outcome as it finishes."""
        if not shards:
            return
        ray = self.connect()
        options: dict[str, Any] = {
            "num_gpus": self.gpus_per_task(ray, job),
            "max_retries": self.max_retries,
            "retry_exceptions": False,
            # Ray gives a GPU task a fresh worker process each time (max_calls=1) unless told otherwise: the worker
            # is kept, with the models it loaded, for the next shard.
            "max_calls": 0,
        }
        if self.num_cpus is not None:
            options["num_cpus"] = self.num_cpus
        task = ray.remote(**options)(_build_shard)
        shared = ray.put(self.portable(job))  # once, for every task
        pending = {task.remote(shared, k): k for k in shards}
        logger.info("Submitted %d shard tasks to Ray (%s GPU each).", len(pending), options["num_gpus"])
        try:
            while pending:
                done = self._wait(ray, list(pending))
                yield self._outcome(ray, done, pending.pop(done))
        finally:
            # A failed shard (or a caller that stops early) ends the run: the tasks not finished are cancelled, the
            # shards already written are kept for the next run. Forced: a running task's worker process ends, rather
            # than take a KeyboardInterrupt wherever it is (in the middle of `import torch`, of loading a model) and
            # then, kept for the next run's tasks (max_calls=0), fail each one of them.
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001  Ray itself is gone (its raylet died): nothing left to cancel
                    break

    def _wait(self, ray: ModuleType, refs: list[Any]) -> Any:
        """The next finished task of `refs`; Ray's own failure (a raylet or the cluster gone) as an [`ExecutorError`]
        that says what to check, after Ray's messages, not as a traceback from inside Ray."""
        try:
            (done,), _ = ray.wait(refs, num_returns=1)
        except (ray.exceptions.RayError, ConnectionError, RuntimeError) as err:
            why = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ExecutorError(
                f"Ray stopped answering while {len(refs)} shard(s) were being built ({type(err).__name__}: {why}). "
                "Check that the Ray cluster is up (`ray status`) and the raylet's log (/tmp/ray/session_latest/logs/"
                "raylet.out) for why it died; the shards finished meanwhile are kept: run the same command again to "
                "build the rest."
            ) from err
        return done

    def _outcome(self, ray: ModuleType, ref: Any, k: int) -> ShardOutcome:
        """Shard `k`'s outcome; the stages' own exception when they raised one (a full disk, a missing model), not
        Ray's wrapping of it, so that callers catch it by its type and the CLI exits as with the local executor."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from err  # Ray's error, shown as the cause, holds the worker's traceback
            raise
        except ray.exceptions.RayError as err:  # a worker or node lost more times than max_retries, say
            why = (str(err).splitlines() or [""])[0]
            raise ExecutorError(
                f"shard {k + 1} was lost in Ray past {self.max_retries} retries ({type(err).__name__}: {why}). The "
                "shards finished meanwhile are kept: run the same command again to build the rest."
            ) from err

    def connect(self) -> ModuleType:
        """Initialise Ray (connect to `address`, or start a local Ray) unless it is already; return the module."""
        try:
            import ray
        except ImportError as err:
            raise MissingDependencyError(f"executor='ray' needs Ray: {INSTALL}.") from err
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, **(self.init_options or {}))
            except ValueError as err:  # an address Ray cannot read
                raise InvalidConfigError(f"Ray address {self.address!r}: {err}") from err
            except (ConnectionError, RuntimeError, SystemExit) as err:  # no cluster there (Ray may exit the process)
                raise ExecutorError(
                    f"cannot connect to the Ray cluster at {self.address or 'RAY_ADDRESS or this machine'} "
                    f"({type(err).__name__}: {err}); start it with `ray start --head`, or check --ray-address."
                ) from err
            logger.info("Ray cluster: %s", ray.cluster_resources())
        return ray

    @staticmethod
    def portable(job: ShardJob) -> ShardJob:
        """The job as the workers get it. A `datasets.Dataset` pickles as the paths of its cache files, which every
        node reads where the cache folder is shared; with a shard store (nodes that may share no cache folder: the
        Hub, or a folder mounted for the shards alone), the passages travel in memory instead, through Ray's object
        store (once per node)."""
        if job.store is None:
            return job
        return dataclasses.replace(job, passages=job.passages.flatten_indices(keep_in_memory=True))

    def gpus(self, job: ShardJob) -> int:
        """The cluster's GPUs (the shard tasks spread over all of them), one at least: for a price per GPU-hour."""
        return max(1, int(self.connect().cluster_resources().get("GPU", 0)))

    def gpus_per_task(self, ray: ModuleType, job: ShardJob) -> float:
        """`num_gpus`, or else none on a cluster without GPUs, and on one with GPUs as many as a shard uses: the
        engine's model (`Engine.gpus_per_model`: vLLM's `tensor_parallel_size`), or the worker processes of its maps
        (`num_proc`), one at least."""
        if self.num_gpus is not None:
            return self.num_gpus
        if ray.cluster_resources().get("GPU", 0) <= 0:
            return 0
        return max(1, job.num_proc or 1, job.config.generator().engine.gpus_per_model)


def _build_shard(job: ShardJob, k: int) -> ShardOutcome:
    """Build shard `k` in a Ray worker, and wait there for the store to take it (a future does not travel)."""
    job.work_dir.mkdir(parents=True, exist_ok=True)  # made by the driver, on another node where no disk is shared
    outcome = job.build(k)
    if outcome.upload is not None:
        outcome.uploaded, outcome.upload = outcome.upload.result(), None
    return outcome
