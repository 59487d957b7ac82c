"""Telling a local path from a Hub id, for sources and models that may be either."""

from __future__ import annotations

import os

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
