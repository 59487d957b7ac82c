"""Files written whole or not at all: the atomic_path helper, and the writers that go through it."""

import json
import os
from pathlib import Path

import pytest

from genstruct_datasets import GenstructBuilder, RunStats
from genstruct_datasets._atomic import atomic_path


def test_a_write_that_succeeds_replaces_the_file_whole(tmp_path):
    target = tmp_path / "figures.json"
    target.write_text("old")
    with atomic_path(target) as partial:
        assert partial.parent == tmp_path and partial.name.endswith(".partial") and partial != target
        partial.write_text("new, " * 1000)
    assert target.read_text() == "new, " * 1000
    assert os.listdir(tmp_path) == ["figures.json"]


@pytest.mark.parametrize("existed", [pytest.param(True, id="old-file"), pytest.param(False, id="no-file")])
def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary_one(tmp_path, existed):
    target = tmp_path / "figures.json"
    if existed:
        target.write_text("old")
    with pytest.raises(OSError, match="No space left"), atomic_path(target) as partial:
        with open(partial, "w") as half:
            half.write("half of the ne")
        raise OSError("No space left on device")
    assert (target.read_text() if existed else target.exists()) == ("old" if existed else False)
    assert os.listdir(tmp_path) == (["figures.json"] if existed else [])


def test_a_new_folder_is_moved_into_place_whole_or_removed(tmp_path):
    with atomic_path(tmp_path / "built") as partial:
        partial.mkdir()
        (partial / "a.txt").write_text("a")
    assert (tmp_path / "built" / "a.txt").read_text() == "a"
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "other") as partial:
        partial.mkdir()
        (partial / "a.txt").write_text("a")
        raise RuntimeError("interrupted")
    assert sorted(os.listdir(tmp_path)) == ["built"]


def test_two_writers_of_one_file_write_apart(tmp_path):
    with atomic_path(tmp_path / "x") as first, atomic_path(tmp_path / "x") as second:
        first.write_text("first")
        second.write_text("second")
        assert first != second
    assert (tmp_path / "x").read_text() == "first" and os.listdir(tmp_path) == ["x"]  # the last to finish wins


def test_a_writer_that_wrote_nothing_fails(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "x"):
        pass
    assert os.listdir(tmp_path) == []


def test_the_run_figures_are_saved_whole(tmp_path, monkeypatch):
    RunStats(passages=3).save(tmp_path)
    real_dumps = json.dumps

    def dumps_then_fail(*args, **kwargs):
        real_dumps(*args, **kwargs)
        raise OSError("No space left on device")

    monkeypatch.setattr(json, "dumps", dumps_then_fail)
    with pytest.raises(OSError):
        RunStats(passages=4).save(tmp_path)
    monkeypatch.undo()
    assert RunStats.load(tmp_path).passages == 3 and os.listdir(tmp_path) == ["genstruct-run.json"]


@pytest.fixture
def two_shards(tmp_path, recipe) -> dict:
    corpus = tmp_path / "passages.jsonl"
    corpus.write_text(
        "".join(json.dumps({"title": f"P{i}", "content": f"Passage {i} is about the Moon."}) + "\n" for i in range(2))
    )
    return {
        **recipe,
        "source": str(corpus),
        "split_documents": False,
        "text_column": "content",
        "shard_size": 1,
        "min_tokens": 4,  # one-line passages, read as they are
    }


def test_a_shard_whose_rename_fails_is_not_finished_and_the_next_build_makes_it(two_shards, monkeypatch):
    real_replace = os.replace

    def replace(source, target, *args, **kwargs):
        if str(target).endswith("candidates-00001-of-00002.parquet"):
            raise OSError("No space left on device")
        return real_replace(source, target, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", replace)
        builder = GenstructBuilder(**two_shards)
        with pytest.raises(OSError, match="No space left"):
            builder.build_shards()
    first, second = builder.shard_job().paths
    assert first.exists() and not second.exists()
    assert not [path.name for path in first.parent.iterdir() if path.name.endswith(".partial")]

    builder = GenstructBuilder(**two_shards)
    builder.build_shards()
    assert second.exists() and builder.built.stats.shards_reused == 1


def test_a_shard_whose_write_fails_midway_leaves_no_file_under_its_name(two_shards, monkeypatch):
    from datasets import Dataset

    real_to_parquet = Dataset.to_parquet

    def half_then_full_disk(self, path, *args, **kwargs):
        real_to_parquet(self, path, *args, **kwargs)
        if "candidates-00001-of-00002" in Path(path).name:  # the shard, not a part of its batch checkpoint
            with open(path, "r+b") as half:  # half of the file is on disk when the disk fills up
                half.truncate(os.path.getsize(path) // 2)
            raise OSError("No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(Dataset, "to_parquet", half_then_full_disk)
        builder = GenstructBuilder(**two_shards)
        with pytest.raises(OSError, match="No space left"):
            builder.build_shards()
    first, second = builder.shard_job().paths
    assert first.exists() and not second.exists()
    leftovers = [path.name for path in first.parent.iterdir() if "00001-of" in path.name and path.suffix != ".parts"]
    assert not leftovers  # nor a partial one (its batches stay in its parts, for the next build)
