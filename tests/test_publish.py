import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from datasets import Dataset, load_dataset
from hub_fake import FolderHub
from huggingface_hub import DatasetCard, HfApi
from huggingface_hub.errors import HfHubHTTPError

from genstruct_datasets import (
    HubShards,
    InvalidConfigError,
    MissingTokenError,
    RunReport,
    RunStats,
    build_card,
    publish,
    run_report,
    save_local,
)
from genstruct_datasets.report import QUALITY_FIGURE, dataset_stats

DOCS = Path(__file__).parent.parent / "docs"

# Read before the autouse fixture clears it: the opt-in integration test pushes with it.
HUB_TOKEN = os.environ.get("HF_TOKEN")

RECIPE = {
    "generator": {"model": "NousResearch/Genstruct-7B", "revision": "abc123", "num_samples": 4, "temperature": 0.7},
    "reward model": {"model": "OpenAssistant/reward-model-deberta-v3-large-v2", "revision": None},
    "selection": {"best_of_n": True, "min_reward": None},
}


@pytest.fixture
def candidates() -> Dataset:
    return Dataset.from_dict(
        {
            "title": ["Moon", "Moon", "Tea", "Tea", "Empty"],
            "content": ["The Moon orbits Earth."] * 2 + ["Tea is a drink."] * 2 + [""],
            "passage_id": ["m", "m", "t", "t", "e"],
            "sample_index": [0, 1, 0, 1, 0],
            "finish_reason": ["stop", "stop", "stop", "length", "invalid_input"],
            "instruction": ["Why does the Moon show one face?", None, "What is tea made from?", None, None],
            "response": ["Tidal locking keeps one side towards Earth.", None, "Cured leaves.", None, None],
            "parse_error": [None, "no_assistant_marker", None, "truncated_response", "no_completion"],
            "reward": [2.5, None, 0.5, None, None],
        }
    )


@pytest.fixture
def best(candidates) -> Dataset:
    return candidates.select([0, 2])


def test_stats_count_each_stage(best, candidates):
    stats = dataset_stats(best, candidates)
    assert stats["counts"] == {"passages": 3, "candidates": 5, "parsed": 2, "kept": 2}
    assert stats["outcomes"]["finish_reason: stop"] == 3
    assert stats["outcomes"]["parse_error: truncated_response"] == 1
    assert stats["rewards"]["mean"] == pytest.approx(1.5) and stats["rewards"]["50%"] == pytest.approx(1.5)
    assert stats["rewards"]["min"] == 0.5 and stats["rewards"]["max"] == 2.5


def test_card_metadata_and_body(best, candidates):
    card = build_card(
        best,
        repo_id="me/pairs",
        recipe=RECIPE,
        candidates=candidates,
        license="cc-by-sa-4.0",
        source_datasets=["wikimedia/wikipedia"],
    )
    reparsed = DatasetCard(str(card))  # the text parses back as a valid card
    data = reparsed.data
    assert data.license == "cc-by-sa-4.0" and data.language == "en"
    assert {"synthetic", "genstruct"} <= set(data.tags)
    assert data.size_categories == ["n<1K"] and data.source_datasets == ["wikimedia/wikipedia"]
    assert data.task_categories == ["text-generation", "question-answering"]
    assert data.configs == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    text = reparsed.text
    assert 'load_dataset("me/pairs", split="train")' in text
    assert "| `revision` | `abc123` |" in text and "| `num_samples` | `4` |" in text
    assert "| candidates | 5 |" in text and "| kept | 2 |" in text and "| parsed | 2 |" in text
    assert "| parse_error: no_completion | 1 |" in text
    assert "**Instruction:** Why does the Moon show one face?" in text
    assert "| mean | 1.5000 |" in text


def test_save_local_round_trips_through_load_dataset(tmp_path, best, candidates):
    folder = save_local(best, tmp_path / "pairs", recipe=RECIPE, candidates=candidates)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "README.md",
        "data/candidates-00000-of-00001.parquet",
        "data/train-00000-of-00001.parquet",
        "genstruct-report.json",
        "quality.png",
    ]
    assert (folder / "quality.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    text = (folder / "README.md").read_text()
    assert "## Quality" in text and "![Distributions of rewards and lengths](quality.png)" in text
    # Validity over all five candidates; the rest over the two pairs kept.
    assert "| pairs among candidates | 40.0% |" in text
    assert "| instructions that ask something | 100.0% |" in text
    assert 'load_dataset("' in text and 'split="candidates")  # every sample' in text
    reloaded = load_dataset(str(folder), split="train").remove_columns("messages")  # added: see below
    assert reloaded.features == best.features
    assert reloaded.to_list() == best.to_list()
    # Every candidate, the invalid input and the failed parses with their reasons, as a split of its own.
    everything = load_dataset(str(folder), split="candidates").remove_columns("messages")
    assert everything.to_list() == candidates.to_list()
    card = DatasetCard.load(folder / "README.md")
    assert card.data.configs[0]["data_files"] == [
        {"split": "train", "path": "data/train-*"},
        {"split": "candidates", "path": "data/candidates-*"},
    ]
    assert {s["name"]: s["num_examples"] for s in card.data.dataset_info["splits"]} == {"train": 2, "candidates": 5}
    saved = RunReport.load(folder)
    assert saved.counts == {"passages": 3, "candidates": 5, "parsed": 2, "kept": 2}
    assert saved.quality["validity"]["pair_share"] == 0.4 and saved.validity_over_candidates
    assert saved.recipe == RECIPE and saved.stats is None
    assert RunReport.load(folder, split="candidates") is None  # it describes train: another split is measured


def test_candidates_that_cannot_be_a_split_of_the_rows_are_refused(tmp_path, best, candidates):
    with pytest.raises(InvalidConfigError, match="have other features than the rows .*candidates_split=None"):
        save_local(best.remove_columns("title"), tmp_path / "a", candidates=candidates)
    with pytest.raises(InvalidConfigError, match="would be written over the split 'candidates'"):
        save_local(best, tmp_path / "b", split="candidates", candidates=candidates)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # For the card's figures only: no second split.
    folder = save_local(best.remove_columns("title"), tmp_path / "c", candidates=candidates, candidates_split=None)
    assert [p.name for p in (folder / "data").iterdir()] == ["train-00000-of-00001.parquet"]
    assert "| pairs among candidates | 40.0% |" in (folder / "README.md").read_text()


def test_the_picture_has_the_name_the_docs_give_it(tmp_path, best):
    folder = save_local(best, tmp_path / "pairs")
    assert (folder / QUALITY_FIGURE).is_file() and QUALITY_FIGURE == "quality.png"
    documented = set()
    for page in [*DOCS.glob("*.md"), DOCS.parent / "README.md"]:
        documented |= set(re.findall(r"[\w-]+\.png", page.read_text()))  # not the old `quality-{config}-{split}.png`
    assert documented == {QUALITY_FIGURE}


def test_card_samples_come_from_distinct_passages(candidates):
    # Two good pairs of the Moon first: the card shows one of them, then the Tea's.
    rows = candidates.to_dict()
    rows["instruction"][1], rows["response"][1], rows["parse_error"][1] = "How far is the Moon?", "Far.", None
    ds = Dataset.from_dict(rows)
    text = build_card(ds, repo_id="me/pairs").text
    samples = re.findall(r"\*\*Instruction:\*\* (.*)", text)
    assert samples == ["Why does the Moon show one face?", "What is tea made from?"]
    assert "*Passage: Moon, reward 2.500*" in text and "*Passage: Tea, reward 0.500*" in text
    # Without passage ids, each row is a passage of its own.
    text = build_card(ds.remove_columns("passage_id"), repo_id="me/pairs").text
    assert re.findall(r"\*\*Instruction:\*\* (.*)", text)[:2] == [
        "Why does the Moon show one face?",
        "How far is the Moon?",
    ]


RUN = RunStats(
    engine="vllm 0.11.0 on cuda:0 (NVIDIA H200)",
    versions={"genstruct-datasets": "0.1.0", "vllm": "0.11.0", "torch": "2.8.0"},
    passages=4,
    generated_passages=4,
    generated_tokens=2000,
    seconds={"passages": 0.5, "generate": 4.0, "parse": 0.25, "score": 1.5, "select": 0.1},
    wall_seconds=7.0,
    shards=2,
    shards_reused=0,
)


def test_the_card_says_what_the_run_cost(tmp_path, best, candidates):
    report = run_report(best, candidates, stats=RUN, recipe=RECIPE)
    folder = save_local(best, tmp_path / "pairs", candidates=candidates, report=report)
    text = (folder / "README.md").read_text()
    assert "### Cost" in text
    assert "| engine | vllm 0.11.0 on cuda:0 (NVIDIA H200) |" in text
    assert "| generated tokens | 2,000 (500 per passage) |" in text
    assert "| speed | 500.0 tokens/s, 1.00 passages/s |" in text
    assert (
        "| wall time | passages 0.5 s, generate 4.0 s, parse 0.2 s, score 1.5 s, select 0.1 s; 7.0 s in all |" in text
    )
    assert "| shards reused | 0 of 2 |" in text
    assert "| versions | genstruct-datasets 0.1.0, vllm 0.11.0, torch 2.8.0 |" in text
    assert "1,000 passages take about 16.7 minutes of generation" in text
    assert "| `num_samples` | `4` |" in text  # the recipe comes with the report
    assert RunReport.load(folder).stats == RUN
    # Not measured: the card says so, and nothing else.
    assert "The time and tokens of the run were not measured." in build_card(best, repo_id="me/pairs").text


def test_a_given_report_is_rendered_not_measured_again(tmp_path, monkeypatch, best, candidates):
    report = run_report(best, candidates, stats=RUN)
    for module in ("report.data", "report.card", "report.plot", "publish.folder", "publish.hub"):
        module = sys.modules[f"genstruct_datasets.{module}"]
        for name in ("quality_report", "dataset_stats", "distributions", "run_report"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, lambda *a, **k: pytest.fail("measured"))
    folder = save_local(best, tmp_path / "pairs", candidates=candidates, report=report)
    assert RunReport.load(folder) == report and (folder / "quality.png").is_file()


def test_save_local_shards_and_replaces_old_shards(tmp_path, candidates):
    folder = save_local(candidates, tmp_path / "pairs", max_shard_size=200)
    assert "for `evaluate`):\nover the rows published." in (folder / "README.md").read_text()
    shards = sorted(p.name for p in (folder / "data").iterdir())
    assert len(shards) > 1 and shards[-1].endswith(f"-of-{len(shards):05d}.parquet")
    save_local(candidates.select([0]), folder)
    assert sorted(p.name for p in (folder / "data").iterdir()) == ["train-00000-of-00001.parquet"]
    assert load_dataset(str(folder), split="train").num_rows == 1


def test_a_second_split_of_the_same_config_keeps_the_first(tmp_path, best, candidates):
    folder = save_local(best, tmp_path / "pairs")
    save_local(candidates, folder, split="candidates", existing_card=DatasetCard.load(folder / "README.md"))
    card = DatasetCard.load(folder / "README.md")
    assert [f["split"] for f in card.data.configs[0]["data_files"]] == ["train", "candidates"]
    assert sorted(s["name"] for s in card.data.dataset_info["splits"]) == ["candidates", "train"]
    assert load_dataset(str(folder), split="train").num_rows == 2
    assert load_dataset(str(folder), split="candidates").num_rows == 5


def test_local_models_are_named_not_linked(tmp_path, best):
    recipe = {
        "generator": {"model": str(tmp_path)},
        "reward model": {"model": "OpenAssistant/reward-model-deberta-v3-large-v2"},
    }
    text = build_card(best, repo_id="me/pairs", recipe=recipe).text
    assert f"written by `{tmp_path.name} (local, sha256 " in text and "huggingface.co/test" not in text
    assert str(tmp_path) not in text
    assert "[OpenAssistant/reward-model-deberta-v3-large-v2](https://huggingface.co/OpenAssistant/" in text


def test_a_second_config_keeps_the_first(tmp_path, best, candidates):
    folder = save_local(best, tmp_path / "pairs")
    save_local(candidates, folder, config_name="candidates", existing_card=DatasetCard.load(folder / "README.md"))
    assert load_dataset(str(folder), "candidates", split="train").num_rows == 5
    assert load_dataset(str(folder), "default", split="train").num_rows == 2


def test_publish_sends_shards_and_card_in_one_commit(monkeypatch, tmp_path, best, candidates):
    hub = FolderHub(tmp_path / "hub")
    hub.install(monkeypatch.setattr)
    # Each Hub call is retried where publish makes it.
    for method in ("create_repo", "list_repo_files", "create_commit"):
        hub.fail(method, 503)
    commit = publish(best, "me/pairs", private=True, token="hf_test", recipe=RECIPE, candidates=candidates)
    assert hub.pending_failures == {}
    assert [name for name, _ in hub.calls] == [
        "create_repo", "create_repo", "load_card", "list_repo_files", "list_repo_files",
        "create_commit", "create_commit",
    ]  # fmt: skip
    # More files than `upload_folder` puts in one commit with hf_xet (the fake's batches are tiny): still one commit.
    (landed,) = hub.commits
    assert landed.message == "Upload 2 Genstruct pairs with genstruct-datasets" and commit.oid in commit.commit_url
    assert landed.added == [
        "README.md",
        "data/candidates-00000-of-00001.parquet",
        "data/train-00000-of-00001.parquet",
        "genstruct-report.json",
        "quality.png",
    ]
    card = DatasetCard.load("me/pairs")
    assert "genstruct" in card.data.tags and 'load_dataset("me/pairs", split="train")' in card.text
    published = load_dataset(str(hub.repo("me/pairs")), split="train")
    assert published.remove_columns("messages").to_list() == best.to_list()


def test_publish_replaces_the_split_and_the_runs_shards_in_the_same_commit(monkeypatch, tmp_path, best, candidates):
    hub = FolderHub(tmp_path / "hub")
    hub.install(monkeypatch.setattr)
    save_local(candidates, hub.repo("me/pairs"), repo_id="me/pairs", max_shard_size=1)  # train, in 5 shards
    save_local(candidates, hub.repo("me/pairs"), config_name="candidates", existing_card=DatasetCard.load("me/pairs"))
    work = hub.repo("me/pairs") / ".genstruct-work" / "recipe"
    work.mkdir(parents=True)
    (work / "candidates-00000-of-00001.parquet").write_bytes(b"PAR1")
    store = HubShards("me/pairs")
    store.folders.add(".genstruct-work/recipe")
    old_shards = [name for name in hub.files("me/pairs") if name.startswith("data/train-")]
    assert len(old_shards) == 5

    # A commit that fails for good changes nothing.
    hub.fail("create_commit", 403)
    with pytest.raises(HfHubHTTPError, match="403"):
        publish(best, "me/pairs", token="hf_test", candidates=candidates, shards=store)
    assert hub.commits == [] and len([n for n in hub.files("me/pairs") if n.startswith("data/train-")]) == 5

    publish(best, "me/pairs", token="hf_test", candidates=candidates, shards=store)
    (landed,) = hub.commits
    assert landed.deleted == sorted([*old_shards, ".genstruct-work/recipe/candidates-00000-of-00001.parquet"])
    assert "README.md" in landed.added and "data/train-00000-of-00001.parquet" in landed.added
    published = load_dataset(str(hub.repo("me/pairs")), "default", split="train")
    assert published.remove_columns("messages").to_list() == best.to_list()
    assert load_dataset(str(hub.repo("me/pairs")), "candidates", split="train").num_rows == 5  # the other config


def test_publish_without_a_token_fails_before_uploading(monkeypatch, best):
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    monkeypatch.setattr(HfApi, "create_repo", lambda *a, **k: pytest.fail("must not reach the Hub"))
    with pytest.raises(MissingTokenError, match="needs a Hugging Face token with write access: run `hf auth login`"):
        publish(best, "me/pairs")


def test_import_stays_light():
    code = "import sys, genstruct_datasets; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


@pytest.mark.hub
@pytest.mark.skipif(not HUB_TOKEN, reason="opt-in: run with HF_TOKEN=... HF_HUB_OFFLINE=0 python -m pytest -m hub")
def test_publish_to_a_private_temporary_repo_and_back(monkeypatch, best, candidates):
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        pytest.skip("HF_HUB_OFFLINE is set; run this test online")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    api = HfApi(token=HUB_TOKEN)
    repo_id = f"{api.whoami()['name']}/genstruct-datasets-test-{uuid.uuid4().hex[:8]}"
    try:
        publish(best, repo_id, private=True, token=HUB_TOKEN, recipe=RECIPE, candidates=candidates)
        assert api.repo_info(repo_id, repo_type="dataset").private
        reloaded = load_dataset(repo_id, split="train", token=HUB_TOKEN)
        assert reloaded.to_list() == best.to_list()
    finally:
        api.delete_repo(repo_id, repo_type="dataset", missing_ok=True)


def test_shards_are_sized_by_the_rows_kept_not_the_whole_table(tmp_path):
    ds = Dataset.from_dict({"instruction": [f"Q{i}?" for i in range(1000)], "response": ["A." * 50] * 1000})
    folder = save_local(ds.select([3, 700]), tmp_path / "pairs", max_shard_size=ds.data.nbytes // 5)
    assert [p.name for p in (folder / "data").iterdir()] == ["train-00000-of-00001.parquet"]
    assert load_dataset(str(folder), split="train")["instruction"] == ["Q3?", "Q700?"]


def test_a_selection_is_written_in_row_groups_of_a_thousand_rows(tmp_path):
    import pyarrow.parquet as pq

    # datasets would gather up to 100 MB of a selection's rows at once (one row group) to write them.
    ds = Dataset.from_dict({"instruction": [f"Q{i}?" for i in range(5000)], "response": ["A." * 50] * 5000})
    kept = ds.select(range(0, 5000, 2))
    folder = save_local(kept, tmp_path / "pairs")
    metadata = pq.ParquetFile(folder / "data" / "train-00000-of-00001.parquet").metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [1000, 1000, 500]
    assert load_dataset(str(folder), split="train").remove_columns("messages").to_list() == kept.to_list()


def test_an_existing_card_with_a_plain_data_files_path(best):
    existing = DatasetCard("---\nconfigs:\n- config_name: default\n  data_files: data/*.parquet\n---\n")
    card = build_card(best, repo_id="me/pairs", split="candidates", existing=existing)
    assert card.data.configs[0]["data_files"] == [
        {"split": "train", "path": "data/*.parquet"},
        {"split": "candidates", "path": "data/candidates-*"},
    ]
    assert existing.data.configs[0]["data_files"] == "data/*.parquet"  # the caller's card is left alone


def test_a_card_of_many_rows_says_its_rewards_are_sampled():
    rows = 10_001
    ds = Dataset.from_dict(
        {
            "passage_id": [f"p{i}" for i in range(rows)],
            "instruction": ["Why does the Moon show phases?"] * rows,
            "response": ["Sunlight lights half of it."] * rows,
            "reward": [float(i % 7) for i in range(rows)],
        }
    )
    card = build_card(ds, repo_id="me/pairs")
    assert "Measured on a uniform sample of 10,000 of the 10,001 rows." in card.text
    assert "uniform sample" not in build_card(ds.select(range(10_000)), repo_id="me/pairs").text


def test_a_folder_this_package_did_not_write_is_refused(tmp_path, best):
    from genstruct_datasets import OutputExistsError

    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "README.md").write_text("# My notes\n")
    with pytest.raises(OutputExistsError, match="is not empty and was not written by genstruct-.*overwrite=True"):
        save_local(best, folder)
    assert (folder / "README.md").read_text() == "# My notes\n"
    save_local(best, folder, overwrite=True)
    assert load_dataset(str(folder), split="train").num_rows == best.num_rows
    save_local(best, folder)  # ours now: rewriting it needs no consent


def test_a_failure_while_rewriting_leaves_the_previous_output_whole(tmp_path, best, candidates, monkeypatch):
    publish_module = sys.modules["genstruct_datasets.publish.folder"]
    folder = save_local(best, tmp_path / "pairs")
    save_local(candidates, folder, split="candidates", existing_card=DatasetCard.load(folder / "README.md"))
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(publish_module, "plot_quality", full_disk)  # after the new shards, before the card
    with pytest.raises(OSError, match="No space left on device"):
        save_local(best.select([0]), folder)
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["pairs"]  # no partial folder left beside it
    assert load_dataset(str(folder), split="train").num_rows == best.num_rows


def test_rewriting_one_split_keeps_the_others(tmp_path, best, candidates):
    folder = save_local(best, tmp_path / "pairs")
    save_local(candidates, folder, split="candidates", existing_card=DatasetCard.load(folder / "README.md"))
    save_local(best.select([0]), folder, existing_card=DatasetCard.load(folder / "README.md"))
    assert load_dataset(str(folder), split="train").num_rows == 1
    assert load_dataset(str(folder), split="candidates").num_rows == candidates.num_rows


def test_the_output_can_be_the_working_folder_and_keeps_its_permissions(tmp_path, best, monkeypatch):
    folder = tmp_path / "here"
    folder.mkdir()
    folder.chmod(0o755)
    monkeypatch.chdir(folder)
    save_local(best, ".")  # a folder that cannot be renamed away (the same path as a mount point takes)
    save_local(best, ".")
    assert load_dataset(str(folder), split="train").num_rows == best.num_rows
    assert oct(folder.stat().st_mode & 0o777) == "0o755"
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".genstruct-staging-")]
    fresh = save_local(best, tmp_path / "new")
    assert oct(fresh.stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_card_without_a_recipe_names_no_model(best):
    card = build_card(best, repo_id="me/pairs")
    assert "Grounded instruction pairs written by a Genstruct model from text passages" in card.text
    assert "Genstruct-7B" not in card.text


KILLED_SAVE = """
import importlib, sys, time
from pathlib import Path
from datasets import Dataset
folder = importlib.import_module("genstruct_datasets.publish.folder")  # `genstruct_datasets.publish` is a function

def held(staging, target):  # the new folder is whole, not yet swapped in: killed here
    Path(sys.argv[2]).write_text(str(staging))
    time.sleep(600)

folder._swap_in = held
folder.save_local(Dataset.from_dict({"instruction": ["Why?"], "response": ["Because."]}), sys.argv[1])
"""


def test_a_save_killed_before_its_swap_leaves_a_staging_folder_that_the_next_save_removes(tmp_path, best):
    output = save_local(best, tmp_path / "pairs")
    before = {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    paused = tmp_path / "paused"
    killed = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(output), str(paused)])
    try:
        deadline = time.monotonic() + 120
        while not paused.exists():
            assert killed.poll() is None and time.monotonic() < deadline, "the save did not get to its swap"
            time.sleep(0.1)
    finally:
        killed.kill()
        killed.wait()
    left = Path(paused.read_text())
    assert left.parent == tmp_path and left.name.startswith(f".genstruct-staging-{killed.pid}@") and left.is_dir()
    assert {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()} == before  # intact
    # A staging folder of a save that is still running (this process's parent, say) is left alone.
    alive = tmp_path / f".genstruct-staging-{os.getppid()}@{socket.gethostname()}-abcd1234"
    alive.mkdir()
    save_local(best.select([0]), output)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["pairs", "paused", alive.name])
    assert not [p.name for p in output.iterdir() if p.name.startswith(".genstruct-staging-")]
    assert load_dataset(str(output), split="train").num_rows == 1


def _fail_the_nth_move(folder: Path, n: int, patch) -> list:
    """Make the `n`th rename or copy that takes something out of `folder` or puts something in it (the swap of a new
    output for the old, however it is done) raise OSError; the writes inside a staging folder do not count."""
    from genstruct_datasets.publish.folder import STAGING_PREFIX

    folder, calls = folder.resolve(), []

    def touches(*paths) -> bool:
        for path in map(Path, paths):
            path = path.resolve()
            if (path == folder or folder in path.parents) and not any(
                part.startswith(STAGING_PREFIX) for part in path.relative_to(folder).parts
            ):
                return True
        return False

    def faulty(real):
        def call(source, target, *args, **kwargs):
            if touches(source, target):
                calls.append((source, target))
                if len(calls) == n:
                    raise OSError(28, "No space left on device")
            return real(source, target, *args, **kwargs)

        return call

    for module, name in [(os, "replace"), (os, "rename"), (shutil, "copy2"), (shutil, "copyfile"), (shutil, "move")]:
        patch.setattr(module, name, faulty(getattr(module, name)))
    return calls


@pytest.mark.parametrize("n", [pytest.param(1, id="first-move"), pytest.param(2, id="second-move")])
def test_a_failure_during_the_swap_leaves_the_old_output_or_the_new_one_whole(tmp_path, best, candidates, n):
    folder = save_local(candidates, tmp_path / "out" / "pairs")
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.MonkeyPatch.context() as patch:
        calls = _fail_the_nth_move(folder, n, patch)
        with pytest.raises(OSError, match="No space left on device"):
            save_local(best.select([0]), folder)
    assert len(calls) >= n  # the failure happened in the swap, after the new folder was written whole
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before
    assert load_dataset(str(folder), split="train").num_rows == candidates.num_rows
    assert [p.name for p in folder.parent.iterdir()] == ["pairs"]  # no staging folder, no old output beside it


CHAT_TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"


def test_the_pairs_are_written_with_messages_in_trls_conversational_format(tmp_path, best, candidates):
    folder = save_local(best, tmp_path / "pairs", recipe=RECIPE, candidates=candidates)
    train = load_dataset(str(folder), split="train")
    assert train["messages"][:] == [
        [{"role": "user", "content": i}, {"role": "assistant", "content": r}]
        for i, r in zip(best["instruction"], best["response"])
    ]
    assert train.remove_columns("messages").to_list() == best.to_list()
    everything = load_dataset(str(folder), split="candidates")
    assert [bool(m) for m in everything["messages"]] == [i is not None for i in candidates["instruction"]]
    text = (folder / "README.md").read_text()
    assert "| `messages` | List |" in text
    snippet = text.split("## How to fine-tune on it")[1].split("```python\n")[1].split("```")[0]
    assert snippet.splitlines()[-3:] == [
        f'ds = load_dataset("{folder.name}", split="train").select_columns(["messages"])',
        'trainer = SFTTrainer(model="Qwen/Qwen3-0.6B", train_dataset=ds)',
        "trainer.train()",
    ]
    # Saved again (a folder read back and republished): the column is made anew, not doubled.
    again = save_local(train, tmp_path / "again", recipe=RECIPE)
    assert load_dataset(str(again), split="train").to_list() == train.to_list()


@pytest.fixture
def published_messages(tmp_path, best, candidates) -> Dataset:
    """The card's first line: the written train split, its `messages` column selected."""
    folder = save_local(best, tmp_path / "pairs", recipe=RECIPE, candidates=candidates)
    return load_dataset(str(folder), split="train").select_columns(["messages"])


@pytest.mark.slow
def test_trls_data_utilities_take_the_messages(published_messages, best, mistral_tokenizer):
    pytest.importorskip("trl")  # not a dependency of the package: checked where it is installed
    from trl.data_utils import apply_chat_template, is_conversational

    assert all(is_conversational(row) for row in published_messages)
    text = apply_chat_template(published_messages[0], mistral_tokenizer, chat_template=CHAT_TEMPLATE)["text"]
    assert text == f"<|user|>\n{best[0]['instruction']}</s>\n<|assistant|>\n{best[0]['response']}</s>\n"


@pytest.mark.slow
def test_trls_sft_trainer_trains_on_the_messages(published_messages, tmp_path):
    trl = pytest.importorskip("trl")
    from genstruct_datasets import testing

    # The card's lines, with a tiny model whose tokenizer has a chat template in place of Qwen.
    model = testing.build_tiny_generator(tmp_path / "model", chat_template=CHAT_TEMPLATE)
    args = trl.SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=1, report_to="none", use_cpu=True)
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=published_messages)
    assert trainer.train().global_step == 1
