"""A `datasets` builder that runs the Genstruct recipe shard by shard through an executor, and `load_genstruct`."""

from __future__ import annotations

import functools
import logging
import os
import posixpath
import re
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import datasets

from ._checks import check_workers
from ._memory import release_freed_memory, system_memory_pool
from ._paths import is_local_path
from .columns import FEATURES
from .errors import GenstructError
from .executors import BuiltShards, Executor, make_executor
from .progress import ProgressOptions
from .recipe import GenstructConfig
from .runstats import RunStats, package_versions
from .select import select_best
from .shards import FolderStore, HubShards, ShardJob, ShardStore, upload_leftovers
from .sources import check_source, read_passages

logger = logging.getLogger(__name__)


class GenstructBuilder(datasets.GeneratorBasedBuilder):
    """Build a Genstruct dataset from a corpus: passages, completions, pairs, rewards, best-of-n.

    `datasets` 4 and later no longer run loading scripts, so this builder is used directly (see
    [`load_genstruct`]). Its cache directory is keyed by the whole recipe: the same recipe is read back
    from the cache without loading any model, and a changed one builds anew. The candidates are built shard by
    shard ([`ShardJob`]) by an executor; a shard finished by an earlier, interrupted run is reused.

    Splits: ``train`` (the best pair of each passage with best-of-n, else every candidate) and, with
    best-of-n, ``candidates`` (every sample, with its `finish_reason`, `parse_error` and `reward`).

    Args:
        executor (`str` or [`Executor`], *optional*): where the shards are built; see [`make_executor`].
        num_proc (`int`, *optional*): worker processes of the generation and scoring maps (one per GPU).
        shard_store ([`ShardStore`], *optional*): where finished shards are kept as they finish, for other machines
            and later runs ([`HubShards`] or [`FolderStore`]).
        reuse_work (`bool`, *optional*, defaults to `True`): reuse finished shards and the maps' cache files;
            ``download_mode="force_redownload"`` turns it off.
        progress ([`ProgressOptions`], *optional*): how the build shows where it stands (prices, log interval, a
            listener of finished shards).
        config ([`GenstructConfig`], *optional*): the recipe, resolved ([`resolve_recipe`]); else it is made from
            the recipe's settings among `kwargs`.
        **kwargs: `datasets.DatasetBuilder`'s arguments (``cache_dir``, ``config_id``, ``token``) and the recipe's
            settings ([`GenstructConfig`]).
    """

    BUILDER_CONFIG_CLASS = GenstructConfig
    VERSION = datasets.Version("0.1.0")

    def __init__(
        self,
        *args: Any,
        config: GenstructConfig | None = None,
        executor: str | Executor | None = None,
        num_proc: int | None = None,
        shard_store: ShardStore | None = None,
        reuse_work: bool = True,
        progress: ProgressOptions | None = None,
        **kwargs: Any,
    ) -> None:
        self._recipe = config
        self.progress = progress
        self.executor = make_executor(executor)
        self.num_proc = num_proc
        self.shard_store = shard_store
        self.reuse_work = reuse_work
        self.stats = RunStats(executor=self.executor.name)
        """This run's figures: the stages' time, the tokens, the shards built and reused."""
        self.built: BuiltShards | None = None
        """What the executor built in this process (None: nothing was built, e.g. the dataset was cached)."""
        self.assembled = False
        """Whether this builder assembled the dataset (False: `download_and_prepare` found it in the cache)."""
        super().__init__(*args, **kwargs)

    def _create_builder_config(
        self, config_name=None, custom_features=None, config_id=None, **config_kwargs
    ) -> tuple[datasets.BuilderConfig, str]:
        """The recipe given as `config` (resolved once, by [`resolve_recipe`]), else one made from the keyword
        arguments, as `datasets` makes it."""
        if self._recipe is None:
            return super()._create_builder_config(config_name, custom_features, config_id, **config_kwargs)
        self._recipe.version = datasets.Version(str(self.VERSION))  # as datasets sets it: the cache folder's name
        return self._recipe, config_id or self._recipe.create_config_id({})

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="Grounded instruction pairs written by Genstruct from text passages.",
            features=FEATURES,
        )

    def _split_generators(self, dl_manager) -> list[datasets.SplitGenerator]:
        config: GenstructConfig = self.config
        candidates = self._candidates()
        self.assembled = True
        if not config.best_of_n:
            return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"rows": candidates})]
        with self.stats.timed("select"):
            best = select_best(candidates, min_reward=config.min_reward)
        return [
            datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"rows": best}),
            datasets.SplitGenerator(name="candidates", gen_kwargs={"rows": candidates}),
        ]

    def _generate_examples(self, rows: datasets.Dataset):
        yield from enumerate(rows.select_columns(list(FEATURES)))

    def build_shards(self) -> BuiltShards:
        """Build the missing shards this process takes part in, with the executor (once per builder)."""
        if self.built is None:
            self.built = self.executor.run(self.shard_job(), self.progress)
            self.stats.add(self.built.stats)
            self.stats.shards, self.stats.shards_reused = self.built.stats.shards, self.built.stats.shards_reused
        return self.built

    def shard_job(self) -> ShardJob:
        """Everything needed to build this recipe's shards, here or on another machine."""
        return ShardJob(
            config=self.config,
            config_id=self.config_id,
            passages=self.passages,
            work_dir=self.work_dir,
            store=self.shard_store,
            num_proc=self.num_proc,
            reuse_work=self.reuse_work,
        )

    def _candidates(self) -> datasets.Dataset:
        """Every candidate, read from the shards once they are all built."""
        self.build_shards()
        paths = self.shard_job().paths
        missing = [path for path in paths if not path.exists()]
        if missing and self.shard_store is not None:
            # Several machines without a shared folder: the other ranks' shards are in the store.
            self.shard_store.fetch(self.config_id, missing)
            missing = [path for path in missing if not path.exists()]
        if missing:
            raise GenstructError(
                f"{len(missing)} of {len(paths)} shards are missing from {self.work_dir} (first: {missing[0].name}). "
                "Did every rank finish? Processes on several machines need a shared work folder (--cache-dir) or "
                "a shard store (--push-to-hub)."
            )
        return datasets.Dataset.from_parquet([str(path) for path in paths], features=FEATURES)

    def upload_leftover_shards(self) -> int:
        """Hand the shard store the finished shards left in the work folder that it lacks (their upload failed in an
        earlier run that finished); return how many still could not be handed over."""
        return upload_leftovers(self.shard_store, self.config_id, self.work_dir)

    @property
    def cached(self) -> bool:
        """Whether the recipe's dataset is in the cache, to be read back without building anything (as
        `download_and_prepare` finds it; never for a forced build)."""
        info = posixpath.join(self._output_dir, datasets.config.DATASET_INFO_FILENAME)
        return self.reuse_work and self._fs.exists(info)

    @property
    def work_dir(self) -> Path:
        """Where this recipe's finished shards wait until the build is done (next to the datasets cache)."""
        # Absolute: a Ray worker runs in a working folder of its own.
        return Path(self._cache_dir_root).resolve() / "genstruct-work" / self.config_id

    @functools.cached_property
    def passages(self) -> datasets.Dataset:
        """The recipe's passages, read and split once per builder (rank 0 under torchrun needs them twice)."""
        with self.stats.timed("passages"):
            read = read_passages(
                self.config, token=self.token, cache_dir=self._cache_dir_root, load_from_cache_file=self.reuse_work
            )
        # Counted here, once per run: the documents are not in the output. Under torchrun every rank reads the
        # passages, and only rank 0's builder keeps this count.
        self.stats.passages, self.stats.stages = read.rows.num_rows, [read.stage, *self.stats.stages]
        return read.rows


def load_genstruct(
    source: str,
    name: str | None = None,
    *,
    split: str = "train",
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    download_mode: datasets.DownloadMode | str | None = None,
    token: str | bool | None = None,
    num_proc: int | None = None,
    push_shards_to: str | os.PathLike | ShardStore | None = None,
    executor: str | Executor | None = None,
    **config: Any,
) -> datasets.DatasetDict | None:
    """Build (or read back from the cache) a Genstruct dataset from a corpus, like `load_dataset`.

    The build hands the memory it frees back to the OS after each shard (Arrow allocating from `malloc`
    meanwhile), so that its peak memory does not creep up with the size of the corpus.

    Args:
        source (`str`): a Hub dataset id (``"wikimedia/wikipedia"``), or local files: a ``.jsonl``,
            ``.csv``, ``.parquet``, ``.txt`` or ``.md`` file, or a folder of them.
        name (`str`, *optional*): the Hub dataset's config, e.g. ``"20231101.en"``.
        split (`str`, *optional*, defaults to `"train"`): the source split to read.
        revision (`str`, *optional*): the Hub dataset's revision.
        cache_dir (`str`, *optional*): where built datasets are cached; defaults to the `datasets` cache.
        download_mode (`DownloadMode` or `str`, *optional*): ``"force_redownload"`` builds anew even with the
            same recipe: it splits, generates and scores again instead of reusing finished shards or cached
            results (say, after a model's `main` moved). The source documents still come from the cache. It
            deletes the earlier shards first, so a forced build that crashes is resumed by a plain call.
        token (`str` or `bool`, *optional*): a Hub token for private or gated sources and models.
        num_proc (`int`, *optional*): worker processes for generation and scoring, one model each on
            ``cuda:{rank % n_gpus}`` (use ``torch.cuda.device_count()``; with CUDA, call
            ``multiprocess.set_start_method("spawn")`` first). It does not change the results, nor the cache key.
        push_shards_to (`str` or [`ShardStore`], *optional*): a store that receives each finished shard as it
            finishes, so that a crash loses at most the shard in progress, and from which a later run of the same
            recipe, on any machine, takes the shards it holds: a Hub dataset repository (its id, or [`HubShards`])
            or a folder that every machine mounts (its path, or [`FolderStore`]). Publish the result to that
            repository with [`publish`] (``shards=``), which deletes them. Not part of the recipe.
        executor (`str` or [`Executor`], *optional*): where the shards are built: ``"local"`` (this process),
            ``"torchrun"`` (the default when `WORLD_SIZE` > 1) or ``"ray"`` (a Ray cluster, see [`RayExecutor`]).
            Not part of the recipe: any executor reuses the shards of another.
        **config: the rest of the recipe, see [`GenstructConfig`] (``model=``, ``num_samples=``, ``backend=``,
            ``reward_model=``, ``min_reward=``, ``limit=`` ...), and the engine's options (``batch_size=``,
            ``quantization=``, ``gpu_memory_utilization=``, ``base_url=`` ...).

    Returns:
        `datasets.DatasetDict`: ``train`` and, with best-of-n, ``candidates``; [`RunStats.of`] reads what the build
        cost (time per stage, tokens, engine) from either split. Under `torchrun` or `accelerate
        launch` (`WORLD_SIZE` > 1), every rank builds its share of the shards (a contiguous block of them,
        `datasets.distributed.split_dataset_by_node`) into the work folder beside `cache_dir`, and rank 0 returns
        the dataset; the other ranks return None. Ranks on several machines need that folder shared, or
        `push_shards_to`: rank 0 then downloads the other ranks' shards from the repository.

    Raises:
        [`InvalidConfigError`]: an unknown setting, or one out of range (before anything is read or loaded), or the
            reward model has more than one label (read from its config before any model loads).
        [`SourceError`]: a local source that does not exist or holds no supported files (before anything else).
        [`ModelUnreachableError`]: a Hub model that is not in the local cache while the Hub cannot be reached (before
            the source is read).
        [`InvalidSourceError`]: a local file that is empty, not UTF-8 or has a malformed line (named, with the line),
            or a source whose documents give no passage at all (before any model loads).
        [`MissingColumnsError`]: the source lacks the title or text column (before any model loads).
        [`ModelNotFoundError`]: a model given as a local folder that is missing or holds no model (before any
            model loads).

    Example:

    ```py
    >>> pairs = load_genstruct("wikimedia/wikipedia", "20231101.en", limit=1000, num_samples=4)  # doctest: +SKIP
    >>> pairs
    DatasetDict({
        train: Dataset({features: ['title', 'content', ..., 'reward'], num_rows: 1000})
        candidates: Dataset({features: [...], num_rows: 4000})
    })
    ```
    """
    check_workers("num_proc", num_proc)
    # The settings are checked now; build_genstruct resolves the recipe (the source's columns, the engine), once.
    recipe = GenstructConfig(
        source=str(source), source_name=name, source_split=split, source_revision=revision, **config
    )
    # In the order a user expects, before any work: local source files that are not there, then a Hub model that
    # cannot be had now (offline, never downloaded).
    check_source(recipe.source)
    recipe.check_models_reachable(token=token)
    return build_genstruct(
        recipe,
        cache_dir=cache_dir,
        download_mode=download_mode,
        token=token,
        num_proc=num_proc,
        push_shards_to=push_shards_to,
        executor=executor,
    )


def build_genstruct(
    recipe: GenstructConfig,
    *,
    cache_dir: str | os.PathLike | None = None,
    download_mode: datasets.DownloadMode | str | None = None,
    token: str | bool | None = None,
    num_proc: int | None = None,
    push_shards_to: str | os.PathLike | ShardStore | None = None,
    executor: str | Executor | None = None,
    progress: ProgressOptions | None = None,
) -> datasets.DatasetDict | None:
    """Build (or read back from the cache) the dataset of a recipe: what [`load_genstruct`] and [`run_recipe`] run once
    they have the recipe, which is resolved here ([`GenstructConfig.resolve`]) before its cache key is made. The
    arguments are [`load_genstruct`]'s, and `progress` ([`ProgressOptions`]): how the build shows where it stands.

    Returns:
        `datasets.DatasetDict` or None: see [`load_genstruct`].
    """
    started = time.perf_counter()
    builder = make_builder(
        recipe,
        cache_dir=cache_dir,
        download_mode=download_mode,
        token=token,
        num_proc=num_proc,
        push_shards_to=push_shards_to,
        executor=executor,
        progress=progress,
    )
    with system_memory_pool():
        if builder.executor.builds_in_every_process:
            # torchrun, accelerate launch: every rank builds its share of the shards, even where rank 0 has the
            # dataset cached, then all meet; rank 0 alone assembles the dataset from every shard.
            builder.build_shards()
        if not builder.executor.assembles:
            return None
        say_if_locked(builder._output_dir + "_builder.lock")  # the lock download_and_prepare takes
        builder.download_and_prepare(download_mode=download_mode)
    # The build is in the cache now: the shards it was made of are no longer needed, unless the shard store still
    # lacks some (an upload failed); a later run reads the build from the cache and uploads those then.
    not_uploaded = builder.built.not_uploaded if builder.built is not None else builder.upload_leftover_shards()
    if not not_uploaded:
        shutil.rmtree(builder.work_dir, ignore_errors=True)
    if builder.assembled:
        # Measured once, here, for the summary, the card and the report: kept beside the build in the cache.
        stats = builder.stats
        stats.engine = stats.engine or recipe.generator().engine.describe()
        stats.versions = package_versions()
        stats.wall_seconds = time.perf_counter() - started
        stats.finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        stats.save(builder.cache_dir)
    else:
        logger.info(
            "Read %s from the cache: this recipe was built before, and nothing was generated now.", recipe.source
        )
    release_freed_memory()
    # datasets refuses to read a split without rows ("corresponds to no data"): a run in which no passage
    # gave a pair still returns its splits, empty.
    return datasets.DatasetDict(
        {
            name: builder.as_dataset(split=name)
            if info.num_examples
            else datasets.Dataset.from_dict({column: [] for column in FEATURES}, features=FEATURES)
            for name, info in builder.info.splits.items()
        }
    )


def make_builder(
    recipe: GenstructConfig,
    *,
    cache_dir: str | os.PathLike | None = None,
    download_mode: datasets.DownloadMode | str | None = None,
    token: str | bool | None = None,
    num_proc: int | None = None,
    push_shards_to: str | os.PathLike | ShardStore | None = None,
    executor: str | Executor | None = None,
    progress: ProgressOptions | None = None,
) -> GenstructBuilder:
    """The builder of a recipe, which is resolved here ([`GenstructConfig.resolve`]) before its cache key is made: what
    [`build_genstruct`] runs, and what a dry run ([`plan_run`]) looks at without building. The arguments are
    [`load_genstruct`]'s, and `progress` ([`ProgressOptions`]): how the build shows where it stands.

    Returns:
        [`GenstructBuilder`]: keyed by the whole recipe; nothing is read or built yet.
    """
    recipe.resolve(token=token, cache_dir=cache_dir)
    if isinstance(push_shards_to, (str, os.PathLike)):
        push_shards_to = (
            FolderStore(push_shards_to)
            if is_local_path(push_shards_to)
            else HubShards(str(push_shards_to), token=token if isinstance(token, str) else None)
        )
    mode = datasets.DownloadMode(download_mode or datasets.DownloadMode.REUSE_DATASET_IF_EXISTS)
    # The cache is keyed by the whole recipe, defaults included, so that passing a default changes nothing.
    return GenstructBuilder(
        cache_dir=cache_dir,
        config=recipe,
        config_id=f"{_slug(recipe.source)}-{datasets.fingerprint.Hasher.hash(recipe.settings())}",
        token=token,
        executor=executor,
        num_proc=num_proc,
        shard_store=push_shards_to,
        reuse_work=mode != datasets.DownloadMode.FORCE_REDOWNLOAD,
        progress=progress,
    )


def say_if_locked(lock_path: str) -> bool:
    """Say, in a warning, that this run waits for another run of the same recipe, when that one holds the recipe's
    lock (`datasets` takes it while it builds); return whether it does. A remote cache has no lock.

    Example:

    ```py
    >>> say_if_locked("/tmp/no-such-build_builder.lock")
    False
    ```
    """
    from filelock import FileLock, Timeout

    if "://" in lock_path or not Path(lock_path).parent.is_dir():
        return False
    try:
        with FileLock(lock_path, timeout=0):
            return False
    except Timeout:
        logger.warning(
            "Waiting for %s: another run of the same recipe is building it (or was killed with the lock held, which "
            "the system frees); this run goes on when that one ends, and reuses what it built.",
            lock_path,
        )
        return True


def _slug(source: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source).name or source)[:64] or "source"
