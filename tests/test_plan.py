import json
import shutil
from pathlib import Path

import pytest

import genstruct_datasets.models as models
from genstruct_datasets import RunPlan, StageCount, run_recipe
from genstruct_datasets._tokens import prepare_tokenizer, render
from genstruct_datasets.plan import PromptTokens

TEXT = "{title} is about the Moon and its phases, and the tides they raise on the coasts of the Earth. " * 2


@pytest.fixture
def corpus(tmp_path) -> Path:
    """Five passages (title, content) and one too short to ask about."""
    rows = [{"title": f"Moon {i}", "content": TEXT.format(title=f"Moon {i}")} for i in range(5)]
    rows.insert(2, {"title": "Stub", "content": "Too short."})
    path = tmp_path / "passages.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def settings(taught_generator, tiny_reward_model) -> dict:
    return {"model": taught_generator, "reward_model": tiny_reward_model, "num_samples": 2, "max_new_tokens": 24,
            "seed": 0, "shard_size": 2}  # fmt: skip


@pytest.fixture
def no_model_loads(monkeypatch):
    monkeypatch.setattr(models, "_load", lambda *args, **kwargs: pytest.fail("a model was loaded"))


def dry_run(corpus: Path, settings: dict, tmp_path: Path, **options) -> RunPlan:
    plan = run_recipe({"source": str(corpus), **settings}, cache_dir=str(tmp_path / "cache"), dry_run=True, **options)
    assert isinstance(plan, RunPlan)
    return plan


def test_a_dry_run_says_what_the_run_would_do_and_loads_no_model(
    corpus, settings, tmp_path, taught_generator, no_model_loads
):
    plan = dry_run(corpus, settings, tmp_path, output=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists() and not list((tmp_path / "cache").glob("genstruct-work/*/*.parquet"))
    assert plan.passages_stage == StageCount("passages", "documents", 6, 5, {"too_short": 1})
    assert (plan.passages, plan.shards, plan.shards_in_work, plan.shards_in_store) == (5, 3, 0, 0)
    assert (plan.generations, plan.generations_left, plan.cached) == (10, 10, False)
    tokenizer = prepare_tokenizer(models.load_tokenizer(taught_generator))
    sizes = sorted(len(render(tokenizer, f"Moon {i}", TEXT.format(title=f"Moon {i}"))) for i in range(5))
    assert plan.prompt_tokens == PromptTokens(sum(sizes), sizes[0], sizes[2], sizes[-1])
    assert plan.outputs == [str(tmp_path / "out")]
    lines = plan.summary().splitlines()
    assert lines[0] == f"dry run of {corpus}: no model loaded, nothing generated or written"
    assert lines[1] == "  passages       5 from 5 of 6 documents (left out: too_short 1)"
    assert lines[2] == (
        "  shards         3 of up to 2 passages: 0 finished and reused (0 in the work folder, 0 in the store), "
        "3 to build"
    )
    assert lines[3].startswith(f"  prompt tokens  {sum(sizes):,} in all; per passage min {sizes[0]}, median ")
    assert lines[4:] == [
        "  generations    5 passages x 2 samples = 10; 10 left to make (5 passages)",
        f"  output         {tmp_path / 'out'}",
    ]


def test_a_dry_run_after_a_partial_run_counts_its_finished_shards_as_reused(
    corpus, settings, tmp_path, monkeypatch, crash_in_shard_of
):
    with monkeypatch.context() as patch:
        crash_in_shard_of("Moon 4", patch)  # the third shard: the first two are finished
        with pytest.raises(OSError, match="No space left"):
            run_recipe({"source": str(corpus), **settings}, cache_dir=str(tmp_path / "cache"))
    monkeypatch.setattr(models, "_load", lambda *args, **kwargs: pytest.fail("a model was loaded"))
    plan = dry_run(corpus, settings, tmp_path)
    assert (plan.shards, plan.shards_in_work, plan.passages_to_generate, plan.generations_left) == (3, 2, 1, 2)
    assert "3 of up to 2 passages: 2 finished and reused (2 in the work folder, 0 in the store), 1 to build" in (
        plan.summary()
    )
    assert dry_run(corpus, settings, tmp_path, force=True).passages_to_generate == 5  # --force reuses nothing

    # A broken shard is not counted, and left for the run to rebuild.
    (finished,) = [p for p in (tmp_path / "cache").glob("genstruct-work/*/*.parquet") if "00000-of" in p.name]
    finished.write_bytes(b"not parquet")
    assert dry_run(corpus, settings, tmp_path).shards_in_work == 1 and finished.exists()


def test_a_dry_run_counts_the_shards_in_the_store_without_creating_anything(
    corpus, settings, tmp_path, monkeypatch, crash_in_shard_of
):
    from hub_fake import FolderHub

    hub = FolderHub(tmp_path / "hub")
    hub.install(monkeypatch.setattr)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    assert dry_run(corpus, settings, tmp_path, push_to_hub="me/pairs").shards_in_store == 0
    assert not hub.repo("me/pairs").exists()  # listed, not created
    with monkeypatch.context() as patch:
        crash_in_shard_of("Moon 4", patch)
        with pytest.raises(OSError, match="No space left"):
            run_recipe({"source": str(corpus), **settings}, cache_dir=str(tmp_path / "cache"), push_to_hub="me/pairs")
    shutil.rmtree(tmp_path / "cache" / "genstruct-work")  # another machine: the finished shards are in the repo alone
    monkeypatch.setattr(models, "_load", lambda *args, **kwargs: pytest.fail("a model was loaded"))
    plan = dry_run(corpus, settings, tmp_path, push_to_hub="me/pairs")
    assert (plan.shards_in_work, plan.shards_in_store, plan.passages_to_generate) == (0, 2, 1)
    assert plan.outputs == ["me/pairs"]


def test_a_dry_run_of_a_built_recipe_reads_it_from_the_cache(corpus, settings, tmp_path, monkeypatch):
    assert run_recipe({"source": str(corpus), **settings}, cache_dir=str(tmp_path / "cache")) is not None
    monkeypatch.setattr(models, "_load", lambda *args, **kwargs: pytest.fail("a model was loaded"))
    plan = dry_run(corpus, settings, tmp_path)
    assert plan.cached and plan.generations_left == 0
    assert "  shards         3 of up to 2 passages: built before, read back from the cache" in plan.summary()


def test_the_command_prints_the_plan(corpus, settings, tmp_path, capsys, no_model_loads):
    from genstruct_datasets.cli import main

    flags = [f"--{name.replace('_', '-')}={value}" for name, value in settings.items()]
    assert main(["run", str(corpus), *flags, "--cache-dir", str(tmp_path / "cache"), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"dry run of {corpus}: no model loaded, nothing generated or written"
    assert out[-1] == "  output         none (no --output or --push-to-hub): the cache only"
