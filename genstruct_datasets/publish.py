"""Write a Genstruct dataset as parquet shards with its dataset card, to a folder or to the Hub."""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .card import build_card
from .errors import MissingTokenError
from .hub_shards import with_retries
from .quality import quality_report
from .report import plot_quality

if TYPE_CHECKING:
    from datasets import Dataset
    from huggingface_hub import CommitInfo, DatasetCard

    from .hub_shards import HubShards

logger = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_SIZE = 500 * 2**20
ROW_GROUP_ROWS = 1000
"""Rows per parquet row group. `datasets` aims at row groups of 100 MB, and gathers each one in memory when the
rows are a selection (best-of-n's kept rows): the peak memory of writing grew with the dataset up to that size."""
QUALITY_FIGURE = "quality-{config}-{split}.png"


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
) -> Path:
    """Write `ds` to a folder in the layout of a Hub dataset repository: parquet shards and a README card.

    The shards go to ``data/{split}-00000-of-0000N.parquet`` (``{config_name}/...`` for a config other than
    ``"default"``), the layout `Dataset.push_to_hub` uses, and the card's YAML names them, so that
    ``load_dataset(folder)`` reads the same rows and features back. For pairs, the card gains a "Quality"
    section ([`quality_report`]) and ``quality-{config_name}-{split}.png``, a picture of the reward and
    length distributions.

    Args:
        ds (`datasets.Dataset`): the rows to write.
        folder (`str` or `Path`): the folder (created if needed). Older shards of the same split are removed.
        config_name (`str`, *optional*, defaults to `"default"`): the dataset config.
        split (`str`, *optional*, defaults to `"train"`): the split.
        recipe (`Mapping`, *optional*): how the rows were made, shown in the card (see [`build_card`]).
        candidates (`datasets.Dataset`, *optional*): every candidate before selection, for the card's counts.
        license (`str`, *optional*): license id for the card.
        language (`str` or `list[str]`, *optional*, defaults to `"en"`): language codes for the card.
        source_datasets (`list[str]`, *optional*): Hub ids of the source corpora.
        repo_id (`str`, *optional*): the Hub id used in the card's loading snippet; defaults to the folder path.
        max_shard_size (`int`, *optional*, defaults to 500 MiB): largest shard, in bytes of Arrow data.
        existing_card (`DatasetCard`, *optional*): a card whose other configs the new card keeps.
        quality (`dict`, *optional*): the [`quality_report`] of `ds` (with `candidates`) when the caller already
            has it; computed here otherwise.

    Returns:
        `Path`: the folder.

    Example:

    ```py
    >>> from datasets import Dataset, load_dataset
    >>> ds = Dataset.from_dict({"instruction": ["Why?"], "response": ["Because."]})
    >>> folder = save_local(ds, "my-pairs")  # doctest: +SKIP
    >>> load_dataset("my-pairs", split="train")[0]  # doctest: +SKIP
    {'instruction': 'Why?', 'response': 'Because.'}
    ```
    """
    folder = Path(folder)
    data_dir = "data" if config_name == "default" else config_name
    (folder / data_dir).mkdir(parents=True, exist_ok=True)
    for old in (folder / data_dir).glob(f"{split}-*.parquet"):
        old.unlink()
    # The rows' share of the table: after select_best or filter, `ds.data` still holds every candidate.
    num_bytes = ds.data.nbytes * ds.num_rows // max(len(ds.data), 1)
    num_shards = min(max(1, math.ceil(num_bytes / max_shard_size)), max(ds.num_rows, 1))
    for index in range(num_shards):
        shard = ds.shard(num_shards=num_shards, index=index, contiguous=True)
        shard.to_parquet(
            folder / data_dir / f"{split}-{index:05d}-of-{num_shards:05d}.parquet", batch_size=ROW_GROUP_ROWS
        )
    figure = None
    if {"instruction", "response"} <= set(ds.column_names) and ds.num_rows:
        quality = quality or quality_report(ds, candidates=candidates)
        figure = plot_quality(ds, folder / QUALITY_FIGURE.format(config=config_name, split=split)).name
    card = build_card(
        ds,
        repo_id=repo_id or str(folder),
        config_name=config_name,
        split=split,
        data_dir=data_dir,
        recipe=recipe,
        candidates=candidates,
        license=license,
        language=language,
        source_datasets=source_datasets,
        existing=existing_card,
        quality=quality,
        figure=figure,
        validity_over_candidates=candidates is not None,
    )
    card.save(folder / "README.md")
    logger.info("Wrote %d rows in %d parquet shard(s) and a dataset card to %s", ds.num_rows, num_shards, folder)
    return folder


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
    shards: HubShards | None = None,
) -> CommitInfo:
    """Publish `ds` to a dataset repository on the Hub, parquet shards and dataset card in one commit.

    The repository gets the layout of [`save_local`] (the one `Dataset.push_to_hub` writes), uploaded with
    `HfApi.upload_folder` so that the data and its card land together or not at all. Earlier shards of the
    same config and split are deleted in that commit; other configs and their entries in the card stay.
    Each Hub call is retried with backoff when it fails in a way that may pass ([`with_retries`]).

    Args:
        ds (`datasets.Dataset`): the rows to publish.
        repo_id (`str`): the dataset repository, ``"user/name"``; created if it does not exist.
        private (`bool`, *optional*, defaults to `False`): create the repository as private.
        token (`str`, *optional*): a Hub token with write access; defaults to the saved login or `HF_TOKEN`.
        config_name (`str`, *optional*, defaults to `"default"`): the dataset config.
        split (`str`, *optional*, defaults to `"train"`): the split.
        commit_message (`str`, *optional*): defaults to "Upload {n} Genstruct pairs with genstruct-datasets".
        recipe, candidates, license, language, source_datasets, quality: shown in the card, see [`save_local`].
        shards ([`HubShards`], *optional*): the store the run's finished shards went to (``push_shards_to=`` of
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
        )
        done_shards = [f"{name}/*" for name in sorted(shards.folders)] if shards is not None else []
        commit = with_retries(
            lambda: api.upload_folder(
                repo_id=repo_id,
                repo_type="dataset",
                folder_path=folder,
                commit_message=commit_message or f"Upload {ds.num_rows} Genstruct pairs with genstruct-datasets",
                delete_patterns=[f"{data_dir}/{split}-*", *done_shards],
            ),
            what=f"upload to {repo_id}",
        )
    logger.info("Published %d rows to https://huggingface.co/datasets/%s", ds.num_rows, repo_id)
    return commit
