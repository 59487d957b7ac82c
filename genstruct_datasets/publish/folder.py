"""A Genstruct dataset written to a folder, in the layout of a Hub dataset repository: parquet shards, the dataset
card, the run report and its picture, swapped in whole or not at all."""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..columns import MESSAGES, MESSAGES_FEATURE, pair_messages
from ..errors import InvalidConfigError, OutputExistsError
from ..report import QUALITY_FIGURE, REPORT_FILE, CardInfo, RunReport, build_card, plot_quality, run_report
from ..report.card import card_info, with_recipe

if TYPE_CHECKING:
    from datasets import Dataset
    from huggingface_hub import DatasetCard

logger = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_SIZE = 500 * 2**20
ROW_GROUP_ROWS = 1000
"""Rows per parquet row group. `datasets` aims at row groups of 100 MB, and gathers each one in memory when the
rows are a selection (best-of-n's kept rows): the peak memory of writing grew with the dataset up to that size."""
CANDIDATES_SPLIT = "candidates"
"""The split that holds every candidate, beside the kept pairs, when `save_local` or `publish` is given them."""
STAGING_PREFIX = ".genstruct-staging-"
"""The folders in which `save_local` makes a new output before it swaps it in (and puts the old one aside): named
``.genstruct-staging-{pid}@{host}-{random}``, so that a later save removes those whose process is gone."""
_STAGING_NAME = re.compile(re.escape(STAGING_PREFIX) + r"(?P<pid>\d+)@(?P<host>.+)-[^-]+$")
STALE_UNNAMED_SECONDS = 24 * 3600
"""Age past which a staging folder without a process in its name (named before #23) is removed."""


def save_local(
    ds: Dataset,
    folder: str | Path,
    *,
    report: RunReport | None = None,
    card: CardInfo | None = None,
    candidates: Dataset | None = None,
    config_name: str = "default",
    split: str = "train",
    candidates_split: str | None = CANDIDATES_SPLIT,
    repo_id: str | None = None,
    max_shard_size: int = DEFAULT_MAX_SHARD_SIZE,
    existing_card: DatasetCard | None = None,
    overwrite: bool = False,
    recipe: Mapping[str, Mapping[str, Any]] | None = None,
    license: str | None = None,
    language: str | list[str] | None = None,
    source_datasets: list[str] | None = None,
) -> Path:
    """Write `ds` to a folder in the layout of a Hub dataset repository: parquet shards and a README card.

    The folder is written whole or not at all: the new one is made beside it and swapped in at the end, so that a
    failure on the way (a full disk, a kill) leaves the previous output as it was. A folder that this package did
    not write (no dataset card of ours) is refused unless `overwrite`.

    The shards go to ``data/{split}-00000-of-0000N.parquet`` (``{config_name}/...`` for a config other than
    ``"default"``), the layout `Dataset.push_to_hub` uses, and the card's YAML names them, so that
    ``load_dataset(folder)`` reads the same rows and features back. The pairs of `ds` gain a `messages` column, TRL's
    conversational format ([`with_messages`]), so that `SFTTrainer` trains on them as they are (so do the candidates
    written beside them, None where a row holds no pair). Given `candidates`, they are written too, as
    the split ``candidates`` of the same config (every sample, with its `finish_reason`, `parse_error` and
    `reward`), so that ``load_dataset(folder, split="candidates")`` reads them. For pairs, the card gains a
    "Quality" section ([`quality_report`]) and ``quality.png``, a picture of the reward and length distributions;
    the run's report ([`RunReport`]) is saved as ``genstruct-report.json``, for ``genstruct-datasets report``. The
    card, the picture and the report describe the split written last.

    Args:
        ds (`datasets.Dataset`): the rows to write; with `instruction` and `response`, `messages` is added.
        folder (`str` or `Path`): the folder (created if needed). Older shards of the same split are removed.
        report ([`RunReport`], *optional*): the run's figures and recipe ([`run_report`] of `ds` and `candidates`):
            the card, the picture and ``genstruct-report.json`` render it, and nothing is measured again. Measured
            here otherwise.
        card ([`CardInfo`], *optional*): what the card says that is not a figure: license, language, source
            datasets, samples shown.
        candidates (`datasets.Dataset`, *optional*): every candidate before selection: the card's counts and validity
            figures are measured over them (without `report`), and they are written as the split
            `candidates_split`. They must have the features of `ds` (`ds` is a selection of them, as `select_best`
            makes it). Not written again when they are `ds` itself.
        config_name (`str`, *optional*, defaults to `"default"`): the dataset config.
        split (`str`, *optional*, defaults to `"train"`): the split.
        candidates_split (`str`, *optional*, defaults to `"candidates"`): the split the candidates are written as;
            None writes them not (they then serve the card's figures only).
        repo_id (`str`, *optional*): the Hub id used in the card's loading snippets; defaults to the folder's name (no
            path of this machine goes into the card).
        max_shard_size (`int`, *optional*, defaults to 500 MiB): largest shard, in bytes of Arrow data.
        existing_card (`DatasetCard`, *optional*): a card whose other configs the new card keeps.
        overwrite (`bool`, *optional*, defaults to `False`): replace a non-empty folder that this package did not
            write.
        recipe (`Mapping`, *optional*): how the rows were made, in place of the report's recipe (see [`build_card`]).
        license, language, source_datasets: the fields of [`CardInfo`] one by one, in place of `card`'s.

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
    _check_candidates(ds, candidates, written, split)
    report = with_recipe(report or run_report(ds, candidates, recipe=recipe), recipe)
    # Both splits of the config get the column: the card declares one set of features for them.
    ds, candidates = with_messages(ds), with_messages(candidates) if written else candidates
    card = card_info(card, license=license, language=language, source_datasets=source_datasets)
    target = folder.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Beside the folder, so that it can be renamed into place; inside it where the folder itself cannot be renamed.
    inside = _held_in_place(target)
    remove_stale_staging(target)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(), dir=target if inside else target.parent))
    os.chmod(staging, target.stat().st_mode & 0o7777 if target.exists() else 0o777 & ~_umask())
    try:
        splits = {split: ds, **({written: candidates} if written else {})}
        shards = _write_folder(
            splits, staging, previous=target, config_name=config_name, max_shard_size=max_shard_size
        )
        _write_card(
            ds,
            staging,
            report=report,
            card=card,
            repo_id=repo_id or folder.resolve().name,
            config_name=config_name,
            split=split,
            candidates=candidates,
            candidates_split=written,
            existing=existing_card,
        )
        logger.info(
            "Wrote %s in parquet shards, a dataset card and its run report to %s",
            ", ".join(f"{rows.num_rows} rows of {name} ({shards[name]} shard(s))" for name, rows in splits.items()),
            target,
        )
        if inside:
            _swap_contents(staging, target)
        else:
            _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def with_messages(ds: Dataset) -> Dataset:
    """`ds` with a `messages` column made from its pairs ([`pair_messages`]: TRL's conversational format), in place of
    any it had; `ds` as it is when it holds no pairs (no `instruction` and `response` columns).

    Example:

    ```py
    >>> from datasets import Dataset
    >>> with_messages(Dataset.from_dict({"instruction": ["Why?"], "response": ["Because."]}))[0]["messages"]
    [{'role': 'user', 'content': 'Why?'}, {'role': 'assistant', 'content': 'Because.'}]
    ```
    """
    from datasets import Features

    if not {"instruction", "response"} <= set(ds.column_names):
        return ds
    if MESSAGES in ds.column_names:
        ds = ds.remove_columns(MESSAGES)
    features = Features({**ds.features, MESSAGES: MESSAGES_FEATURE})
    return ds.map(pair_messages, batched=True, features=features, desc="Pairs as messages")


def _check_candidates(ds: Dataset, candidates: Dataset | None, written: str | None, split: str) -> None:
    """Refuse candidates that cannot be written as the split `written` beside the rows' `split`."""
    if written is None or (written != split and candidates.features == ds.features):
        return
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
        "pass overwrite=True to write the dataset into it (its README.md is replaced)."
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


def _staging_prefix() -> str:
    return f"{STAGING_PREFIX}{os.getpid()}@{socket.gethostname()}-"


def remove_stale_staging(folder: str | Path) -> list[Path]:
    """Remove the staging folders that a save of `folder` killed midway (SIGKILL, a power cut) left beside it or in it.

    A staging folder is removed when the process named in it is gone (on this machine), or, for one that names no
    process, when it is older than `STALE_UNNAMED_SECONDS`. Those of a save still running, here or on another
    machine, are left alone.

    Args:
        folder (`str` or `Path`): the output folder.

    Returns:
        `list[Path]`: the folders removed.

    Example:

    ```py
    >>> remove_stale_staging("pairs/")  # nothing left behind: nothing removed
    []
    ```
    """
    folder = Path(folder).resolve()
    places = [folder.parent, folder] if folder.is_dir() else [folder.parent]
    removed = []
    for place in places:
        if not place.is_dir():
            continue
        for entry in place.iterdir():
            if entry.name.startswith(STAGING_PREFIX) and entry.is_dir() and _is_stale(entry):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    if removed:
        logger.info("Removed %d staging folder(s) left by a save that was killed: %s", len(removed), removed)
    return removed


def _is_stale(staging: Path) -> bool:
    named = _STAGING_NAME.match(staging.name)
    if named is None:
        try:
            return time.time() - staging.stat().st_mtime > STALE_UNNAMED_SECONDS
        except OSError:
            return False
    if named["host"] != socket.gethostname():
        return False  # another machine's save, on a shared file system: its process cannot be asked from here
    pid = int(named["pid"])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _swap_contents(staging: Path, folder: Path) -> None:
    """Put what the finished `staging` (inside `folder`) holds in place of what `folder` holds, entry by entry."""
    old = Path(tempfile.mkdtemp(prefix=_staging_prefix(), dir=folder))
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
    old = Path(tempfile.mkdtemp(prefix=_staging_prefix(), dir=folder.parent))
    old.rmdir()  # a free name beside `folder`, that a later save removes if this one is killed before the end
    os.replace(folder, old)
    try:
        os.replace(staging, folder)
    except BaseException:
        os.replace(old, folder)  # the old output back in place: a failed swap changes nothing
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_folder(
    splits: Mapping[str, Dataset], staging: Path, *, previous: Path, config_name: str, max_shard_size: int
) -> dict[str, int]:
    """Write the new folder's data into `staging`: the other splits and files of `previous` linked in, `splits`
    anew; return the shards of each split. The card, the report and the picture are [`_write_card`]'s."""
    data_dir = _data_dir(config_name)
    if previous.exists():
        replaced = (*(f"{data_dir}/{name}-" for name in splits), "README.md", QUALITY_FIGURE, REPORT_FILE)
        for path in previous.rglob("*"):
            relative = path.relative_to(previous).as_posix()
            if path.is_file() and not relative.startswith((*replaced, STAGING_PREFIX)):
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(path, staging / relative)
    (staging / data_dir).mkdir(parents=True, exist_ok=True)
    return {name: _write_split(rows, staging / data_dir, name, max_shard_size) for name, rows in splits.items()}


def _write_card(
    ds: Dataset, staging: Path, *, report: RunReport, card: CardInfo, config_name: str, split: str, **layout: Any
) -> None:
    """Write the run's report, its picture and the dataset card into `staging`: renderings of `report`."""
    figure = plot_quality(report, staging / QUALITY_FIGURE).name if report.distributions else None
    report.save(staging, config_name=config_name, split=split)
    built = build_card(
        ds,
        report=report,
        card=card,
        config_name=config_name,
        split=split,
        data_dir=_data_dir(config_name),
        figure=figure,
        **layout,
    )
    built.save(staging / "README.md")


def _data_dir(config_name: str) -> str:
    """The folder of a config's shards, as `push_to_hub` names it."""
    return "data" if config_name == "default" else config_name


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
