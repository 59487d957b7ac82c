"""The torchrun executor: each rank of `torchrun` / `accelerate launch` builds a contiguous block of the shards."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FailedPassagesError
from ..models import distributed_node
from ..progress import ProgressOptions
from ..runstats import RunStats
from ..shards import ShardJob, block_of
from .base import BuiltShards, Executor


@dataclass
class TorchrunExecutor(Executor):
    """Split the shards among the ranks of `torchrun` or `accelerate launch` (`RANK`, `WORLD_SIZE`).

    Each rank builds a contiguous block of the shards (as `datasets.distributed.split_dataset_by_node` cuts them)
    into the work folder, then all ranks meet at a gloo barrier and rank 0 alone assembles the dataset. Ranks on
    several machines need that folder shared, or a shard store (``push_shards_to=``) from which rank 0 takes the
    other ranks' shards. It is chosen by default when `WORLD_SIZE` is above 1.

    Example:

    ```py
    >>> # torchrun --nproc_per_node 8 -m genstruct_datasets.cli run passages.jsonl --output pairs/
    >>> from genstruct_datasets import TorchrunExecutor, load_genstruct
    >>> pairs = load_genstruct("passages.jsonl", executor=TorchrunExecutor())  # doctest: +SKIP
    ```
    """

    name = "torchrun"
    builds_in_every_process = True

    @property
    def node(self) -> tuple[int, int]:
        """(rank, world size) of this process, read now: `datasets` leaves a stale copy of `os.environ` in a builder's
        module once a `map(num_proc=...)` has run, so it is read here, in a module of ours."""
        return distributed_node()

    @property
    def assembles(self) -> bool:
        return self.node[0] == 0

    def shards(self, job: ShardJob) -> list[int]:
        return list(block_of(job.count, *self.node))

    def run(self, job: ShardJob, progress: ProgressOptions | None = None) -> BuiltShards:
        """Build this rank's block, then wait for the other ranks, also when passages of this rank failed (rather than
        let them wait for it until gloo's timeout); the figures returned are those of every rank, summed."""
        import torch.distributed as dist

        if self.node[1] == 1:
            return super().run(job, progress)
        started = not dist.is_initialized()
        if started:
            dist.init_process_group(backend="gloo")
        try:
            try:
                built = super().run(job, progress)
            except FailedPassagesError:
                dist.barrier()
                raise
            # The barrier: every rank's figures meet on each, so that rank 0's report counts the whole run.
            everyone: list[RunStats | None] = [None] * self.node[1]
            dist.all_gather_object(everyone, built.stats)
        finally:
            if started:
                dist.destroy_process_group()
        stats = RunStats(executor=self.name, shards=job.count)
        for rank in everyone:
            stats.add(rank)
            stats.shards_reused += rank.shards_reused
        return BuiltShards(stats, built.not_uploaded)
