"""The one run entry point: run_recipe, its options, its result, the recipe resolved once, and the stages' accounts."""

import json
import re
from pathlib import Path

import pytest
from datasets import load_dataset
from datasets.fingerprint import Hasher

from genstruct_datasets import (
    GenstructConfig,
    InvalidConfigError,
    NothingKeptError,
    RunOptions,
    RunResult,
    load_genstruct,
    resolve_recipe,
    run_recipe,
)

DATA = Path(__file__).parent / "data"


@pytest.fixture
def documents(tmp_path) -> Path:
    """Two real documents, one of one short line (too short to give a passage), one empty."""
    path = tmp_path / "documents.jsonl"
    rows = [
        {"title": "Moon", "text": (DATA / "moon_wikipedia.txt").read_text()},
        {"title": "Beekeeping", "text": (DATA / "plain_essay.txt").read_text()},
        {"title": "Stub", "text": "Too short."},
        {"title": "Blank", "text": ""},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def settings(recipe: dict, source: Path, **more) -> dict:
    """The conftest recipe as run_recipe's mapping: the source in it, the cache folder out of it."""
    return {"source": str(source), **{k: v for k, v in recipe.items() if k != "cache_dir"}, "max_tokens": 160, **more}


@pytest.mark.slow
def test_a_run_returns_its_splits_its_report_and_where_it_wrote(documents, recipe, tmp_path):
    result = run_recipe(settings(recipe, documents), output=str(tmp_path / "out"), cache_dir=recipe["cache_dir"])
    assert isinstance(result, RunResult) and not result.cached
    assert result.destinations == [str(tmp_path / "out")]
    assert result.train.num_rows == result.report.counts["kept"] > 0
    assert result.candidates.num_rows == 2 * result.report.counts["passages"]
    assert load_dataset(str(tmp_path / "out"), split="train").num_rows == result.train.num_rows
    assert result.engine.startswith("transformers ")
    summary = result.summary()
    assert summary.startswith("passages: ") and "stages" in summary and f"written to: {tmp_path / 'out'}" in summary


def test_the_stages_add_up_and_count_every_dropped_row_once(documents, recipe, tmp_path):
    result = run_recipe(settings(recipe, documents, dedup_threshold=0.5), output=str(tmp_path / "out"),
                        cache_dir=recipe["cache_dir"])  # fmt: skip
    stages = json.loads((tmp_path / "out" / "genstruct-report.json").read_text())["stages"]
    assert [s["name"] for s in stages] == ["passages", "generate", "parse", "score", "select", "dedup"]
    for stage in stages:
        assert stage["seen"] == stage["kept"] + sum(stage["dropped"].values()), stage
    passages, generate, parse, score, select, dedup = stages
    # The two short documents give no passage: dropped once, at the passages stage, never prompted.
    assert passages == {"name": "passages", "unit": "documents", "seen": 4, "kept": 2, "dropped": {"too_short": 2}}
    assert generate["seen"] == result.report.counts["passages"] == result.candidates.num_rows // 2
    assert parse["seen"] == 2 * generate["kept"]
    assert score["seen"] == parse["kept"] and select["seen"] == score["kept"]
    assert dedup["seen"] == select["kept"] and dedup["kept"] == result.train.num_rows
    # The taught model writes one pair for every passage: every best pair but one nearly repeats another.
    assert dedup["dropped"] == {"near_duplicate": select["kept"] - 1}
    assert "| select |" in (tmp_path / "out" / "README.md").read_text()
    # The pairs the filter dropped stay in the candidates, with the filter's name and the pair each repeats.
    candidates = load_dataset(str(tmp_path / "out"), split="candidates")
    marked = [(by, detail) for by, detail in zip(candidates["filtered_by"], candidates["filter_detail"]) if by]
    kept_ids = set(result.train["passage_id"])
    assert len(marked) == dedup["dropped"]["near_duplicate"]
    assert all(by == "dedup" and detail.split(": ")[1] in kept_ids for by, detail in marked)
    assert set(load_dataset(str(tmp_path / "out"), split="train")["filtered_by"]) == {None}


def test_a_build_cached_before_is_reused_by_the_run_without_generating(documents, recipe, generated, tmp_path):
    pairs = load_genstruct(str(documents), **recipe, max_tokens=160)
    assert generated  # the first build generated
    generated.clear()
    result = run_recipe(settings(recipe, documents), cache_dir=recipe["cache_dir"])
    assert generated == [] and result.cached
    assert result.train["instruction"] == pairs["train"]["instruction"]
    assert "read from the cache: nothing was generated now" in result.summary()


def test_a_run_that_keeps_nothing_raises_and_writes_nothing(documents, recipe, tmp_path):
    with pytest.raises(NothingKeptError, match=r"no pair was kept: all \d+ pairs scored below min_reward=1000"):
        run_recipe(settings(recipe, documents, min_reward=1000.0), output=str(tmp_path / "out"),
                   cache_dir=recipe["cache_dir"])  # fmt: skip
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "options, message",
    [
        pytest.param({"num_proc": 0}, r"num_proc must be a positive integer \(worker processes\), got 0", id="num"),
        pytest.param({"ray_address": "auto"}, "--ray-address auto connects to a Ray cluster", id="ray"),
        pytest.param({"executor": "slurm"}, "executor='slurm' is not one of", id="executor"),
    ],
)
def test_bad_run_options_are_refused_before_any_work(options, message, generated):
    with pytest.raises(InvalidConfigError, match=message):
        run_recipe({"source": "missing.jsonl"}, **options)
    assert generated == []


def test_options_go_in_one_place():
    with pytest.raises(InvalidConfigError, match="not both"):
        run_recipe({"source": "x.jsonl"}, RunOptions(), output="out")


# The cache keys of four recipes, as the code before the run entry point made them: a dataset built and cached
# before the change is found by the same recipe after it.
KEYS_BEFORE = {
    "defaults": ({"source": "corpus.jsonl", "backend": "transformers"}, "7b69dee0fa2acdff"),
    "flat": (
        {"source": "x.jsonl", "model": "gen", "model_revision": "abc", "num_samples": 2, "max_prompt_tokens": 900,
         "batch_size": 4, "min_tokens": 16, "text_column": "body", "reward_model": "rm", "reward_max_length": 256,
         "reward_batch_size": 8, "backend": "transformers", "limit": 10, "seed": 3, "temperature": 0.5,
         "top_p": 0.9, "shard_size": 50, "min_reward": 0.1},
        "2003763d58d47369",
    ),
    "openai": (
        {"source": "x.jsonl", "backend": "openai", "base_url": "http://127.0.0.1:1/v1", "model": "m",
         "max_new_tokens": 64, "split_documents": False, "title_column": "t", "text_column": "c",
         "reward_model": None, "best_of_n": False, "num_samples": 1, "temperature": 0},
        "501b1947ca3c0010",
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(KEYS_BEFORE))
def test_a_recipe_has_the_cache_key_it_had_before(name):
    settings, key = KEYS_BEFORE[name]
    # The recipe as the run resolves it: no local files to fingerprint here, the text column and splitting known.
    config = GenstructConfig(**{"split_documents": True, **settings})
    assert Hasher.hash(config.settings()) == key


def test_a_filter_setting_is_not_part_of_the_cache_key():
    base = GenstructConfig(source="x.jsonl", backend="transformers", split_documents=True)
    filtered = GenstructConfig(source="x.jsonl", backend="transformers", split_documents=True, dedup_threshold=0.8)
    assert base.settings() == filtered.settings()
    assert filtered.recipe()["selection"]["dedup_threshold"] == 0.8  # but the card shows it


def test_the_recipe_is_resolved_once_and_again_at_no_cost(tmp_path, monkeypatch):
    from genstruct_datasets import sources

    source = tmp_path / "passages.jsonl"
    source.write_text(json.dumps({"title": "Moon", "content": "The Moon orbits Earth."}) + "\n")
    recipe = resolve_recipe(str(source), backend="transformers")
    # A source of passages (title and content) is read as it is; the local file is fingerprinted.
    assert recipe.splitter().text_column == "content" and recipe.split_documents is False
    assert recipe.source_fingerprint is not None and recipe.generation["backend"] == "transformers"
    looked = []
    monkeypatch.setattr(sources, "passage_columns", lambda *a, **k: looked.append(a) or {})
    key = recipe.settings()
    assert recipe.resolve().settings() == key and looked == []
    # A text column given by the user is not second-guessed, nor is splitting.
    given = resolve_recipe(str(source), text_column="content", split_documents=True, backend="transformers")
    assert given.split_documents is True and looked == []


def test_filters_run_on_the_cached_build_and_changing_one_generates_nothing(documents, recipe, generated, tmp_path):
    from genstruct_datasets.testing import TAUGHT_INSTRUCTION

    run_recipe(settings(recipe, documents), cache_dir=recipe["cache_dir"])
    generated.clear()
    # A benchmark that shares 7 words of the taught instruction ("what is the main topic of this"), in another case
    # and with other punctuation: an 8-gram misses it, a 7-gram finds it.
    benchmark = tmp_path / "bench.jsonl"
    benchmark.write_text(json.dumps({"question": "WHAT is the main topic, of this: essay?"}) + "\n")
    near_miss = run_recipe(settings(recipe, documents, rip=True, decontaminate=[str(benchmark)],
                                    decontamination_ngram=8, dedup_threshold=0.9),
                           output=str(tmp_path / "near"), cache_dir=recipe["cache_dir"])  # fmt: skip
    assert generated == [] and near_miss.cached
    names = [stage.name for stage in near_miss.report.stages]
    assert names == ["passages", "generate", "parse", "score", "select", "rip", "decontamination", "dedup"]
    decontamination = near_miss.report.stages[names.index("decontamination")]
    assert decontamination.dropped == {} and near_miss.report.filters["rip"]["quantile"] == 0.5
    card = (tmp_path / "near" / "README.md").read_text()
    assert "### Filtering" in card and "| rip | quantile 0.5;" in card
    from genstruct_datasets.report import RunReport, format_run_report

    shown = format_run_report(RunReport.load(tmp_path / "near"))  # what `genstruct-datasets report` prints
    assert "filters\n  rip: removed 0 (quantile 0.5;" in shown and "decontamination: removed 0 (ngram 8;" in shown
    assert {"reward_min", "reward_gap", "rejected_words"} <= set(near_miss.train.column_names)
    with pytest.raises(NothingKeptError):  # every pair holds the taught instruction: a 7-gram removes them all
        run_recipe(settings(recipe, documents, decontaminate=[str(benchmark)], decontamination_ngram=7),
                   cache_dir=recipe["cache_dir"])  # fmt: skip
    assert generated == [] and TAUGHT_INSTRUCTION.startswith("What is the main topic of this")


@pytest.mark.parametrize(
    "more, message",
    [
        pytest.param({"rip": True, "best_of_n": False, "reward_model": None}, "rip ranks the candidates", id="rip"),
        pytest.param({"rip_quantile": 1}, r"rip_quantile must be in \(0, 1\), got 1", id="quantile"),
        pytest.param({"semantic_dedup": 0}, r"semantic_dedup must be in \(0, 1\], got 0", id="semantic"),
        pytest.param({"dedup_against": ["x.jsonl"]}, "add --semantic-dedup", id="against"),
        pytest.param({"decontamination_ngram": 0}, "decontamination_ngram must be a positive integer", id="ngram"),
        pytest.param({"decontaminate": ["missing-bench.jsonl"]}, "missing-bench.jsonl", id="benchmark"),
    ],
)
def test_bad_filter_settings_are_one_line_before_any_work(documents, recipe, generated, more, message):
    from genstruct_datasets import GenstructError

    with pytest.raises(GenstructError, match=message):
        run_recipe(settings(recipe, documents, **more), cache_dir=recipe["cache_dir"])
    assert generated == []


def test_a_benchmark_is_read_once_for_the_check_and_the_filter(documents, recipe, monkeypatch, tmp_path):
    from genstruct_datasets.filters import decontaminate

    benchmark = tmp_path / "bench.jsonl"
    benchmark.write_text(json.dumps({"question": "Nothing here repeats a taught pair."}) + "\n")
    reads = []
    real = decontaminate.read_benchmark
    monkeypatch.setattr(decontaminate, "read_benchmark", lambda spec: reads.append(spec.label) or real(spec))
    run_recipe(settings(recipe, documents, decontaminate=[str(benchmark)]), cache_dir=recipe["cache_dir"])
    assert reads == [str(benchmark)]


def test_nothing_written_names_a_path_of_this_machine_unless_asked(documents, recipe, tmp_path, tmp_path_factory):
    # Local models (under the session's temporary folder) and a local source (under the test's).
    machine = [str(tmp_path_factory.getbasetemp()).encode(), str(Path.home()).encode()]
    small = settings(recipe, documents, limit=1, num_samples=1)
    run_recipe(small, output=str(tmp_path / "out"), cache_dir=recipe["cache_dir"])
    written = {path: path.read_bytes() for path in (tmp_path / "out").rglob("*") if path.is_file()}
    assert {"README.md", "genstruct-report.json"} <= {path.name for path in written}
    assert [(path.name, place) for path, data in written.items() for place in machine if place in data] == []
    card = (tmp_path / "out" / "README.md").read_text()
    generator = Path(recipe["model"]).name
    assert re.search(r"\| `source` \| `documents\.jsonl \(local, sha256 [0-9a-f]{12}\)` \|", card)
    assert re.search(rf"written by `{generator} \(local, sha256 [0-9a-f]{{12}}\)` from text passages", card)
    report = json.loads((tmp_path / "out" / "genstruct-report.json").read_text())
    assert report["recipe"]["reward model"]["model"].startswith(f"{Path(recipe['reward_model']).name} (local, ")
    # Asked for: the full paths. The build is read from the cache: the setting is not part of the recipe.
    full = run_recipe(small, output=str(tmp_path / "full"), cache_dir=recipe["cache_dir"], full_paths=True)
    assert full.cached and full.report.recipe["source"]["source"] == str(documents)
    assert f"| `model` | `{recipe['model']}` |" in (tmp_path / "full" / "README.md").read_text()
