"""A stand-in for the Hugging Face Hub at the `huggingface_hub` boundary: repositories are folders.

In a test, ``FolderHub(root).install(monkeypatch.setattr)``; for the command in a subprocess, see
`cli_driver.py`.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import threading
from pathlib import Path


class FolderHub:
    """Dataset repositories kept as folders under `root`, served through the `HfApi` methods the package calls."""

    def __init__(self, root: Path, fail_uploads: list[int] | None = None) -> None:
        self.root = Path(root)
        self.fail_uploads = list(fail_uploads or [])
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def install(self, patch) -> None:
        """Replace the Hub methods with this hub's, through `patch(target, name, value)` (e.g. monkeypatch.setattr)."""
        from huggingface_hub import DatasetCard, HfApi

        for name in (
            "create_repo",
            "list_repo_files",
            "hf_hub_download",
            "upload_file",
            "upload_folder",
            "create_commit",
        ):
            patch(HfApi, name, getattr(self, name))
        patch(DatasetCard, "load", self.load_card)

    def repo(self, repo_id: str) -> Path:
        return self.root / repo_id

    def files(self, repo_id: str) -> list[str]:
        folder = self.repo(repo_id)
        files = (p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".partial"))
        return sorted(str(p.relative_to(folder)) for p in files)

    def create_repo(self, repo_id, *, repo_type=None, private=None, exist_ok=False, **kwargs):
        self._record("create_repo", repo_id)
        self.repo(repo_id).mkdir(parents=True, exist_ok=True)
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def list_repo_files(self, repo_id, *, repo_type=None, **kwargs):
        self._record("list_repo_files", repo_id)
        return self.files(repo_id)

    def hf_hub_download(self, repo_id, filename, *, repo_type=None, local_dir=None, **kwargs):
        self._record("hf_hub_download", filename)
        target = Path(local_dir) / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.repo(repo_id) / filename, target)
        return str(target)

    def upload_file(self, *, path_or_fileobj, path_in_repo, repo_id, repo_type=None, commit_message=None, **kwargs):
        self._record("upload_file", path_in_repo)
        with self._lock:
            status = self.fail_uploads.pop(0) if self.fail_uploads else None
        if status is not None:
            raise _http_error(status)
        target = self.repo(repo_id) / path_in_repo
        target.parent.mkdir(parents=True, exist_ok=True)
        # A commit lands whole or not at all: copied aside, then renamed (the partial copy is hidden).
        partial = target.with_name(f".{target.name}.partial")
        shutil.copyfile(path_or_fileobj, partial)
        os.replace(partial, target)
        return _commit(repo_id)

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, commit_message=None, delete_patterns=(), **kw):
        self._record("upload_folder", repo_id)
        for name in self.files(repo_id):
            if any(fnmatch.fnmatch(name, pattern) for pattern in delete_patterns):
                (self.repo(repo_id) / name).unlink()
        shutil.copytree(folder_path, self.repo(repo_id), dirs_exist_ok=True)
        return _commit(repo_id)

    def create_commit(self, repo_id, operations, *, commit_message, repo_type=None, **kwargs):
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        self._record("create_commit", commit_message)
        for operation in operations:
            target = self.repo(repo_id) / operation.path_in_repo
            if isinstance(operation, CommitOperationDelete):
                target.unlink()
            elif isinstance(operation, CommitOperationAdd):
                target.parent.mkdir(parents=True, exist_ok=True)
                with operation.as_file() as content:
                    target.write_bytes(content.read())
            else:
                raise NotImplementedError(type(operation).__name__)
        return _commit(repo_id)

    def load_card(self, repo_id, **kwargs):
        from huggingface_hub import DatasetCard
        from huggingface_hub.errors import EntryNotFoundError

        # A local card file (as `load_dataset` of a folder reads it) stays a local file.
        card = Path(repo_id) if Path(repo_id).is_file() else self.repo(repo_id) / "README.md"
        if not card.exists():
            raise EntryNotFoundError(f"{repo_id} has no README.md")
        return DatasetCard(card.read_text())

    def _record(self, name: str, what: str) -> None:
        with self._lock:
            self.calls.append((name, what))


def _commit(repo_id: str):
    return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/datasets/{repo_id}/commit/0"})()


def _http_error(status: int):
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    request = httpx2.Request("POST", "https://huggingface.co/api/datasets/fake/commit/main")
    return HfHubHTTPError(f"{status} from the fake Hub", response=httpx2.Response(status, request=request))
