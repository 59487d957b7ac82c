import functools
import json
import logging

import pytest
from hub_fake import FolderHub, _http_error
from huggingface_hub.errors import HfHubHTTPError

import genstruct_datasets.builder as builder
from genstruct_datasets import (
    Executor,
    GenstructError,
    HubShards,
    InvalidConfigError,
    TorchrunExecutor,
    load_genstruct,
    publish,
)
from genstruct_datasets.hub_shards import WORK_FOLDER
from genstruct_datasets.shards import with_retries

REPO = "me/moon-pairs"

pytestmark = pytest.mark.slow  # every test builds shards and uploads them, in several runs


def failing(*statuses: int, answer="done"):
    """A call that fails with each of `statuses` in turn, then gives `answer`; `calls` counts the tries."""

    def call():
        call.calls += 1
        if call.calls <= len(statuses):
            raise _http_error(statuses[call.calls - 1])
        return answer

    call.calls = 0
    return call


def test_with_retries_retries_what_may_pass_and_nothing_else():
    flaky = failing(503, 429, 500)
    assert with_retries(flaky, what="upload", backoff=0) == "done" and flaky.calls == 4
    forbidden = failing(403)
    with pytest.raises(Exception, match="403"):
        with_retries(forbidden, what="upload", backoff=0)
    assert forbidden.calls == 1
    down = failing(503, 503, 503)
    with pytest.raises(Exception, match="503"):
        with_retries(down, what="upload", max_retries=2, backoff=0)
    assert down.calls == 3


def test_the_hub_in_offline_mode_is_not_retried():
    from huggingface_hub.errors import OfflineModeIsEnabled

    calls = []

    def offline():
        calls.append(1)
        raise OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled.")

    with pytest.raises(OfflineModeIsEnabled):
        with_retries(offline, what="creating me/x", backoff=0)
    assert len(calls) == 1  # HF_HUB_OFFLINE=1 cannot pass: failing at once beats a minute of backoff


def test_bad_settings_are_refused():
    with pytest.raises(InvalidConfigError, match="max_retries must be a non-negative integer, got -1"):
        HubShards(REPO, max_retries=-1)


def test_an_upload_that_fails_is_reported_and_the_shard_kept(monkeypatch, tmp_path, caplog):
    hub = FolderHub(tmp_path / "hub")
    hub.install(monkeypatch.setattr)
    hub.fail("upload_file", 503, 503, 503)
    shard = tmp_path / "work" / "candidates-00000-of-00001.parquet"
    shard.parent.mkdir()
    shard.write_bytes(b"PAR1")
    store = HubShards(REPO, max_retries=2, backoff=0)
    assert store.open("recipe") == set()
    with caplog.at_level(logging.WARNING, logger="genstruct_datasets"):
        assert store.upload("recipe", shard) is False
    assert "could not be uploaded to me/moon-pairs" in caplog.text and "the next run uploads it" in caplog.text
    assert shard.exists() and hub.files(REPO) == []
    assert store.upload_in_background("recipe", shard).result() is True
    assert hub.files(REPO) == [f"{WORK_FOLDER}/recipe/candidates-00000-of-00001.parquet"]
    assert store.open("recipe") == {"candidates-00000-of-00001.parquet"}


def test_the_fake_hub_takes_what_the_hub_takes(monkeypatch, tmp_path):
    from huggingface_hub import HfApi

    hub = FolderHub(tmp_path / "hub")
    hub.install(monkeypatch.setattr)
    api = HfApi()
    with pytest.raises(TypeError, match="repo_typ"):
        api.list_repo_files(REPO, repo_typ="dataset")
    with pytest.raises(ValueError, match="dataset repositories only; create_repo got repo_type=None"):
        api.create_repo(REPO)
    with pytest.raises(ValueError, match="The fake Hub has no method 'upload_large_folder'"):
        hub.fail("upload_large_folder", 500)


def test_each_hub_call_of_the_shards_is_retried(monkeypatch, tmp_path):
    hub = FolderHub(tmp_path / "hub")
    hub.install(monkeypatch.setattr)
    store = HubShards(REPO, backoff=0)
    hub.fail("create_repo", 503)
    hub.fail("list_repo_files", 429)
    assert store.open("recipe") == set()
    shard = tmp_path / "here" / "candidates-00000-of-00001.parquet"
    shard.parent.mkdir()
    shard.write_bytes(b"PAR1")
    hub.fail("upload_file", ConnectionError("reset by peer"))
    assert store.upload("recipe", shard) is True
    shard.unlink()
    hub.fail("hf_hub_download", 500)
    assert store.fetch("recipe", [shard]) == {shard.name} and shard.read_bytes() == b"PAR1"
    hub.fail("create_commit", 502)
    assert store.start_over("recipe", [shard.name]) == {".forced"}
    assert hub.files(REPO) == [f"{WORK_FOLDER}/recipe/.forced"] and hub.pending_failures == {}
    assert [name for name, _ in hub.calls] == [
        "create_repo", "create_repo", "list_repo_files", "list_repo_files", "upload_file", "upload_file",
        "create_repo", "list_repo_files", "hf_hub_download", "hf_hub_download",
        "create_repo", "list_repo_files", "create_commit", "create_commit",
    ]  # fmt: skip
    # What cannot pass is not tried again.
    hub.fail("hf_hub_download", 403)
    with pytest.raises(HfHubHTTPError, match="403"):
        store.download("recipe", shard)
    downloads = [what for name, what in hub.calls if name == "hf_hub_download"]
    assert downloads == [f"{WORK_FOLDER}/recipe/{shard.name}"] * 3  # two tries above, one here


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "passages.jsonl"
    rows = [
        {"title": f"Moon {i}", "content": f"The Moon is Earth's satellite. Fact {i}: it shows phases as it orbits."}
        for i in range(4)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def settings(taught_generator, tiny_reward_model):
    return {
        "model": taught_generator,
        "reward_model": tiny_reward_model,
        "split_documents": False,
        "text_column": "content",
        "num_samples": 2,
        "max_new_tokens": 24,
        "seed": 0,
        "shard_size": 1,
        "min_tokens": 4,  # short passages, read as they are
    }


def rows(pairs) -> dict[str, list]:
    return {name: split.to_list() for name, split in pairs.items()}


def test_shards_go_to_the_repo_as_they_finish_and_another_machine_resumes_from_them(
    monkeypatch, tmp_path, corpus, settings, generated, model_writes
):
    hub = FolderHub(tmp_path / "hub")
    hub.install(monkeypatch.setattr)
    hub.fail("upload_file", 503)  # the first upload is retried
    store = HubShards(REPO, backoff=0)
    model_writes("run 1")
    first = load_genstruct(str(corpus), cache_dir=tmp_path / "machine-1", push_shards_to=store, **settings)
    (folder,) = store.folders
    shards = [name for name in hub.files(REPO) if name.startswith(folder)]
    assert len(shards) == 4 and len(generated) == 4
    assert [name for name, _ in hub.calls].count("upload_file") == 5

    # A crash before the last two uploads: another machine takes the first two shards and builds the rest.
    for name in shards[2:]:
        (hub.repo(REPO) / name).unlink()
    generated.clear()
    model_writes("run 2")
    second = load_genstruct(str(corpus), cache_dir=tmp_path / "machine-2", push_shards_to=REPO, **settings)
    assert generated == ["Moon 2", "Moon 3"]
    resumed = {"Moon 0": {"run 1"}, "Moon 1": {"run 1"}, "Moon 2": {"run 2"}, "Moon 3": {"run 2"}}
    assert model_writes.runs(second["candidates"]) == resumed
    assert rows(second)["train"][:2] == rows(first)["train"][:2]
    assert [name for name in hub.files(REPO) if name.startswith(folder)] == shards

    # Every shard in the repository: nothing is generated at all.
    generated.clear()
    model_writes("run 3")
    third = load_genstruct(str(corpus), cache_dir=tmp_path / "machine-3", push_shards_to=REPO, **settings)
    assert generated == [] and rows(third) == rows(second)
    # Unless the build is forced: then every shard is built again, and replaces the repository's.
    force = {"download_mode": "force_redownload"}
    forced = load_genstruct(str(corpus), cache_dir=tmp_path / "machine-3", push_shards_to=REPO, **force, **settings)
    assert generated == [f"Moon {i}" for i in range(4)]
    assert model_writes.runs(forced["candidates"]) == {f"Moon {i}": {"run 3"} for i in range(4)}
    generated.clear()

    # A changed recipe never takes the old recipe's shards.
    changed = load_genstruct(
        str(corpus), cache_dir=tmp_path / "machine-4", push_shards_to=store, **(settings | {"seed": 1})
    )
    assert len(generated) == 4 and len(store.folders) == 2 and changed["train"].num_rows == 4

    # Publishing the result deletes the run's shards in the same commit.
    publish(first["train"], REPO, token="hf_test", candidates=first["candidates"], shards=store)
    assert not [name for name in hub.files(REPO) if name.startswith(WORK_FOLDER)]
    assert "README.md" in hub.files(REPO) and [n for n in hub.files(REPO) if n.startswith("data/train-")]


@pytest.mark.parametrize(
    "first_run",
    [
        pytest.param("crashes after its last shard", id="crashed"),
        pytest.param("finishes", id="finished"),
    ],
)
def test_a_shard_whose_upload_failed_is_uploaded_by_the_next_run(
    monkeypatch, tmp_path, corpus, settings, generated, caplog, first_run
):
    hub = FolderHub(tmp_path / "hub")
    hub.install(monkeypatch.setattr)
    second_shard = "candidates-00001-of-00004.parquet"
    hub.fail("upload_file", 503, 503, 503, on=f"*/{second_shard}")  # every try of max_retries=2
    build = functools.partial(load_genstruct, str(corpus), cache_dir=tmp_path / "machine-1", **settings)
    with caplog.at_level(logging.WARNING, logger="genstruct_datasets"), monkeypatch.context() as patch:
        if first_run == "finishes":
            assert build(push_shards_to=HubShards(REPO, max_retries=2, backoff=0))["train"].num_rows == 4
        else:

            def full_disk(*args, **kwargs):
                raise OSError("No space left on device")

            patch.setattr(builder, "select_best", full_disk)
            with pytest.raises(OSError, match="No space left"):
                build(push_shards_to=HubShards(REPO, max_retries=2, backoff=0))
    assert len(generated) == 4 and hub.pending_failures == {}
    assert "1 of 4 shards could not be uploaded to me/moon-pairs" in caplog.text
    (folder,) = {name.rsplit("/", 1)[0] for name in hub.files(REPO)}
    assert len(hub.files(REPO)) == 3 and f"{folder}/{second_shard}" not in hub.files(REPO)

    # The same command again, on the same machine: nothing is generated, and that one shard is uploaded.
    generated.clear()
    hub.calls.clear()
    second = build(push_shards_to=HubShards(REPO, max_retries=2, backoff=0))
    assert generated == []
    assert [what for name, what in hub.calls if name == "upload_file"] == [f"{folder}/{second_shard}"]
    assert len(hub.files(REPO)) == 4 and sorted(second["train"]["title"]) == [f"Moon {i}" for i in range(4)]


def test_a_forced_build_deletes_the_earlier_shards_in_the_repo_before_it_builds(
    monkeypatch, tmp_path, corpus, settings, generated, crash_in_shard_of, model_writes
):
    hub = FolderHub(tmp_path / "hub")
    hub.install(monkeypatch.setattr)
    build = functools.partial(load_genstruct, str(corpus), push_shards_to=REPO, **settings)
    model_writes("run 1")
    # A run on machine 1 that crashes in its last shard: its three finished shards are in the repository (their
    # uploads end before the error goes up), and on machine 1 with the maps' caches of their generations.
    with monkeypatch.context() as patch:
        crash_in_shard_of("Moon 3", patch)
        with pytest.raises(OSError, match="No space left"):
            build(cache_dir=tmp_path / "machine-1")
    (folder,) = {name.rsplit("/", 1)[0] for name in hub.files(REPO)}
    earlier = hub.files(REPO)
    assert len(earlier) == 3 and generated == ["Moon 0", "Moon 1", "Moon 2"]

    # Machine 2 forces a build (the model's `main` moved), which crashes in its third shard ...
    generated.clear()
    model_writes("run 2")
    with monkeypatch.context() as patch:
        crash_in_shard_of("Moon 2", patch)
        with pytest.raises(OSError, match="No space left"):
            build(cache_dir=tmp_path / "machine-2", download_mode="force_redownload")
    # ... and leaves in the repository its own two shards and the mark of a forced build, nothing of the earlier run.
    assert generated == ["Moon 0", "Moon 1"]
    assert hub.files(REPO) == [f"{folder}/.forced", *earlier[:2]]
    assert ("create_commit", "genstruct-datasets: forced build, 3 earlier shards deleted") in hub.calls

    # Machine 1 resumes without --force: it takes the forced build's shards from the repository instead of its own,
    # and builds the other two with the model, not from the maps' caches of the earlier run.
    generated.clear()
    model_writes("run 3")
    resumed = build(cache_dir=tmp_path / "machine-1")
    assert generated == ["Moon 2", "Moon 3"]
    expected = {"Moon 0": {"run 2"}, "Moon 1": {"run 2"}, "Moon 2": {"run 3"}, "Moon 3": {"run 3"}}
    assert model_writes.runs(resumed["candidates"]) == expected


def test_rank_0_takes_the_other_ranks_shards_from_the_repo(
    monkeypatch, tmp_path, corpus, settings, generated, model_writes
):
    hub = FolderHub(tmp_path / "hub")
    hub.install(monkeypatch.setattr)
    store = HubShards(REPO, backoff=0)
    model_writes("rank 1")
    single = load_genstruct(str(corpus), cache_dir=tmp_path / "single", push_shards_to=store, **settings)
    (folder,) = store.folders
    for name in hub.files(REPO)[:2]:  # what rank 0 (shards 1 and 2 of 4) is to build
        (hub.repo(REPO) / name).unlink()
    # Rank 0 of two, on a machine of its own: rank 1 finished and uploaded its shards.
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    generated.clear()
    model_writes("rank 0")
    ranked = load_genstruct(
        str(corpus), cache_dir=tmp_path / "rank-0", push_shards_to=REPO, executor=RankWithoutGloo(), **settings
    )
    assert generated == ["Moon 0", "Moon 1"]
    expected = {"Moon 0": {"rank 0"}, "Moon 1": {"rank 0"}, "Moon 2": {"rank 1"}, "Moon 3": {"rank 1"}}
    assert model_writes.runs(ranked["candidates"]) == expected
    assert rows(ranked)["train"][2:] == rows(single)["train"][2:]
    assert len([name for name in hub.files(REPO) if name.startswith(folder)]) == 4

    # Without a repository or a shared folder, rank 0 names what is missing instead of building a part.
    with pytest.raises(GenstructError, match=r"2 of 4 shards are missing from .*Did every rank finish\?"):
        load_genstruct(str(corpus), cache_dir=tmp_path / "alone", executor=RankWithoutGloo(), **settings)


class RankWithoutGloo(TorchrunExecutor):
    """A rank of a `torchrun` launch whose other ranks are done: no process group to meet."""

    def run(self, job, progress=None):
        return Executor.run(self, job, progress)
