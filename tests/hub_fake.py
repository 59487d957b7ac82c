"""A stand-in for the Hugging Face Hub at the `huggingface_hub` boundary: repositories are folders.

Each `HfApi` method the package calls is replaced by one that takes the real method's arguments: they are bound
to its signature (`inspect.signature(...).bind`), so a misspelt or missing argument is a `TypeError`, as it is
against the Hub. Only dataset repositories are served: any other `repo_type` is a `ValueError`. Any method can be
made to fail on demand, with an HTTP status or an exception, for its next calls about a given file:

    hub = FolderHub(tmp_path / "hub")
    hub.install(monkeypatch.setattr)
    hub.fail("upload_file", 503, 503, on="*/candidates-00001-of-00004.parquet")  # that shard's next two uploads
    hub.fail("create_commit", ConnectionError("reset by peer"))  # the next commit

`hub.calls` lists every call, failed ones included, as (method, what it is about); `hub.commits` every commit that
landed, with the files it added and deleted. For the command in a subprocess, see `cli_driver.py`.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import inspect
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

METHODS = ("create_repo", "list_repo_files", "hf_hub_download", "upload_file", "upload_folder", "create_commit")
"""The `HfApi` methods the package calls, served by the fake."""
# What a call of each method is about, for `calls` and `fail(on=...)`: the argument of that name.
ABOUT = {
    "create_repo": "repo_id",
    "list_repo_files": "repo_id",
    "hf_hub_download": "filename",
    "upload_file": "path_in_repo",
    "upload_folder": "commit_message",
    "create_commit": "commit_message",
    "load_card": "repo_id_or_path",
}


@dataclass
class Commit:
    """A commit that landed: its message, and the paths it added (or replaced) and deleted."""

    repo_id: str
    message: str
    added: list[str]
    deleted: list[str]


class FolderHub:
    """Dataset repositories kept as folders under `root`, served through the `HfApi` methods the package calls."""

    folder_batch = 2
    """Files per commit of `upload_folder`. With `hf_xet` installed, the real one commits a large folder in batches
    (of 256 files, or 100 MB of small files, at first), a commit each, "(part N)"; the fake does the same with
    batches small enough for a test to see it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.calls: list[tuple[str, str]] = []
        self.commits: list[Commit] = []
        self._failures: dict[str, list[tuple[str, int | BaseException]]] = {}
        self._lock = threading.Lock()

    def install(self, patch) -> None:
        """Replace the Hub methods with this hub's, through `patch(target, name, value)` (e.g. monkeypatch.setattr)."""
        from huggingface_hub import DatasetCard, HfApi

        for name in METHODS:
            patch(HfApi, name, self._served(name, getattr(HfApi, name), getattr(self, f"_{name}")))
        patch(DatasetCard, "load", staticmethod(self._served("load_card", DatasetCard.load, self._load_card)))

    def fail(self, method: str, *errors: int | BaseException, on: str = "*") -> None:
        """Make the next calls of `method` whose subject matches `on` fail, one error each, in turn.

        Args:
            method (`str`): one of `METHODS`, or ``"load_card"`` (`DatasetCard.load`).
            *errors (`int` or `BaseException`): an HTTP status (raised as `HfHubHTTPError`), or an exception to raise.
            on (`str`, *optional*, defaults to `"*"`): an `fnmatch` pattern of what the call is about (see `ABOUT`):
                the file of `upload_file` and `hf_hub_download`, the commit message of `create_commit` and
                `upload_folder`, the repository of the others.
        """
        if method not in (*METHODS, "load_card"):
            raise ValueError(f"The fake Hub has no method {method!r}; it has: {', '.join(METHODS)}, load_card.")
        with self._lock:
            self._failures.setdefault(method, []).extend((on, error) for error in errors)

    @property
    def pending_failures(self) -> dict[str, int]:
        """The failures asked for with `fail` that no call has met yet, by method."""
        with self._lock:
            return {method: len(left) for method, left in self._failures.items() if left}

    def repo(self, repo_id: str) -> Path:
        return self.root / repo_id

    def files(self, repo_id: str) -> list[str]:
        folder = self.repo(repo_id)
        files = (p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".partial"))
        return sorted(str(p.relative_to(folder)) for p in files)

    def _served(self, name: str, real, serve):
        """`serve`, behind the real method's signature, the dataset-only rule and the failures asked for."""
        signature = inspect.signature(real)

        @functools.wraps(real)
        def method(*args, **kwargs):
            arguments = signature.bind(*args, **kwargs)  # a TypeError for what the real method does not take
            arguments.apply_defaults()
            given = dict(arguments.arguments)
            given.pop("self", None)
            repo_type = given.get("repo_type")
            if repo_type != "dataset" and not (name == "load_card" and repo_type is None):
                raise ValueError(
                    f"The fake Hub serves dataset repositories only; {name} got repo_type={repo_type!r}. "
                    "Pass repo_type='dataset'."
                )
            about = str(given[ABOUT[name]])
            self._record(name, about)
            error = self._next_failure(name, about)
            if error is not None:
                raise _http_error(error, name) if isinstance(error, int) else error
            return serve(**given)

        return method

    def _next_failure(self, name: str, about: str) -> int | BaseException | None:
        with self._lock:
            left = self._failures.get(name, [])
            for index, (pattern, error) in enumerate(left):
                if fnmatch.fnmatch(about, pattern):
                    del left[index]
                    return error
        return None

    def _create_repo(self, repo_id, *, exist_ok, **_):
        from huggingface_hub import RepoUrl

        folder = self.repo(repo_id)
        if folder.exists() and not exist_ok:
            raise _http_error(409, "create_repo")
        folder.mkdir(parents=True, exist_ok=True)
        return RepoUrl(f"https://huggingface.co/datasets/{repo_id}")

    def _list_repo_files(self, repo_id, **_):
        self._existing(repo_id)
        return self.files(repo_id)

    def _hf_hub_download(self, repo_id, filename, *, local_dir, **_):
        if local_dir is None:
            raise NotImplementedError("the fake Hub downloads to local_dir only, not to the cache")
        source = self._existing(repo_id) / filename
        if not source.is_file():
            raise _http_error(404, "hf_hub_download")
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return str(target)

    def _upload_file(self, *, path_or_fileobj, path_in_repo, repo_id, commit_message, **_):
        from huggingface_hub import CommitOperationAdd

        message = commit_message or f"Upload {path_in_repo} with huggingface_hub"
        return self._commit(repo_id, message, [CommitOperationAdd(path_in_repo, path_or_fileobj)])

    def _upload_folder(self, *, repo_id, folder_path, commit_message, delete_patterns, **_):
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        folder = Path(folder_path)
        added = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        patterns = [delete_patterns] if isinstance(delete_patterns, str) else list(delete_patterns or [])
        deleted = [
            name
            for name in self._list_repo_files(repo_id)
            if name not in added and any(fnmatch.fnmatch(name, pattern) for pattern in patterns)
        ]
        message = commit_message or "Upload folder using huggingface_hub"
        batches = [added[i : i + self.folder_batch] for i in range(0, len(added), self.folder_batch)] or [[]]
        commit = None
        for part, batch in enumerate(batches):
            operations = [CommitOperationDelete(name) for name in deleted] if part == 0 else []
            operations += [CommitOperationAdd(name, str(folder / name)) for name in batch]
            commit = self._commit(repo_id, message if part == 0 else f"{message} (part {part + 1})", operations)
        return commit

    def _create_commit(self, repo_id, operations, *, commit_message, **_):
        if not commit_message:
            raise ValueError("`commit_message` can't be empty, please pass a value.")
        return self._commit(repo_id, commit_message, list(operations))

    def _commit(self, repo_id: str, message: str, operations: list):
        """Apply `operations` whole or not at all: a deletion of a missing file fails the commit before any change."""
        from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete

        folder = self._existing(repo_id)
        contents, deleted = {}, []
        with self._lock:
            held = set(self.files(repo_id))
            for operation in operations:
                path = operation.path_in_repo
                if isinstance(operation, CommitOperationAdd):
                    with operation.as_file() as content:
                        contents[path] = content.read()
                elif isinstance(operation, CommitOperationDelete) and operation.is_folder:
                    inside = [name for name in held if name.startswith(path.rstrip("/") + "/")]
                    if not inside:
                        raise _http_error(404, "create_commit")
                    deleted += inside
                elif isinstance(operation, CommitOperationDelete):
                    if path not in held:
                        raise _http_error(404, "create_commit")
                    deleted.append(path)
                else:
                    raise NotImplementedError(type(operation).__name__)
            for path in deleted:
                (folder / path).unlink()
            for path, content in contents.items():
                target = folder / path
                target.parent.mkdir(parents=True, exist_ok=True)
                # Written aside, then renamed: a reader in another process never sees half a file.
                partial = target.with_name(f".{target.name}.partial")
                partial.write_bytes(content)
                os.replace(partial, target)
            self.commits.append(Commit(repo_id, message, sorted(contents), sorted(deleted)))
            oid = hashlib.sha1(f"{repo_id} {len(self.commits)} {message}".encode()).hexdigest()
        url = f"https://huggingface.co/datasets/{repo_id}/commit/{oid}"
        return CommitInfo(commit_url=url, commit_message=message, commit_description="", oid=oid)

    def _load_card(self, repo_id_or_path, **_):
        from huggingface_hub import DatasetCard
        from huggingface_hub.errors import EntryNotFoundError

        # A local card file (as `load_dataset` of a folder reads it) stays a local file.
        path = Path(repo_id_or_path)
        card = path if path.is_file() else self._existing(str(repo_id_or_path)) / "README.md"
        if not card.exists():
            raise EntryNotFoundError(f"{repo_id_or_path} has no README.md")
        return DatasetCard(card.read_text())

    def _existing(self, repo_id: str) -> Path:
        folder = self.repo(repo_id)
        if not folder.is_dir():
            from huggingface_hub.errors import RepositoryNotFoundError

            raise RepositoryNotFoundError(f"404: {repo_id} not found", response=_response(404, "GET"))
        return folder

    def _record(self, name: str, what: str) -> None:
        with self._lock:
            self.calls.append((name, what))


def _http_error(status: int, method: str = "create_commit"):
    """The error `huggingface_hub` raises for an HTTP `status` (a 404 as the `RemoteEntryNotFoundError` it is)."""
    from huggingface_hub.errors import HfHubHTTPError, RemoteEntryNotFoundError

    kind = RemoteEntryNotFoundError if status == 404 else HfHubHTTPError
    return kind(f"{status} from the fake Hub ({method})", response=_response(status, "POST"))


def _response(status: int, method: str):
    import httpx2

    request = httpx2.Request(method, "https://huggingface.co/api/datasets/fake/commit/main")
    return httpx2.Response(status, request=request)
