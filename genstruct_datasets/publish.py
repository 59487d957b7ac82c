"""Write a Genstruct dataset as parquet shards with its dataset card, to a folder or to the Hub."""

from __future__ import annotations

import fnmatch
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .card import build_card
from .errors import InvalidConfigError, MissingTokenError, OutputExistsError
from .hub_shards import with_retries
from .report import QUALITY_FIGURE, REPORT_FILE, RunReport, plot_quality, run_report

if TYPE_CHECKING:
    from datasets import Dataset
    from huggingface_hub import CommitInfo, CommitOperation, DatasetCard

    from .shards import ShardStore

logger = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_SIZE = 500 * 2**20
ROW_GROUP_ROWS = 1000
"""Rows per parquet row group. `datasets` aims at row groups of 100 MB, and gathers each one in memory when the
rows are a selection (best-of-n's kept rows): the peak memory of writing grew with the dataset up to that size."""
CANDIDATES_SPLIT = "candidates"
"""The split that holds every candidate, beside the kept pairs, when `save_local` or `publish` is given them."""
_OLD_FIGURE = "quality-{config}-{split}.png"
"""The picture's name before 0.1.0 settled on `quality.png`: removed when its split is written again."""
STAGING_PREFIX = ".genstruct-staging-"
"""The folders in which `save_local` makes a new output before it swaps it in."""


def save_local(
    ds: Dataset,
    folder: str | Path,
    *,
    config_name: str = "default",
    split: str = "train",
    recipe: Mapping[str, Mapping[str, Any]] | None = None,
    candidates: Dataset | None = None,
    license: str | None = None,
    language: str | list[str] = "en",
    source_datasets: list[str] | None = None,
    repo_id: str | None = None,
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
    existing_card: DatasetCard | None = None,
    quality: dict[str, Any] | None = None,
    overwrite: bool = False,
    report: RunReport | None = None,
    candidates_split: str | None = CANDIDATES_SPLIT,
) -> Path:
    """Write `ds` to a folder in the layout of a Hub dataset repository: parquet shards and a README card.

    The folder is written whole or not at all: the new one is made beside it and swapped in at the end, so that a
    failure on the way (a full disk, a kill) leaves the previous output as it was. A folder that this package did
    not write (no dataset card of ours) is refused unless `overwrite`.

    The shards go to ``data/{split}-00000-of-0000N.parquet`` (``{config_name}/...`` for a config other than
    ``"default"``), the layout `Dataset.push_to_hub` uses, and the card's YAML names them, so that
    ``load_dataset(folder)`` reads the same rows and features back. Given `candidates`, they are written too, as
    the split ``candidates`` of the same config (every sample, with its `finish_reason`, `parse_error` and
    `reward`), so that ``load_dataset(folder, split="candidates")`` reads them. For pairs, the card gains a
    "Quality" section ([`quality_report`]) and ``quality.png``, a picture of the reward and length distributions;
    the run's report ([`RunReport`]) is saved as ``genstruct-report.json``, for ``genstruct-datasets report``. The
    card, the picture and the report describe the split written last.

    Args:
        ds (`datasets.Dataset`): the rows to write.
        folder (`str` or `Path`): the folder (created if needed). Older shards of the same split are removed.
        config_name (`str`, *optional*, defaults to `"default"`): the dataset config.
        split (`str`, *optional*, defaults to `"train"`): the split.
        recipe (`Mapping`, *optional*): how the rows were made, shown in the card (see [`build_card`]).
        candidates (`datasets.Dataset`, *optional*): every candidate before selection: the card's counts and validity
            figures are measured over them, and they are written as the split `candidates_split`. They must have
            the features of `ds` (`ds` is a selection of them, as `select_best` makes it). Not written again when
            they are `ds` itself.
        license (`str`, *optional*): license id for the card.
        language (`str` or `list[str]`, *optional*, defaults to `"en"`): language codes for the card.
        source_datasets (`list[str]`, *optional*): Hub ids of the source corpora.
        repo_id (`str`, *optional*): the Hub id used in the card's loading snippet; defaults to the folder path.
        max_shard_size (`int`, *optional*, defaults to 500 MiB): largest shard, in bytes of Arrow data.
        existing_card (`DatasetCard`, *optional*): a card whose other configs the new card keeps.
        quality (`dict`, *optional*): the [`quality_report`] of `ds` (with `candidates`) when the caller already
            has it; computed here otherwise. Superseded by `report`.
        overwrite (`bool`, *optional*, defaults to `False`): replace a non-empty folder that this package did not
            write.
        report ([`RunReport`], *optional*): the run's figures ([`run_report`] of `ds` and `candidates`): the card,
            the picture and ``genstruct-report.json`` render it, and nothing is measured again. Measured here
            otherwise.
        candidates_split (`str`, *optional*, defaults to `"candidates"`): the split the candidates are written as;
            None writes them not (they then serve the card's figures only).

    Returns:
        `Path`: the folder.

    Raises:
        [`OutputExistsError`]: `folder` holds files this package did not write, and `overwrite` is False.
        [`InvalidConfigError`]: the candidates would be written over `split`, or their features are not those of
            `ds`.

    Example:

    ```py
    >>> from datasets import Dataset, load_dataset
    >>> candidates = Dataset.from_dict({"instruction": ["Why?", None], "response": ["Because.", None]})
    >>> folder = save_local(candidates.select([0]), "my-pairs", candidates=candidates)  # doctest: +SKIP
    >>> load_dataset("my-pairs", split="train")[0]  # doctest: +SKIP
    {'instruction': 'Why?', 'response': 'Because.'}
    >>> load_dataset("my-pairs", split="candidates").num_rows  # doctest: +SKIP
    2
    ```
    """
    folder = Path(folder)
    check_output_folder(folder, overwrite=overwrite)
    written = candidates_split if candidates is not None and candidates is not ds else None
    if written is not None and (written == split or candidates.features != ds.features):
        problem = (
            f"would be written over the split {split!r}; name another candidates_split"
            if written == split
            else f"have other features than the rows ({', '.join(candidates.column_names)} against "
            f"{', '.join(ds.column_names)}); give the candidates these rows were selected from"
        )
        raise InvalidConfigError(
            f"The candidates (candidates_split={written!r}) {problem}, or pass candidates_split=None to use them "
            "for the card's figures only."
        )
    target = folder.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Beside the folder, so that it can be renamed into place; inside it where the folder itself cannot be renamed.
    inside = _held_in_place(target)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=target if inside else target.parent))
    os.chmod(staging, target.stat().st_mode & 0o7777 if target.exists() else 0o777 & ~_umask())
    try:
        card_settings = {
            "recipe": recipe,
            "candidates": candidates,
            "license": license,
            "language": language,
            "source_datasets": source_datasets,
            "existing": existing_card,
        }
        _write_folder(
            ds,
            staging,
            previous=target,
            config_name=config_name,
            split=split,
            candidates_split=written,
            max_shard_size=max_shard_size,
            repo_id=repo_id or str(folder),
            report=report or run_report(ds, candidates, recipe=recipe, quality=quality),
            card_settings=card_settings,
        )
        if inside:
            _swap_contents(staging, target)
        else:
            _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def check_output_folder(folder: str | Path, *, overwrite: bool = False) -> None:
    """Refuse to write into a non-empty folder that this package did not write, before any work is done.

    Args:
        folder (`str` or `Path`): the output folder.
        overwrite (`bool`, *optional*, defaults to `False`): allow it anyway.

    Raises:
        [`OutputExistsError`]: the folder holds files, and no dataset card of this package.

    Example:

    ```py
    >>> check_output_folder("pairs/")  # a new or empty folder, or one written by save_local: fine
    ```
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(f"{str(folder)!r} is a file, not a folder; name a folder for the output.")
    if overwrite or not folder.exists() or not any(folder.iterdir()):
        return
    card = folder / "README.md"
    if card.is_file() and "genstruct" in _card_tags(card):
        return
    raise OutputExistsError(
        f"{str(folder)!r} is not empty and was not written by genstruct-datasets; name a new or empty folder, or "
        "pass overwrite=True (--overwrite) to write the dataset into it (its README.md is replaced)."
    )


def _card_tags(card: Path) -> list[str]:
    from huggingface_hub.repocard import metadata_load

    try:
        return list((metadata_load(card) or {}).get("tags") or [])
    except Exception:  # not a card at all: YAML that does not parse, a file that is not text
        return []


def _held_in_place(folder: Path) -> bool:
    """Whether `folder` cannot be renamed: a mount point, or the working folder (or one that holds it)."""
    if not folder.exists():
        return False
    cwd = Path.cwd().resolve()
    return os.path.ismount(folder) or cwd == folder or folder in cwd.parents


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _swap_contents(staging: Path, folder: Path) -> None:
    """Put what the finished `staging` (inside `folder`) holds in place of what `folder` holds, entry by entry."""
    old = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    for entry in list(folder.iterdir()):
        if entry not in (staging, old):
            os.replace(entry, old / entry.name)
    for entry in list(staging.iterdir()):
        os.replace(entry, folder / entry.name)
    staging.rmdir()
    shutil.rmtree(old, ignore_errors=True)


def _swap_in(staging: Path, folder: Path) -> None:
    """Put the finished `staging` folder in place of `folder`; the old one is deleted only once the new one is in."""
    if not folder.exists():
        os.replace(staging, folder)
        return
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    os.replace(folder, old)
    os.replace(staging, folder)
    shutil.rmtree(old, ignore_errors=True)


def _write_folder(
    ds: Dataset,
    staging: Path,
    *,
    previous: Path,
    config_name: str,
    split: str,
    candidates_split: str | None,
    max_shard_size: int,
    repo_id: str,
    report: RunReport,
    card_settings: dict[str, Any],
) -> None:
    """Write the new folder into `staging`: the other splits and files of `previous` linked in, these splits anew."""
    data_dir = "data" if config_name == "default" else config_name
    splits = {split: ds, **({candidates_split: card_settings["candidates"]} if candidates_split else {})}
    if previous.exists():
        old_figure = _OLD_FIGURE.format(config=config_name, split=split)
        replaced = (*(f"{data_dir}/{name}-" for name in splits), "README.md", QUALITY_FIGURE, REPORT_FILE, old_figure)
        for path in previous.rglob("*"):
            relative = path.relative_to(previous).as_posix()
            if path.is_file() and not relative.startswith((*replaced, STAGING_PREFIX)):
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(path, staging / relative)
    (staging / data_dir).mkdir(parents=True, exist_ok=True)
    num_shards = {name: _write_split(rows, staging / data_dir, name, max_shard_size) for name, rows in splits.items()}
    figure = plot_quality(report, staging / QUALITY_FIGURE).name if report.distributions else None
    report.save(staging, config_name=config_name, split=split)
    card = build_card(
        ds,
        repo_id=repo_id,
        config_name=config_name,
        split=split,
        data_dir=data_dir,
        figure=figure,
        report=report,
        candidates_split=candidates_split,
        **card_settings,
    )
    card.save(staging / "README.md")
    logger.info(
        "Wrote %s in parquet shards, a dataset card and its run report to %s",
        ", ".join(f"{rows.num_rows} rows of {name} ({num_shards[name]} shard(s))" for name, rows in splits.items()),
        previous,
    )


def _write_split(ds: Dataset, folder: Path, split: str, max_shard_size: int) -> int:
    """Write `ds` as ``{folder}/{split}-NNNNN-of-NNNNN.parquet`` shards of at most `max_shard_size` each.

    Returns:
        `int`: the number of shards.
    """
    # The rows' share of the table: after select_best or filter, `ds.data` still holds every candidate.
    num_bytes = ds.data.nbytes * ds.num_rows // max(len(ds.data), 1)
    num_shards = min(max(1, math.ceil(num_bytes / max_shard_size)), max(ds.num_rows, 1))
    for index in range(num_shards):
        shard = ds.shard(num_shards=num_shards, index=index, contiguous=True)
        shard.to_parquet(folder / f"{split}-{index:05d}-of-{num_shards:05d}.parquet", batch_size=ROW_GROUP_ROWS)
    return num_shards


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)


def publish(
    ds: Dataset,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    config_name: str = "default",
    split: str = "train",
    commit_message: str | None = None,
    recipe: Mapping[str, Mapping[str, Any]] | None = None,
    candidates: Dataset | None = None,
    license: str | None = None,
    language: str | list[str] = "en",
    source_datasets: list[str] | None = None,
    quality: dict[str, Any] | None = None,
    shards: ShardStore | None = None,
    report: RunReport | None = None,
    candidates_split: str | None = CANDIDATES_SPLIT,
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
        recipe, candidates, license, language, source_datasets, quality, report, candidates_split: see
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
    from huggingface_hub import DatasetCard, HfApi, get_token
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    token = token or get_token()
    if not token:
        raise MissingTokenError(
            f"Publishing to {repo_id!r} needs a Hugging Face token with write access: run `hf auth login`, "
            "set HF_TOKEN, or pass token=."
        )
    api = HfApi(token=token)
    repo_id = with_retries(
        lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True),
        what=f"creating {repo_id}",
    ).repo_id
    try:
        existing = DatasetCard.load(repo_id, repo_type="dataset", token=token)
    except (EntryNotFoundError, RepositoryNotFoundError):
        existing = None
    data_dir = "data" if config_name == "default" else config_name
    with tempfile.TemporaryDirectory(prefix="genstruct-publish-") as folder:
        save_local(
            ds,
            folder,
            config_name=config_name,
            split=split,
            recipe=recipe,
            candidates=candidates,
            license=license,
            language=language,
            source_datasets=source_datasets,
            repo_id=repo_id,
            existing_card=existing,
            quality=quality,
            report=report,
            candidates_split=candidates_split,
        )
        held = with_retries(lambda: api.list_repo_files(repo_id, repo_type="dataset"), what=f"listing {repo_id}")
        work_folders = sorted(getattr(shards, "folders", ()))  # a folder store keeps nothing in the repository
        # The split's older shards, and the candidates' where they are written again, and a picture of the old name.
        written = [
            split,
            *([candidates_split] if candidates_split and candidates is not None and candidates is not ds else []),
        ]
        replaced = [*(f"{data_dir}/{name}-*" for name in written), _OLD_FIGURE.format(config=config_name, split=split)]
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
