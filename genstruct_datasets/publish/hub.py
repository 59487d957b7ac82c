"""A Genstruct dataset published to the Hub: the layout of [`save_local`], sent as one commit."""

from __future__ import annotations

import fnmatch
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MissingTokenError
from ..hub_shards import with_retries
from ..report.card import card_info
from ..runstats import format_duration
from .folder import CANDIDATES_SPLIT, _data_dir, save_local

if TYPE_CHECKING:
    from datasets import Dataset
    from huggingface_hub import CommitInfo, CommitOperation, DatasetCard

    from ..progress import ProgressSnapshot
    from ..report import CardInfo, RunReport
    from ..shards import ShardStore

logger = logging.getLogger(__name__)


def publish(
    ds: Dataset,
    repo_id: str,
    *,
    report: RunReport | None = None,
    card: CardInfo | None = None,
    candidates: Dataset | None = None,
    private: bool = False,
    token: str | None = None,
    config_name: str = "default",
    split: str = "train",
    candidates_split: str | None = CANDIDATES_SPLIT,
    commit_message: str | None = None,
    shards: ShardStore | None = None,
    recipe: Mapping[str, Mapping[str, Any]] | None = None,
    license: str | None = None,
    language: str | list[str] | None = None,
    source_datasets: list[str] | None = None,
) -> CommitInfo:
    """Publish `ds` to a dataset repository on the Hub, parquet shards and dataset card in one commit.

    The repository gets the layout of [`save_local`] (the one `Dataset.push_to_hub` writes), sent as one
    `HfApi.create_commit` of explicit operations, so that the data and its card land together or not at all,
    however many shards there are (`upload_folder` commits a large folder in several batches when `hf_xet` is
    installed). Earlier shards of the same config and split are deleted in that commit; other configs and their
    entries in the card stay. Each Hub call is retried with backoff when it fails in a way that may pass
    ([`with_retries`]). The Hub advises commits of fewer than 100 files: a split of more shards than that (some
    50 GB of Arrow data at the default shard size) is still one commit, but a large one, which the Hub may be
    slow to take.

    Args:
        ds (`datasets.Dataset`): the rows to publish.
        repo_id (`str`): the dataset repository, ``"user/name"``; created if it does not exist.
        private (`bool`, *optional*, defaults to `False`): create the repository as private.
        token (`str`, *optional*): a Hub token with write access; defaults to the saved login or `HF_TOKEN`.
        config_name (`str`, *optional*, defaults to `"default"`): the dataset config.
        split (`str`, *optional*, defaults to `"train"`): the split.
        commit_message (`str`, *optional*): defaults to "Upload {n} Genstruct pairs with genstruct-datasets".
        report, card, candidates, candidates_split, recipe, license, language, source_datasets: see
            [`save_local`]; the candidates are published as the split `candidates_split` (``"candidates"``).
        shards ([`ShardStore`], *optional*): the store the run's finished shards went to (``push_shards_to=`` of
            [`load_genstruct`]); its folders in this repository are deleted in the same commit.

    Returns:
        `huggingface_hub.CommitInfo`: the commit, with its URL.

    Raises:
        [`MissingTokenError`]: no token was given, saved or set; raised before anything is uploaded.

    Example:

    ```py
    >>> publish(best, "me/genstruct-pairs", private=True)  # doctest: +SKIP
    CommitInfo(commit_url='https://huggingface.co/datasets/me/genstruct-pairs/commit/...', ...)
    ```
    """
    from huggingface_hub import HfApi

    token = _token(repo_id, token)
    api = HfApi(token=token)
    repo_id = with_retries(
        lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True),
        what=f"creating {repo_id}",
    ).repo_id
    existing = _existing_card(repo_id, token)
    with tempfile.TemporaryDirectory(prefix="genstruct-publish-") as folder:
        save_local(
            ds,
            folder,
            report=report,
            card=card_info(card, license=license, language=language, source_datasets=source_datasets),
            candidates=candidates,
            config_name=config_name,
            split=split,
            candidates_split=candidates_split,
            repo_id=repo_id,
            existing_card=existing,
            recipe=recipe,
        )
        held = with_retries(lambda: api.list_repo_files(repo_id, repo_type="dataset"), what=f"listing {repo_id}")
        work_folders = sorted(getattr(shards, "folders", ()))  # a folder store keeps nothing in the repository
        # The split's older shards, and the candidates' where they are written again.
        written = [
            split,
            *([candidates_split] if candidates_split and candidates is not None and candidates is not ds else []),
        ]
        replaced = [f"{_data_dir(config_name)}/{name}-*" for name in written]
        commit = with_retries(
            # The operations are made anew for each try: a `CommitOperationAdd` is spent once it is committed.
            lambda: api.create_commit(
                repo_id,
                _commit_operations(Path(folder), held, replaced, work_folders),
                repo_type="dataset",
                commit_message=commit_message or f"Upload {ds.num_rows} Genstruct pairs with genstruct-datasets",
            ),
            what=f"upload to {repo_id}",
        )
    logger.info("Published %d rows to https://huggingface.co/datasets/%s", ds.num_rows, repo_id)
    return commit


def _token(repo_id: str, token: str | None) -> str:
    """The token to publish with: `token`, else the saved login or `HF_TOKEN`.

    Raises:
        [`MissingTokenError`]: there is none; raised before anything is uploaded.
    """
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise MissingTokenError(
            f"Publishing to {repo_id!r} needs a Hugging Face token with write access: run `hf auth login`, "
            "set HF_TOKEN, or pass token=."
        )
    return token


def _existing_card(repo_id: str, token: str) -> DatasetCard | None:
    """The repository's card, whose other configs the new card keeps; None in a new repository."""
    from huggingface_hub import DatasetCard
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    try:
        return DatasetCard.load(repo_id, repo_type="dataset", token=token)
    except (EntryNotFoundError, RepositoryNotFoundError):
        return None


def _commit_operations(
    folder: Path, held: list[str], replaced: list[str], work_folders: list[str]
) -> list[CommitOperation]:
    """The operations of `publish`'s one commit: add every file of `folder`, delete what it replaces.

    Args:
        folder (`Path`): the layout written by [`save_local`].
        held (`list[str]`): the repository's files before the commit.
        replaced (`list[str]`): `fnmatch` patterns of the repository's files that the commit replaces (the split's
            older shards); those that `folder` does not hold again are deleted.
        work_folders (`list[str]`): folders of finished shards ([`HubShards`]), each deleted whole, in one operation,
            when the repository holds it.

    Returns:
        `list`: `CommitOperationDelete`s, then `CommitOperationAdd`s.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    added = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    deleted = [
        CommitOperationDelete(name)
        for name in held
        if name not in added and any(fnmatch.fnmatch(name, pattern) for pattern in replaced)
    ]
    deleted += [
        CommitOperationDelete(f"{name}/", is_folder=True)
        for name in work_folders
        if any(file.startswith(f"{name}/") for file in held)
    ]
    return [*deleted, *(CommitOperationAdd(name, str(folder / name)) for name in added)]


LIVE_CARD_INTERVAL = 600.0
"""Seconds at least between two updates of a live card ([`LiveCard`]): a commit each, so a few an hour at most."""

LIVE_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ repo_id }}

This dataset is being generated by genstruct-datasets: its shards land in this repository as they are finished, and
this card is replaced by the dataset's own card when the run ends.

```
{{ meter }}
```

| | |
|---|---|
| passages done | {{ done }} of {{ total }}{% if reused %} ({{ reused }} reused from an earlier run){% endif %} |
| shards done | {{ shards_done }} of {{ shards_total }} |
| candidates made | {{ candidates }} |
| passages failed | {{ failed }} |
| elapsed | {{ elapsed }} |
| time left | {{ eta }} |
{%- if cost %}
| cost so far | {{ cost }} |
{%- endif %}
| updated | {{ updated }} |
"""
"""The live card's body: a `tqdm` meter and the figures of a [`ProgressSnapshot`]."""


class LiveCard:
    """A dataset card on the Hub that says where a run stands (passages done of the total, ETA, cost), updated as
    shards land; [`publish`] replaces it with the dataset's card at the end. Give it to [`ProgressOptions`] as
    `on_shard`.

    The metadata of the card already there (the configs of earlier runs) is kept. An update is skipped for a run of
    one shard, for the run's last shard (the final card follows), and within `interval` seconds of the last one. A
    failed update is a warning: the run goes on, and the next shard tries again.

    Args:
        repo_id (`str`): the dataset repository (created by the shard store before the first shard lands).
        token (`str`, *optional*): a Hub token with write access.
        interval (`float`, *optional*, defaults to `LIVE_CARD_INTERVAL`): seconds at least between two updates.
        clock (`Callable`, *optional*, defaults to `time.monotonic`): the clock of the interval.

    Example:

    ```py
    >>> from genstruct_datasets.progress import ProgressOptions
    >>> options = ProgressOptions(on_shard=LiveCard("me/genstruct-pairs"))  # doctest: +SKIP
    ```
    """

    def __init__(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repo_id, self.token = repo_id, token
        self.interval = LIVE_CARD_INTERVAL if interval is None else interval
        self.clock = clock
        self._last: float | None = None

    def __call__(self, snapshot: ProgressSnapshot) -> bool:
        """Update the card with `snapshot` when it is due; return whether it was updated."""
        if snapshot.shards_total <= 1 or snapshot.shards_done >= snapshot.shards_total:
            return False
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        try:
            self._upload(snapshot)
        except Exception as err:  # noqa: BLE001  the card is news, not data: the run goes on without it
            logger.warning(
                "Could not update the progress card of %s (%s: %s); the run goes on.",
                self.repo_id,
                type(err).__name__,
                err,
            )
            return False
        return True

    def render(self, snapshot: ProgressSnapshot) -> str:
        """The card's text for `snapshot`, with the metadata of the card the repository holds."""
        from huggingface_hub import DatasetCard, DatasetCardData
        from tqdm import tqdm

        existing = _existing_card(self.repo_id, self.token)
        eta = snapshot.eta
        card = DatasetCard.from_template(
            existing.data if existing is not None else DatasetCardData(),
            template_str=LIVE_CARD_TEMPLATE,
            repo_id=self.repo_id,
            meter=tqdm.format_meter(
                snapshot.done, snapshot.total, snapshot.elapsed, ncols=80, unit="passage", initial=snapshot.reused
            ),
            done=f"{snapshot.done:,}",
            total=f"{snapshot.total:,}",
            reused=f"{snapshot.reused:,}" if snapshot.reused else None,
            shards_done=snapshot.shards_done,
            shards_total=snapshot.shards_total,
            candidates=f"{snapshot.candidates:,}",
            failed=snapshot.failed,
            elapsed=format_duration(snapshot.elapsed),
            eta=f"about {format_duration(eta)}" if eta is not None else "not known yet",
            cost=f"{snapshot.cost:,.2f}"
            + (f" (about {snapshot.projected_cost:,.2f} in all)" if snapshot.projected_cost is not None else "")
            if snapshot.cost is not None
            else None,
            updated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        return str(card)

    def _upload(self, snapshot: ProgressSnapshot) -> None:
        from huggingface_hub import HfApi

        HfApi(token=self.token).upload_file(
            path_or_fileobj=self.render(snapshot).encode(),
            path_in_repo="README.md",
            repo_id=self.repo_id,
            repo_type="dataset",
            commit_message=f"Progress: {snapshot.done:,} of {snapshot.total:,} passages",
        )
