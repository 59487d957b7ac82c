"""Telling a local path from a Hub id, for sources and models that may be either."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

_LOCAL_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")


def looks_local(name: str) -> bool:
    """Whether `name` can only mean a local path, never a Hub id (``namespace/name``).

    A name that starts with ``/``, ``./``, ``../`` or ``~``, ends with ``/``, holds more than one ``/`` or the
    platform's own separator (``\\`` on Windows), is a path: a missing one is reported as a missing path rather than
    looked up on the Hub.

    Example:

    ```py
    >>> looks_local("./models/genstruct"), looks_local("NousResearch/Genstruct-7B")
    (True, False)
    ```
    """
    if name in (".", "..") or name.startswith(_LOCAL_PREFIXES) or name.endswith("/"):
        return True
    separators = {os.sep, os.altsep} - {None, "/"}
    return name.count("/") > 1 or any(separator in name for separator in separators)


def is_local_path(name: str | os.PathLike, *, suffixes: Iterable[str] = ()) -> bool:
    """Whether `name` means a local path rather than a Hub id: the one rule for sources, models and shard stores.

    A name is local when it exists here (a file or folder, ``data`` or ``org/name`` included), when it can only be a
    path ([`looks_local`]: ``./x``, ``../x``, ``/x``, ``~/x``, ``x/``, ``a/b/c``), or when it ends with one of
    `suffixes` (file names of a kind that no Hub id has, such as ``passages.jsonl`` for a source). Anything else,
    ``org/name`` above all, is a Hub id.

    Args:
        name (`str` or `os.PathLike`): what the user gave.
        suffixes (`Iterable[str]`, *optional*): file suffixes, with their dot, that make a name a local file.

    Example:

    ```py
    >>> is_local_path("./corpus"), is_local_path("wikimedia/wikipedia"), is_local_path("a.jsonl", suffixes=[".jsonl"])
    (True, False, True)
    ```
    """
    name = os.fspath(name)
    return Path(name).exists() or looks_local(name) or Path(name).suffix in tuple(suffixes)
