"""Writing a file (or a new folder) whole or not at all: written beside its target, then renamed onto it."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

PARTIAL_SUFFIX = ".partial"
"""How a file being written ends; readers of a folder that writers share (a shard store) skip such names."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Give a temporary path beside `path` to write to; rename it onto `path` when the block ends without error.

    A process killed mid-write, or a writer that raises, leaves `path` as it was (missing, or the old file whole):
    never a half-written file under the final name. On an error the temporary file is deleted, and the error goes
    up. The temporary name is hidden, ends with ``.partial`` and is unique to the writer, so that processes writing
    the same target side by side (ranks that share a folder) do not write into each other's file.

    Args:
        path (`str` or `os.PathLike`): the file to write. A folder works too, where `path` does not exist yet or is
            an empty folder (`os.replace`'s rule).

    Raises:
        Whatever the block raises; `FileNotFoundError` when the block wrote nothing at the temporary path.

    Example:

    ```py
    >>> import tempfile
    >>> from pathlib import Path
    >>> target = Path(tempfile.mkdtemp()) / "figures.json"
    >>> with atomic_path(target) as partial:
    ...     _ = partial.write_text("{}")
    >>> target.read_text(), [p.name for p in target.parent.iterdir()]
    ('{}', ['figures.json'])
    ```
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{PARTIAL_SUFFIX}")
    try:
        yield partial
        os.replace(partial, path)
    except BaseException:
        _remove(partial)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
