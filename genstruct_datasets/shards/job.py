"""A run's shards: which exist and can be reused, how one is built and written whole.

The builder cuts a recipe's passages into shards of `shard_size` passages. A [`ShardJob`] holds everything needed
to build any of them (it is what an executor sends to its workers), writes each shard whole into the work folder,
and hands it to a [`ShardStore`] when there is one. A later run of the same recipe reuses the shards it finds, once
verified.
"""

from __future__ import annotations

import functools
import logging
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .._atomic import atomic_path
from .._memory import release_freed_memory
from ..columns import FEATURES
from ..prompt import passage_ids
from ..runstats import RunStats
from .parts import ShardParts
from .store import FORCED_MARKER, ShardStore

if TYPE_CHECKING:
    import datasets

    from ..recipe import GenstructConfig

logger = logging.getLogger(__name__)


@dataclass
class ShardOutcome:
    """What building one shard gave: `failed` passages to generate again (0: the shard is written), the stages'
    figures, and whether the store took the shard (None: no store, or not known yet)."""

    shard: int
    failed: int
    stats: RunStats
    upload: Future[bool] | None = field(default=None, repr=False)
    uploaded: bool | None = None


@dataclass
class ShardJob:
    """Everything needed to build a recipe's shards, in this process or in another (it pickles: the passages as the
    paths of their cache files, or whole where they are in memory).

    Args:
        config ([`GenstructConfig`]): the recipe; its stages are made from it where a shard is built.
        config_id (`str`): the recipe's key, which names its work folder and its folder in the store.
        passages (`datasets.Dataset`): the recipe's passages (`title`, `content`, `document_id`, `passage_index`).
        work_dir (`Path`): where finished shards are written.
        store ([`ShardStore`], *optional*): where finished shards are kept for other machines and later runs.
        num_proc (`int`, *optional*): worker processes of each shard's generation and scoring maps.
        reuse_work (`bool`, *optional*, defaults to `True`): reuse finished shards and the maps' caches; False for a
            forced build.
        use_cache (`bool`, *optional*, defaults to `True`): read the maps' results from the `datasets` cache; set by
            [`start`], off while a forced build is unfinished.
    """

    config: GenstructConfig
    config_id: str
    passages: datasets.Dataset
    work_dir: Path
    store: ShardStore | None = None
    num_proc: int | None = None
    reuse_work: bool = True
    use_cache: bool = True

    @property
    def count(self) -> int:
        """How many shards the recipe has."""
        return max(1, -(-self.passages.num_rows // self.config.shard_size))

    @functools.cached_property
    def paths(self) -> list[Path]:
        """Where each shard is written."""
        return [self.work_dir / f"candidates-{k:05d}-of-{self.count:05d}.parquet" for k in range(self.count)]

    def size(self, k: int) -> int:
        """How many passages shard `k` has."""
        return min(self.config.shard_size, self.passages.num_rows - k * self.config.shard_size)

    def block(self, k: int) -> datasets.Dataset:
        """Shard `k`'s passages."""
        start = k * self.config.shard_size
        return self.passages.select(range(start, start + self.size(k)))

    def start(self, shards: list[int]) -> list[Future[bool]]:
        """Get ready to build `shards`: a forced build deletes their earlier files first; with a store, take the
        shards it holds and hand it the finished ones it lacks (an upload of an earlier run failed).

        Returns:
            `list[Future]`: the uploads started, to wait for with [`finish_uploads`].
        """
        self.work_dir.mkdir(parents=True, exist_ok=True)
        forced = self.work_dir / FORCED_MARKER
        if not self.reuse_work:
            # A forced build starts from nothing: these shards of earlier runs go first, here and in the store, and
            # the marker keeps a resumed forced build off the maps' caches of those runs.
            self._start_over(shards)
        uploads = []
        if self.store is not None:
            paths = [self.paths[k] for k in shards]
            if not self.reuse_work:
                held = self.store.start_over(self.config_id, [path.name for path in paths])
            else:
                held = self.store.open(self.config_id)
                if FORCED_MARKER in held and not forced.exists():
                    # Another machine started a forced build of this recipe: the shards here are older than it.
                    self._start_over(shards)
            self.store.fetch(self.config_id, paths, held)
            uploads = [
                self.store.upload_in_background(self.config_id, path)
                for path in paths
                if path.exists() and path.name not in held
            ]
        self.use_cache = not forced.exists()
        return uploads

    def missing(self, shards: list[int]) -> list[int]:
        """Those of `shards` that are not finished; a finished one that fails [`verified`] is deleted."""
        todo = [k for k in shards if not self.verified(k)]
        if len(todo) < len(shards):
            logger.info(
                "Resuming: %d of %d shards were finished by an earlier run and are reused.",
                len(shards) - len(todo),
                len(shards),
            )
        return todo

    def parts(self, k: int) -> ShardParts:
        """Shard `k`'s parts: its passages kept as they finish, while it is built (the batch checkpoint)."""
        return ShardParts.of(self.paths[k], self.block(k))

    def build(self, k: int) -> ShardOutcome:
        """Run the stages on shard `k` and write it whole; hand it to the store (in the background).

        With the batch checkpoint on (`batch_checkpoint`), the generator's rows are written as parts beside the shard
        as its passages finish ([`ShardParts`]): a build that is killed leaves them, and the next build of the shard
        generates only the passages they lack. Passages whose generation failed are not finished work: the shard is
        not written, the generations of the others wait beside it (``*.kept.parquet``), and the next build of the
        shard generates only the failed ones. The parts are deleted once the shard (or the kept file) is written.
        """
        from ..pipeline import run_pipeline  # looked up at each build: tests replace it

        path, kept = self.paths[k], _kept(self.paths[k])
        passages, parts = self.block(k), self.parts(k)
        logger.info("Shard %d of %d: %d passages.", k + 1, self.count, passages.num_rows)
        done = _read_kept(kept)
        checkpoint = self.config.batch_checkpoint
        found = parts.read(set(passage_ids(passages))) if checkpoint else None
        if found is not None:
            logger.info("Shard %d of %d: %d passages were kept by an earlier run.", k + 1, self.count,
                        len(set(found["passage_id"])))  # fmt: skip
            done = found if done is None else _union(done, found)
        result = run_pipeline(
            passages,
            self.config.generator(),
            self.config.scorer(),
            num_proc=self.num_proc,
            load_from_cache_file=self.use_cache,
            done=done,
            keep=parts if checkpoint else None,
        )
        if result.failed:
            if result.generated is not None and result.generated.num_rows:
                write_atomically(result.generated, kept)
                parts.clear()  # the kept file holds their passages now
            return ShardOutcome(k, result.failed, result.stats)
        # Written whole, then renamed: a run killed mid-write leaves no shard that looks finished.
        write_atomically(result.rows, path)
        kept.unlink(missing_ok=True)
        parts.clear()
        del result.rows
        release_freed_memory()
        upload = self.store.upload_in_background(self.config_id, path) if self.store is not None else None
        return ShardOutcome(k, 0, result.stats, upload)

    def verified(self, k: int) -> bool:
        """Whether shard `k` is written and can be reused ([`problem`] finds nothing). One that is not is deleted, with
        a warning, so that it is built again."""
        path = self.paths[k]
        if not path.exists():
            return False
        problem = self.problem(k)
        if problem:
            logger.warning("Rebuilding %s: %s.", path.name, problem)
            path.unlink()
            return False
        return True

    def problem(self, k: int) -> str | None:
        """Why the written shard `k` cannot be reused, or None where it can: it must be readable, with a row for every
        passage of its block and no other, no sample twice and no failed generation."""
        import pyarrow.parquet as pq

        path = self.paths[k]
        expected = set(passage_ids(self.block(k)))
        try:
            shard = pq.ParquetFile(path)  # opened once: its schema, then the three columns the check reads
            table = shard.read(columns=["passage_id", "sample_index", "finish_reason"])
            ids = table.column("passage_id").to_pylist()
            found = set(ids)
            repeated = len(ids) - len(set(zip(ids, table.column("sample_index").to_pylist())))
            reasons = set(table.column("finish_reason").to_pylist())
            problem = None
            lacking = sorted(set(FEATURES) - set(shard.schema_arrow.names))
            if lacking:  # written by an older version of this package
                problem = f"it lacks the column(s) {', '.join(lacking)}"
            elif found != expected:
                problem = (
                    f"it holds {len(found - expected)} passage(s) from another block and lacks {len(expected - found)}"
                )
            elif "error" in reasons:
                problem = "it holds failed generations"
            elif repeated:  # a shard written twice into one file: its passages would be counted, and picked, twice
                problem = f"it holds {repeated} repeated row(s) (the same passage_id and sample_index)"
            elif not len(expected) <= table.num_rows <= len(expected) * self.config.generator().num_samples:
                problem = f"it has {table.num_rows} rows for {len(expected)} passages"
        except Exception as err:  # truncated, not parquet, columns missing: whatever it is, it cannot be reused
            problem = f"it cannot be read ({type(err).__name__}: {err})"
        return problem

    def _start_over(self, shards: list[int]) -> None:
        for k in shards:
            self.paths[k].unlink(missing_ok=True)
            _kept(self.paths[k]).unlink(missing_ok=True)
            self.parts(k).clear()
        (self.work_dir / FORCED_MARKER).touch()


def upload_leftovers(store: ShardStore | None, config_id: str, work_dir: Path) -> int:
    """Hand `store` the finished shards of `work_dir` it lacks (their upload failed in an earlier run that finished);
    return how many still could not be handed over."""
    if store is None or not work_dir.exists():
        return 0
    shards = [path for path in sorted(work_dir.glob("candidates-*-of-*.parquet")) if ".kept." not in path.name]
    if not shards:
        return 0
    held = store.open(config_id)
    return sum(not store.upload(config_id, path) for path in shards if path.name not in held)


def finish_uploads(uploads: list[Future[bool]], store: ShardStore | None, work_dir: Path) -> int:
    """Wait for `uploads`; return (and warn about) how many failed."""
    not_uploaded = sum(not upload.result() for upload in uploads)
    if not_uploaded and store is not None:
        logger.warning(
            "%d of %d shards could not be uploaded to %s; they stay in %s until a run uploads them.",
            not_uploaded,
            len(uploads),
            store.location,
            work_dir,
        )
    return not_uploaded


def block_of(count: int, rank: int, world: int) -> range:
    """Rank `rank`'s contiguous block of `count` shards among `world` ranks (as `Dataset.shard(contiguous=True)`
    cuts them), empty for a rank beyond them."""
    size, extra = divmod(count, world)
    start = rank * size + min(rank, extra)
    return range(start, start + size + (rank < extra))


def write_atomically(rows: datasets.Dataset, path: Path) -> None:
    """Write `rows` to `path` whole, then rename: a run killed mid-write leaves nothing that looks finished."""
    with atomic_path(path) as partial:
        rows.to_parquet(partial)


def _kept(path: Path) -> Path:
    """Where the generations of an unfinished shard's successful passages wait for a run that finishes it."""
    return path.with_name(path.name.replace(".parquet", ".kept.parquet"))


def _union(kept: datasets.Dataset, parts: datasets.Dataset) -> datasets.Dataset:
    """The kept passages' rows, and those of the parts' passages that the kept file lacks."""
    import datasets

    held = set(kept["passage_id"])
    extra = parts.filter(lambda pid: pid not in held, input_columns="passage_id")
    return datasets.concatenate_datasets([kept, extra.cast(kept.features)]) if extra.num_rows else kept


def _read_kept(kept: Path) -> datasets.Dataset | None:
    if not kept.exists():
        return None
    import datasets

    try:
        return datasets.Dataset.from_parquet(str(kept))
    except Exception as err:  # a damaged file: its passages are generated again
        logger.warning("Ignoring %s, which cannot be read (%s); its passages are generated again.", kept, err)
        return None
