"""Semantic near-duplicates: pairs whose instruction means nearly the same as a better one's, or as a row of a set.

MinHash ([`dedup`]) finds instructions spelled alike; this filter finds instructions that *mean* alike, by the cosine
similarity of their embeddings with a [model2vec](https://github.com/MinishLab/model2vec) static model, through
[semhash](https://github.com/MinishLab/semhash). Both are optional: ``pip install "genstruct-datasets[filters]"``.
The embedding model loads lazily, once per process, outside the filter's pickled state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .._checks import check_number
from ..errors import (
    MissingColumnsError,
    MissingDependencyError,
    ModelNotFoundError,
    ModelUnreachableError,
    SourceError,
)
from ..models import check_model_path, check_model_reachable, load_once
from ..sources import is_local, not_here_nor_reachable, read_local
from .base import Drop, FilterOutcome, PairFilter, outcome

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDING_MODEL = "minishlab/potion-base-8M"
"""The model2vec model semhash itself defaults to: 8M parameters, 256 dimensions, fast on a CPU."""

AGAINST_COLUMNS = ("instruction", "prompt", "question", "text")
"""The column of an `against` dataset compared with the pairs, the first one present; else its first string column."""

EXACT_SEARCH_ROWS = 50_000
"""Up to this many rows in an index, neighbours are found by exact search (every cosine, by blocks of 1,024 rows);
above, by semhash's approximate HNSW index (usearch). On two CPU cores, exact search of 20,000 rows took 2.8 s where
building and searching the HNSW index took 8 s, and missed one near repeat of 2,000; its cost grows with the square
of the rows."""

_INSTALL = 'pip install "genstruct-datasets[filters]"'
_SETTING = "embedding_model"


@dataclass
class SemanticDedup(PairFilter):
    """Drop pairs whose instruction means nearly the same as a better-rewarded kept pair's, or as a row of a given set.

    The pairs are ordered by reward, best first (a missing reward last; ties keep their order), and semhash keeps,
    in that order, each pair that no kept pair comes near (cosine similarity of the embeddings at or above
    `threshold`): of two near repeats the better-rewarded one stays. With `against`, each pair that comes near a
    row of one of those datasets is dropped first, whatever its reward; the datasets are checked in order, and a
    pair dropped for one is not compared again.

    Reads the columns `passage_id`, `sample_index`, `column` (``instruction``) and `reward` (when present); writes
    none: the pairs kept are returned as they are.

    Args:
        threshold (`float`, *optional*, defaults to `0.9`): the cosine similarity, in (0, 1], at or above which two
            instructions are the same in meaning; 0.9 is semhash's documented default. Lower drops more.
        embedding_model (`str`, *optional*, defaults to `"minishlab/potion-base-8M"`): a model2vec model, as a Hub
            id or a local folder written by `StaticModel.save_pretrained` (which works offline).
        against (`list[str]`, *optional*): datasets whose rows a pair must not nearly repeat (the set this one will
            be mixed into, say): local files (``.jsonl``, ``.json``, ``.csv``, ``.parquet``, ``.txt``, ``.md``, or a
            folder of them, read like the run's source) or a Hub id (its ``train`` split). The text compared is
            their ``instruction`` column, else ``prompt``, ``question`` or ``text``, else their first string column.
        column (`str`, *optional*, defaults to `"instruction"`): the column of the pairs that is compared.

    Raises:
        [`InvalidConfigError`]: `threshold` is not in (0, 1].

    Example (with the default model, which comes from the Hub once):

    ```py
    >>> from datasets import Dataset
    >>> pairs = Dataset.from_dict({
    ...     "passage_id": ["a", "b", "c"], "sample_index": [0, 0, 0], "reward": [0.2, 0.9, 0.5],
    ...     "instruction": ["How do plants make food?", "How do plants make their food?", "Who wrote Ulysses?"],
    ... })
    >>> found = SemanticDedup(threshold=0.9).apply(pairs)
    >>> found.kept["passage_id"], found.drops
    (['b', 'c'], {('a', 0): Drop(reason='semantic_duplicate', detail='b')})
    ```
    """

    name: ClassVar[str] = "semantic_dedup"

    threshold: float = 0.9
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    against: list[str] = field(default_factory=list)
    column: str = "instruction"

    def __post_init__(self) -> None:
        check_number(
            "threshold",
            self.threshold,
            above=0,
            maximum=1,
            detail="(the cosine similarity at which two instructions count as the same)",
            hint="0.9 is the usual choice; lower drops more.",
        )
        if isinstance(self.against, str):
            self.against = [self.against]
        self.against = list(self.against)

    def check(self) -> None:
        """Check, before any work, that semhash and model2vec are installed and that the embedding model can be had.

        Nothing is loaded: a local folder must hold a saved model, a Hub id must be in the local cache or the Hub
        must answer. The `against` datasets given as local files must exist.

        Raises:
            [`MissingDependencyError`]: semhash or model2vec is not installed.
            [`ModelNotFoundError`]: `embedding_model` is a local folder that is missing or holds no saved model.
            [`ModelUnreachableError`]: `embedding_model` is a Hub id that is not cached while the Hub is off or
                does not answer.
            [`SourceError`]: an `against` dataset given as local files does not exist.
        """
        _import_semhash()
        check_model_path(self.embedding_model)
        try:
            check_model_reachable(self.embedding_model, setting=_SETTING)
        except ModelUnreachableError as err:  # the same, with the way out that fits a model2vec model
            why = str(err).split(": pass ")[0].replace("model ", "embedding model ", 1)
            raise ModelUnreachableError(
                f"{why}: pass {_SETTING}=PATH, a local copy (a folder written by StaticModel.save_pretrained), or "
                f"download it once where there is a network (hf download {self.embedding_model})."
            ) from None
        for dataset in self.against:
            if is_local(dataset) and not Path(dataset).exists():
                raise SourceError(
                    f"dataset to deduplicate against {dataset!r} does not exist; pass an existing file or folder, "
                    "or a Hub dataset id."
                )

    def apply(self, pairs: Dataset, candidates: Dataset | None = None) -> FilterOutcome:
        """Drop the pairs that repeat an `against` row (``repeats_existing``) or a better one (``semantic_duplicate``).

        Args:
            pairs (`datasets.Dataset`): the kept pairs.
            candidates (`datasets.Dataset`, *optional*): not used.

        Returns:
            [`FilterOutcome`]: the pairs kept, in their order; each drop's detail is the `passage_id` of the pair it
            repeats, or ``"{dataset}#{row}"`` for a row of an `against` dataset (its index, from 0). The figures
            hold the settings and, under ``repeats_existing``, how many pairs each `against` dataset removed.

        Raises:
            [`MissingColumnsError`]: the pairs lack `column` or ``passage_id``.
            [`MissingDependencyError`], [`ModelNotFoundError`]: see [`check`].
        """
        if self.column not in pairs.column_names or "passage_id" not in pairs.column_names:
            missing = [c for c in (self.column, "passage_id") if c not in pairs.column_names]
            raise MissingColumnsError(self.name, missing, pairs.column_names)
        figures: dict[str, Any] = {
            "threshold": self.threshold,
            "embedding_model": self.embedding_model,
            "against": list(self.against),
            "repeats_existing": dict.fromkeys(self.against, 0),
        }
        drops: list[Drop | None] = [None] * len(pairs)
        if not len(pairs):
            return outcome(self.name, pairs, drops, figures)
        semhash = _import_semhash()
        model = self._model()
        read = [self.column, "passage_id", *(["reward"] if "reward" in pairs.column_names else [])]
        columns = pairs.select_columns(read).to_dict()  # lists, not a Column read row by row
        texts = [text or "" for text in columns[self.column]]
        ids = columns["passage_id"]
        rewards = columns.get("reward", [None] * len(pairs))
        # Best reward first, so that semhash, which keeps the first of near repeats, keeps the better one.
        remaining = sorted(range(len(pairs)), key=lambda i: (rewards[i] is None, -(rewards[i] or 0.0)))

        for dataset in self.against:
            rows = _against_rows(dataset)
            if not rows or not remaining:
                continue
            index = semhash.SemHash.from_records(rows, columns=["text"], model=model, ann_backend=_search(len(rows)))
            found = index.deduplicate([{"text": texts[i], "pair": i} for i in remaining], threshold=self.threshold)
            for duplicate in found.filtered:
                row = duplicate.duplicate_of["row"]
                drops[duplicate.record["pair"]] = Drop("repeats_existing", f"{dataset}#{row}")
            figures["repeats_existing"][dataset] = len(found.filtered)
            remaining = [i for i in remaining if drops[i] is None]

        if remaining:
            records = [{"text": texts[i], "pair": i} for i in remaining]
            index = semhash.SemHash.from_records(
                records, columns=["text"], model=model, ann_backend=_search(len(records))
            )
            for duplicate in index.self_deduplicate(threshold=self.threshold).filtered:
                drops[duplicate.record["pair"]] = Drop("semantic_duplicate", ids[duplicate.duplicate_of["pair"]])
        return outcome(self.name, pairs, drops, figures)

    def _model(self) -> Any:
        """The embedding model, loaded once per process (never held by the filter, so never pickled)."""
        return load_once(("model2vec", self.embedding_model), lambda: _load_model(self))


def _import_semhash() -> Any:
    """The `semhash` module, or a [`MissingDependencyError`] with the pip command."""
    try:
        import model2vec  # noqa: F401
        import semhash
    except ImportError as err:
        raise MissingDependencyError(
            f"semantic deduplication needs semhash and model2vec, and {err.name or 'one'} is not installed; {_INSTALL}"
        ) from err
    return semhash


def _search(rows: int) -> str:
    """The vicinity backend for an index of `rows` rows: exact up to [`EXACT_SEARCH_ROWS`], else approximate."""
    return "basic" if rows <= EXACT_SEARCH_ROWS else "usearch"


def _load_model(dedup: SemanticDedup) -> Any:
    dedup.check()
    from model2vec import StaticModel

    name = dedup.embedding_model
    try:
        # force_download=False: a Hub model already cached is read from the cache, also offline.
        return StaticModel.from_pretrained(name, force_download=False)
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelNotFoundError(
            f"embedding model {name!r} cannot be loaded as a model2vec model ({reason}); pass {_SETTING}= a Hub id "
            "such as minishlab/potion-base-8M or a folder written by StaticModel.save_pretrained."
        ) from None


def _against_rows(dataset: str) -> list[dict[str, Any]]:
    """The rows of an `against` dataset as semhash records: ``{"text": ..., "row": index}``, empty texts left out."""
    import datasets

    if is_local(dataset):
        try:
            table = read_local(Path(dataset))
        except SourceError as err:
            raise type(err)(f"dataset to deduplicate against: {err}") from err
    else:
        try:
            table = datasets.load_dataset(dataset, split="train")
        except ConnectionError as err:
            raise not_here_nor_reachable(dataset, err, setting="dedup_against") from None
    column = _text_column(dataset, table)
    rows = [{"text": text, "row": row} for row, text in enumerate(table[column]) if text]
    logger.info("Deduplicating against %s: %d rows, column %r.", dataset, len(rows), column)
    return rows


def _text_column(dataset: str, table: Dataset) -> str:
    """The column of `table` to compare: the first of `AGAINST_COLUMNS` present, else the first string column."""
    for column in AGAINST_COLUMNS:
        if column in table.column_names:
            return column
    for column, feature in table.features.items():
        if getattr(feature, "dtype", None) in ("string", "large_string"):
            return column
    raise MissingColumnsError(
        f"dataset to deduplicate against {dataset!r}",
        ["instruction"],
        table.column_names,
        f"It needs a column of text: one of {', '.join(AGAINST_COLUMNS)}, or any string column.",
    )
