import json
import logging
import os
from pathlib import Path

import pytest
from datasets import Dataset

import genstruct_datasets.models as models
from genstruct_datasets import (
    GenstructConfig,
    InvalidConfigError,
    InvalidSourceError,
    MissingColumnsError,
    ModelNotFoundError,
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
def recipe(recipe) -> dict:
    """The shared recipe, with passages short enough that the Moon article gives six of them."""
    return {**recipe, "max_tokens": 160}


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


def test_force_redownload_generates_again(documents, recipe, generated, model_writes):
    model_writes("run 1")
    first = load_genstruct(str(documents), **recipe)
    passages = len(generated)
    assert passages == first["candidates"].num_rows // recipe["num_samples"]
    # A model on `main` that moved is not part of the recipe: forcing a build must run it, not the map caches.
    model_writes("run 2")
    again = load_genstruct(str(documents), download_mode="force_redownload", **recipe)
    assert len(generated) == 2 * passages
    assert model_writes.runs(first["candidates"]) == {"Moon": {"run 1"}, "Beekeeping": {"run 1"}}
    assert model_writes.runs(again["candidates"]) == {"Moon": {"run 2"}, "Beekeeping": {"run 2"}}
    assert again["train"].num_rows == first["train"].num_rows


def test_an_edited_source_is_a_new_recipe(documents, recipe, loads):
    first = load_genstruct(str(documents), **recipe)
    with documents.open("a") as f:
        f.write(json.dumps({"title": "Tea", "text": "Tea is an aromatic beverage. " * 8}) + "\n")
    os.utime(documents, ns=(documents.stat().st_atime_ns, documents.stat().st_mtime_ns + 10**9))
    second = load_genstruct(str(documents), **recipe)
    assert second["train"].num_rows == first["train"].num_rows + 1


def test_passages_without_splitting(tmp_path, recipe):
    path = tmp_path / "passages.jsonl"
    path.write_text(json.dumps({"title": "Tea", "content": "Tea is an aromatic beverage."}) + "\n")
    best = load_genstruct(str(path), text_column="content", split_documents=False, min_tokens=4, **recipe)["train"]
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
    ("settings", "match"),
    [
        pytest.param({"num_sampels": 4}, r"Unknown setting\(s\) \['num_sampels'\]", id="typo"),
        pytest.param({"limit": 0}, "limit must be a positive integer", id="limit"),
        pytest.param({"reward_model": None}, "best_of_n needs a reward_model", id="no-reward-model"),
        pytest.param({"quantization": "2bit"}, "quantization='2bit' is not supported", id="stage-settings"),
        pytest.param({"min_reward": float("nan")}, "min_reward must be a finite number, got nan", id="nan-min-reward"),
        pytest.param(
            {"num_proc": 0}, r"num_proc must be a positive integer \(worker processes\), got 0", id="num-proc"
        ),
    ],
)
def test_bad_recipes_are_refused_before_anything_runs(settings, match):
    with pytest.raises(InvalidConfigError, match=match):
        load_genstruct("does-not-matter.jsonl", **settings)


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


def test_each_setting_goes_to_its_stage_whatever_the_stage_takes():
    flat = GenstructConfig(
        source="x.jsonl", model="gen", model_revision="abc", num_samples=2, max_prompt_tokens=900, batch_size=4,
        min_tokens=16, text_column="body", reward_model="rm", reward_max_length=256, reward_batch_size=8,
    )  # fmt: skip
    nested = GenstructConfig(
        source="x.jsonl",
        generation={"model": "gen", "revision": "abc", "num_samples": 2, "max_prompt_tokens": 900, "batch_size": 4},
        splitting={"min_tokens": 16, "text_column": "body"},
        scoring={"model": "rm", "max_length": 256, "batch_size": 8},
    )
    assert flat.settings() == nested.settings()
    assert flat.generator().max_prompt_tokens == 900 and flat.generator().engine.batch_size == 4
    assert flat.splitter().tokenizer == "gen" and flat.splitter().revision == "abc"
    assert flat.scorer().max_length == 256 and flat.splitter().text_column == "body"
    # What does not change the rows is not part of the recipe's key: another batch size reuses the build.
    faster = GenstructConfig(**{**vars(flat), "scoring": {**flat.scoring, "batch_size": 64}})
    assert faster.settings() == flat.settings()
    assert GenstructConfig(source="x.jsonl", reward_max_length=128).settings() != flat.settings()


def test_a_new_generator_option_needs_no_change_to_the_recipe(monkeypatch):
    import dataclasses

    from genstruct_datasets import generate

    # A new setting of the generation stage is a new field of its settings dataclass, and nothing else.
    @dataclasses.dataclass
    class WithStopWords(generate.GenerationSettings):
        stop_words: list | None = dataclasses.field(default=None, metadata={"help": "strings that end a completion"})

    monkeypatch.setattr(generate, "GenerationSettings", WithStopWords)
    config = GenstructConfig(source="x.jsonl", stop_words=["END"])
    assert config.generation["stop_words"] == ["END"] and config.generator().stop_words == ["END"]
    assert config.settings()["generation"]["stop_words"] == ["END"]  # part of the cache key
    assert config.recipe()["generator"]["stop_words"] == ["END"]  # and of the card


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
    assert builder.executor.name == "torchrun" and builder.executor.node == (1, 2)


def test_failed_passages_are_not_finished_work_and_a_rerun_retries_only_them(documents, recipe, tmp_path):
    from completion_server import FlakyServer

    from genstruct_datasets import FailedPassagesError

    server = FlakyServer(status=500, failing=lambda body: "Beekeeping" in body["prompt"])
    settings = {**recipe, "backend": "openai", "base_url": server.base_url, "max_retries": 0, "shard_size": 4}
    try:
        with pytest.raises(FailedPassagesError, match=r"2 passage\(s\) failed to generate .* Run the same command"):
            load_genstruct(str(documents), **settings)
        first = [body["prompt"] for body in server.requests]
        server.requests.clear()
        server.failing = None  # the server recovers
        pairs = load_genstruct(str(documents), **settings)
    finally:
        server.close()
    # 8 passages in shards of 4: the Moon shard finished; the other kept its 2 Moon passages, not the 2 failed.
    assert len(first) == 8 and sum("Beekeeping" in prompt for prompt in first) == 2
    assert len(server.requests) == 2 and all("Beekeeping" in body["prompt"] for body in server.requests)
    candidates = pairs["candidates"]
    assert candidates.num_rows == 16 and set(candidates["finish_reason"]) == {"stop"}
    assert sorted(set(candidates["title"])) == ["Beekeeping", "Moon"]


def test_passages_in_title_and_content_are_read_as_passages(tmp_path, recipe, caplog):
    path = tmp_path / "passages.jsonl"
    content = "Tea is an aromatic beverage made from the cured leaves of the tea plant. " * 12  # > max_tokens
    path.write_text(json.dumps({"title": "Tea", "content": content}) + "\n")
    with caplog.at_level(logging.INFO, logger="genstruct_datasets"):
        best = load_genstruct(str(path), **recipe)["train"]
    assert best["content"] == [content] and best["passage_index"] == [0]  # one passage, not split
    said = [r.getMessage() for r in caplog.records if "'content' column and no 'text' column" in r.getMessage()]
    assert len(said) == 1 and "read as passages, without splitting" in said[0]


def test_a_corpus_that_gives_no_passage_says_why_before_any_model_loads(tmp_path, recipe, loads):
    path = tmp_path / "documents.jsonl"
    path.write_text("".join(json.dumps({"title": t, "text": x}) + "\n" for t, x in [("A", " "), ("B", "Too short.")]))
    with pytest.raises(InvalidSourceError, match=r"none of the 2 document\(s\) of .* gave a passage: their 'text' is "
                       r"empty, or shorter than the shortest passage, 32 tokens\. Check the text column"):  # fmt: skip
        load_genstruct(str(path), **recipe)
    assert [name for name in loads if not name.startswith("tokenizer:")] == []


@pytest.mark.parametrize(
    ("setting", "make", "match"),
    [
        pytest.param(
            "model", lambda tmp: str(tmp / "missing"), r"model folder '.*missing' does not exist", id="missing"
        ),
        pytest.param("model", lambda tmp: "./missing/model", r"'\./missing/model' does not exist", id="relative"),
        pytest.param(
            "model", lambda tmp: str(tmp / "empty"), r"'.*empty' is empty: it holds no saved model", id="empty"
        ),
        pytest.param("reward_model", lambda tmp: str(tmp / "missing"), r"'.*missing' does not exist", id="reward"),
    ],
)
def test_a_bad_model_folder_is_named_before_any_model_loads(documents, recipe, loads, tmp_path, setting, make, match):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match=match):
        load_genstruct(str(documents), **{**recipe, setting: make(tmp_path)})
    assert loads == []


def test_a_reward_model_with_two_labels_is_refused_before_generating(documents, recipe, loads, tmp_path):
    folder = tmp_path / "two-labels"
    folder.mkdir()
    config = json.loads((Path(recipe["reward_model"]) / "config.json").read_text())
    config |= {"id2label": {"0": "bad", "1": "good"}, "label2id": {"bad": 0, "good": 1}}
    (folder / "config.json").write_text(json.dumps(config))  # its config is all that is read
    with pytest.raises(
        InvalidConfigError, match=r"reward model .*two-labels has 2 labels; a reward model has exactly"
    ):
        load_genstruct(str(documents), **{**recipe, "reward_model": str(folder)})
    assert loads == []


def test_generations_read_from_the_cache_cost_nothing(documents, recipe):
    from genstruct_datasets import RunStats

    first = RunStats.of(load_genstruct(str(documents), **recipe)["train"])
    assert first.generated_passages == 8 and first.generated_tokens > 0 and first.engine.startswith("transformers")
    # Another floor is another recipe, but its generations are those of the first build, read from the cache.
    again = RunStats.of(load_genstruct(str(documents), **recipe, min_reward=-1e9)["train"])
    assert again.generated_passages == 0 and again.generated_tokens == 0 and again.tokens_per_second is None


def test_a_run_that_waits_for_another_of_the_same_recipe_says_so(tmp_path, caplog):
    from filelock import FileLock

    from genstruct_datasets.builder import say_if_locked

    lock = str(tmp_path / "build_builder.lock")
    assert not say_if_locked(lock) and not caplog.records  # free: nothing to say
    held = FileLock(lock)
    with held:  # another run of the same recipe builds it
        assert say_if_locked(lock)
    assert f"Waiting for {lock}: another run of the same recipe is building it" in caplog.text
    assert not say_if_locked(lock)  # freed again
