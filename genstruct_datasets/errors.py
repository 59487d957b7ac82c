"""Exceptions raised by genstruct_datasets.

Each exception also inherits the builtin that fits it, so callers can catch either
``GenstructError`` or the builtin (``KeyError``, ``ValueError``, ``ImportError``).
"""

from __future__ import annotations

from collections.abc import Iterable


class GenstructError(Exception):
    """Base class of every error raised by genstruct_datasets."""


class MissingColumnsError(GenstructError, KeyError):
    """A map stage did not find the columns it reads.

    Args:
        stage (`str`): name of the stage that reads the columns.
        missing (`Iterable[str]`): the columns that are absent.
        present (`Iterable[str]`): the columns the batch has.
        hint (`str`, *optional*): how to fix it, appended to the message.
    """

    def __init__(self, stage: str, missing: Iterable[str], present: Iterable[str], hint: str = "") -> None:
        self.stage = stage
        self.missing = list(missing)
        self.present = list(present)
        message = (
            f"{stage} needs the column(s) {', '.join(map(repr, self.missing))}, which the dataset does not have; "
            f"it has: {', '.join(self.present) or '(no columns)'}."
        )
        if hint:
            message = f"{message} {hint}"
        super().__init__(message)

    def __str__(self) -> str:
        # KeyError quotes its message; show it as plain text instead.
        return str(self.args[0])


class InvalidConfigError(GenstructError, ValueError):
    """A setting given to a stage is out of range or inconsistent with another one."""


class MissingDependencyError(GenstructError, ImportError):
    """An optional dependency needed for the requested feature is not installed."""


class MissingTokenError(GenstructError, PermissionError):
    """Publishing to the Hub needs a token and none was found."""


def check_columns(stage: str, batch: dict, required: Iterable[str], hint: str = "") -> None:
    """Raise `MissingColumnsError` when `batch` lacks one of the `required` columns."""
    missing = [column for column in required if column not in batch]
    if missing:
        raise MissingColumnsError(stage, missing, batch.keys(), hint)
