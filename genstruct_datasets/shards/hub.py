"""Keep a run's finished shards in a Hub dataset repository as they finish, so that a crash loses at most one.

Also [`with_retries`], the Hub calls' retry with backoff, which publishing uses too.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .._atomic import atomic_path
from .._checks import check_number
from .store import FORCED_MARKER, ShardStore

if TYPE_CHECKING:
    from huggingface_hub import HfApi

logger = logging.getLogger(__name__)

WORK_FOLDER = ".genstruct-work"
"""The repository folder of unfinished runs' shards; `load_dataset` skips hidden folders, so it is never data."""

_RETRYABLE_STATUS = {408, 409, 412, 429}
T = TypeVar("T")


def with_retries(call: Callable[[], T], *, what: str, max_retries: int = 5, backoff: float = 2.0) -> T:
    """Call `call`, retrying with exponential backoff when the Hub fails in a way that may pass.

    A connection error, a timeout and the HTTP statuses 408, 409, 412, 429 and 5xx are retried, waiting
    ``backoff * 2**attempt`` seconds (with jitter) in between; any other error (401, 403, 404...) is raised at
    once, since trying again cannot fix it.

    Args:
        call (`Callable`): the Hub call, without arguments (use a lambda or `functools.partial`).
        what (`str`): what the call does, for the log lines ("upload of shard 3").
        max_retries (`int`, *optional*, defaults to 5): retries after the first try.
        backoff (`float`, *optional*, defaults to 2.0): the first wait, in seconds.

    Returns:
        What `call` returns.

    Raises:
        The last error of `call`, when it is not retryable or the retries are spent.

    Example:

    ```py
    >>> from huggingface_hub import HfApi
    >>> api = HfApi()
    >>> files = with_retries(lambda: api.list_repo_files("me/pairs", repo_type="dataset"), what="ls")  # doctest: +SKIP
    ```
    """
    attempt = 0
    while True:
        try:
            return call()
        except Exception as err:
            if attempt == max_retries or not _retryable(err):
                raise
            wait = backoff * 2**attempt * random.uniform(0.5, 1.0)
            attempt += 1
            logger.warning("%s failed (%s); retry %d of %d in %.1f s.", what, err, attempt, max_retries, wait)
            time.sleep(wait)


def _retryable(err: Exception) -> bool:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(err, OfflineModeIsEnabled):  # HF_HUB_OFFLINE=1: no retry can reach the Hub
        return False
    if isinstance(err, HfHubHTTPError) and getattr(err, "response", None) is not None:
        status = err.response.status_code
        return status in _RETRYABLE_STATUS or status >= 500
    return not isinstance(err, (ValueError, TypeError, PermissionError, FileNotFoundError))


@dataclass
class HubShards(ShardStore):
    """A Hub dataset repository that holds a run's finished shards while the run goes on.

    [`load_genstruct`] (with ``push_shards_to=``) uploads each shard of candidates as soon as it is written,
    in a background thread, so that generation does not wait; a run that crashes loses at most the shard in
    progress. A later run of the same recipe, on this machine or another one, downloads the shards the
    repository holds and builds only the rest. The shards live in ``.genstruct-work/{config_id}/``, one folder per
    recipe, so a changed recipe never reuses another's shards; `load_dataset` does not read hidden folders,
    and [`publish`] (``shards=``) deletes the folder in the commit that adds the finished dataset.

    An upload that fails is retried with backoff ([`with_retries`]) and then reported in a warning; the shard
    stays in the local work folder, and the next run uploads it.

    Args:
        repo_id (`str`): the dataset repository, ``"user/name"``; created if it does not exist.
        private (`bool`, *optional*, defaults to `False`): create the repository as private.
        token (`str`, *optional*): a Hub token with write access; defaults to the saved login or `HF_TOKEN`.
        max_retries (`int`, *optional*, defaults to 5): retries of each Hub call.
        backoff (`float`, *optional*, defaults to 2.0): seconds before the first retry, doubled at each one.

    Raises:
        [`InvalidConfigError`]: `max_retries` or `backoff` is negative.

    Example:

    ```py
    >>> from genstruct_datasets import HubShards, load_genstruct, publish
    >>> shards = HubShards("me/wiki-genstruct", private=True)
    >>> pairs = load_genstruct("wikimedia/wikipedia", "20231101.en", push_shards_to=shards)  # doctest: +SKIP
    >>> publish(pairs["train"], "me/wiki-genstruct", candidates=pairs["candidates"], shards=shards)  # doctest: +SKIP
    ```
    """

    repo_id: str
    private: bool = False
    token: str | None = None
    max_retries: int = 5
    backoff: float = 2.0
    folders: set[str] = field(default_factory=set, init=False, repr=False)
    """The repository folders this process has written shards to, for [`publish`] to delete."""

    def __post_init__(self) -> None:
        check_number("max_retries", self.max_retries, integer=True, minimum=0)
        check_number("backoff", self.backoff, minimum=0, detail="seconds")
        self._api: HfApi | None = None

    def __getstate__(self) -> dict:
        # The client and its upload thread stay in this process: a copy sent elsewhere (a Ray worker) makes its own.
        return {**self.__dict__, "_api": None}

    @property
    def location(self) -> str:
        return self.repo_id

    @property
    def api(self) -> HfApi:
        if self._api is None:
            from huggingface_hub import HfApi

            self._api = HfApi(token=self.token)
        return self._api

    def open(self, config_id: str) -> set[str]:
        """Create the repository if needed and return the names of the recipe's shards it already holds."""
        folder = self._folder(config_id)
        self.folders.add(folder)
        self.repo_id = self._retry(
            lambda: self.api.create_repo(self.repo_id, repo_type="dataset", private=self.private, exist_ok=True),
            f"creating {self.repo_id}",
        ).repo_id
        files = self._retry(
            lambda: self.api.list_repo_files(self.repo_id, repo_type="dataset"), f"listing {self.repo_id}"
        )
        return {name.removeprefix(folder + "/") for name in files if name.startswith(folder + "/")}

    def held(self, config_id: str) -> set[str]:
        """The names of the recipe's shards the repository holds, without creating it (none where there is none)."""
        from huggingface_hub.errors import RepositoryNotFoundError

        folder = self._folder(config_id)
        try:
            files = self._retry(
                lambda: self.api.list_repo_files(self.repo_id, repo_type="dataset"), f"listing {self.repo_id}"
            )
        except RepositoryNotFoundError:
            return set()
        return {name.removeprefix(folder + "/") for name in files if name.startswith(folder + "/")}

    def start_over(self, config_id: str, names: list[str]) -> set[str]:
        """Delete the recipe's shards named `names` and mark its folder as a forced build, in one commit.

        A forced build ([`load_genstruct`] with ``download_mode="force_redownload"``) calls it before it builds
        anything, so that if it crashes, the repository holds no shard of an earlier run for a resumed run to mix
        with the new ones; a run that finds the mark (a `.forced` file) builds without the maps' caches of
        earlier runs, and drops its machine's own shards, which are older.

        Returns:
            `set[str]`: the names of the recipe's files the repository holds afterwards, as [`open`] gives them.
        """
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        folder = self._folder(config_id)
        held = self.open(config_id)
        deleted = [name for name in names if name in held]
        operations = [CommitOperationDelete(f"{folder}/{name}") for name in deleted]
        operations.append(CommitOperationAdd(f"{folder}/{FORCED_MARKER}", b""))
        self._retry(
            lambda: self.api.create_commit(
                self.repo_id,
                operations,
                repo_type="dataset",
                commit_message=f"genstruct-datasets: forced build, {len(deleted)} earlier shards deleted",
            ),
            f"deleting the earlier shards of {config_id}",
        )
        return (held - set(deleted)) | {FORCED_MARKER}

    def download(self, config_id: str, path: Path) -> Path:
        """Download the recipe's shard named like `path` to `path`, whole or not at all."""
        # A folder of its own for each download: ranks that share the work folder download side by side.
        folder = tempfile.TemporaryDirectory(prefix=".hub-download-", dir=path.parent)
        with atomic_path(path) as partial, folder:
            downloaded = self._retry(
                lambda: self.api.hf_hub_download(
                    self.repo_id, f"{self._folder(config_id)}/{path.name}", repo_type="dataset", local_dir=folder.name
                ),
                f"download of {path.name}",
            )
            os.replace(downloaded, partial)  # out of the folder before it is deleted; onto `path` on the way out
        return path

    def upload(self, config_id: str, path: Path) -> bool:
        """Upload a finished shard, with retries; False (and a warning) when it could not be uploaded."""
        try:
            self._retry(
                lambda: self.api.upload_file(
                    path_or_fileobj=str(path),
                    path_in_repo=f"{self._folder(config_id)}/{path.name}",
                    repo_id=self.repo_id,
                    repo_type="dataset",
                    commit_message=f"genstruct-datasets: finished shard {path.name}",
                ),
                f"upload of {path.name}",
            )
        except Exception as err:
            logger.warning(
                "Shard %s could not be uploaded to %s (%s). It stays in %s, and the next run uploads it.",
                path.name,
                self.repo_id,
                err,
                path.parent,
            )
            return False
        logger.info("Uploaded shard %s to %s.", path.name, self.repo_id)
        return True

    def upload_in_background(self, config_id: str, path: Path) -> Future[bool]:
        """[`upload`] in `huggingface_hub`'s background thread, so that the run goes on meanwhile."""
        return self.api.run_as_future(self.upload, config_id, path)

    def _folder(self, config_id: str) -> str:
        return f"{WORK_FOLDER}/{config_id}"

    def _retry(self, call: Callable[[], T], what: str) -> T:
        return with_retries(call, what=what, max_retries=self.max_retries, backoff=self.backoff)
