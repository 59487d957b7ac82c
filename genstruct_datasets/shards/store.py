"""Where a run's finished shards are kept apart from its work folder: the [`ShardStore`] interface and a folder.

The Hub's store, [`HubShards`], is in `shards/hub.py`.
"""

from __future__ import annotations

import logging
import os
import shutil
from abc import ABC, abstractmethod
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from .._atomic import PARTIAL_SUFFIX, atomic_path

logger = logging.getLogger(__name__)

FORCED_MARKER = ".forced"
"""A file in a recipe's work folder (and in its store) while a forced build of it is unfinished: the shards there
were built after the force, and the rest must not come from the maps' caches of earlier runs."""


class ShardStore(ABC):
    """Where finished shards are kept apart from a run's work folder, for other machines and later runs.

    A store holds one folder per recipe (its `config_id`). A run lists what it holds ([`open`]), takes the shards
    it holds instead of building them ([`fetch`]), hands it each shard it finishes ([`upload`]), and on a forced
    build deletes the earlier ones and marks the folder ([`start_over`]).
    """

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the store is, for messages."""

    @abstractmethod
    def open(self, config_id: str) -> set[str]:
        """Make the recipe's folder if needed and return the names of the files it holds."""

    @abstractmethod
    def held(self, config_id: str) -> set[str]:
        """The names of the files the store holds for the recipe, without making anything (for a dry run): none where
        it has no folder for it."""

    @abstractmethod
    def download(self, config_id: str, path: Path) -> Path:
        """Copy the recipe's file named like `path` to `path`, whole or not at all."""

    @abstractmethod
    def upload(self, config_id: str, path: Path) -> bool:
        """Keep the finished shard `path`; False (with a warning) when it could not be kept."""

    @abstractmethod
    def start_over(self, config_id: str, names: list[str]) -> set[str]:
        """Delete the recipe's files named `names` and mark its folder as a forced build; return what it holds then."""

    def fetch(self, config_id: str, paths: list[Path], held: set[str] | None = None) -> set[str]:
        """Download those of `paths` that are missing here and that the store holds; return what it holds."""
        held = self.open(config_id) if held is None else held
        for path in paths:
            if not path.exists() and path.name in held:
                self.download(config_id, path)
        return held

    def upload_in_background(self, config_id: str, path: Path) -> Future[bool]:
        """[`upload`], possibly in a background thread so that the run goes on meanwhile."""
        future: Future[bool] = Future()
        future.set_result(self.upload(config_id, path))
        return future


@dataclass
class FolderStore(ShardStore):
    """A folder that keeps finished shards, e.g. on a file system that every node of a cluster mounts.

    Shards are copied in whole (written beside, then renamed), one subfolder per recipe.

    Args:
        folder (`str` or `os.PathLike`): the folder; made if missing.

    Example:

    ```py
    >>> from genstruct_datasets import FolderStore, load_genstruct
    >>> store = FolderStore("/mnt/shared/genstruct-shards")
    >>> pairs = load_genstruct("passages.jsonl", push_shards_to=store)  # doctest: +SKIP
    ```
    """

    folder: str | os.PathLike

    @property
    def location(self) -> str:
        return str(self.folder)

    def open(self, config_id: str) -> set[str]:
        recipe = self._recipe(config_id)
        recipe.mkdir(parents=True, exist_ok=True)
        return {path.name for path in recipe.iterdir() if not path.name.endswith(PARTIAL_SUFFIX)}

    def held(self, config_id: str) -> set[str]:
        recipe = self._recipe(config_id)
        return self.open(config_id) if recipe.is_dir() else set()

    def download(self, config_id: str, path: Path) -> Path:
        _copy_whole(self._recipe(config_id) / path.name, path)
        return path

    def upload(self, config_id: str, path: Path) -> bool:
        try:
            _copy_whole(path, self._recipe(config_id) / path.name)
        except OSError as err:
            logger.warning(
                "Shard %s could not be copied to %s (%s); the next run copies it.", path.name, self.location, err
            )
            return False
        return True

    def start_over(self, config_id: str, names: list[str]) -> set[str]:
        recipe = self._recipe(config_id)
        recipe.mkdir(parents=True, exist_ok=True)
        for name in names:
            (recipe / name).unlink(missing_ok=True)
        (recipe / FORCED_MARKER).touch()
        return self.open(config_id)

    def _recipe(self, config_id: str) -> Path:
        return Path(self.folder) / config_id


def _copy_whole(source: Path, target: Path) -> None:
    with atomic_path(target) as partial:
        shutil.copyfile(source, partial)
