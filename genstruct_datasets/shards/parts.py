"""The batch checkpoint: a shard's finished passages, kept as small parquet parts beside it while it is built.

A shard is written whole when it is done; until then, each group of passages the generator finishes is written at once
as a part (``candidates-00003-of-00010.parts/part-*.parquet``), whole or not at all. A run killed mid-shard leaves its
parts, and the next run of the same recipe generates only the passages they lack: a kill costs the passages in flight
and one write group, not the shard. The parts live in the recipe's work folder (named by its `config_id`), so that
another recipe never reads them; each is checked against the shard's block before its passages are reused.

Why parquet parts rather than a SQLite cache of requests (datatrove's inference runner keeps one): the parts hold
the generator's rows as the shard holds them, so they are read back with the shard's own tools; each is written by one
process under a name of its own and renamed into place, so the worker processes of a map (`num_proc`), the ranks of
`torchrun` and Ray workers write side by side with no lock, also on a network file system where SQLite's locks are
unreliable; and a part cut short by a kill or a full disk is one unreadable file, skipped, not a database to repair.
"""

from __future__ import annotations

import logging
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .._atomic import atomic_path
from ..columns import FEATURES

if TYPE_CHECKING:
    import datasets
    import pyarrow as pa

logger = logging.getLogger(__name__)


@dataclass
class ShardParts:
    """The parts of one shard: a map callable's sink for finished rows, and their reader for the next run.

    It is called (``parts(rows)``) with the generator's rows of some finished passages, in the process that generated
    them (a map worker, a Ray worker), and writes them as one part; the passages with a failed sample
    (``finish_reason="error"``) are left out, since they are not finished work. It pickles as its folder and columns.

    Args:
        folder (`Path`): the shard's parts folder, beside the shard (``{shard}.parts``).
        features (`datasets.Features`): the columns of the generator's rows (the block's, then the generator's).

    Example:

    ```py
    >>> import tempfile
    >>> from pathlib import Path
    >>> from datasets import Features, Value
    >>> features = Features({"title": Value("string"), "passage_id": Value("string"), "sample_index": Value("int32"),
    ...     "completion": Value("string"), "finish_reason": Value("string"), "completion_tokens": Value("int32")})
    >>> parts = ShardParts(Path(tempfile.mkdtemp()) / "candidates-00000-of-00001.parts", features)
    >>> parts({"title": ["Moon"], "passage_id": ["p1"], "sample_index": [0], "completion": ["Q?"],
    ...        "finish_reason": ["stop"], "completion_tokens": [3]})
    >>> parts.read({"p1"}).num_rows
    1
    ```
    """

    folder: Path
    features: datasets.Features

    @classmethod
    def of(cls, shard: Path, block: datasets.Dataset) -> ShardParts:
        """The parts of the shard written to `shard`, whose passages are `block`."""
        import datasets

        from ..generate import OUTPUT_COLUMNS

        passthrough = {name: kind for name, kind in block.features.items() if name not in OUTPUT_COLUMNS}
        features = datasets.Features({**passthrough, **{name: FEATURES[name] for name in OUTPUT_COLUMNS}})
        return cls(shard.with_name(shard.name.replace(".parquet", ".parts")), features)

    def __call__(self, rows: dict[str, list]) -> None:
        """Write the finished passages of `rows` (a column dict) as one part, whole or not at all."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        failed = {pid for pid, reason in zip(rows["passage_id"], rows["finish_reason"]) if reason == "error"}
        keep = [i for i, pid in enumerate(rows["passage_id"]) if pid not in failed]
        if not keep:
            return
        if len(keep) < len(rows["passage_id"]):
            rows = {name: [values[i] for i in keep] for name, values in rows.items()}
        table = pa.Table.from_pydict({name: rows[name] for name in self.features}, schema=self.features.arrow_schema)
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.folder / f"part-{secrets.token_hex(8)}.parquet") as partial:
            pq.write_table(table, partial)

    def read(self, expected: set[str]) -> datasets.Dataset | None:
        """The rows of the passages the parts hold (each passage once), or None when there are none.

        A part that cannot be read, lacks a column, or holds a passage that is not in `expected` (the shard's block)
        is deleted with a warning, and its passages are generated again.
        """
        import pyarrow as pa

        if not self.folder.is_dir():
            return None
        tables, seen = [], set()
        for path in sorted(self.folder.glob("part-*.parquet")):
            table = self._read_part(path, expected)
            if table is None:
                continue
            ids = table.column("passage_id").to_pylist()
            new = [i for i, pid in enumerate(ids) if pid not in seen]  # a passage written twice is read once
            seen.update(ids)
            if new:
                tables.append(table.take(new) if len(new) < len(ids) else table)
        if not tables:
            return None
        import datasets

        return datasets.Dataset(pa.concat_tables(tables))

    def _read_part(self, path: Path, expected: set[str]) -> pa.Table | None:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
            problem = None
            lacking = sorted(set(self.features) - set(table.column_names))
            if lacking:
                raise KeyError(f"no column(s) {', '.join(lacking)}")
            table = table.select(list(self.features)).cast(self.features.arrow_schema)
            found = set(table.column("passage_id").to_pylist())
            if found - expected:
                problem = f"it holds {len(found - expected)} passage(s) of another block"
            elif "error" in table.column("finish_reason").to_pylist():
                problem = "it holds failed generations"
        except Exception as err:  # truncated, not parquet, columns missing: whatever it is, it cannot be reused
            problem = f"it cannot be read ({type(err).__name__}: {err})"
        if problem is None:
            return table
        logger.warning("Ignoring %s: %s; its passages are generated again.", path, problem)
        path.unlink(missing_ok=True)
        return None

    def clear(self) -> None:
        """Delete the parts (the shard is written, or a forced build starts over)."""
        shutil.rmtree(self.folder, ignore_errors=True)
