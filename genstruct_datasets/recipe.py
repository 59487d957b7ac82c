"""The Genstruct recipe: where the documents come from and every setting of every stage, by stage, resolved once."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import datasets

from . import generate, passages, score
from ._checks import check_number
from .engines import engine_options
from .errors import InvalidConfigError
from .filters import MinHashDedup, PairFilter

logger = logging.getLogger(__name__)

RECIPE_DEFAULTS: dict[str, Any] = {"num_samples": 4}
"""Where a recipe's defaults differ from its stages' own, written once: a recipe keeps the best of 4 completions
per passage, where the map callable (`genstruct_generate`, [`GenerationSettings`]) writes one. The command line, the
Python API ([`load_genstruct`], [`run_recipe`]) and the card read it from here."""


@dataclass(init=False)
class GenstructConfig(datasets.BuilderConfig):
    """The whole Genstruct recipe: where the documents come from and every setting of every stage.

    Each stage's settings are its own settings dataclass's fields, kept by stage: `splitting` for
    [`PassageSplitter`], `generation` for [`GenerationSettings`] and the engine's options, `scoring` for
    [`RewardScorer`]. The config also takes them flat, as [`load_genstruct`] and the command line give them: a
    [`PassageSplitter`] field goes to `splitting`, a [`GenerationSettings`] field or an engine option to `generation`
    (``model_revision`` is its ``revision``), a [`RewardScorer`] field prefixed with ``reward_`` to `scoring`
    (``reward_model``, ``reward_revision``, ``reward_batch_size``...). So a setting added to a stage's dataclass is a
    part of the recipe, its cache key, its card and a command-line flag, with nothing else to change. The recipe's
    own fields (source, selection, shards) are declared here, with the help their flags show.

    Args:
        source (`str`): a Hub dataset id, or local files: a ``.jsonl``/``.json``, ``.csv``, ``.parquet``,
            ``.txt`` or ``.md`` file, or a folder of them (one kind of structured file, or text files).
        source_name (`str`, *optional*): the Hub dataset's config, e.g. ``"20231101.en"``.
        source_split (`str`, *optional*, defaults to `"train"`): the source split to read.
        source_revision (`str`, *optional*): the Hub dataset's revision.
        source_fingerprint (`str`, *optional*): set by [`resolve_recipe`] from the local files' sizes and
            modification times, so that edited files make a new recipe.
        split_documents (`bool`, *optional*): run [`PassageSplitter`] on the documents; False reads each row's text
            column as one passage. Left out, [`resolve`] makes it True, or False for a source of passages (a
            ``content`` column and no ``text`` column).
        limit (`int`, *optional*): use only the first `limit` passages (and documents), for a trial run.
        splitting (`dict`, *optional*): [`PassageSplitter`]'s settings (``min_tokens``, ``max_tokens``,
            ``title_column``, ``text_column``); it counts in the generator's tokenizer. [`resolve_recipe`] reads a
            source with a ``content`` column and no ``text`` column as passages unless `text_column` is given.
        generation (`dict`, *optional*): [`GenerationSettings`] and the engine's options (``model``, ``num_samples``,
            ``backend``, ``batch_size``, ``base_url``...); `num_samples` defaults to 4 here ([`RECIPE_DEFAULTS`]).
            Options that do not change the rows (batch sizes, devices, timeouts) are not part of the cache key.
        scoring (`dict`, *optional*): [`RewardScorer`]'s settings (``model`` defaults to
            `"OpenAssistant/reward-model-deberta-v3-large-v2"`); None skips scoring (and best-of-n).
        best_of_n (`bool`, *optional*, defaults to `True`): keep the best pair of each passage in ``train``
            and every candidate in ``candidates``; without it ``train`` holds every candidate.
        min_reward (`float`, *optional*): with best-of-n, drop pairs scored below this (a finite number).
        dedup_threshold (`float`, *optional*): after selection, drop instructions that nearly repeat a
            better-rewarded one (MinHash Jaccard at least this, in (0, 1]). It runs on the built dataset, so it is
            not part of the build's cache key: changing it rebuilds nothing.
        shard_size (`int`, *optional*, defaults to 1000): passages per shard. Each finished shard is written
            before the next starts, so a run that is killed and started again redoes at most one shard.
        batch_checkpoint (`bool`, *optional*, defaults to `True`): keep a shard's passages as they finish, as small
            parquet parts beside it, so that a killed run started again redoes only the passages in flight and one
            small write group, not the shard. Not part of the cache key.

    Raises:
        [`InvalidConfigError`]: an unknown setting, or one out of range (each stage checks its own).

    Example:

    ```py
    >>> config = GenstructConfig(source="passages.jsonl", num_samples=2, reward_batch_size=8, limit=10)
    >>> config.generation["num_samples"], config.scoring["batch_size"]
    (2, 8)
    ```
    """

    source: str | None = field(default=None, metadata={"cli": False})
    source_name: str | None = field(
        default=None,
        metadata={"group": "source", "flag": "--name", "help": "the Hub dataset's config, e.g. 20231101.en"},
    )
    source_split: str = field(
        default="train", metadata={"group": "source", "flag": "--split", "help": "the source split"}
    )
    source_revision: str | None = field(
        default=None, metadata={"group": "source", "help": "the Hub dataset's revision (branch, tag or commit)"}
    )
    source_fingerprint: str | None = field(default=None, metadata={"cli": False})
    split_documents: bool | None = field(
        default=None,
        metadata={
            "group": "source",
            "flag": "--no-split",
            "help": "the text column holds single passages already: do not split documents",
        },
    )
    limit: int | None = field(
        default=None,
        metadata={"group": "source", "help": "use only the first LIMIT passages, for a trial run"},
    )
    splitting: dict[str, Any] = field(default_factory=dict, metadata={"cli": False})
    generation: dict[str, Any] = field(default_factory=dict, metadata={"cli": False})
    scoring: dict[str, Any] | None = field(default_factory=dict, metadata={"cli": False})
    best_of_n: bool = field(
        default=True,
        metadata={"group": "selection", "help": "keep the best-rewarded pair of each passage (needs a reward model)"},
    )
    min_reward: float | None = field(
        default=None, metadata={"group": "selection", "help": "drop pairs scored below this"}
    )
    dedup_threshold: float | None = field(
        default=None,
        metadata={
            "group": "selection",
            "metavar": "J",
            "help": "drop instructions that nearly repeat a better-rewarded one (MinHash Jaccard >= J, e.g. 0.8)",
            "cache_key": False,
        },
    )
    rip: bool = field(
        default=False,
        metadata={
            "switch": True,
            "group": "selection",
            "help": "drop passages by the RIP rule (arXiv 2501.18578): lowest reward below the run's median of "
            "lowest rewards, or best-minus-lowest gap above its median gap; needs best-of-n and a reward model",
            "cache_key": False,
        },
    )
    rip_quantile: float = field(
        default=0.5,
        metadata={
            "group": "selection",
            "metavar": "Q",
            "help": "where RIP cuts: the Q quantile of the lowest rewards, the 1-Q quantile of the gaps",
            "cache_key": False,
        },
    )
    semantic_dedup: float | None = field(
        default=None,
        metadata={
            "group": "selection",
            "metavar": "THRESHOLD",
            "nargs": "?",
            "const": 0.9,
            "help": "drop pairs whose instruction means nearly the same as a better-rewarded one (cosine >= "
            'THRESHOLD, 0.9 when given without a value), with semhash (pip install "genstruct-datasets[filters]")',
            "cache_key": False,
        },
    )
    embedding_model: str = field(
        default="minishlab/potion-base-8M",
        metadata={
            "group": "selection",
            "help": "the model2vec model of --semantic-dedup: a Hub id, or a local folder (offline)",
            "cache_key": False,
        },
    )
    dedup_against: list[str] = field(
        default_factory=list,
        metadata={
            "group": "selection",
            "metavar": "DATASET",
            "help": "with --semantic-dedup, also drop pairs that nearly repeat a row of this dataset (a Hub id or "
            "local files; repeatable), e.g. the set this one will be mixed into",
            "cache_key": False,
        },
    )
    decontaminate: list[str] = field(
        default_factory=list,
        metadata={
            "group": "selection",
            "metavar": "BENCHMARK",
            "help": "drop pairs that share a word n-gram with this benchmark: NAME[:CONFIG[:SPLIT]][#COLUMNS], a Hub "
            "id or local files (repeatable)",
            "cache_key": False,
        },
    )
    decontamination_ngram: int = field(
        default=13,
        metadata={
            "group": "selection",
            "metavar": "N",
            "help": "the n-gram length of --decontaminate, in words",
            "cache_key": False,
        },
    )
    shard_size: int = field(
        default=1000,
        metadata={
            "group": "output",
            "metavar": "N",
            "help": "passages per shard; a killed run started again redoes at most one shard",
        },
    )
    batch_checkpoint: bool = field(
        default=True,
        metadata={
            "group": "output",
            "flag": "--no-batch-checkpoint",
            "help": "do not keep a shard's passages as they finish (small parquet parts beside it), so that a killed "
            "run redoes its whole unfinished shard; the checkpoint is on by default, and costs little",
            "cache_key": False,
        },
    )

    def __init__(self, **settings: Any) -> None:
        routed = _route(settings)
        for f in dataclasses.fields(self):
            if f.name in routed:
                value = routed[f.name]
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            else:
                value = f.default
            setattr(self, f.name, value)
        self.__post_init__()

    def __post_init__(self) -> None:
        super().__post_init__()
        self.generation = {**RECIPE_DEFAULTS, **self.generation}
        check_number("shard_size", self.shard_size, integer=True, minimum=1)
        check_number("limit", self.limit, integer=True, minimum=1, optional=True)
        check_number("dedup_threshold", self.dedup_threshold, above=0, maximum=1, optional=True)
        check_number("rip_quantile", self.rip_quantile, above=0, below=1)
        check_number("semantic_dedup", self.semantic_dedup, above=0, maximum=1, optional=True)
        check_number("decontamination_ngram", self.decontamination_ngram, integer=True, minimum=1)
        if self.rip and (not self.best_of_n or self.scoring is None):
            raise InvalidConfigError(
                "rip ranks the candidates of each passage by their rewards: it needs best-of-n and a reward model; "
                "leave out --rip (rip=True), or keep best_of_n and a reward_model."
            )
        if self.dedup_against and self.semantic_dedup is None:
            raise InvalidConfigError(
                "dedup_against (--dedup-against) compares the pairs with another set by meaning: add --semantic-dedup "
                "(semantic_dedup=0.9)."
            )
        if self.best_of_n and self.scoring is None:
            raise InvalidConfigError(
                "best_of_n needs a reward_model to rank the candidates; set one or best_of_n=False."
            )
        check_number("min_reward", self.min_reward, optional=True, hint="Leave it out to keep every best pair.")
        # Validate every stage's settings now, before anything is read or loaded.
        self.splitter()
        self.generator()
        try:
            self.scorer()
        except InvalidConfigError as err:  # the scorer's `batch_size` is the recipe's `reward_batch_size`
            setting = getattr(err, "setting", None)
            if setting is None:
                raise
            raise InvalidConfigError(str(err).replace(setting, SCORER_PREFIX + setting, 1)) from None

    def resolve(
        self, *, token: str | bool | None = None, cache_dir: str | os.PathLike | None = None
    ) -> GenstructConfig:
        """Decide, once and in place, what the recipe leaves to the machine and the source; return the recipe.

        Everything decided here is decided before the recipe's cache key is made and before any shard is built, so
        that every process that builds one (a Ray worker on another machine too) runs the same recipe: the local
        files' fingerprint (edited files make a new recipe); the text column and `split_documents`, where they were
        left out (a source with a ``content`` column and no ``text`` one holds passages, see [`passage_columns`]);
        and ``backend="auto"``, turned into the engine this machine runs. A resolved recipe resolves to itself
        again (its files are fingerprinted anew; its columns are not looked at again). The recipe is changed in place:
        [`run_recipe`] and [`load_genstruct`] resolve the recipe they are given.

        Args:
            token (`str` or `bool`, *optional*): a Hub token, to look at a Hub source's columns.
            cache_dir (`str`, *optional*): the `datasets` cache, where local structured files are read once.

        Returns:
            [`GenstructConfig`]: this recipe.

        Raises:
            [`SourceError`]: local files that cannot be read.
        """
        from .sources import passage_columns, source_fingerprint

        self.source_fingerprint = source_fingerprint(str(self.source)) if self.source is not None else None
        if "text_column" not in self.splitting:
            columns = passage_columns(
                str(self.source), self.source_name, revision=self.source_revision, token=token, cache_dir=cache_dir
            )
            self.splitting["text_column"] = columns.get("text_column", "text")
            if self.split_documents is None:
                self.split_documents = columns.get("split_documents", True)
        if self.split_documents is None:
            self.split_documents = True
        self.__dict__.pop("_stages", None)  # made from the settings before they were resolved
        self.generation["backend"] = self.generator().backend
        self.__dict__.pop("_stages", None)  # and made again from the settings as they are now
        return self

    def filters(self) -> list[PairFilter]:
        """The recipe's filters of the kept pairs, in the order they run: RIP (it ranks every selected passage),
        decontamination, semantic dedup, MinHash dedup. Each sees what the one before kept."""
        found: list[PairFilter] = []
        if self.rip:
            from .filters.rip import RIPFilter

            found.append(RIPFilter(quantile=self.rip_quantile))
        if self.decontaminate:
            from .filters.decontaminate import Decontaminate

            found.append(Decontaminate(benchmarks=list(self.decontaminate), ngram=self.decontamination_ngram))
        if self.semantic_dedup is not None:
            from .filters.semantic_dedup import SemanticDedup

            found.append(
                SemanticDedup(
                    threshold=self.semantic_dedup,
                    embedding_model=self.embedding_model,
                    against=list(self.dedup_against),
                )
            )
        if self.dedup_threshold is not None:
            found.append(MinHashDedup(threshold=self.dedup_threshold))
        return found

    def splitter(self) -> passages.PassageSplitter:
        """The passage stage of this recipe (counting in the generator's tokenizer), made once per recipe."""
        generation = self.generation
        return self._made(
            "splitter",
            lambda: passages.PassageSplitter(
                generation.get("model", generate.DEFAULT_GENERATOR),
                revision=generation.get("revision"),
                **self.splitting,
            ),
        )

    def generator(self) -> generate.GenstructGenerator:
        """The generation stage of this recipe, made once per recipe."""
        return self._made("generator", lambda: generate.GenstructGenerator(**self.generation))

    def scorer(self) -> score.RewardScorer | None:
        """The scoring stage of this recipe, or None without a reward model; made once per recipe."""
        return None if self.scoring is None else self._made("scorer", lambda: score.RewardScorer(**self.scoring))

    def _made(self, stage: str, make: Callable[[], Any]) -> Any:
        """A stage made from the settings once and kept (settings only: no model) until [`resolve`] changes them."""
        made = self.__dict__.setdefault("_stages", {})
        if stage not in made:
            made[stage] = make()
        return made[stage]

    def check_models(self, *, token: str | bool | None = None) -> None:
        """Check the recipe's models without loading them: local folders that exist and hold a model, a generator
        that is a causal LM and a reward model that is a sequence classifier with one label, read from their configs.
        A server's model is the server's name for it (its tokenizer, where one is needed, is checked as it loads).

        Raises:
            [`ModelNotFoundError`]: a model given as a local folder that is missing or holds no model.
            [`InvalidConfigError`]: a generator that is not a causal LM, a reward model that is not a sequence
                classifier or has more than one label.
        """
        from .models import check_generator, check_reward_model

        generator, scorer = self.generator(), self.scorer()
        if generator.engine.loads_model:
            check_generator(generator.model, revision=generator.revision, token=token)
        if scorer is not None:
            check_reward_model(scorer.model, revision=scorer.revision, token=token)

    def check_models_reachable(self, *, token: str | bool | None = None) -> None:
        """Check that the recipe's Hub models can be had now (in the local cache, or the Hub up), before the source
        is read; see [`check_model_reachable`]. A server's model is the server's business.

        Raises:
            [`ModelUnreachableError`]: a Hub model that is not cached while the Hub cannot be reached.
        """
        from .models import check_model_reachable

        generator, scorer = self.generator(), self.scorer()
        if generator.engine.loads_model:
            check_model_reachable(generator.model, revision=generator.revision, token=token)
        if scorer is not None:
            check_model_reachable(scorer.model, revision=scorer.revision, setting="reward_model", token=token)

    def recipe(self) -> dict[str, dict[str, Any]]:
        """The settings by stage, as the dataset card shows them."""
        generator, splitter, scorer = self.generator(), self.splitter(), self.scorer()
        return {
            "source": {
                "source": self.source,
                "name": self.source_name,
                "split": self.source_split,
                "revision": self.source_revision,
                "limit": self.limit,
            },
            "passages": {"split_documents": self.split_documents} | _shown(splitter, {"tokenizer", "revision"}),
            "generator": generator.settings() | {"engine": generator.engine.version()},
            "reward model": _shown(scorer, set(SCORER_RUN_OPTIONS)) if scorer else {"model": None, "revision": None},
            "selection": {
                "best_of_n": self.best_of_n,
                "min_reward": self.min_reward,
                "dedup_threshold": self.dedup_threshold,
            },
            "filters": {
                "rip": {"quantile": self.rip_quantile} if self.rip else None,
                "decontamination": {"benchmarks": list(self.decontaminate), "ngram": self.decontamination_ngram}
                if self.decontaminate
                else None,
                "semantic_dedup": {
                    "threshold": self.semantic_dedup,
                    "embedding_model": self.embedding_model,
                    "against": list(self.dedup_against),
                }
                if self.semantic_dedup is not None
                else None,
            },
        }

    def settings(self) -> dict[str, Any]:
        """Every setting of the recipe that changes the built rows, defaults included, for hashing.

        Each stage counts by its settings: the engine by its name and the options that change the rows, the scorer
        without its batch size and device. A run with another batch size, device or timeout has the same recipe,
        and reuses the shards of an earlier one; so does one with another `dedup_threshold`, which filters the
        built dataset.
        """
        skip = {f.name for f in dataclasses.fields(datasets.BuilderConfig)} | set(STAGE_FIELDS)
        settings = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in skip and f.metadata.get("cache_key", True)
        }
        scorer = self.scorer()
        return settings | {
            "splitting": dataclasses.asdict(self.splitter()),
            "generation": self.generator().settings(),
            "scoring": None if scorer is None else dataclasses.asdict(scorer) | dict.fromkeys(SCORER_RUN_OPTIONS),
        }


STAGE_FIELDS = ("splitting", "generation", "scoring")
SCORER_RUN_OPTIONS = ("batch_size", "device")
"""The reward model's settings that do not change the rewards, left out of the recipe's cache key."""
SCORER_PREFIX = "reward_"
"""A [`RewardScorer`] field is named with this prefix among the recipe's flat settings (``reward_model``)."""


def _shown(stage: Any, hidden: set[str]) -> dict[str, Any]:
    """A stage's settings for the card: every field of its dataclass but `hidden` (what does not change the rows, or
    is shown elsewhere), so that a field added to a stage is on the card with nothing else to change."""
    hidden = hidden | {"_", "instruction_column", "response_column"}
    return {f.name: getattr(stage, f.name) for f in dataclasses.fields(stage) if f.init and f.name not in hidden}


def recipe_names() -> dict[str, tuple[str, str]]:
    """Every flat setting the recipe takes, as ``{flat name: (stage, the stage's name for it)}``.

    The stage is ``"recipe"`` (a field of [`GenstructConfig`]), ``"splitting"``, ``"generation"`` (a
    [`GenerationSettings`] field or an engine option) or ``"scoring"``. This table is what routes flat settings to
    their stage, and what the command line makes its flags from.
    """
    names: dict[str, tuple[str, str]] = {}
    for f in dataclasses.fields(GenstructConfig):  # the datasets.BuilderConfig's own fields too
        if f.name not in STAGE_FIELDS:
            names[f.name] = ("recipe", f.name)
    for f in dataclasses.fields(passages.PassageSplitter):
        if f.init and f.name not in ("tokenizer", "revision", "_"):
            names[f.name] = ("splitting", f.name)
    for f in dataclasses.fields(generate.GenerationSettings):
        if f.name not in ("title_column", "content_column"):
            names[f.metadata.get("recipe_name", f.name)] = ("generation", f.name)
    for name in engine_options():
        names.setdefault(name, ("generation", name))
    for f in dataclasses.fields(score.RewardScorer):
        if f.init and f.name not in ("instruction_column", "response_column", "_"):
            names[SCORER_PREFIX + f.name] = ("scoring", f.name)
    return names


def _route(settings: dict[str, Any]) -> dict[str, Any]:
    """Put flat settings where they belong: a config field stays, a stage's setting goes to its stage's dict.

    Raises:
        [`InvalidConfigError`]: a setting that neither the config nor any stage takes.
    """
    table = recipe_names()
    routed: dict[str, Any] = {name: dict(settings.get(name) or {}) for name in STAGE_FIELDS}
    if ("scoring" in settings and settings["scoring"] is None) or (
        "reward_model" in settings and settings["reward_model"] is None
    ):
        routed["scoring"] = None
    unknown = []
    for key, value in settings.items():
        if key in STAGE_FIELDS or (key == "reward_model" and value is None) or key.startswith("_"):
            continue  # a private attribute (the stages a recipe made) is no setting
        if key == "engine_options":
            routed["generation"].update(value or {})
            continue
        if key not in table:
            unknown.append(key)
            continue
        stage, name = table[key]
        if stage == "recipe":
            routed[name] = value
        elif stage == "scoring" and routed["scoring"] is None:
            raise InvalidConfigError(f"{key}={value!r} sets the scorer, which reward_model=None turns off.")
        else:
            routed[stage][name] = value
    if unknown:
        raise InvalidConfigError(
            f"Unknown setting(s) {sorted(unknown)}; see GenstructConfig for the recipe's fields, PassageSplitter, "
            "GenerationSettings and RewardScorer (reward_*) for the stages', and genstruct_datasets.engines for the "
            "engines' options."
        )
    if routed["scoring"] is not None:
        routed["scoring"] = {"model": score.DEFAULT_REWARD_MODEL, **routed["scoring"]}
    return routed


def resolve_recipe(
    source: str | os.PathLike,
    name: str | None = None,
    *,
    split: str = "train",
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    **settings: Any,
) -> GenstructConfig:
    """Make the recipe of a run, once: the settings as given, the source's fingerprint, its columns, the engine.

    Everything that a run decides from the machine or the source is decided here, so that every process that builds
    a shard (a Ray worker on another machine too) and the recipe's cache key see the same recipe: the local files'
    fingerprint (edited files make a new recipe); a source with a ``content`` column and no ``text`` column read as
    passages (unless `text_column` is given, see [`passage_columns`]); ``backend="auto"`` turned into the engine
    this machine runs.

    Args:
        source (`str`): a Hub dataset id or local files, as [`load_genstruct`] takes them.
        name (`str`, *optional*): the Hub dataset's config.
        split (`str`, *optional*, defaults to `"train"`): the source split.
        revision (`str`, *optional*): the Hub dataset's revision.
        token (`str` or `bool`, *optional*): a Hub token, to look at a Hub source's columns.
        cache_dir (`str`, *optional*): the `datasets` cache, where local structured files are read once.
        **settings: the rest of the recipe, flat or by stage (see [`GenstructConfig`]).

    Returns:
        [`GenstructConfig`]: the recipe, resolved.

    Raises:
        [`InvalidConfigError`]: an unknown setting, or one out of range.
        [`SourceError`]: local files that cannot be read.

    Example:

    ```py
    >>> recipe = resolve_recipe("passages.jsonl", num_samples=2, backend="transformers")  # doctest: +SKIP
    >>> recipe.generation["backend"], recipe.split_documents  # doctest: +SKIP
    ('transformers', False)
    ```
    """
    given = {"source": str(source), "source_name": name, "source_split": split, "source_revision": revision}
    return GenstructConfig(**given, **settings).resolve(token=token, cache_dir=cache_dir)
