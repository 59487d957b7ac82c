"""What every executor does: build a recipe's missing shards, somewhere, and say what it cost."""

from __future__ import annotations

import logging
import time
from abc import ABC
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import ClassVar

from ..errors import FailedPassagesError
from ..runstats import RunStats, format_duration
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

    def run(self, job: ShardJob) -> BuiltShards:
        """Build the job's missing shards among [`shards`].

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
            progress = _Progress(job, todo)
            for outcome in self.build(job, todo):
                progress.done(outcome)
                stats.add(outcome.stats)
                failed += outcome.failed
                if outcome.upload is not None:
                    uploads.append(outcome.upload)
                elif outcome.uploaded is not None:  # handed over where it was built
                    done: Future[bool] = Future()
                    done.set_result(outcome.uploaded)
                    uploads.append(done)
        finally:
            # Also when a shard fails: the finished shards' uploads end before the error goes up.
            not_uploaded = finish_uploads(uploads, job.store, job.work_dir)
        if failed:
            raise FailedPassagesError(failed)
        return BuiltShards(stats, not_uploaded)


class _Progress:
    """One log line per finished shard: its speed, and how long the shards left should take at the speed so far."""

    def __init__(self, job: ShardJob, todo: list[int]) -> None:
        self.sizes = {k: job.size(k) for k in todo}
        self.total = sum(self.sizes.values())
        self.finished = 0
        self.start = time.perf_counter()

    def done(self, outcome: ShardOutcome) -> None:
        self.finished += self.sizes[outcome.shard]
        elapsed = time.perf_counter() - self.start
        speed = outcome.stats.tokens_per_second
        logger.info(
            "Shard %d done%s: %d of %d passages of this run in %s; about %s left.",
            outcome.shard + 1,
            f" ({speed:,.0f} tokens/s)" if speed else "",
            self.finished,
            self.total,
            format_duration(elapsed),
            format_duration(elapsed / self.finished * (self.total - self.finished)) if self.finished else "?",
        )
