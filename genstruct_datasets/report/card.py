"""The dataset card of a Genstruct dataset: metadata, how it was made, counts, stages, samples.

The card renders a [`RunReport`] (the figures and the recipe) with a [`CardInfo`] (what the card says that is not
a figure: license, language, source datasets), laid out for one config and split of a repository.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._paths import is_local_path
from ..columns import MESSAGES
from ..runstats import RunStats
from .data import RunReport, counted_report, is_local_name, published_settings
from .text import cost, filter_rows, headline, price_rows, stage_rows

if TYPE_CHECKING:
    from datasets import Dataset
    from huggingface_hub import DatasetCard, DatasetCardData

_SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
]

_TEMPLATE = Path(__file__).parent.parent / "templates" / "dataset_card.md"


@dataclass
class CardInfo:
    """What a dataset card says that is not a figure of the run: the dataset's metadata and how much to show.

    The figures and the recipe come from the [`RunReport`]; where the rows go (repository, config, split) from the
    caller of [`build_card`], [`save_local`] or [`publish`].

    Args:
        license (`str`, *optional*): the license id; ``"unknown"`` when not given. Mind the source's terms.
        language (`str` or `list[str]`, *optional*, defaults to `"en"`): language codes of the text.
        source_datasets (`list[str]`, *optional*): Hub ids of the corpora the passages came from.
        num_samples (`int`, *optional*, defaults to 3): sample pairs shown in the card, each of another passage
            (another `passage_id`, where there is the column).

    Example:

    ```py
    >>> card = CardInfo(license="cc-by-sa-4.0", source_datasets=["wikimedia/wikipedia"])
    >>> save_local(best, "pairs", report=run_report(best, candidates), card=card)  # doctest: +SKIP
    ```
    """

    license: str | None = None
    language: str | list[str] = "en"
    source_datasets: list[str] | None = None
    num_samples: int = 3


def card_info(card: CardInfo | None = None, **metadata: Any) -> CardInfo:
    """`card` (a default [`CardInfo`] when None) with the fields given one by one as keywords (the older way to
    give them: ``license=``, ``language=``, ``source_datasets=``, ``num_samples=``); None leaves a field as it is."""
    return dataclasses.replace(card or CardInfo(), **{k: v for k, v in metadata.items() if v is not None})


def with_recipe(report: RunReport, recipe: Mapping[str, Mapping[str, Any]] | None) -> RunReport:
    """`report` with `recipe` in place of its own (a copy; the report is left as it is), its local paths named as
    [`published_settings`] names them; `report` itself without one."""
    if not recipe:
        return report
    return dataclasses.replace(report, recipe={str(k): published_settings(v) for k, v in recipe.items()})


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
    report: RunReport | None = None,
    card: CardInfo | None = None,
    config_name: str = "default",
    split: str = "train",
    data_dir: str = "data",
    candidates: Dataset | None = None,
    candidates_split: str | None = None,
    figure: str | None = None,
    existing: DatasetCard | None = None,
    recipe: Mapping[str, Mapping[str, Any]] | None = None,
    license: str | None = None,
    language: str | list[str] | None = None,
    source_datasets: list[str] | None = None,
    num_samples: int | None = None,
) -> DatasetCard:
    """Build the dataset card of a Genstruct dataset with `huggingface_hub`'s `DatasetCard`.

    The card renders a [`RunReport`] with a [`CardInfo`]: given `report`, it measures nothing; without one, it
    counts the rows ([`counted_report`]: counts and stages, no quality figures).

    Args:
        ds (`datasets.Dataset`): the rows to publish.
        repo_id (`str`): where the dataset is (or would be) on the Hub, for the loading snippet.
        report ([`RunReport`], *optional*): the run's figures ([`run_report`]): counts, stages, quality, cost and
            recipe. The recipe's generator `engine` is also named in the card's introduction.
        card ([`CardInfo`], *optional*): license, language, source datasets and the number of samples shown.
        config_name (`str`, *optional*, defaults to `"default"`): the dataset config the rows belong to.
        split (`str`, *optional*, defaults to `"train"`): the split the rows belong to.
        data_dir (`str`, *optional*, defaults to `"data"`): the folder of the parquet shards.
        candidates (`datasets.Dataset`, *optional*): every candidate before selection, for the counts (without
            `report`) and, with `candidates_split`, the split that lists them.
        candidates_split (`str`, *optional*): the split of the same config that holds `candidates` (written by
            [`save_local`] as ``{data_dir}/{candidates_split}-*``); listed in the card's `configs` and sizes.
        figure (`str`, *optional*): path, relative to the card, of the picture of the distributions.
        existing (`DatasetCard`, *optional*): the repository's current card, whose other configs are kept.
        recipe (`Mapping`, *optional*): how the rows were made, in place of the report's recipe, as sections of
            settings, e.g. ``{"generator": {"model": ..., "engine": "vllm 0.32.0", "num_samples": 4}}``.
        license, language, source_datasets, num_samples: the fields of [`CardInfo`] one by one, in place of
            `card`'s.

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
    >>> card = build_card(ds, repo_id="me/pairs", report=run_report(ds), card=CardInfo(license="mit"))
    >>> card.data.tags
    ['synthetic', 'genstruct', 'instruction-tuning']
    ```
    """
    from huggingface_hub import DatasetCard

    _check_candidates_split(candidates_split, candidates, split)
    report = with_recipe(report if report is not None else counted_report(ds, candidates), recipe)
    info = card_info(
        card, license=license, language=language, source_datasets=source_datasets, num_samples=num_samples
    )
    written = {split: ds, **({candidates_split: candidates} if candidates_split else {})}
    card_data = _card_data(ds, repo_id, info, _configs(existing, config_name, data_dir, written), existing)
    _add_split_sizes(card_data, ds.features, written, existing, config_name)
    return DatasetCard.from_template(
        card_data,
        template_path=str(_TEMPLATE),
        repo_id=repo_id,
        config_name=config_name,
        split=split,
        candidates_split=candidates_split,
        figure=figure,
        **_figures(report),
        columns={name: _dtype(feature) for name, feature in ds.features.items()},
        messages=MESSAGES in ds.column_names,
        samples=_samples(ds, info.num_samples),
    )


def _check_candidates_split(candidates_split: str | None, candidates: Dataset | None, split: str) -> None:
    if candidates_split is not None and (candidates is None or candidates_split == split):
        from ..errors import InvalidConfigError

        raise InvalidConfigError(
            f"candidates_split={candidates_split!r} names the split of the candidates beside split={split!r}: "
            "give candidates= and a name other than the split's."
        )


def _configs(existing: DatasetCard | None, config_name: str, data_dir: str, written: Mapping[str, Any]) -> list:
    """The card's `configs`: what the repository already lists (other configs, other splits of this config), with
    the written splits of this config in place of their older entries."""
    configs = copy.deepcopy(existing.data.get("configs") or []) if existing else []
    ours = next((c for c in configs if c["config_name"] == config_name), None)
    if ours is None:
        ours = {"config_name": config_name, "data_files": []}
        configs.append(ours)
    ours["data_files"] = [f for f in _data_files(ours["data_files"]) if f["split"] not in written]
    ours["data_files"] += [{"split": name, "path": f"{data_dir}/{name}-*"} for name in written]
    return configs


def _card_data(
    ds: Dataset, repo_id: str, info: CardInfo, configs: list, existing: DatasetCard | None
) -> DatasetCardData:
    from huggingface_hub import DatasetCardData

    return DatasetCardData(
        language=info.language,
        license=info.license or "unknown",
        task_categories=["text-generation", "question-answering"],
        tags=["synthetic", "genstruct", "instruction-tuning"],
        size_categories=[size_category(ds.num_rows)],
        source_datasets=info.source_datasets or None,
        pretty_name=f"{repo_id.split('/')[-1]} (Genstruct)",
        configs=configs,
        dataset_info=existing.data.get("dataset_info") if existing else None,
    )


def _add_split_sizes(
    card_data: DatasetCardData,
    features: Any,
    written: Mapping[str, Dataset],
    existing: DatasetCard | None,
    config_name: str,
) -> None:
    """Features and split sizes, as push_to_hub writes them; the Hub's viewer and `datasets` read them."""
    from datasets import DatasetInfo, SplitInfo
    from datasets.info import DatasetInfosDict
    from datasets.splits import SplitDict

    splits = SplitDict()
    for other in _existing_splits(existing, config_name):
        if other["name"] not in written:
            splits.add(SplitInfo(other["name"], other.get("num_bytes", 0), other.get("num_examples", 0)))
    for name, rows in written.items():
        num_bytes = rows.data.nbytes * rows.num_rows // max(len(rows.data), 1)
        splits.add(SplitInfo(name=name, num_bytes=num_bytes, num_examples=rows.num_rows))
    info = DatasetInfo(features=features, splits=splits, dataset_size=sum(s.num_bytes for s in splits.values()))
    DatasetInfosDict({config_name: info}).to_dataset_card_data(card_data)


def _figures(report: RunReport) -> dict[str, Any]:
    """What the card's template shows of the report: the recipe and the models it names, cost, counts, stages,
    rewards and quality."""
    from .. import __version__

    recipe = report.recipe or {}
    generator = recipe.get("generator", {}).get("model")  # None: not recorded, so not named
    reward_model = recipe.get("reward model", {}).get("model")
    return {
        "version": __version__,
        "generator": generator,
        "engine": recipe.get("generator", {}).get("engine"),
        "generator_url": _hub_url(generator),
        "reward_model": reward_model,
        "reward_model_url": _hub_url(reward_model),
        "best_of_n": recipe.get("selection", {}).get("best_of_n", False),
        "recipe": recipe,
        "cost": cost(report.stats) + price_rows(report.cost) if report.stats is not None else [],
        "versions": report.stats.versions if report.stats is not None else {},
        "per_passage": _per_passage(report.stats),
        "counts": report.counts,
        "outcomes": report.outcomes,
        "stages": stage_rows(report),
        "filtering": filter_rows(report),
        "rewards": report.rewards,
        "reward_sample": report.reward_sample,
        "quality": headline(report.quality) if report.quality else [],
        "validity_over_candidates": report.validity_over_candidates,
    }


def _samples(ds: Dataset, num_samples: int) -> list[dict[str, Any]]:
    rows = ds.select(sample_pairs(ds, num_samples)).to_list()
    return [{key: row.get(key) for key in ("instruction", "response", "title", "reward")} for row in rows]


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
    """The model's page on the Hub, or None for a local folder (its path, or the name the card gives it)."""
    return None if not model or is_local_path(model) or is_local_name(model) else f"https://huggingface.co/{model}"


def _dtype(feature: Any) -> str:
    return getattr(feature, "dtype", type(feature).__name__)
