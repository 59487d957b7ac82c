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


class FailedPassagesError(GenstructError, RuntimeError):
    """Some passages' generation failed (a server that failed past its retries): the run is not finished.

    The finished shards and the generations that succeeded are kept; the same call again generates only what
    failed.

    Args:
        failed (`int`): how many passages failed.
    """

    def __init__(self, failed: int) -> None:
        self.failed = failed
        super().__init__(
            f"{failed} passage(s) failed to generate (finish_reason='error', e.g. a server that failed past its "
            "retries); everything else is kept. Run the same command again to retry them."
        )


class ServerRefusedError(GenstructError, PermissionError):
    """An OpenAI-compatible server refused the run's key (401 or 403): no request can succeed, so the run stops at
    once. The message names the server and the key's settings (``OPENAI_API_KEY``, ``api_key``)."""


class ServerUnreachableError(GenstructError, ConnectionError):
    """An OpenAI-compatible server could not be reached for any request of a batch, past the client's retries: the
    run stops there rather than try every shard in turn. Finished shards are kept; the message says what to check
    (the address, that the server is up)."""


class NothingKeptError(GenstructError, RuntimeError):
    """A run kept no pair, so nothing was written; the message says why, from the candidates' outcomes."""


class OutputExistsError(GenstructError, FileExistsError):
    """The output folder holds files that genstruct-datasets did not write; nothing is replaced without consent."""


class EngineStartError(GenstructError, RuntimeError):
    """A generation engine could not start (vLLM refused the model or the machine)."""


class ExecutorError(GenstructError, RuntimeError):
    """An executor could not run the shards: the Ray cluster cannot be reached, or a shard was lost for good (the
    Ray worker or node building it died more times than it retries). Finished shards are kept; the same call again
    builds the rest."""


class MissingTokenError(GenstructError, PermissionError):
    """Publishing to the Hub needs a token and none was found."""


class SourceError(GenstructError, FileNotFoundError):
    """The source of a recipe cannot be read: a missing path, or files of a kind that is not supported."""


class InvalidSourceError(SourceError, ValueError):
    """The source exists but cannot be used: an empty file, a file not in UTF-8, a malformed line, or documents
    that give no passage. The message names the file (and line) and the fix."""


class ModelNotFoundError(GenstructError, FileNotFoundError):
    """A model given as a local folder that does not exist, or a folder that holds no saved model."""


class ModelUnreachableError(ModelNotFoundError, ConnectionError):
    """A model given as a Hub id that is not in the local cache, while the Hub is off (``HF_HUB_OFFLINE=1``) or does
    not answer: it cannot be loaded now. The message names the model and the ways out (a local folder, a download, or
    ``genstruct-datasets demo``)."""


def check_columns(stage: str, batch: dict, required: Iterable[str], hint: str = "") -> None:
    """Raise `MissingColumnsError` when `batch` lacks one of the `required` columns."""
    missing = [column for column in required if column not in batch]
    if missing:
        raise MissingColumnsError(stage, missing, batch.keys(), hint)
