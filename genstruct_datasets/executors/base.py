"""What every executor does: build a recipe's missing shards, somewhere, and say what it cost."""

from __future__ import annotations

import dataclasses
import logging
import time
from abc import ABC
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import ClassVar

from ..errors import FailedPassagesError
from ..progress import ProgressOptions, RunProgress
from ..runstats import RunStats
from ..shards import ShardJob, ShardOutcome, finish_uploads

logger = logging.getLogger(__name__)


@dataclass
class BuiltShards:
    """What an executor's run gave: the figures of the shards it built, and how many the store could not take."""

    stats: RunStats
    not_uploaded: int = 0


class Executor(ABC):
    """Runs the missing shards of a [`ShardJob`]: in this process, in each `torchrun` rank, or on a Ray cluster.

    An executor decides which shards this process takes part in ([`shards`]) and where each one is built
    ([`build`]); the rest is shared: the job gets ready (a forced build deletes earlier shards, a store hands over
    the shards it holds), finished shards are verified and reused, and passages that failed end the run with
    [`FailedPassagesError`] once every other shard is built. A new executor is one module with one subclass.
    """

    name: ClassVar[str]
    builds_in_every_process: ClassVar[bool] = False
    """Whether every process of the launch takes part in the build (the ranks of `torchrun`), so that each runs it
    before the dataset is assembled, even where that dataset is cached."""

    @property
    def assembles(self) -> bool:
        """Whether this process assembles the dataset once the shards are built (under `torchrun`, rank 0 alone)."""
        return True

    def shards(self, job: ShardJob) -> list[int]:
        """The shards this process takes part in: all of them, but for a rank of `torchrun`."""
        return list(range(job.count))

    def build(self, job: ShardJob, shards: list[int]) -> Iterator[ShardOutcome]:
        """Build `shards` (none of them finished), yielding each one's outcome as it is done: in this process, one
        after the other, unless the executor sends them elsewhere."""
        for k in shards:
            yield job.build(k)

    def gpus(self, job: ShardJob) -> int:
        """The GPUs a build of `job` keeps busy in this process, for a price per GPU-hour: the maps' worker processes
        (`num_proc`, one GPU each) or the GPUs of one model (vLLM's `tensor_parallel_size`), one at least."""
        return max(1, job.num_proc or 1, job.config.generator().engine.gpus_per_model)

    def run(self, job: ShardJob, progress: ProgressOptions | None = None) -> BuiltShards:
        """Build the job's missing shards among [`shards`], showing where the build stands ([`RunProgress`]).

        Args:
            job ([`ShardJob`]): the shards to build.
            progress ([`ProgressOptions`], *optional*): the prices, the log interval and the listener of the view.

        Raises:
            [`FailedPassagesError`]: some passages failed to generate (the other shards are built and kept).
        """
        mine = self.shards(job)
        uploads: list[Future[bool]] = job.start(mine)
        stats = RunStats(executor=self.name, shards=job.count)
        failed = 0
        try:
            todo = job.missing(mine)
            stats.shards_reused = len(mine) - len(todo)
            stats.reused_passages = sum(job.size(k) for k in mine if k not in todo)
            stats.gpus = self.gpus(job) if todo else 0
            started = time.perf_counter()
            with self._view(job, mine, todo, progress or ProgressOptions(), stats.gpus) as view:
                for outcome in self.build(job, todo):
                    view.add_shard(job.size(outcome.shard), outcome.stats, outcome.failed)
                    stats.add(outcome.stats)
                    failed += outcome.failed
                    if outcome.upload is not None:
                        uploads.append(outcome.upload)
                    elif outcome.uploaded is not None:  # handed over where it was built
                        done: Future[bool] = Future()
                        done.set_result(outcome.uploaded)
                        uploads.append(done)
            # Measured once, here, for every executor: the shards' stage seconds are summed over their workers.
            stats.build_seconds = time.perf_counter() - started if todo else 0.0
        finally:
            # Also when a shard fails: the finished shards' uploads end before the error goes up.
            not_uploaded = finish_uploads(uploads, job.store, job.work_dir)
        if failed:
            raise FailedPassagesError(failed)
        return BuiltShards(stats, not_uploaded)

    def _view(
        self, job: ShardJob, mine: list[int], todo: list[int], options: ProgressOptions, gpus: int
    ) -> AbstractContextManager[RunProgress | None]:
        """The progress view of this process's shards (`mine`, of which `todo` are to build); none when all are built.
        Under `torchrun` each rank shows its own block, and tells no listener (the live card is the whole run's)."""
        if not todo:
            return nullcontext()  # nothing is built, so nothing is shown
        if self.builds_in_every_process:
            options = dataclasses.replace(options, on_shard=None)
        sizes, building = {k: job.size(k) for k in mine}, set(todo)
        return RunProgress(
            sum(sizes.values()),
            reused=sum(size for k, size in sizes.items() if k not in building),
            shards=len(mine),
            shards_reused=len(mine) - len(todo),
            samples_per_passage=job.config.generator().num_samples,
            gpus=gpus,
            options=options,
        )
