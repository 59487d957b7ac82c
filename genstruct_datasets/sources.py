"""Reading a recipe's documents, from local files or the Hub, and the fingerprint of local files.

Local sources are a ``.jsonl``/``.json``, ``.csv``, ``.parquet``, ``.txt`` or ``.md`` file, or a folder of them
(one kind of structured file, or text files). A file that cannot be used (empty, not UTF-8, a malformed line) is
named, with its line, in an [`InvalidSourceError`], never left to a traceback from deep inside a reader.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets

from ._paths import is_local_path
from .errors import InvalidSourceError, MissingColumnsError, SourceError
from .prompt import as_text
from .stage_counts import StageCount

if TYPE_CHECKING:
    from .recipe import GenstructConfig

logger = logging.getLogger(__name__)

STRUCTURED_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
TEXT_FORMATS = (".txt", ".md")
_MARKDOWN_TITLE = re.compile(r"^#[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


def is_local(source: str) -> bool:
    """Whether `source` names local files rather than a Hub dataset: an existing path, a file name of a supported
    kind, or a name that can only be a path (``./corpus``, ``/data/corpus``, ``~/corpus``; see `is_local_path`)."""
    return is_local_path(source, suffixes=(*STRUCTURED_FORMATS, *TEXT_FORMATS))


def passage_columns(
    source: str,
    name: str | None = None,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The column settings for a source whose text column the user did not name.

    Documents come in a ``text`` column by default. A source with a ``content`` column and no ``text`` one (the
    shape of Genstruct's own passages, ``title`` and ``content``) holds passages already: its rows are read as
    they are, without splitting, and one log line says so.

    Args:
        source (`str`): local files or a Hub dataset id, as [`load_genstruct`] takes them.
        name (`str`, *optional*): the Hub dataset's config.
        revision (`str`, *optional*): the Hub dataset's revision.
        token (`str` or `bool`, *optional*): a Hub token.
        cache_dir (`str`, *optional*): the `datasets` cache for local structured files (read once, then reused).

    Returns:
        `dict`: ``{"text_column": "content", "split_documents": False}`` for such a source, else ``{}`` (also for
        a Hub dataset whose columns are not known before it is downloaded).

    Raises:
        [`SourceError`]: local files that cannot be read (see [`read_local`]).
    """
    if is_local(source):
        path = Path(source)
        if path.exists() and all(file.suffix in TEXT_FORMATS for file in _source_files(path)):
            return {}  # text files are documents, read into `text`
        columns = read_local(path, cache_dir=cache_dir).column_names
    else:
        try:
            features = datasets.load_dataset_builder(source, name, revision=revision, token=token).info.features
        except Exception as err:  # noqa: BLE001  a peek only: reading the source reports what is wrong
            logger.debug("The columns of %s are not known before it is read: %s", source, err)
            return {}
        columns = list(features or ())
    if "content" not in columns or "text" in columns:
        return {}
    logger.info(
        "%s has a 'content' column and no 'text' column: its rows are read as passages, without splitting "
        "(name the text column, e.g. --text-column content, to split them).",
        source,
    )
    return {"text_column": "content", "split_documents": False}


def read_source(
    config: GenstructConfig, *, token: str | bool | None = None, cache_dir: str | os.PathLike | None = None
) -> datasets.Dataset:
    """Read the recipe's documents: from local files, or from the Hub.

    Args:
        config ([`GenstructConfig`]): the recipe; `source` and the `source_*` fields say what to read.
        token (`str` or `bool`, *optional*): a Hub token, for private or gated source datasets.
        cache_dir (`str`, *optional*): where `datasets` caches the documents (and the maps over them); defaults
            to the `datasets` cache.

    Returns:
        `datasets.Dataset`: the documents, with the recipe's title and text columns.

    Raises:
        [`SourceError`]: a local path that does not exist or holds no supported files.
        [`InvalidSourceError`]: a local file that cannot be used (see [`read_local`]).
        [`MissingColumnsError`]: the documents lack the title or text column.
    """
    if config.source is None:
        raise SourceError("No source given: pass source=, a Hub dataset id or local files.")
    columns = config.splitter()
    title_column, text_column = columns.title_column, columns.text_column
    if is_local(config.source):
        documents = read_local(
            Path(config.source), title_column=title_column, text_column=text_column, cache_dir=cache_dir
        )
    else:
        hub = {"split": config.source_split, "revision": config.source_revision, "token": token}
        try:
            if config.limit is not None:
                # A trial run on a large Hub corpus streams the first documents instead of preparing the whole split.
                stream = datasets.load_dataset(config.source, config.source_name, streaming=True, **hub)
                documents = datasets.Dataset.from_list(list(stream.take(config.limit)), features=stream.features)
            else:
                documents = datasets.load_dataset(config.source, config.source_name, cache_dir=cache_dir, **hub)
        except ConnectionError as err:
            raise not_here_nor_reachable(config.source, err) from None
    missing = [c for c in (title_column, text_column) if c not in documents.column_names]
    if missing:
        raise MissingColumnsError(
            f"source {config.source!r}",
            missing,
            documents.column_names,
            "Name yours with title_column= and text_column=.",
        )
    files = _source_files(Path(config.source)) if is_local(config.source) else None
    return _text_columns(documents, (title_column, text_column), config.source, files)


def source_fingerprint(source: str) -> str | None:
    """Sizes and modification times of a local source's files (None for a Hub id), for the recipe's hash."""
    path = Path(source)
    if not path.exists():
        return None
    files = _source_files(path)
    return datasets.fingerprint.Hasher.hash([(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files])


def read_local(
    path: Path,
    *,
    title_column: str = "title",
    text_column: str = "text",
    cache_dir: str | os.PathLike | None = None,
) -> datasets.Dataset:
    """Read local documents: a structured file (or a folder of them) as it is, text files as one document each.

    Args:
        path (`Path`): a file, or a folder of files of one kind.
        title_column, text_column (`str`, *optional*, defaults to `"title"` and `"text"`): the columns that text
            files fill: the first Markdown heading (else the file's name), and the file's text.
        cache_dir (`str`, *optional*): where `datasets` caches structured files.

    Returns:
        `datasets.Dataset`: the documents.

    Raises:
        [`SourceError`]: `path` does not exist, holds no supported files or mixes kinds.
        [`InvalidSourceError`]: a file is empty, not UTF-8, or has a malformed line (named, with the line).
    """
    files = _readable_files(path)
    kind = STRUCTURED_FORMATS.get(files[0].suffix, "text")
    if kind != "text":
        return _read_structured(path, files, kind, cache_dir)
    titles, texts = [], []
    for file in files:
        raw = file.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidSourceError(_not_utf8(file, raw[err.start], raw.count(b"\n", 0, err.start) + 1)) from None
        heading = _MARKDOWN_TITLE.search(text) if file.suffix == ".md" else None
        titles.append(heading.group(1) if heading else file.stem.replace("_", " "))
        texts.append(text)
    return datasets.Dataset.from_dict({title_column: titles, text_column: texts})


def check_source(source: str) -> None:
    """Refuse local files that cannot be read, before any other input is looked at: a user expects to hear about the
    source first. A Hub dataset id passes; it is looked at when it is read.

    Args:
        source (`str`): local files or a Hub dataset id, as [`load_genstruct`] takes them.

    Raises:
        [`SourceError`]: a local path that does not exist, holds no supported files, or mixes kinds of files.

    Example:

    ```py
    >>> check_source("wikimedia/wikipedia")  # a Hub id: looked at when it is read
    >>> check_source("missing.jsonl")
    Traceback (most recent call last):
    SourceError: source 'missing.jsonl' does not exist; pass an existing file or folder as source=, or a Hub ...
    ```
    """
    if is_local(source):
        _readable_files(Path(source))


def _readable_files(path: Path) -> list[Path]:
    """The supported files of a local source, all of one kind.

    Raises:
        [`SourceError`]: `path` does not exist, holds no supported files or mixes kinds.
    """
    if not path.exists():
        raise SourceError(
            f"source {str(path)!r} does not exist; pass an existing file or folder as source=, or a Hub dataset id."
        )
    files = _source_files(path)
    kinds = {STRUCTURED_FORMATS.get(f.suffix, "text") for f in files}
    if not files:
        raise SourceError(
            f"{str(path)!r} holds no supported files; use {', '.join((*STRUCTURED_FORMATS, *TEXT_FORMATS))}."
        )
    if len(kinds) > 1:
        raise SourceError(
            f"{str(path)!r} mixes files of kinds {sorted(kinds)}; put one kind of file in a folder and run each apart."
        )
    return files


def _text_columns(
    documents: datasets.Dataset, columns: tuple[str, ...], source: str, files: list[Path] | None
) -> datasets.Dataset:
    """The documents with their title and text columns as text: numbers read as text ([`as_text`]); a boolean, a
    list or an object refused, with the column, the file and line (else the row) and the type. A CSV file has no
    types: its reader's booleans were words of the file (``True``), and are read back as text."""
    csv = bool(files) and STRUCTURED_FORMATS.get(files[0].suffix) == "csv"
    for column in dict.fromkeys(columns):
        feature = documents.features[column]
        if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string", "null"):
            continue
        texts = []
        for row, value in enumerate(documents[column]):
            try:
                texts.append(str(value) if csv and isinstance(value, bool) else as_text(value))
            except TypeError as err:
                shown = json.dumps(value, ensure_ascii=False, default=str)
                shown = shown if len(shown) <= 40 else f"{shown[:37]}..."
                raise InvalidSourceError(
                    f"{_row_place(source, files, row)}: {column!r} holds {err} ({shown}), not text; a title or a text "
                    "is a string (a number is read as one): write it as one, or name other columns (title_column=, "
                    "text_column=)."
                ) from None
        order = documents.column_names
        documents = documents.remove_columns(column).add_column(column, texts, feature=datasets.Value("string"))
        documents = documents.select_columns(order)
    return documents


def _row_place(source: str, files: list[Path] | None, row: int) -> str:
    """Where the documents' row `row` (from 0) was read: a JSON-lines file and its line, else the row's index."""
    left = row
    for file in files or ():
        text = file.read_text(encoding="utf-8") if file.suffix in (".jsonl", ".json") else None
        if text is None or (file.suffix == ".json" and _one_json_document(text)):
            break  # a CSV or parquet file, or one JSON document: its rows have no line of their own
        lines = [number for number, line in enumerate(text.splitlines(), 1) if line.strip()]
        if left < len(lines):
            return f"{str(file)!r}, line {lines[left]}"
        left -= len(lines)
    return f"{source!r}, row index {row}"


def _one_json_document(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def _source_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    supported = (*STRUCTURED_FORMATS, *TEXT_FORMATS)
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in supported and not p.name.startswith("."))


def _read_structured(path: Path, files: list[Path], kind: str, cache_dir) -> datasets.Dataset:
    """Read structured files with `datasets`; when that fails, find the file and line to blame."""
    # The readers log their failures at ERROR level before raising; the error raised here says it better.
    readers = logging.getLogger("datasets.packaged_modules")
    level = readers.level
    readers.setLevel(logging.CRITICAL)
    try:
        with quiet_loading_bars():
            documents = datasets.load_dataset(
                kind, data_files=[str(f) for f in files], split="train", cache_dir=cache_dir
            )
        # The JSON and CSV readers let bytes that are not UTF-8 through, to fail when a row is read: check now.
        documents.data.table.validate(full=True)
    except (StopIteration, ValueError, datasets.exceptions.DatasetGenerationError) as err:
        # The readers' own chain adds nothing to the file and line named here: kept for a DEBUG log only.
        logger.debug("Reading %s failed: %r", path, err)
        raise InvalidSourceError(_unreadable(path, files, kind, err)) from None
    finally:
        readers.setLevel(level)
    return documents


@contextlib.contextmanager
def quiet_loading_bars() -> Iterator[None]:
    """Hide `datasets`' progress bars for the time of the block: the "Generating train split" bar of local files read
    in a second, which says nothing and would sit above the error line of a file that cannot be read. The bars are
    shown again after it, unless they were hidden before; ``HF_DATASETS_DISABLE_PROGRESS_BARS=0`` keeps them.

    Example:

    ```py
    >>> with quiet_loading_bars():
    ...     datasets.utils.are_progress_bars_disabled()
    True

    ```
    """
    hidden = datasets.utils.are_progress_bars_disabled()
    if hidden or datasets.config.HF_DATASETS_DISABLE_PROGRESS_BARS is False:
        yield
        return
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.enable_progress_bars()


def _unreadable(path: Path, files: list[Path], kind: str, err: Exception) -> str:
    """Why structured files failed to read: the first file (and line) to blame, else the reader's reason."""
    for file in files:
        problem = _file_problem(file, kind)
        if problem:
            return problem
    if "corresponds to no data" in str(err):
        return f"{str(path)!r} holds no documents; add rows to it."
    cause = err.__cause__ or err
    reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return f"cannot read {str(path)!r}: {reason}"


def structured_file_problem(path: str | Path) -> str | None:
    """What is wrong with the structured files of a folder (or a file), in a sentence that names the first file to
    blame and its line; None when each one reads.

    Args:
        path (`str` or `Path`): a file, or a folder whose .jsonl/.json/.csv/.parquet files are looked at.

    Returns:
        `str` or `None`: the problem (a malformed line, a file not UTF-8, an empty file), or None.

    Example:

    ```py
    >>> import tempfile
    >>> from pathlib import Path
    >>> bad = Path(tempfile.mkdtemp()) / "rows.jsonl"
    >>> _ = bad.write_text('{"a": 1}\\n{"a": \\n')
    >>> structured_file_problem(bad).endswith("line 2: not valid JSON (Expecting value); fix or remove that line.")
    True

    ```
    """
    for file in _source_files(Path(path)):
        kind = STRUCTURED_FORMATS.get(file.suffix)
        problem = _file_problem(file, kind) if kind else None
        if problem:
            return problem
    return None


def _file_problem(file: Path, kind: str) -> str | None:
    """What is wrong with one structured file, in a sentence that names it (and the line), or None."""
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            pq.read_metadata(file)
        except Exception as err:  # noqa: BLE001  any reason makes the file unreadable
            return f"{str(file)!r} is not a readable parquet file ({err}); write it again, or remove it."
        return None
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return _not_utf8(file, raw[err.start], raw.count(b"\n", 0, err.start) + 1)
    if not text.strip():
        return f"{str(file)!r} is empty; add documents to it, or remove it."
    if kind != "json":
        return None
    if file.suffix == ".json":
        try:
            json.loads(text)
            return None  # one JSON document
        except json.JSONDecodeError as err:
            whole = err  # or JSON lines: look at them one by one
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if file.suffix == ".json" and number == 1:  # not JSON lines either: the document's own error
                return f"{str(file)!r}, line {whole.lineno}: not valid JSON ({whole.msg}); fix it."
            return f"{str(file)!r}, line {number}: not valid JSON ({err.msg}); fix or remove that line."
        if not isinstance(row, dict):
            return f"{str(file)!r}, line {number}: not a JSON object; each line holds one document, {{...}}."
    return None


def _not_utf8(file: Path, byte: int, line: int) -> str:
    return (
        f"{str(file)!r} is not UTF-8 text (byte 0x{byte:02x} on line {line}); convert it, "
        f"e.g. iconv -f latin1 -t utf-8 {file.name} > utf8-{file.name}"
    )


def not_here_nor_reachable(source: str, err: Exception, setting: str | None = "source") -> SourceError:
    """The error for a name that is no local path and no Hub dataset that can be had now (offline, no network): most
    often a mistyped folder or file name. `setting` is the setting that names it, for the message (None: none). `err`,
    the Hub client's failure, goes to a DEBUG log line: raise the error ``from None``, its chain adds nothing."""
    logger.debug("The Hub dataset %s cannot be had now: %r", source, err)
    return SourceError(
        f"{source!r} is not a local file or folder, and the Hub dataset of that name cannot be had now "
        f"({type(err).__name__}); check the path{f' ({setting}=)' if setting else ''}, or the network and "
        "HF_HUB_OFFLINE."
    )


def read_passages(
    config: GenstructConfig,
    *,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    load_from_cache_file: bool = True,
) -> Passages:
    """The recipe's passages: its documents read ([`read_source`]) and split ([`PassageSplitter`]), or taken as
    passages already (``split_documents=False``; those shorter than `min_tokens` left out, see
    [`PassageSplitter.read_as_is`]), then cut to `limit`.

    The recipe's models are checked before any of them runs ([`GenstructConfig.check_models`]): the splitter loads
    the generator's tokenizer.

    Args:
        config ([`GenstructConfig`]): the recipe.
        token (`str` or `bool`, *optional*): a Hub token for private or gated sources and models.
        cache_dir (`str` or `os.PathLike`, *optional*): where the documents and the maps over them are cached.
        load_from_cache_file (`bool`, *optional*, defaults to `True`): reuse the split's cached result.

    Returns:
        [`Passages`]: the passages (`title`, `content`, `document_id` and `passage_index`) and the account of the
        passages stage.

    Raises:
        [`SourceError`], [`InvalidSourceError`], [`MissingColumnsError`]: see [`read_source`]; also a source whose
            documents give no passage at all.
        [`ModelNotFoundError`], [`InvalidConfigError`]: see [`GenstructConfig.check_models`].
    """
    splitter = config.splitter()
    documents = read_source(config, token=token, cache_dir=cache_dir)
    config.check_models(token=token)
    if config.limit is not None:
        documents = documents.select(range(min(config.limit, documents.num_rows)))
    if config.split_documents:
        passages = documents.map(
            splitter, batched=True, load_from_cache_file=load_from_cache_file, desc="Splitting passages"
        )
    else:
        passages = documents.map(
            splitter.read_as_is,
            batched=True,
            remove_columns=documents.column_names,
            load_from_cache_file=load_from_cache_file,
            desc="Reading passages",
        )
    if not passages.num_rows:
        raise InvalidSourceError(_no_passages(config, documents.num_rows))
    passages = passages.select_columns(["title", "content", "document_id", "passage_index"])
    with_passages = _count_documents(passages)
    if config.limit is not None:
        passages = passages.select(range(min(config.limit, passages.num_rows)))
    stage = StageCount(
        "passages",
        "documents",
        seen=documents.num_rows,
        kept=_count_documents(passages),
        dropped={
            reason: n
            for reason, n in (
                ("too_short", documents.num_rows - with_passages),
                ("beyond_limit", with_passages - _count_documents(passages)),
            )
            if n
        },
    )
    return Passages(passages, stage)


@dataclass
class Passages:
    """A recipe's passages, and the account of the stage that made them from its documents.

    Args:
        rows (`datasets.Dataset`): `title`, `content`, `document_id` and `passage_index`.
        stage ([`StageCount`]): documents seen; kept (they gave passages of the run); dropped as ``too_short`` (empty,
            or shorter than `min_tokens`: no passage) or ``beyond_limit`` (their passages came after `limit`).
    """

    rows: datasets.Dataset
    stage: StageCount


def _count_documents(passages: datasets.Dataset) -> int:
    """How many documents the passages come from (distinct `document_id`), counted in Arrow."""
    import pyarrow.compute as pc

    return pc.count_distinct(passages.with_format("arrow")["document_id"]).as_py()


def _no_passages(config: GenstructConfig, documents: int) -> str:
    """Why a source gave no passage at all, and what to do about it."""
    if not documents:
        return f"source {config.source!r} holds no documents; check the source and its split ({config.source_split})."
    splitter = config.splitter()
    return (
        f"none of the {documents} document(s) of {config.source!r} gave a passage: their {splitter.text_column!r} "
        f"is empty, or shorter than the shortest passage, {splitter.min_tokens} tokens. Check the text column "
        f"(text_column=), or lower the shortest passage: min_tokens=N, at most max_tokens={splitter.max_tokens}."
    )
