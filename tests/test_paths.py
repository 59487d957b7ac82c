"""One rule for "is this a local path": sources, models and shard stores ask `is_local_path`."""

import pytest

from genstruct_datasets._paths import is_local_path, looks_local

SOURCE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt", ".md")


@pytest.mark.parametrize(
    ("name", "local"),
    [
        pytest.param("./x", True, id="dot-slash"),
        pytest.param("../x", True, id="dot-dot-slash"),
        pytest.param("/x", True, id="absolute"),
        pytest.param("~/x", True, id="home"),
        pytest.param("x/", True, id="trailing-slash"),
        pytest.param("a/b/c", True, id="two-slashes"),
        pytest.param("org/name", False, id="hub-id"),
        pytest.param("name", False, id="bare-hub-name"),
        pytest.param("data", True, id="existing-relative-folder"),
        pytest.param("org/existing", True, id="existing-folder-shaped-like-a-hub-id"),
        pytest.param("passages.jsonl", True, id="jsonl-file-name"),
        pytest.param("org/passages.jsonl", True, id="jsonl-under-a-folder-shaped-like-a-hub-id"),
    ],
)
def test_is_local_path(name, local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "org" / "existing").mkdir(parents=True)
    assert is_local_path(name, suffixes=SOURCE_SUFFIXES) is local


def test_suffixes_count_only_where_asked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not is_local_path("passages.jsonl")  # a model or a store: no file suffix makes it local
    assert is_local_path(tmp_path / "missing")  # os.PathLike too; absolute
    assert looks_local("./x") and not looks_local("org/name")
