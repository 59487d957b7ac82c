"""The Genstruct recipe: where the documents come from and every setting of every stage, by stage."""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass
from typing import Any

import datasets

from .engines import engine_options
from .errors import InvalidConfigError
from .generate import DEFAULT_GENERATOR, GenstructGenerator
from .passages import PassageSplitter
from .score import DEFAULT_REWARD_MODEL, RewardScorer


@dataclass(init=False)
class GenstructConfig(datasets.BuilderConfig):
    """The whole Genstruct recipe: where the documents come from and every setting of every stage.

    Each stage's settings are its own constructor's arguments, kept by stage (`splitting`, `generation`, `scoring`),
    so that an option added to a stage is part of the recipe, its cache key and its card with nothing else to
    change. The config also takes them flat, as [`load_genstruct`] and the CLI give them: a [`PassageSplitter`]
    field goes to `splitting`, a [`GenstructGenerator`] argument or an engine option to `generation`
    (``model_revision`` is its ``revision``), and a [`RewardScorer`] field prefixed with ``reward_`` to `scoring`
    (``reward_model``, ``reward_revision``, ``reward_batch_size``...).

    Args:
        source (`str`): a Hub dataset id, or local files: a ``.jsonl``/``.json``, ``.csv``, ``.parquet``,
            ``.txt`` or ``.md`` file, or a folder of them (one kind of structured file, or text files).
        source_name (`str`, *optional*): the Hub dataset's config, e.g. ``"20231101.en"``.
        source_split (`str`, *optional*, defaults to `"train"`): the source split to read.
        source_revision (`str`, *optional*): the Hub dataset's revision.
        source_fingerprint (`str`, *optional*): set by [`load_genstruct`] from the local files' sizes and
            modification times, so that edited files make a new recipe.
        split_documents (`bool`, *optional*, defaults to `True`): run [`PassageSplitter`] on the documents; False
            reads each row's text column as one passage.
        limit (`int`, *optional*): use only the first `limit` passages (and documents), for a trial run.
        splitting (`dict`, *optional*): [`PassageSplitter`]'s settings (``min_tokens``, ``max_tokens``,
            ``title_column``, ``text_column``); it counts in the generator's tokenizer. [`load_genstruct`] reads a
            source with a ``content`` column and no ``text`` column as passages unless `text_column` is given.
        generation (`dict`, *optional*): [`GenstructGenerator`]'s settings and its engine's options (``model``,
            ``num_samples``, ``backend``, ``batch_size``, ``base_url``...); `num_samples` defaults to 4 here, for
            best-of-n, and `backend` to ``"auto"``. Options that do not change the rows (batch sizes, devices,
            timeouts) are not part of the recipe's cache key.
        scoring (`dict`, *optional*): [`RewardScorer`]'s settings (``model`` defaults to
            `"OpenAssistant/reward-model-deberta-v3-large-v2"`); None skips scoring (and best-of-n).
        best_of_n (`bool`, *optional*, defaults to `True`): keep the best pair of each passage in ``train``
            and every candidate in ``candidates``; without it ``train`` holds every candidate.
        min_reward (`float`, *optional*): with best-of-n, drop pairs scored below this (a finite number).
        shard_size (`int`, *optional*, defaults to 1000): passages per shard. Each finished shard is written
            before the next starts, so a run that is killed and started again redoes at most one shard.

    Raises:
        [`InvalidConfigError`]: an unknown setting, or one out of range (each stage checks its own).

    Example:

    ```py
    >>> config = GenstructConfig(source="passages.jsonl", num_samples=2, reward_batch_size=8, limit=10)
    >>> config.generation["num_samples"], config.scoring["batch_size"]
    (2, 8)
    ```
    """

    source: str | None = None
    source_name: str | None = None
    source_split: str = "train"
    source_revision: str | None = None
    source_fingerprint: str | None = None
    split_documents: bool = True
    limit: int | None = None
    splitting: dict[str, Any] = dataclasses.field(default_factory=dict)
    generation: dict[str, Any] = dataclasses.field(default_factory=dict)
    scoring: dict[str, Any] | None = dataclasses.field(default_factory=dict)
    best_of_n: bool = True
    min_reward: float | None = None
    shard_size: int = 1000

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
        self.generation = {**GENERATION_DEFAULTS, **self.generation}
        if not isinstance(self.shard_size, int) or self.shard_size < 1:
            raise InvalidConfigError(f"shard_size must be a positive integer, got {self.shard_size!r}.")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise InvalidConfigError(f"limit must be a positive integer, got {self.limit!r}.")
        if self.best_of_n and self.scoring is None:
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
        generation = self.generation
        return PassageSplitter(
            generation.get("model", DEFAULT_GENERATOR), revision=generation.get("revision"), **self.splitting
        )

    def generator(self) -> GenstructGenerator:
        """The generation stage of this recipe."""
        return GenstructGenerator(**self.generation)

    def scorer(self) -> RewardScorer | None:
        """The scoring stage of this recipe, or None without a reward model."""
        return None if self.scoring is None else RewardScorer(**self.scoring)

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
            "passages": {
                "split_documents": self.split_documents,
                "min_tokens": splitter.min_tokens,
                "max_tokens": splitter.max_tokens,
            },
            "generator": generator.settings() | {"engine": generator.engine.version()},
            "reward model": {
                "model": scorer.model if scorer else None,
                "revision": scorer.revision if scorer else None,
            },
            "selection": {"best_of_n": self.best_of_n, "min_reward": self.min_reward},
        }

    def settings(self) -> dict[str, Any]:
        """Every setting of the recipe that changes the rows, defaults included, for hashing.

        Each stage counts by its settings: the engine by its name and the options that change the rows, the scorer
        without its batch size and device. A run with another batch size, device or timeout has the same recipe,
        and reuses the shards of an earlier one.
        """
        skip = {f.name for f in dataclasses.fields(datasets.BuilderConfig)} | set(STAGE_FIELDS)
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        scorer = self.scorer()
        return settings | {
            "splitting": dataclasses.asdict(self.splitter()),
            "generation": self.generator().settings(),
            "scoring": None if scorer is None else dataclasses.asdict(scorer) | dict.fromkeys(SCORER_RUN_OPTIONS),
        }


STAGE_FIELDS = ("splitting", "generation", "scoring")
GENERATION_DEFAULTS = {"num_samples": 4}
"""Where the recipe's defaults differ from the generator's: best-of-n needs several samples."""
SCORER_RUN_OPTIONS = ("batch_size", "device")
"""The reward model's settings that do not change the rewards, left out of the recipe's cache key."""


def _route(settings: dict[str, Any]) -> dict[str, Any]:
    """Put flat settings where they belong: a config field stays, a stage's setting goes to its stage's dict.

    Raises:
        [`InvalidConfigError`]: a setting that neither the config nor any stage takes.
    """
    top = {f.name for f in dataclasses.fields(GenstructConfig)} - set(STAGE_FIELDS)
    splitter = {f.name for f in dataclasses.fields(PassageSplitter)} - {"tokenizer", "revision", "_"}
    scorer = {f.name for f in dataclasses.fields(RewardScorer)} - {"instruction_column", "response_column", "_"}
    generator = set(inspect.signature(GenstructGenerator).parameters) - {"engine_options", "title_column",
                                                                          "content_column", "revision"}  # fmt: skip
    routed: dict[str, Any] = {name: dict(settings.get(name) or {}) for name in STAGE_FIELDS}
    if ("scoring" in settings and settings["scoring"] is None) or (
        "reward_model" in settings and settings["reward_model"] is None
    ):
        routed["scoring"] = None
    unknown = []
    for key, value in settings.items():
        if key in STAGE_FIELDS:
            continue
        if key in top:
            routed[key] = value
        elif key == "engine_options":
            routed["generation"].update(value or {})
        elif key == "reward_model" and value is None:
            continue
        elif key.startswith("reward_") and key.removeprefix("reward_") in scorer:
            if routed["scoring"] is None:
                raise InvalidConfigError(f"{key}={value!r} sets the scorer, which reward_model=None turns off.")
            routed["scoring"][key.removeprefix("reward_")] = value
        elif key == "model_revision":
            routed["generation"]["revision"] = value
        elif key in splitter:
            routed["splitting"][key] = value
        elif key in generator or key in engine_options():
            routed["generation"][key] = value
        else:
            unknown.append(key)
    if unknown:
        raise InvalidConfigError(
            f"Unknown setting(s) {sorted(unknown)}; see GenstructConfig for the recipe's fields, PassageSplitter, "
            "GenstructGenerator and RewardScorer (reward_*) for the stages', and genstruct_datasets.engines for the "
            "engines' options."
        )
    if routed["scoring"] is not None:
        routed["scoring"] = {"model": DEFAULT_REWARD_MODEL, **routed["scoring"]}
    return routed
