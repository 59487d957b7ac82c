"""The dataset card of a Genstruct dataset: metadata, how it was made, counts, samples."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .report import RunReport, cost, counted_report, dataset_stats, headline  # noqa: F401  (dataset_stats: it lived here)
from .runstats import RunStats

if TYPE_CHECKING:
    from datasets import Dataset
    from huggingface_hub import DatasetCard

_SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
]

_TEMPLATE = Path(__file__).parent / "templates" / "dataset_card.md"


def size_category(num_rows: int) -> str:
    """Return the Hub's `size_categories` value for a number of rows, e.g. ``"1K<n<10K"``."""
    for bound, name in _SIZE_CATEGORIES:
        if num_rows < bound:
            return name
    return "n>1T" if num_rows >= 10**12 else "1B<n<10B"


def build_card(
    ds: Dataset,
    *,
    repo_id: str,
    config_name: str = "default",
    split: str = "train",
    data_dir: str = "data",
    recipe: Mapping[str, Mapping[str, Any]] | None = None,
    candidates: Dataset | None = None,
    license: str | None = None,
    language: str | list[str] = "en",
    source_datasets: list[str] | None = None,
    existing: DatasetCard | None = None,
    quality: dict[str, Any] | None = None,
    figure: str | None = None,
    validity_over_candidates: bool = False,
    num_samples: int = 3,
    report: RunReport | None = None,
    candidates_split: str | None = None,
) -> DatasetCard:
    """Build the dataset card of a Genstruct dataset with `huggingface_hub`'s `DatasetCard`.

    The card renders a [`RunReport`]: given `report`, it measures nothing; without one, it counts the rows
    ([`dataset_stats`]) and shows the `quality` it is given.

    Args:
        ds (`datasets.Dataset`): the rows to publish.
        repo_id (`str`): where the dataset is (or would be) on the Hub, for the loading snippet.
        config_name (`str`, *optional*, defaults to `"default"`): the dataset config the rows belong to.
        split (`str`, *optional*, defaults to `"train"`): the split the rows belong to.
        data_dir (`str`, *optional*, defaults to `"data"`): the folder of the parquet shards.
        recipe (`Mapping`, *optional*): how the rows were made, as sections of settings, e.g.
            ``{"generator": {"model": ..., "engine": "vllm 0.32.0", "num_samples": 4}, "reward model": {...}}``; the
            generator's `engine` is also named in the card's introduction. Defaults to the report's recipe.
        candidates (`datasets.Dataset`, *optional*): every candidate before selection, for the counts (without
            `report`) and, with `candidates_split`, the split that lists them.
        license (`str`, *optional*): the license id; ``"unknown"`` when not given. Mind the source's terms.
        language (`str` or `list[str]`, *optional*, defaults to `"en"`): language codes of the text.
        source_datasets (`list[str]`, *optional*): Hub ids of the corpora the passages came from.
        existing (`DatasetCard`, *optional*): the repository's current card, whose other configs are kept.
        quality (`dict`, *optional*): a [`quality_report`], shown in a "Quality" section; ignored with `report`.
        figure (`str`, *optional*): path, relative to the card, of the picture of the distributions.
        validity_over_candidates (`bool`, *optional*, defaults to `False`): the quality's validity figures were
            measured over every candidate, not only over the rows published; ignored with `report`.
        num_samples (`int`, *optional*, defaults to 3): sample pairs shown in the card, each of another passage
            (another `passage_id`, where there is the column).
        report ([`RunReport`], *optional*): the run's figures ([`run_report`]): counts, quality, cost and recipe.
        candidates_split (`str`, *optional*): the split of the same config that holds `candidates` (written by
            [`save_local`] as ``{data_dir}/{candidates_split}-*``); listed in the card's `configs` and sizes.

    Returns:
        `huggingface_hub.DatasetCard`: the card, with YAML metadata (license, language, task categories,
        tags including `synthetic` and `genstruct`, size category, source datasets, configs, and the
        features and split sizes under `dataset_info`).

    Raises:
        [`InvalidConfigError`]: `candidates_split` is given without `candidates`, or is `split` itself.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"instruction": ["Why?"], "response": ["Because."]})
    >>> card = build_card(ds, repo_id="me/pairs", report=run_report(ds))
    >>> card.data.tags
    ['synthetic', 'genstruct', 'instruction-tuning']
    ```
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    from . import __version__

    if candidates_split is not None and (candidates is None or candidates_split == split):
        from .errors import InvalidConfigError

        raise InvalidConfigError(
            f"candidates_split={candidates_split!r} names the split of the candidates beside split={split!r}: "
            "give candidates= and a name other than the split's."
        )
    if report is None:
        report = counted_report(ds, candidates)
        report.quality, report.validity_over_candidates = quality, validity_over_candidates
    recipe = {str(k): dict(v) for k, v in (recipe or report.recipe or {}).items()}
    generator = recipe.get("generator", {}).get("model")  # None: not recorded, so not named
    reward_settings = recipe.get("reward model", {})
    from datasets import DatasetInfo, SplitInfo
    from datasets.info import DatasetInfosDict
    from datasets.splits import SplitDict

    written = {split: ds, **({candidates_split: candidates} if candidates_split else {})}
    # Keep what the repository already lists: other configs, and other splits of this config.
    configs = copy.deepcopy(existing.data.get("configs") or []) if existing else []
    ours = next((c for c in configs if c["config_name"] == config_name), None)
    if ours is None:
        ours = {"config_name": config_name, "data_files": []}
        configs.append(ours)
    ours["data_files"] = [f for f in _data_files(ours["data_files"]) if f["split"] not in written]
    ours["data_files"] += [{"split": name, "path": f"{data_dir}/{name}-*"} for name in written]
    card_data = DatasetCardData(
        language=language,
        license=license or "unknown",
        task_categories=["text-generation", "question-answering"],
        tags=["synthetic", "genstruct", "instruction-tuning"],
        size_categories=[size_category(ds.num_rows)],
        source_datasets=source_datasets or None,
        pretty_name=f"{repo_id.split('/')[-1]} (Genstruct)",
        configs=configs,
        dataset_info=existing.data.get("dataset_info") if existing else None,
    )
    # Features and split sizes, as push_to_hub writes them; the Hub's viewer and `datasets` read them.
    splits = SplitDict()
    for other in _existing_splits(existing, config_name):
        if other["name"] not in written:
            splits.add(SplitInfo(other["name"], other.get("num_bytes", 0), other.get("num_examples", 0)))
    for name, rows in written.items():
        num_bytes = rows.data.nbytes * rows.num_rows // max(len(rows.data), 1)
        splits.add(SplitInfo(name=name, num_bytes=num_bytes, num_examples=rows.num_rows))
    info = DatasetInfo(features=ds.features, splits=splits, dataset_size=sum(s.num_bytes for s in splits.values()))
    DatasetInfosDict({config_name: info}).to_dataset_card_data(card_data)
    samples = ds.select(sample_pairs(ds, num_samples)).to_list()
    return DatasetCard.from_template(
        card_data,
        template_path=str(_TEMPLATE),
        repo_id=repo_id,
        config_name=config_name,
        split=split,
        candidates_split=candidates_split,
        version=__version__,
        generator=generator,
        engine=recipe.get("generator", {}).get("engine"),
        generator_url=_hub_url(generator),
        reward_model=reward_settings.get("model"),
        reward_model_url=_hub_url(reward_settings.get("model")),
        best_of_n=recipe.get("selection", {}).get("best_of_n", False),
        recipe=recipe,
        cost=cost(report.stats) if report.stats is not None else [],
        versions=report.stats.versions if report.stats is not None else {},
        per_passage=_per_passage(report.stats),
        counts=report.counts,
        outcomes=report.outcomes,
        rewards=report.rewards,
        reward_sample=report.reward_sample,
        columns={name: _dtype(feature) for name, feature in ds.features.items()},
        samples=[{key: row.get(key) for key in ("instruction", "response", "title", "reward")} for row in samples],
        quality=headline(report.quality) if report.quality else [],
        figure=figure,
        validity_over_candidates=report.validity_over_candidates,
    )


def sample_pairs(ds: Dataset, num_samples: int = 3, *, batch_size: int = 1000) -> list[int]:
    """The first `num_samples` rows that hold a pair, each of another passage: the card's samples.

    A row holds a pair when it has an instruction and a response and no `parse_error`; passages are told apart
    by `passage_id` where the column exists (candidates hold several rows of each passage), else every row is
    another passage. Rows are read `batch_size` at a time, and only until enough are found.

    Returns:
        `list[int]`: the rows, in order; fewer than `num_samples` when the dataset has fewer such passages.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"passage_id": ["a", "a", "b"], "instruction": ["Q1?", "Q2?", "Q3?"],
    ...                         "response": ["A1.", "A2.", "A3."]})
    >>> sample_pairs(ds, 2)
    [0, 2]
    ```
    """
    if num_samples < 1 or not {"instruction", "response"} <= set(ds.column_names):
        return []
    names = [c for c in ("passage_id", "instruction", "response", "parse_error") if c in ds.column_names]
    found: list[int] = []
    seen: set = set()
    for start, batch in zip(range(0, ds.num_rows, batch_size), ds.select_columns(names).iter(batch_size)):
        for offset, (instruction, response) in enumerate(zip(batch["instruction"], batch["response"])):
            passage = batch["passage_id"][offset] if "passage_id" in batch else start + offset
            if not instruction or not response or (batch.get("parse_error") or [None] * len(instruction))[offset]:
                continue
            if passage not in seen:
                seen.add(passage)
                found.append(start + offset)
                if len(found) == num_samples:
                    return found
    return found


def _per_passage(stats: RunStats | None) -> dict[str, float] | None:
    """Seconds of generation and tokens per passage, for a reader's estimate of a larger run."""
    if stats is None or not stats.generated_passages or not stats.seconds.get("generate"):
        return None
    return {
        "seconds": stats.seconds["generate"] / stats.generated_passages,
        "tokens": stats.generated_tokens / stats.generated_passages,
    }


def _data_files(data_files) -> list[dict]:
    """A config's `data_files` as a list of {split, path}: the Hub also allows a path, or a list of paths."""
    if isinstance(data_files, str):
        return [{"split": "train", "path": data_files}]
    return [f if isinstance(f, dict) else {"split": "train", "path": f} for f in data_files]


def _existing_splits(existing: DatasetCard | None, config_name: str) -> list[dict]:
    infos = existing.data.get("dataset_info") if existing else None
    for info in [infos] if isinstance(infos, dict) else infos or []:
        if info.get("config_name", "default") == config_name:
            return list(info.get("splits") or [])
    return []


def _hub_url(model: str | None) -> str | None:
    """The model's page on the Hub, or None for a local folder."""
    if not model or Path(model).exists() or model.startswith((".", "/", "~")):
        return None
    return f"https://huggingface.co/{model}"


def _dtype(feature: Any) -> str:
    return getattr(feature, "dtype", type(feature).__name__)
