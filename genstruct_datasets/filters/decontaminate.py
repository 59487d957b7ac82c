"""Decontamination: drop the pairs that share a word n-gram with a benchmark the trained model will be evaluated on.

A benchmark is named by a spec (see [`parse_benchmark`]): a Hub dataset with its config and split, or local files,
with the columns to read (every text column by default). Each benchmark is read once into an index, the set of the
64-bit hashes of its word n-grams; then one pass over the pairs hashes the n-grams of each pair's instruction and
response and looks them up. A pair that shares one n-gram with a benchmark is dropped, with the benchmark's name as
its reason and the n-gram as its detail.

Words are what is left of a text once it is lowercased and split on everything but letters and digits (Unicode ones
included: ``Ölçüm``, ``東京`` and ``42`` are words, ``-`` and ``’`` are not), so case and punctuation never hide an
overlap. The n-gram size follows the field: 13 words by default as in GPT-3's and NeMo Curator's decontamination
(datatrove uses 12, Tulu 3 used 8). A text shorter than N words has no n-gram, so it neither matches nor is matched:
as in open-instruct's n-gram search, a short benchmark string (a one-word answer, a multiple-choice option) is not
looked for, which keeps common short phrases from removing pairs by chance; lower N to catch short items.
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._checks import check_number
from ..errors import InvalidConfigError, InvalidSourceError, SourceError, check_columns
from ..sources import STRUCTURED_FORMATS, TEXT_FORMATS, is_local, read_local
from .base import Drop, FilterOutcome, PairFilter, outcome

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

_WORD = re.compile(r"[^\W_]+")  # runs of Unicode letters and digits: \w without the underscore
_BATCH = 1000


@dataclass(frozen=True)
class BenchmarkSpec:
    """A benchmark to decontaminate against, as [`parse_benchmark`] reads it from its spec.

    Args:
        name (`str`): a Hub dataset id (``cais/mmlu``) or a local file or folder (``evals/bench.jsonl``).
        config (`str`, *optional*): the Hub dataset's config (``all``); None for its default, and for local files.
        split (`str`, *optional*): the Hub dataset's split; None takes its only split, else its ``test`` split.
        columns (`tuple[str, ...]`, *optional*): the columns whose text is indexed; None for every text column
            (strings, and lists of strings such as MMLU's ``choices``).
    """

    name: str
    config: str | None = None
    split: str | None = None
    columns: tuple[str, ...] | None = None

    @property
    def local(self) -> bool:
        """Whether `name` means local files rather than a Hub dataset."""
        return is_local(self.name)

    @property
    def label(self) -> str:
        """How the report names the benchmark: the spec without its columns (``cais/mmlu:all:test``)."""
        parts = [self.name, self.config or "", self.split or ""]
        while len(parts) > 1 and not parts[-1]:
            parts.pop()
        return ":".join(parts)


def parse_benchmark(spec: str) -> BenchmarkSpec:
    """Read a benchmark spec: ``NAME[:CONFIG[:SPLIT]][#COLUMN,COLUMN...]``.

    ``NAME`` is a local file or folder (``.jsonl``, ``.json``, ``.csv``, ``.parquet``, ``.txt``, ``.md``; the rule
    of sources: an existing path, a name of those kinds, or a name that can only be a path), which takes no config
    or split, or else a Hub dataset id. ``CONFIG`` and ``SPLIT`` pick the Hub dataset's config and split; leave
    ``CONFIG`` empty for the default one (``openai/openai_humaneval::test``). Without ``SPLIT``, a dataset's only
    split is read, else its ``test`` split. ``#COLUMNS`` names the columns to read, comma-separated; without it,
    every text column is read. A path that exists with a ``#`` in its name is read as a path.

    Args:
        spec (`str`): the spec, as given to ``--decontaminate``.

    Returns:
        [`BenchmarkSpec`]: the benchmark's name, config, split and columns.

    Raises:
        [`InvalidConfigError`]: an empty spec, an empty name or column, a config or split given to local files,
            or more than two ``:`` after a Hub id.

    Example:

    ```py
    >>> parse_benchmark("cais/mmlu:all:test#question,choices")
    BenchmarkSpec(name='cais/mmlu', config='all', split='test', columns=('question', 'choices'))
    >>> parse_benchmark("evals/bench.jsonl#prompt")
    BenchmarkSpec(name='evals/bench.jsonl', config=None, split=None, columns=('prompt',))
    ```
    """
    syntax = "NAME[:CONFIG[:SPLIT]][#COLUMN,...], e.g. cais/mmlu:all:test#question or evals/bench.jsonl"
    text = spec.strip() if isinstance(spec, str) else ""
    if not text:
        raise InvalidConfigError(f"A benchmark spec must name a benchmark, got {spec!r}; use {syntax}.")
    head, columns = text, None
    if "#" in text and not Path(text).exists():
        head, _, wanted = text.rpartition("#")
        columns = tuple(column.strip() for column in wanted.split(","))
        if not all(columns):
            raise InvalidConfigError(
                f"Benchmark spec {spec!r} names an empty column after '#'; name them comma-separated: {syntax}."
            )
    if is_local(head):
        return BenchmarkSpec(head, columns=columns)
    parts = head.split(":")
    if len(parts) > 3 or not parts[0]:
        raise InvalidConfigError(
            f"Benchmark spec {spec!r} is not a local file and not a Hub id with at most a config and a split; "
            f"use {syntax}."
        )
    if is_local(parts[0]):
        raise InvalidConfigError(
            f"Benchmark spec {spec!r}: local files {parts[0]!r} take no config or split; pass {parts[0]!r} alone, "
            "or a folder of the files to read."
        )
    parts += [""] * (3 - len(parts))
    return BenchmarkSpec(parts[0], parts[1] or None, parts[2] or None, columns)


def words(text: str) -> list[str]:
    """The words of `text` that n-grams are made of: lowercased, split on everything but letters and digits.

    The text is NFKC-normalised first, so a letter with a composed or a combining accent is the same word.

    Example:

    ```py
    >>> words("Grand-Père's café, 3.5 km—FAR!")
    ['grand', 'père', 's', 'café', '3', '5', 'km', 'far']
    ```
    """
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def _hasher():
    """A stable 64-bit hash of a string (the builtin `hash` of a str changes with each process): xxh3, which
    `datasets` depends on, or blake2b where it is missing."""
    try:
        import xxhash
    except ImportError:  # pragma: no cover - xxhash comes with datasets

        def blake(text: str) -> int:
            return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")

        return blake
    intdigest = xxhash.xxh3_64_intdigest
    return lambda text: intdigest(text.encode())


_hash = _hasher()


def ngram_hashes(tokens: list[str], n: int) -> list[int]:
    """The hashes of the word n-grams of `tokens`, in order (none when there are fewer than `n` words)."""
    return [_hash(" ".join(tokens[i : i + n])) for i in range(len(tokens) - n + 1)]


@dataclass
class BenchmarkIndex:
    """One benchmark read into an index: the hashes of its n-grams, and what the pass found in it.

    Args:
        spec ([`BenchmarkSpec`]): the benchmark.
        rows (`int`): the benchmark's rows read.
        hashes (`set[int]`): the 64-bit hashes of every n-gram of every text of every row.
        matched (`dict[int, str]`): the n-grams that pairs shared with it, by hash, as words (filled by the pass,
            from the pairs' own text: the benchmark's texts are not kept).
    """

    spec: BenchmarkSpec
    rows: int
    hashes: set[int]
    matched: dict[int, str] = field(default_factory=dict)


def build_index(spec: BenchmarkSpec, benchmark: datasets.Dataset, columns: Iterable[str], n: int) -> BenchmarkIndex:
    """Hash every n-gram of every text in `columns` of every row of `benchmark` into a [`BenchmarkIndex`]."""
    hashes: set[int] = set()
    for text in _texts(benchmark, list(columns)):
        tokens = words(text)
        if len(tokens) >= n:
            hashes.update(ngram_hashes(tokens, n))
    return BenchmarkIndex(spec, benchmark.num_rows, hashes)


def _texts(dataset: datasets.Dataset, columns: list[str]) -> Iterator[str]:
    """Every string in `columns` of every row, lists of strings flattened, None skipped."""
    for batch in dataset.select_columns(columns).iter(batch_size=_BATCH):
        for values in batch.values():
            for value in values:
                if isinstance(value, str):
                    yield value
                elif isinstance(value, list):
                    yield from (item for item in value if isinstance(item, str))


def _is_text(feature: Any) -> bool:
    """Whether a column holds strings, or lists of strings."""
    import datasets

    if isinstance(feature, datasets.Value):
        return feature.dtype in ("string", "large_string")
    inner = getattr(feature, "feature", None)
    return isinstance(inner, datasets.Value) and inner.dtype in ("string", "large_string")


def read_benchmark(spec: BenchmarkSpec) -> tuple[datasets.Dataset, list[str]]:
    """Read a benchmark, and the text columns to index.

    Returns:
        `tuple[datasets.Dataset, list[str]]`: the benchmark's rows, and its columns to read.

    Raises:
        [`SourceError`]: local files that do not exist, or a Hub dataset that cannot be had now (offline or not
            found); the message says how to pass a local copy.
        [`InvalidSourceError`]: a local file that cannot be read, or a Hub config or split that does not exist.
        [`MissingColumnsError`]: a column named in the spec that the benchmark lacks.
        [`InvalidConfigError`]: a column named that holds no text, or a benchmark with no text column at all.
    """
    benchmark = _read_local(spec) if spec.local else _read_hub(spec)
    stage = f"benchmark {spec.label!r}"
    present = benchmark.column_names
    text_columns = [name for name, feature in benchmark.features.items() if _is_text(feature)]
    if spec.columns is None:
        if not text_columns:
            raise InvalidConfigError(f"{stage} has no text column; it has: {', '.join(present) or '(no columns)'}.")
        return benchmark, text_columns
    check_columns(stage, dict.fromkeys(present), spec.columns, "Name its text columns after '#', e.g. #question.")
    not_text = [name for name in spec.columns if name not in text_columns]
    if not_text:
        raise InvalidConfigError(
            f"{stage}: column(s) {', '.join(map(repr, not_text))} hold no text; its text columns are: "
            f"{', '.join(text_columns) or '(none)'}."
        )
    return benchmark, list(spec.columns)


def _read_local(spec: BenchmarkSpec) -> datasets.Dataset:
    path = Path(spec.name).expanduser()
    if not path.exists():
        kinds = ", ".join((*STRUCTURED_FORMATS, *TEXT_FORMATS))
        raise SourceError(
            f"Benchmark {spec.name!r} does not exist; pass an existing file ({kinds}) or folder of them, "
            "or a Hub dataset id (NAME[:CONFIG[:SPLIT]])."
        )
    return read_local(path)


def _read_hub(spec: BenchmarkSpec) -> datasets.Dataset:
    import datasets

    copy = Path(spec.name).name.lower() + ".jsonl"
    args = ", ".join(repr(part) for part in (spec.name, spec.config) if part is not None)
    where = f"datasets.load_dataset({args}, split={spec.split or 'test'!r}).to_json({copy!r})"
    try:
        loaded = datasets.load_dataset(spec.name, spec.config, split=spec.split)
    except ConnectionError as err:
        raise SourceError(
            f"Benchmark {spec.label!r} is not a local file or folder, and the Hub dataset {spec.name!r} cannot be "
            f"had now ({type(err).__name__}: offline or unreachable); to use it offline, save a copy where the Hub "
            f"is reachable ({where}) and pass the file: --decontaminate {copy}"
        ) from err
    except FileNotFoundError as err:  # datasets' DatasetNotFoundError
        raise SourceError(
            f"Benchmark {spec.label!r} is not a local file or folder, and there is no Hub dataset {spec.name!r} "
            "(or it is private or gated: log in with `hf auth login`); check the name, or pass local files."
        ) from err
    except ValueError as err:  # an unknown config or split
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InvalidSourceError(f"Benchmark {spec.label!r} cannot be read: {first}") from err
    if isinstance(loaded, datasets.Dataset):
        return loaded
    if len(loaded) == 1:
        return next(iter(loaded.values()))
    if "test" in loaded:
        return loaded["test"]
    raise InvalidSourceError(
        f"Benchmark {spec.label!r} has the splits {', '.join(loaded)} and none is 'test'; "
        f"name one: {spec.name}:{spec.config or ''}:{next(iter(loaded))}"
    )


@dataclass
class Decontaminate(PairFilter):
    """Drop the pairs whose instruction or response shares a word n-gram with a benchmark.

    Reads the columns `columns` of the pairs (``instruction`` and ``response``), and ``passage_id`` and
    ``sample_index`` to name the dropped ones; writes nothing: the kept pairs are the rows that share no n-gram.
    A dropped pair's reason is ``contaminated:<benchmark>`` for the first benchmark, in the order given, that it
    shares an n-gram with, and its detail is that n-gram, as words. Each benchmark is read and indexed once per
    instance, on first use; the instance pickles without its indexes.

    Args:
        benchmarks (`list[str]`): benchmark specs (see [`parse_benchmark`]): ``cais/mmlu:all:test#question``,
            ``evals/bench.jsonl``.
        ngram (`int`, *optional*, defaults to `13`): the n-gram size, in words.
        columns (`tuple[str, ...]`, *optional*, defaults to `("instruction", "response")`): the pairs' columns
            that are looked up.

    Raises:
        See [`Decontaminate.check`], which `apply` calls first.

    Example:

    ```py
    >>> import json, tempfile
    >>> from datasets import Dataset
    >>> bench = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
    >>> _ = bench.write(json.dumps({"question": "Which planet is known as the red planet?"}) + "\\n"); bench.close()
    >>> pairs = Dataset.from_dict({"passage_id": ["a", "b"], "sample_index": [0, 0],
    ...     "instruction": ["Which PLANET is known as the Red Planet?", "Why is the sky blue?"],
    ...     "response": ["Mars.", "Scattering."]})
    >>> found = Decontaminate([bench.name], ngram=5).apply(pairs)
    >>> found.kept["passage_id"][:], found.drops[("a", 0)].detail
    (['b'], 'which planet is known as')
    ```
    """

    name = "decontamination"

    benchmarks: list[str]
    ngram: int = 13
    columns: tuple[str, ...] = ("instruction", "response")
    _indexes: list[BenchmarkIndex] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_number("ngram", self.ngram, integer=True, minimum=1, detail="(words per n-gram)")
        if isinstance(self.benchmarks, str):
            self.benchmarks = [self.benchmarks]
        self.benchmarks = list(self.benchmarks)
        self.columns = tuple(self.columns)
        if not self.columns:
            raise InvalidConfigError("Decontaminate needs at least one column of the pairs to look up, got none.")

    def __getstate__(self) -> dict[str, Any]:
        # Heavy state never travels: a copy in a worker reads the benchmarks again.
        return {**self.__dict__, "_indexes": None}

    def specs(self) -> list[BenchmarkSpec]:
        """The benchmarks' specs, parsed; a benchmark named twice is refused."""
        specs = [parse_benchmark(spec) for spec in self.benchmarks]
        labels = [spec.label for spec in specs]
        twice = sorted({label for label in labels if labels.count(label) > 1})
        if twice:
            raise InvalidConfigError(
                f"Benchmark(s) {', '.join(map(repr, twice))} given more than once; name each once "
                "(merge their columns after '#')."
            )
        return specs

    def check(self) -> None:
        """Read every benchmark and build its index, before any other work: the errors come now, one line each.

        Raises:
            [`InvalidConfigError`]: a malformed spec, a benchmark named twice, an n-gram size below 1, a column
                named that holds no text.
            [`SourceError`]: local files that do not exist, or a Hub benchmark that cannot be had now (the message
                names it and, offline, how to pass a local copy).
            [`InvalidSourceError`]: a file that cannot be read, or a Hub config or split that does not exist.
            [`MissingColumnsError`]: a column named that the benchmark lacks (the message lists what it has).
        """
        if self._indexes is not None:
            return
        indexes = []
        for spec in self.specs():
            benchmark, columns = read_benchmark(spec)
            index = build_index(spec, benchmark, columns, self.ngram)
            logger.info(
                "benchmark %s: %d rows, %d distinct %d-grams (columns %s)",
                spec.label,
                index.rows,
                len(index.hashes),
                self.ngram,
                ", ".join(columns),
            )
            indexes.append(index)
        self._indexes = indexes

    def apply(self, pairs: datasets.Dataset, candidates: datasets.Dataset | None = None) -> FilterOutcome:
        """Drop the pairs that share an n-gram with a benchmark; `candidates` are not read.

        Returns:
            [`FilterOutcome`]: the pairs kept, each drop with its benchmark and n-gram, the count, and the figures
            ``{"ngram": N, "benchmarks": {label: {"rows", "ngrams", "removed"}}}``.

        Raises:
            [`MissingColumnsError`]: the pairs lack one of `columns`.
            See [`Decontaminate.check`] for the benchmarks' errors.
        """
        check_columns(self.name, dict.fromkeys(pairs.column_names), ("passage_id", "sample_index", *self.columns))
        self.check()
        indexes = self._indexes or []
        removed = dict.fromkeys((index.spec.label for index in indexes), 0)
        drops: list[Drop | None] = []
        n = self.ngram
        for batch in pairs.select_columns(list(self.columns)).iter(batch_size=_BATCH):
            for row in zip(*(batch[column] for column in self.columns)):
                drop = self._first_match(row, indexes, n)
                if drop is not None:
                    removed[drop.reason.removeprefix("contaminated:")] += 1
                drops.append(drop)
        figures = {
            "ngram": n,
            "benchmarks": {
                label: {"rows": index.rows, "ngrams": len(index.hashes), "removed": removed[label]}
                for label, index in zip(removed, indexes)
            },
        }
        found = outcome(self.name, pairs, drops, figures)
        if found.drops:
            logger.info(
                "decontamination dropped %d of %d pairs (%s)",
                len(found.drops),
                pairs.num_rows,
                ", ".join(f"{label}: {count}" for label, count in removed.items()),
            )
        return found

    @staticmethod
    def _first_match(row: tuple[Any, ...], indexes: list[BenchmarkIndex], n: int) -> Drop | None:
        """Why one pair goes: the first benchmark sharing an n-gram with its texts, and that n-gram; or None."""
        texts = []  # (the text's words, the hashes of its n-grams)
        for text in row:
            if isinstance(text, str):
                tokens = words(text)
                if len(tokens) >= n:
                    texts.append((tokens, ngram_hashes(tokens, n)))
        if not texts:
            return None
        hashes = set(texts[0][1]).union(*(grams for _, grams in texts[1:]))
        for index in indexes:
            common = index.hashes.intersection(hashes)
            if not common:
                continue
            tokens, start, h = next((t, i, h) for t, grams in texts for i, h in enumerate(grams) if h in common)
            ngram = index.matched.setdefault(h, " ".join(tokens[start : start + n]))
            return Drop(f"contaminated:{index.spec.label}", ngram)
        return None
