"""The dataset card of a Genstruct dataset: metadata, how it was made, counts, samples."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from .quality import DEFAULT_SAMPLE_SIZE, sample_rows, summary
from .report import headline

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


def dataset_stats(
    ds: Dataset,
    candidates: Dataset | None = None,
    *,
    sample_size: int | None = DEFAULT_SAMPLE_SIZE,
    seed: int = 0,
    batch_size: int = 10_000,
) -> dict[str, Any]:
    """Count what a run made and summarise its rewards.

    The counts are exact, read `batch_size` rows at a time; the distinct passage ids are the one thing held,
    as Arrow strings of about 20 bytes per passage. The rewards are summarised on the rows of
    [`sample_rows`] (`sample_size`, `seed`): the same rows as the reward figures of [`quality_report`].

    Args:
        ds (`datasets.Dataset`): the dataset to publish.
        candidates (`datasets.Dataset`, *optional*): every candidate before best-of-n selection; by default
            `ds` itself is taken as the candidates.
        sample_size (`int`, *optional*, defaults to 10000): rows of `ds` whose rewards are summarised; None
            summarises every row.
        seed (`int`, *optional*, defaults to 0): seed of the sample.
        batch_size (`int`, *optional*, defaults to 10000): rows read at a time for the counts.

    Returns:
        `dict`: ``counts`` (passages, candidates, parsed, kept), ``outcomes`` (how many candidates ended
        with each `finish_reason` and `parse_error`), ``rewards`` (mean, std and quantiles of the kept
        rows' rewards; empty without a `reward` column) and, only when `ds` has more than `sample_size`
        rows, ``sample`` (the ``rows`` whose rewards were summarised, ``of`` how many, and the ``seed``).

    Raises:
        [`InvalidConfigError`]: `sample_size` is not a positive number of rows or None.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"passage_id": ["a", "b"], "parse_error": [None, "empty_response"]})
    >>> dataset_stats(ds)["counts"]
    {'passages': 2, 'candidates': 2, 'parsed': 1, 'kept': 2}
    ```
    """
    rows = sample_rows(ds.num_rows, sample_size, seed)
    source = ds if candidates is None else candidates
    names = [
        c for c in ("passage_id", "finish_reason", "parse_error", "content_truncated") if c in source.column_names
    ]
    ids: list[pa.Array] = []  # the distinct passage ids of each batch, as compact Arrow strings
    reasons: Counter = Counter()
    errors: Counter = Counter()
    truncated = 0
    batches = source.select_columns(names).with_format("arrow").iter(batch_size=batch_size) if names else ()
    for batch in batches:
        if "passage_id" in names:
            ids.append(pc.unique(batch["passage_id"]))
        if "finish_reason" in names:
            reasons.update(batch["finish_reason"].to_pylist())
        if "parse_error" in names:
            errors.update(batch["parse_error"].to_pylist())
        if "content_truncated" in names:
            truncated += pc.sum(batch["content_truncated"]).as_py() or 0
    counts: dict[str, int] = {}
    if "passage_id" in names:
        counts["passages"] = pc.count_distinct(pa.chunked_array(ids), mode="all").as_py() if ids else 0
    counts["candidates"] = source.num_rows
    outcomes = {f"finish_reason: {reason}": n for reason, n in reasons.most_common()}
    if "parse_error" in names:
        counts["parsed"] = errors.pop(None, 0)
        outcomes |= {f"parse_error: {error}": n for error, n in errors.most_common()}
    if truncated:  # the model saw only the beginning of these candidates' passages
        outcomes["content truncated to the prompt budget"] = truncated
    counts["kept"] = ds.num_rows
    stats: dict[str, Any] = {"counts": counts, "outcomes": outcomes, "rewards": {}}
    if "reward" in ds.column_names:
        stats["rewards"] = summary(ds.select_columns(["reward"]).select(rows)["reward"])
    if len(rows) < ds.num_rows:
        stats["sample"] = {"rows": len(rows), "of": ds.num_rows, "seed": seed}
    return stats


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
) -> DatasetCard:
    """Build the dataset card of a Genstruct dataset with `huggingface_hub`'s `DatasetCard`.

    Args:
        ds (`datasets.Dataset`): the rows to publish.
        repo_id (`str`): where the dataset is (or would be) on the Hub, for the loading snippet.
        config_name (`str`, *optional*, defaults to `"default"`): the dataset config the rows belong to.
        split (`str`, *optional*, defaults to `"train"`): the split the rows belong to.
        data_dir (`str`, *optional*, defaults to `"data"`): the folder of the parquet shards.
        recipe (`Mapping`, *optional*): how the rows were made, as sections of settings, e.g.
            ``{"generator": {"model": ..., "engine": "vllm 0.32.0", "num_samples": 4}, "reward model": {...}}``; the
            generator's `engine` is also named in the card's introduction.
        candidates (`datasets.Dataset`, *optional*): every candidate before selection, for the counts.
        license (`str`, *optional*): the license id; ``"unknown"`` when not given. Mind the source's terms.
        language (`str` or `list[str]`, *optional*, defaults to `"en"`): language codes of the text.
        source_datasets (`list[str]`, *optional*): Hub ids of the corpora the passages came from.
        existing (`DatasetCard`, *optional*): the repository's current card, whose other configs are kept.
        quality (`dict`, *optional*): a [`quality_report`], shown in a "Quality" section.
        figure (`str`, *optional*): path, relative to the card, of the picture of the distributions.
        validity_over_candidates (`bool`, *optional*, defaults to `False`): the quality's validity figures were
            measured over every candidate, not only over the rows published.
        num_samples (`int`, *optional*, defaults to 3): sample rows shown in the card.

    Returns:
        `huggingface_hub.DatasetCard`: the card, with YAML metadata (license, language, task categories,
        tags including `synthetic` and `genstruct`, size category, source datasets, configs, and the
        features and split sizes under `dataset_info`).
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    from . import __version__

    recipe = {str(k): dict(v) for k, v in (recipe or {}).items()}
    generator = recipe.get("generator", {}).get("model", "NousResearch/Genstruct-7B")
    reward_settings = recipe.get("reward model", {})
    from datasets import DatasetInfo, SplitInfo
    from datasets.info import DatasetInfosDict
    from datasets.splits import SplitDict

    # Keep what the repository already lists: other configs, and other splits of this config.
    configs = copy.deepcopy(existing.data.get("configs") or []) if existing else []
    ours = next((c for c in configs if c["config_name"] == config_name), None)
    if ours is None:
        ours = {"config_name": config_name, "data_files": []}
        configs.append(ours)
    ours["data_files"] = [f for f in _data_files(ours["data_files"]) if f["split"] != split]
    ours["data_files"].append({"split": split, "path": f"{data_dir}/{split}-*"})
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
    num_bytes = ds.data.nbytes * ds.num_rows // max(len(ds.data), 1)
    splits = SplitDict()
    for other in _existing_splits(existing, config_name):
        if other["name"] != split:
            splits.add(SplitInfo(other["name"], other.get("num_bytes", 0), other.get("num_examples", 0)))
    splits.add(SplitInfo(name=split, num_bytes=num_bytes, num_examples=ds.num_rows))
    info = DatasetInfo(features=ds.features, splits=splits, dataset_size=sum(s.num_bytes for s in splits.values()))
    DatasetInfosDict({config_name: info}).to_dataset_card_data(card_data)
    stats = dataset_stats(ds, candidates)
    samples = ds.select(range(min(num_samples, ds.num_rows))).to_list() if "instruction" in ds.column_names else []
    return DatasetCard.from_template(
        card_data,
        template_path=str(_TEMPLATE),
        repo_id=repo_id,
        config_name=config_name,
        split=split,
        version=__version__,
        generator=generator,
        engine=recipe.get("generator", {}).get("engine"),
        generator_url=_hub_url(generator),
        reward_model=reward_settings.get("model"),
        reward_model_url=_hub_url(reward_settings.get("model")),
        best_of_n=recipe.get("selection", {}).get("best_of_n", False),
        recipe=recipe,
        counts=stats["counts"],
        outcomes=stats["outcomes"],
        rewards=stats["rewards"],
        reward_sample=stats.get("sample"),
        columns={name: _dtype(feature) for name, feature in ds.features.items()},
        samples=[{key: row.get(key) for key in ("instruction", "response", "title", "reward")} for row in samples],
        quality=headline(quality) if quality else [],
        figure=figure,
        validity_over_candidates=validity_over_candidates,
    )


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
