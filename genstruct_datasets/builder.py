"""A `datasets` builder that runs the whole Genstruct recipe, and `load_genstruct` to call it."""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from ._memory import release_freed_memory, system_memory_pool
from .engines import engine_options
from .errors import (
    FailedPassagesError,
    GenstructError,
    InvalidConfigError,
    InvalidSourceError,
    SourceError,  # noqa: F401  (re-exported: it used to live here)
)
from .generate import DEFAULT_GENERATOR, GenstructGenerator
from .hub_shards import FORCED_MARKER, HubShards
from .models import check_model_path, check_reward_model, distributed_node
from .parse import parse_pairs
from .passages import PassageSplitter
from .prompt import passage_id
from .score import DEFAULT_REWARD_MODEL, RewardScorer
from .select import select_best
from .sources import (  # noqa: F401  (STRUCTURED_FORMATS, TEXT_FORMATS: re-exported)
    STRUCTURED_FORMATS,
    TEXT_FORMATS,
    passage_columns,
    read_source,
    source_fingerprint,
)

logger = logging.getLogger(__name__)

FEATURES = datasets.Features(
    {
        "title": datasets.Value("string"),
        "content": datasets.Value("string"),
        "document_id": datasets.Value("string"),
        "passage_index": datasets.Value("int32"),
        "passage_id": datasets.Value("string"),
        "sample_index": datasets.Value("int32"),
        "completion": datasets.Value("string"),
        "finish_reason": datasets.Value("string"),
        "completion_tokens": datasets.Value("int32"),
        "content_truncated": datasets.Value("bool"),
        "instruction": datasets.Value("string"),
        "response": datasets.Value("string"),
        "parse_error": datasets.Value("string"),
        "reward": datasets.Value("float64"),
    }
)
"""The columns of every split the builder writes; other columns of the source are not kept."""


@dataclass
class GenstructConfig(datasets.BuilderConfig):
    """The whole Genstruct recipe: where the documents come from and every setting of every stage.

    Args:
        source (`str`): a Hub dataset id, or local files: a ``.jsonl``/``.json``, ``.csv``, ``.parquet``,
            ``.txt`` or ``.md`` file, or a folder of them (one kind of structured file, or text files).
        source_name (`str`, *optional*): the Hub dataset's config, e.g. ``"20231101.en"``.
        source_split (`str`, *optional*, defaults to `"train"`): the source split to read.
        source_revision (`str`, *optional*): the Hub dataset's revision.
        source_fingerprint (`str`, *optional*): set by [`load_genstruct`] from the local files' sizes and
            modification times, so that edited files make a new recipe.
        title_column (`str`, *optional*, defaults to `"title"`): the documents' title column.
        text_column (`str`, *optional*, defaults to `"text"`): the documents' text column. With
            ``split_documents=False`` it holds passages already. [`load_genstruct`] reads a source with a
            ``content`` column and no ``text`` column as passages (``text_column="content"``,
            ``split_documents=False``) unless `text_column` is given.
        split_documents (`bool`, *optional*, defaults to `True`): run [`PassageSplitter`] on the documents.
        min_tokens, max_tokens (`int`, *optional*, defaults to 32 and 384): passage sizes, see [`PassageSplitter`].
        limit (`int`, *optional*): use only the first `limit` passages (and documents), for a trial run.
        model, model_revision, num_samples, max_new_tokens, do_sample, temperature, top_p, seed, max_prompt_tokens,
        backend: the generator's settings, see [`GenstructGenerator`]; `num_samples` defaults to 4 here, for
            best-of-n, and `backend` to ``"auto"`` (vLLM with a CUDA GPU and vLLM installed, else transformers).
        engine_options (`dict`, *optional*): the engine's own options (``batch_size``, ``quantization``,
            ``gpu_memory_utilization``, ``base_url``...), see `genstruct_datasets.engines`. Those that do not change
            the rows (batch sizes, devices, timeouts) are not part of the recipe's cache key.
        reward_model (`str`, *optional*, defaults to `"OpenAssistant/reward-model-deberta-v3-large-v2"`): the
            scorer; None skips scoring (and best-of-n).
        reward_revision (`str`, *optional*): the reward model's revision.
        reward_batch_size (`int`, *optional*, defaults to 16): pairs per forward pass of the reward model.
        best_of_n (`bool`, *optional*, defaults to `True`): keep the best pair of each passage in ``train``
            and every candidate in ``candidates``; without it ``train`` holds every candidate.
        min_reward (`float`, *optional*): with best-of-n, drop pairs scored below this (a finite number).
        shard_size (`int`, *optional*, defaults to 1000): passages per shard. Each finished shard is written
            before the next starts, so a run that is killed and started again redoes at most one shard.
    """

    source: str | None = None
    source_name: str | None = None
    source_split: str = "train"
    source_revision: str | None = None
    source_fingerprint: str | None = None
    title_column: str = "title"
    text_column: str = "text"
    split_documents: bool = True
    min_tokens: int = PassageSplitter.min_tokens
    max_tokens: int = PassageSplitter.max_tokens
    limit: int | None = None
    model: str = DEFAULT_GENERATOR
    model_revision: str | None = None
    num_samples: int = 4
    max_new_tokens: int = 512
    do_sample: bool | None = None
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None
    max_prompt_tokens: int | None = None
    backend: str = "auto"
    engine_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    reward_model: str | None = DEFAULT_REWARD_MODEL
    reward_revision: str | None = None
    reward_batch_size: int = RewardScorer.batch_size
    best_of_n: bool = True
    min_reward: float | None = None
    shard_size: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.shard_size, int) or self.shard_size < 1:
            raise InvalidConfigError(f"shard_size must be a positive integer, got {self.shard_size!r}.")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise InvalidConfigError(f"limit must be a positive integer, got {self.limit!r}.")
        if self.best_of_n and self.reward_model is None:
            raise InvalidConfigError(
                "best_of_n needs a reward_model to rank the candidates; set one or best_of_n=False."
            )
        if self.min_reward is not None and (
            not isinstance(self.min_reward, (int, float)) or not math.isfinite(self.min_reward)
        ):
            raise InvalidConfigError(
                f"min_reward must be a finite number, got {self.min_reward!r}; leave it out to keep every best pair."
            )
        # Validate every stage's settings now, before anything is read or loaded.
        self.splitter()
        self.generator()
        self.scorer()

    def splitter(self) -> PassageSplitter:
        """The passage stage of this recipe (counting in the generator's tokenizer)."""
        return PassageSplitter(
            self.model,
            revision=self.model_revision,
            min_tokens=self.min_tokens,
            max_tokens=self.max_tokens,
            title_column=self.title_column,
            text_column=self.text_column,
        )

    def generator(self) -> GenstructGenerator:
        """The generation stage of this recipe."""
        return GenstructGenerator(
            self.model,
            revision=self.model_revision,
            num_samples=self.num_samples,
            max_new_tokens=self.max_new_tokens,
            do_sample=self.do_sample,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            max_prompt_tokens=self.max_prompt_tokens,
            backend=self.backend,
            **self.engine_options,
        )

    def scorer(self) -> RewardScorer | None:
        """The scoring stage of this recipe, or None without a reward model."""
        if self.reward_model is None:
            return None
        return RewardScorer(self.reward_model, revision=self.reward_revision, batch_size=self.reward_batch_size)

    def recipe(self) -> dict[str, dict[str, Any]]:
        """The settings by stage, as the dataset card shows them."""
        generator = self.generator()
        return {
            "source": {
                "source": self.source,
                "name": self.source_name,
                "split": self.source_split,
                "revision": self.source_revision,
                "limit": self.limit,
            },
            "passages": {
                "split_documents": self.split_documents,
                "min_tokens": self.min_tokens,
                "max_tokens": self.max_tokens,
            },
            "generator": generator.settings() | {"engine": generator.engine.version()},
            "reward model": {"model": self.reward_model, "revision": self.reward_revision},
            "selection": {"best_of_n": self.best_of_n, "min_reward": self.min_reward},
        }

    def settings(self) -> dict[str, Any]:
        """Every field of the recipe that changes the rows (not the `BuilderConfig` bookkeeping), for hashing.

        The engine counts by its name and the options that change the rows: a run with another batch size, device
        or timeout has the same recipe, and reuses the shards of an earlier one.
        """
        skip = {field.name for field in dataclasses.fields(datasets.BuilderConfig)} | {"backend", "engine_options"}
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        engine = self.generator().engine
        return settings | {"engine": {"backend": engine.name, **engine.settings()}}


class GenstructBuilder(datasets.GeneratorBasedBuilder):
    """Build a Genstruct dataset from a corpus: passages, completions, pairs, rewards, best-of-n.

    `datasets` 4 and later no longer run loading scripts, so this builder is used directly (see
    [`load_genstruct`]). Its cache directory is keyed by the whole recipe: the same recipe is read back
    from the cache without loading any model, and a changed one builds anew.

    Splits: ``train`` (the best pair of each passage with best-of-n, else every candidate) and, with
    best-of-n, ``candidates`` (every sample, with its `finish_reason`, `parse_error` and `reward`).
    """

    BUILDER_CONFIG_CLASS = GenstructConfig
    VERSION = datasets.Version("0.1.0")
    # Where the run goes, not what it makes (not part of the recipe): worker processes of the generation and
    # scoring maps (one per GPU), a Hub repository that keeps finished shards as they finish, and whether
    # finished work (shards, the maps' cache files) is reused; `download_mode="force_redownload"` turns it off.
    map_num_proc: int | None = None
    shard_store: HubShards | None = None
    reuse_work: bool = True
    # Shards of this run that the store could not take (None: no shard was built in this process).
    not_uploaded: int | None = None

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="Grounded instruction pairs written by Genstruct from text passages.",
            features=FEATURES,
        )

    def _split_generators(self, dl_manager) -> list[datasets.SplitGenerator]:
        config: GenstructConfig = self.config
        candidates = self._candidates(config)
        if not config.best_of_n:
            return [datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"rows": candidates})]
        best = select_best(candidates, min_reward=config.min_reward)
        return [
            datasets.SplitGenerator(name=datasets.Split.TRAIN, gen_kwargs={"rows": best}),
            datasets.SplitGenerator(name="candidates", gen_kwargs={"rows": candidates}),
        ]

    def _generate_examples(self, rows: datasets.Dataset):
        yield from enumerate(rows.select_columns(list(FEATURES)))

    def _candidates(self, config: GenstructConfig) -> datasets.Dataset:
        """Every candidate, built shard by shard; a shard finished by an earlier, interrupted run is reused."""
        paths = self._build_shards(config)
        missing = [path for path in paths if not path.exists()]
        if missing and self.shard_store is not None:
            # Several machines without a shared folder: the other ranks' shards are in the Hub repository.
            self.shard_store.fetch(self.config_id, missing)
            missing = [path for path in missing if not path.exists()]
        if missing:
            raise GenstructError(
                f"{len(missing)} of {len(paths)} shards are missing from {self.work_dir} (first: {missing[0].name}). "
                "Did every rank finish? Ranks on several machines need a shared work folder (--cache-dir) or "
                "a Hub repository for their shards (--push-to-hub)."
            )
        return datasets.Dataset.from_parquet([str(path) for path in paths], features=FEATURES)

    def _build_shards(self, config: GenstructConfig) -> list[Path]:
        """Build this process's missing shards (all of them outside torchrun) and return every shard's path.

        With a [`HubShards`] store, the shards it holds are downloaded instead of built, local shards it lacks
        (an earlier upload failed) are uploaded, and each new shard is uploaded as soon as it is written.
        """
        passages = self.passages
        work = self.work_dir
        work.mkdir(parents=True, exist_ok=True)
        count = max(1, math.ceil(passages.num_rows / config.shard_size))
        paths = [work / f"candidates-{k:05d}-of-{count:05d}.parquet" for k in range(count)]
        # This rank's part: a contiguous block of the shards, the same whatever ran before (none past the shards).
        mine = list(_block(count, *self.node))
        store, uploads = self.shard_store, []
        forced = work / FORCED_MARKER
        if not self.reuse_work:
            # A forced build starts from nothing: this rank's shards of earlier runs go first, here and in the
            # repository, and the marker keeps a resumed forced build off the maps' caches of those runs.
            self._start_over(paths, mine)
        if store is not None:
            if not self.reuse_work:
                held = store.start_over(self.config_id, [paths[k].name for k in mine])
            else:
                held = store.open(self.config_id)
                if FORCED_MARKER in held and not forced.exists():
                    # Another machine started a forced build of this recipe: the shards here are older than it.
                    self._start_over(paths, mine)
            store.fetch(self.config_id, [paths[k] for k in mine], held)
            # Finished here but not in the repository: an upload of an earlier run failed.
            uploads = [
                store.upload_in_background(self.config_id, paths[k])
                for k in mine
                if paths[k].exists() and paths[k].name not in held
            ]
        use_cache = not forced.exists()
        blocks = {k: passages.select(range(k * config.shard_size, min((k + 1) * config.shard_size, passages.num_rows)))
                  for k in mine}  # fmt: skip
        finished = sum(_verified(paths[k], blocks[k], config.num_samples) for k in mine)
        if finished:
            logger.info(
                "Resuming: %d of %d shards were finished by an earlier run and are reused.", finished, len(mine)
            )
        failed = 0
        try:
            for k in mine:
                if paths[k].exists():
                    continue
                logger.info("Shard %d of %d: %d passages.", k + 1, count, blocks[k].num_rows)
                part = self._run_stages(config, blocks[k], use_cache=use_cache, kept=_kept(paths[k]))
                if part.failed:
                    failed += part.failed
                    continue
                # Written whole, then renamed: a run killed mid-write leaves no shard that looks finished.
                _write_atomically(part.rows, paths[k])
                _kept(paths[k]).unlink(missing_ok=True)
                del part
                release_freed_memory()
                if store is not None:
                    uploads.append(store.upload_in_background(self.config_id, paths[k]))
        finally:
            # Also when a shard fails: the finished shards' uploads end before the error goes up.
            not_uploaded = sum(not upload.result() for upload in uploads)
            self.not_uploaded = not_uploaded
            if not_uploaded:
                logger.warning(
                    "%d of %d shards could not be uploaded to %s; they stay in %s until a run uploads them.",
                    not_uploaded,
                    len(uploads),
                    store.repo_id,
                    work,
                )
        if failed:
            raise FailedPassagesError(failed)
        return paths

    def upload_leftover_shards(self) -> int:
        """Upload the finished shards left in the work folder that the shard store lacks (their upload failed in an
        earlier run that finished); return how many still could not be uploaded."""
        shards = sorted(self.work_dir.glob("candidates-*-of-*.parquet")) if self.work_dir.exists() else []
        shards = [path for path in shards if not path.name.endswith(".kept.parquet")]
        if self.shard_store is None or not shards:
            return 0
        held = self.shard_store.open(self.config_id)
        uploads = [self.shard_store.upload(self.config_id, path) for path in shards if path.name not in held]
        return sum(not uploaded for uploaded in uploads)

    def _start_over(self, paths: list[Path], mine: list[int]) -> None:
        """Delete this rank's shards and mark the work folder as a forced build, which a resumed run honours."""
        for k in mine:
            paths[k].unlink(missing_ok=True)
        (self.work_dir / FORCED_MARKER).touch()

    @property
    def node(self) -> tuple[int, int]:
        """(rank, world size) of this process under `torchrun` / `accelerate launch`; (0, 1) otherwise."""
        # Not read from `os.environ` here: `datasets` swaps this module's `os` for a patched copy (for streaming)
        # whose `environ` goes stale once a `map(num_proc=...)` replaces `os.environ` with a copy of its own.
        return distributed_node()

    @property
    def work_dir(self) -> Path:
        """Where this recipe's finished shards wait until the build is done (next to the datasets cache)."""
        return Path(self._cache_dir_root) / "genstruct-work" / self.config_id

    @functools.cached_property
    def passages(self) -> datasets.Dataset:
        """The recipe's passages, read and split once per builder (rank 0 under torchrun needs them twice)."""
        config: GenstructConfig = self.config
        documents = read_source(config, token=self.token, cache_dir=self._cache_dir_root)
        # The last checks before any model runs (the splitter loads the generator's tokenizer).
        _check_models(config, token=self.token)
        if config.limit is not None:
            documents = documents.select(range(min(config.limit, documents.num_rows)))
        if config.split_documents:
            passages = documents.map(
                config.splitter(), batched=True, load_from_cache_file=self.reuse_work, desc="Splitting passages"
            )
        else:
            passages = documents.map(
                _as_passages,
                batched=True,
                fn_kwargs={"title_column": config.title_column, "text_column": config.text_column},
                load_from_cache_file=self.reuse_work,
                desc="Reading passages",
            )
        if not passages.num_rows:
            raise InvalidSourceError(_no_passages(config, documents.num_rows))
        passages = passages.select_columns(["title", "content", "document_id", "passage_index"])
        if config.limit is not None:
            passages = passages.select(range(min(config.limit, passages.num_rows)))
        return passages

    def _run_stages(
        self, config: GenstructConfig, passages: datasets.Dataset, *, use_cache: bool, kept: Path | None = None
    ) -> ShardRows:
        """Run the stages on one shard's passages.

        Passages whose generation failed (``finish_reason="error"``: a server that failed past its retries) are not
        finished work: the shard is left unfinished, the rows of the passages that succeeded wait in `kept`, the
        `datasets` cache of that generation is deleted, and a later run generates only the failed passages.
        """
        cache = {"load_from_cache_file": use_cache}
        workers = {"with_rank": True, "num_proc": self.map_num_proc, **cache}
        earlier = _read_kept(kept)
        if earlier is not None:
            done = set(earlier["passage_id"])
            passages = passages.select([i for i, pid in enumerate(_passage_ids(passages)) if pid not in done])
            logger.info("%d passages of this shard were generated by an earlier run; generating %d.", len(done),
                        passages.num_rows)  # fmt: skip
        candidates = passages.map(config.generator(), batched=True, desc="Generating", **workers)
        # What the models freed goes back to the OS before the next stage and the shard's parquet file: else
        # each lands on top of it, and the shard loop's peak rises over a long run.
        release_freed_memory()
        failed = {
            pid for pid, reason in zip(candidates["passage_id"], candidates["finish_reason"]) if reason == "error"
        }
        if failed:
            good = candidates.filter(lambda pid: pid not in failed, input_columns="passage_id")
            if earlier is not None:
                good = datasets.concatenate_datasets([earlier, good])
            if kept is not None and good.num_rows:
                _write_atomically(good, kept)
            _forget_cache(candidates)
            return ShardRows(None, len(failed))
        if earlier is not None:
            candidates = datasets.concatenate_datasets([earlier, candidates])
        candidates = candidates.map(parse_pairs, batched=True, desc="Parsing", **cache)
        scorer = config.scorer()
        if scorer is not None:
            scored = candidates.map(scorer, batched=True, desc="Scoring", **workers)
            release_freed_memory()
            return ShardRows(scored, 0)
        return ShardRows(candidates.add_column("reward", [None] * candidates.num_rows, feature=FEATURES["reward"]), 0)


@dataclass
class ShardRows:
    """What the stages made of one shard: its rows, or None when `failed` passages must be generated again."""

    rows: datasets.Dataset | None
    failed: int


def _block(count: int, rank: int, world: int) -> range:
    """Rank `rank`'s contiguous block of `count` shards among `world` ranks (as `Dataset.shard(contiguous=True)`
    cuts them), empty for a rank beyond them."""
    size, extra = divmod(count, world)
    start = rank * size + min(rank, extra)
    return range(start, start + size + (rank < extra))


def _kept(path: Path) -> Path:
    """Where the generations of an unfinished shard's successful passages wait for a run that finishes it."""
    return path.with_name(path.name.replace(".parquet", ".kept.parquet"))


def _read_kept(kept: Path | None) -> datasets.Dataset | None:
    if kept is None or not kept.exists():
        return None
    try:
        return datasets.Dataset.from_parquet(str(kept))
    except Exception as err:  # a damaged file: its passages are generated again
        logger.warning("Ignoring %s, which cannot be read (%s); its passages are generated again.", kept, err)
        return None


def _verified(path: Path, passages: datasets.Dataset, num_samples: int) -> bool:
    """Whether a finished shard can be reused: readable, with a row for every passage of its block and no other.

    A shard that is not is deleted, with a warning, so that it is built again.
    """
    if not path.exists():
        return False
    import pyarrow.parquet as pq

    expected = set(_passage_ids(passages))
    try:
        shard = pq.ParquetFile(path)  # opened once: its schema, then the two columns the check reads
        table = shard.read(columns=["passage_id", "finish_reason"])
        found = set(table.column("passage_id").to_pylist())
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
        elif not len(expected) <= table.num_rows <= len(expected) * num_samples:
            problem = f"it has {table.num_rows} rows for {len(expected)} passages"
    except Exception as err:  # truncated, not parquet, columns missing: whatever it is, it cannot be reused
        problem = f"it cannot be read ({type(err).__name__}: {err})"
    if problem:
        logger.warning("Rebuilding %s: %s.", path.name, problem)
        path.unlink()
        return False
    return True


def _passage_ids(passages: datasets.Dataset) -> list[str]:
    """The `passage_id` of each row of a passages dataset (`title` and `content`), as the generator writes it."""
    return [passage_id(t, c) for t, c in zip(passages["title"], passages["content"])]


def _write_atomically(rows: datasets.Dataset, path: Path) -> None:
    """Write `rows` to `path` whole, then rename: a run killed mid-write leaves nothing that looks finished."""
    partial = path.with_name(path.name + ".partial")
    rows.to_parquet(partial)
    os.replace(partial, path)


def _forget_cache(ds: datasets.Dataset) -> None:
    """Delete the `datasets` cache files of a map's result, so that no later run reads them back."""
    for cache_file in ds.cache_files:
        Path(cache_file["filename"]).unlink(missing_ok=True)


def _check_models(config: GenstructConfig, *, token: str | bool | None) -> None:
    """Check the recipe's models without loading them: local folders that exist and hold a model, and a reward model
    with one label, read from its config. A server's model is the server's name for it (its tokenizer, where one is
    needed, is checked as it loads)."""
    if config.generator().engine.name != "openai":
        check_model_path(config.model)
    if config.reward_model is not None:
        check_reward_model(config.reward_model, revision=config.reward_revision, token=token)


def _no_passages(config: GenstructConfig, documents: int) -> str:
    """Why a source gave no passage at all, and what to do about it."""
    if not documents:
        return f"source {config.source!r} holds no documents; check the source and its split ({config.source_split})."
    return (
        f"none of the {documents} document(s) of {config.source!r} gave a passage: their {config.text_column!r} "
        f"is empty, or shorter than min_tokens={config.min_tokens} tokens. Check the text column (--text-column), "
        "or lower min_tokens."
    )


def _as_passages(batch: dict[str, list], *, title_column: str, text_column: str) -> dict[str, list]:
    """Treat each row as a passage already: `content` is its text, and it is its own document."""
    ids = [passage_id(t, c) for t, c in zip(batch[title_column], batch[text_column])]
    return {
        "title": batch[title_column],
        "content": batch[text_column],
        "document_id": ids,
        "passage_index": [0] * len(ids),
    }


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
    push_shards_to: str | HubShards | None = None,
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
        push_shards_to (`str` or [`HubShards`], *optional*): a Hub dataset repository that receives each finished
            shard as it finishes, so that a crash loses at most the shard in progress, and from which a later
            run of the same recipe, on any machine, takes the shards it holds. Publish the result there with
            [`publish`] (``shards=``), which deletes them. Not part of the recipe.
        **config: the rest of the recipe, see [`GenstructConfig`] (``model=``, ``num_samples=``, ``backend=``,
            ``reward_model=``, ``min_reward=``, ``limit=`` ...), and the engine's options (``batch_size=``,
            ``quantization=``, ``gpu_memory_utilization=``, ``base_url=`` ...), which go into `engine_options`.

    Returns:
        `datasets.DatasetDict`: ``train`` and, with best-of-n, ``candidates``. Under `torchrun` or `accelerate
        launch` (`WORLD_SIZE` > 1), every rank builds its share of the shards (a contiguous block of them,
        `datasets.distributed.split_dataset_by_node`) into the work folder beside `cache_dir`, and rank 0 returns
        the dataset; the other ranks return None. Ranks on several machines need that folder shared, or
        `push_shards_to`: rank 0 then downloads the other ranks' shards from the repository.

    Raises:
        [`InvalidConfigError`]: a setting is out of range (before anything is read or loaded), or the reward model
            has more than one label (read from its config before any model loads).
        [`SourceError`]: a local source that does not exist or holds no supported files.
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
    settings = {
        "source": str(source),
        "source_name": name,
        "source_split": split,
        "source_revision": revision,
        "source_fingerprint": source_fingerprint(str(source)),
        **config,
    }
    fields = {f.name for f in dataclasses.fields(GenstructConfig)}
    # The engines' own options (batch_size, gpu_memory_utilization, base_url...) may be given beside the recipe's.
    options = {key: settings.pop(key) for key in list(settings) if key not in fields and key in engine_options()}
    if options:
        settings["engine_options"] = {**settings.get("engine_options", {}), **options}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise InvalidConfigError(
            f"Unknown setting(s) {unknown} for load_genstruct; see GenstructConfig for the recipe's fields and "
            "genstruct_datasets.engines for the engines' options."
        )
    recipe = GenstructConfig(**settings)
    if num_proc is not None and (not isinstance(num_proc, int) or num_proc < 1):
        raise InvalidConfigError(f"num_proc must be a positive integer (worker processes), got {num_proc!r}.")
    if "text_column" not in config:
        # Passages in `title` and `content` (the shape Genstruct reads) need no text column nor splitting.
        columns = passage_columns(str(source), name, revision=revision, token=token, cache_dir=cache_dir)
        if columns:
            settings = {**columns, **settings}
            recipe = GenstructConfig(**settings)
    # The cache is keyed by the whole recipe, defaults included, so that passing a default changes nothing.
    config_id = f"{_slug(str(source))}-{datasets.fingerprint.Hasher.hash(recipe.settings())}"
    builder = GenstructBuilder(cache_dir=cache_dir, config_id=config_id, token=token, **settings)
    builder.map_num_proc = num_proc
    mode = datasets.DownloadMode(download_mode or datasets.DownloadMode.REUSE_DATASET_IF_EXISTS)
    builder.reuse_work = mode != datasets.DownloadMode.FORCE_REDOWNLOAD
    if push_shards_to is not None:
        builder.shard_store = (
            push_shards_to
            if isinstance(push_shards_to, HubShards)
            else HubShards(push_shards_to, token=token if isinstance(token, str) else None)
        )
    rank, world = builder.node
    with system_memory_pool():
        if world > 1:
            # Several processes (torchrun, accelerate launch): each builds its share of the shards into the shared
            # work folder, then all wait for each other; rank 0 alone assembles the dataset from every shard.
            _run_distributed_shards(builder)
            if rank != 0:
                return None
        builder.download_and_prepare(download_mode=download_mode)
    # The build is in the cache now: the shards it was made of are no longer needed, unless the shard store still
    # lacks some (an upload failed); a later run reads the build from the cache and uploads those then.
    if builder.not_uploaded is None:
        builder.not_uploaded = builder.upload_leftover_shards()
    if not builder.not_uploaded:
        shutil.rmtree(builder.work_dir, ignore_errors=True)
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


def _run_distributed_shards(builder: GenstructBuilder) -> None:
    import torch.distributed as dist

    started = not dist.is_initialized()
    if started:
        dist.init_process_group(backend="gloo")
    try:
        try:
            builder._build_shards(builder.config)
        except FailedPassagesError:
            # The other ranks still meet this one at the barrier, rather than wait for it until gloo's timeout.
            dist.barrier()
            raise
        dist.barrier()
    finally:
        if started:
            dist.destroy_process_group()


def _slug(source: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source).name or source)[:64] or "source"
