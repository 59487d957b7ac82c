import json
import os
from pathlib import Path

import pytest
from datasets import Dataset

import genstruct_datasets.models as models
from genstruct_datasets import (
    GenstructConfig,
    InvalidConfigError,
    MissingColumnsError,
    SourceError,
    clear_model_cache,
    load_genstruct,
    testing,
)
from genstruct_datasets.builder import FEATURES

DATA = Path(__file__).parent / "data"


@pytest.fixture
def documents(tmp_path) -> Path:
    path = tmp_path / "documents.jsonl"
    rows = [
        {
            "title": "Moon",
            "text": (DATA / "moon_wikipedia.txt").read_text(),
            "url": "https://en.wikipedia.org/wiki/Moon",
        },
        {"title": "Beekeeping", "text": (DATA / "plain_essay.txt").read_text(), "url": None},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def recipe(taught_generator, tiny_reward_model, tmp_path) -> dict:
    return {
        "model": taught_generator,
        "reward_model": tiny_reward_model,
        "num_samples": 2,
        "max_new_tokens": 24,
        "seed": 0,
        "max_tokens": 160,
        "cache_dir": str(tmp_path / "builds"),
    }


@pytest.fixture
def loads(monkeypatch) -> list:
    """The models and tokenizers loaded from now on, by name."""
    clear_model_cache()
    loaded = []
    real_load, real_tokenizer = models._load, models.load_tokenizer

    def load(kind, name, **kwargs):
        loaded.append(name)
        return real_load(kind, name, **kwargs)

    def load_tokenizer(name, **kwargs):
        loaded.append(f"tokenizer:{name}")
        return real_tokenizer(name, **kwargs)

    monkeypatch.setattr(models, "_load", load)
    monkeypatch.setattr("genstruct_datasets.passages.load_tokenizer", load_tokenizer)
    return loaded


def test_builds_best_pairs_and_candidates(documents, recipe, loads):
    pairs = load_genstruct(str(documents), **recipe)
    assert set(pairs) == {"train", "candidates"}
    best, candidates = pairs["train"], pairs["candidates"]
    assert best.features == FEATURES and candidates.features == FEATURES
    assert candidates.num_rows == 2 * best.num_rows
    assert best.num_rows == len(set(candidates["passage_id"])) == 8
    assert best["title"] == ["Moon"] * 6 + ["Beekeeping"] * 2
    assert best["passage_index"] == [0, 1, 2, 3, 4, 5, 0, 1]
    assert all(error is None for error in best["parse_error"])
    assert set(best["instruction"]) == {testing.TAUGHT_INSTRUCTION}
    assert sorted(set(loads)) == sorted({recipe["model"], f"tokenizer:{recipe['model']}", recipe["reward_model"]})


def test_the_same_recipe_comes_from_the_cache_and_a_changed_one_builds_anew(documents, recipe, loads):
    first = load_genstruct(str(documents), **recipe)
    clear_model_cache()
    loads.clear()
    again = load_genstruct(
        str(documents),
        num_samples=2,
        temperature=0.7,
        backend="transformers",  # what "auto" is on this machine
        batch_size=3,  # a run option: not part of the recipe
        **{k: v for k, v in recipe.items() if k != "num_samples"},
    )
    assert loads == []  # a default passed explicitly, or another batch size, is the same recipe
    assert again["train"].to_list() == first["train"].to_list()
    assert again["train"].cache_files == first["train"].cache_files
    changed = load_genstruct(str(documents), **{**recipe, "seed": 1})
    assert recipe["model"] in loads
    assert changed["train"].cache_files != first["train"].cache_files


def test_force_redownload_generates_again(documents, recipe, generated):
    first = load_genstruct(str(documents), **recipe)
    passages = len(generated)
    assert passages == first["candidates"].num_rows // recipe["num_samples"]
    # A model on `main` that moved is not part of the recipe: forcing a build must run it, not the map caches.
    again = load_genstruct(str(documents), download_mode="force_redownload", **recipe)
    assert len(generated) == 2 * passages
    assert again["train"].to_list() == first["train"].to_list()


def test_an_edited_source_is_a_new_recipe(documents, recipe, loads):
    first = load_genstruct(str(documents), **recipe)
    with documents.open("a") as f:
        f.write(json.dumps({"title": "Tea", "text": "Tea is an aromatic beverage. " * 8}) + "\n")
    os.utime(documents, ns=(documents.stat().st_atime_ns, documents.stat().st_mtime_ns + 10**9))
    second = load_genstruct(str(documents), **recipe)
    assert second["train"].num_rows == first["train"].num_rows + 1


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_structured_files(tmp_path, recipe, kind):
    ds = Dataset.from_dict({"title": ["Bees"], "text": [(DATA / "plain_essay.txt").read_text()]})
    path = tmp_path / f"documents.{kind}"
    getattr(ds, f"to_{kind}")(str(path))
    assert load_genstruct(str(path), **recipe)["train"]["title"] == ["Bees", "Bees"]


def test_a_folder_of_text_and_markdown_files(recipe):
    best = load_genstruct(str(DATA), **recipe)["train"]
    # Markdown files take their title from the first heading, text files from their name.
    assert set(best["title"]) == {"Building an instruction dataset", "moon wikipedia", "plain essay"}


def test_passages_without_splitting(tmp_path, recipe):
    path = tmp_path / "passages.jsonl"
    path.write_text(json.dumps({"title": "Tea", "content": "Tea is an aromatic beverage."}) + "\n")
    best = load_genstruct(str(path), text_column="content", split_documents=False, **recipe)["train"]
    assert best["content"] == ["Tea is an aromatic beverage."] and best["passage_index"] == [0]


def test_without_best_of_n_train_holds_every_candidate(documents, recipe):
    pairs = load_genstruct(
        str(documents), best_of_n=False, reward_model=None, **{k: v for k, v in recipe.items() if k != "reward_model"}
    )
    assert list(pairs) == ["train"]
    assert pairs["train"].num_rows == 16 and set(pairs["train"]["reward"]) == {None}


def test_limit_takes_the_first_passages(documents, recipe):
    assert load_genstruct(str(documents), limit=3, **recipe)["train"]["passage_index"] == [0, 1, 2]


def test_a_missing_column_is_named_before_any_model_loads(documents, recipe, loads):
    with pytest.raises(MissingColumnsError, match=r"'body'.*it has: title, text, url\. Name yours with title_column="):
        load_genstruct(str(documents), text_column="body", **recipe)
    assert loads == []


@pytest.mark.parametrize(
    ("make", "match"),
    [
        pytest.param(lambda root: root / "missing.jsonl", "does not exist", id="missing-file"),
        pytest.param(lambda root: root, "holds no supported files", id="empty-folder"),
    ],
)
def test_bad_sources(tmp_path, recipe, make, match):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=match):
        load_genstruct(str(make(tmp_path / "empty")), **recipe)


def test_a_folder_of_mixed_kinds_is_refused(tmp_path, recipe):
    (tmp_path / "a.md").write_text("# A\n\ntext")
    (tmp_path / "b.csv").write_text("title,text\nB,text\n")
    with pytest.raises(SourceError, match=r"mixes files of kinds \['csv', 'text'\]"):
        load_genstruct(str(tmp_path), **recipe)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        pytest.param({"num_sampels": 4}, r"Unknown setting\(s\) \['num_sampels'\]", id="typo"),
        pytest.param({"limit": 0}, "limit must be a positive integer", id="limit"),
        pytest.param({"reward_model": None}, "best_of_n needs a reward_model", id="no-reward-model"),
        pytest.param({"quantization": "2bit"}, "quantization='2bit' is not supported", id="stage-settings"),
    ],
)
def test_bad_recipes_are_refused_before_anything_runs(settings, match):
    with pytest.raises(InvalidConfigError, match=match):
        load_genstruct("does-not-matter.jsonl", **settings)


def test_a_trial_run_on_a_hub_source_streams_only_what_it_needs(monkeypatch, recipe):
    from datasets import IterableDataset

    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))

        def documents():
            for i in range(1000):
                yield {"title": f"Doc {i}", "text": (DATA / "plain_essay.txt").read_text()}

        assert kwargs.get("streaming"), "a limited Hub source must be streamed"
        return IterableDataset.from_generator(documents)

    monkeypatch.setattr("genstruct_datasets.builder.datasets.load_dataset", fake_load_dataset)
    best = load_genstruct("someone/corpus", "en", revision="v1", limit=2, **recipe)["train"]
    assert best["title"] == ["Doc 0", "Doc 0"]
    assert calls == [("someone/corpus", "en", {"split": "train", "revision": "v1", "token": None, "streaming": True})]


def test_recipe_lists_every_generation_setting():
    options = {"quantization": "4bit", "batch_size": 2}
    recipe = GenstructConfig(
        source="x.jsonl", seed=3, backend="transformers", engine_options=options, model_revision="abc"
    ).recipe()
    assert recipe["generator"]["revision"] == "abc"
    assert recipe["generator"]["seed"] == 3 and recipe["generator"]["quantization"] == "4bit"
    assert recipe["generator"]["backend"] == "transformers" and "batch_size" not in recipe["generator"]
    assert recipe["generator"]["engine"].startswith("transformers 5.")
    assert recipe["generator"]["do_sample"] is True and recipe["generator"]["num_samples"] == 4
    assert recipe["reward model"]["model"] == "OpenAssistant/reward-model-deberta-v3-large-v2"
    assert "api_key" not in recipe["generator"]  # a card never shows a key


def test_a_run_without_a_single_pair_returns_empty_splits(documents, tiny_generator, tiny_reward_model, tmp_path):
    # A random generator never writes a pair: best-of-n keeps nothing, and that is an answer, not a crash.
    pairs = load_genstruct(
        str(documents), model=tiny_generator, reward_model=tiny_reward_model, num_samples=1, max_new_tokens=4,
        max_tokens=160, cache_dir=str(tmp_path / "builds"),
    )  # fmt: skip
    assert pairs["train"].num_rows == 0 and pairs["train"].features == FEATURES
    assert pairs["candidates"].num_rows == 8 and set(pairs["candidates"]["parse_error"]) != {None}


def test_the_builder_reads_the_environment_of_now(monkeypatch, tmp_path, recipe):
    from genstruct_datasets import GenstructBuilder

    settings = {key: value for key, value in recipe.items() if key != "cache_dir"}
    GenstructBuilder(cache_dir=tmp_path, config_id="first", source="corpus.jsonl", **settings)
    # A map in worker processes leaves a copy of the environment in os.environ; datasets' patched `os` of a
    # builder module keeps the old one.
    Dataset.from_dict({"x": [1, 2]}).map(lambda batch: batch, batched=True, batch_size=1, num_proc=2)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    builder = GenstructBuilder(cache_dir=tmp_path, config_id="second", source="corpus.jsonl", **settings)
    assert builder.node == (1, 2)


@pytest.fixture
def three_shards(tmp_path, recipe) -> dict:
    """A builder's settings for three one-line passages, P0 to P2, a shard each."""
    corpus = tmp_path / "passages.jsonl"
    corpus.write_text(
        "".join(json.dumps({"title": f"P{i}", "content": f"Passage {i} is about the Moon."}) + "\n" for i in range(3))
    )
    return {**recipe, "source": str(corpus), "split_documents": False, "text_column": "content", "shard_size": 1}


def test_a_lost_shard_takes_its_generation_from_the_datasets_cache(three_shards, generated):
    from genstruct_datasets import GenstructBuilder

    builder = GenstructBuilder(**three_shards)
    paths = builder._build_shards(builder.config)
    assert len(generated) == 3
    # A run killed after a shard's generation finished, before its parquet file was written: the shard is built
    # again, and its generation comes from the datasets cache instead of the model.
    paths[1].unlink()
    again = GenstructBuilder(**three_shards)
    assert again._build_shards(again.config) == paths and paths[1].exists() and len(generated) == 3


def test_a_forced_build_that_crashes_leaves_no_work_of_the_earlier_run(
    three_shards, generated, crash_in_shard_of, monkeypatch
):
    from genstruct_datasets import GenstructBuilder

    earlier = GenstructBuilder(**three_shards)
    paths = earlier._build_shards(earlier.config)
    # A forced build (the model's `main` moved) that crashes in its second shard.
    forced = GenstructBuilder(**three_shards)
    forced.reuse_work = False
    generated.clear()
    with monkeypatch.context() as patch:
        crash_in_shard_of("P1", patch)
        with pytest.raises(OSError, match="No space left"):
            forced._build_shards(forced.config)
    assert generated == ["P0"] and [path.exists() for path in paths] == [True, False, False]
    # Resumed without --force: the forced build's shard is kept, and the rest are generated by the model, not
    # taken from the maps' caches of the earlier run.
    generated.clear()
    resumed = GenstructBuilder(**three_shards)
    assert resumed._build_shards(resumed.config) == paths and generated == ["P1", "P2"]
