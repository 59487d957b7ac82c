"""The command line made from the settings dataclasses, and the one range check every numeric setting goes through."""

import argparse
import dataclasses

import pytest

from genstruct_datasets import GenerationSettings, GenstructConfig, InvalidConfigError, RunOptions
from genstruct_datasets._checks import check_number
from genstruct_datasets.cli import build_parser, run_flags

RUN_FLAGS_BEFORE = [
    "--backend", "--cache-dir", "--dedup-threshold", "--executor", "--force", "--license", "--limit",
    "--max-new-tokens", "--min-reward", "--model", "--name", "--no-split", "--num-proc", "--num-samples", "--output",
    "--overwrite", "--private", "--push-to-hub", "--ray-address", "--reward-model", "--reward-revision", "--revision",
    "--seed", "--shard-size", "--split", "--temperature", "--text-column", "--title-column", "--top-p",
    # engine options, made from the engines' fields before too
    "--batch-size", "--quantization", "--base-url", "--gpu-memory-utilization", "--max-model-len",
    "--enforce-eager", "--no-enforce-eager", "--enable-prefix-caching", "--no-enable-prefix-caching",
]  # fmt: skip


def run_parser() -> argparse.ArgumentParser:
    return build_parser()._subparsers._group_actions[0].choices["run"]


def parse(*args: str) -> dict:
    return {k: v for k, v in vars(build_parser().parse_args(["run", "corpus.jsonl", *args])).items() if k != "command"}


def test_every_flag_of_before_is_still_there():
    flags = {option for action in run_parser()._actions for option in action.option_strings}
    assert [flag for flag in RUN_FLAGS_BEFORE if flag not in flags] == []


def test_a_flag_left_out_is_not_passed_so_each_default_stays_where_it_is_declared():
    assert parse() == {"source": "corpus.jsonl"}
    given = parse("--revision", "abc", "--reward-batch-size", "8", "--no-split", "--overwrite", "--min-tokens", "12")
    assert given == {"source": "corpus.jsonl", "model_revision": "abc", "reward_batch_size": 8,
                     "split_documents": False, "overwrite": True, "min_tokens": 12}  # fmt: skip
    recipe = GenstructConfig(**{k: v for k, v in given.items() if k != "overwrite"})
    assert recipe.generation["revision"] == "abc" and recipe.scoring["batch_size"] == 8
    assert recipe.splitter().min_tokens == 12 and recipe.split_documents is False


def test_help_shows_each_default_from_its_dataclass_and_the_recipes_own():
    text = " ".join(run_parser().format_help().split())  # as one line, however argparse wraps it
    assert "completions per passage, for best-of-n (default: 4)" in text  # RECIPE_DEFAULTS, not the map's 1
    assert "(default: 0.95)" in text and "(default: 1000)" in text and "(default: NousResearch/Genstruct-7B)" in text


def test_every_option_of_the_run_is_a_flag_of_its_group():
    groups = run_flags()
    assert {flag.dest for flag in groups["execution"]} == {"executor", "ray_address", "num_proc", "dry_run"}
    wanted = {f.name for f in dataclasses.fields(RunOptions) if f.metadata.get("cli") is not False}
    assert wanted <= {flag.dest for flags in groups.values() for flag in flags}


def test_a_setting_added_to_a_stage_is_a_flag_the_recipe_takes(monkeypatch):
    from genstruct_datasets import generate

    @dataclasses.dataclass
    class WithStopWords(GenerationSettings):
        stop_words: str | None = dataclasses.field(default=None, metadata={"help": "a string that ends a completion"})

    monkeypatch.setattr(generate, "GenerationSettings", WithStopWords)
    monkeypatch.setattr("genstruct_datasets.cli.GenerationSettings", WithStopWords)
    assert "--stop-words STOP_WORDS a string that ends a completion" in " ".join(run_parser().format_help().split())
    recipe = GenstructConfig(**parse("--stop-words", "END"))
    assert recipe.generator().stop_words == "END" and recipe.settings()["generation"]["stop_words"] == "END"


@pytest.mark.parametrize(
    "value, rule, message",
    [
        pytest.param(0, {"integer": True, "minimum": 1}, "n must be a positive integer, got 0.", id="positive"),
        pytest.param(True, {"integer": True, "minimum": 1}, "n must be a positive integer, got True.", id="bool"),
        pytest.param(2.5, {"integer": True, "minimum": 0}, "n must be a non-negative integer, got 2.5.", id="float"),
        pytest.param(float("inf"), {"minimum": 0}, "n must be finite and >= 0, got inf.", id="inf"),
        pytest.param(float("nan"), {}, "n must be a finite number, got nan.", id="nan"),
        pytest.param(1.5, {"above": 0, "maximum": 1}, r"n must be in \(0, 1\], got 1.5.", id="open-range"),
        pytest.param(0, {"above": 0, "detail": "seconds"}, "n must be > 0 seconds, got 0.", id="detail"),
        pytest.param(None, {"minimum": 0}, "n must be >= 0, got None.", id="none"),
    ],
)
def test_one_range_check_says_the_rule_and_the_value(value, rule, message):
    with pytest.raises(InvalidConfigError, match=message):
        check_number("n", value, **rule)


def test_a_number_in_range_passes():
    check_number("n", 3, integer=True, minimum=1)
    check_number("n", None, minimum=0, optional=True)
    check_number("n", 1, above=0, maximum=1)


def test_a_stage_setting_is_refused_by_the_name_the_recipe_gives_it():
    with pytest.raises(InvalidConfigError, match="reward_batch_size must be a positive integer, got 0."):
        GenstructConfig(source="x.jsonl", reward_batch_size=0)
    with pytest.raises(InvalidConfigError, match=r"temperature must be finite and >= 0 \(0 for greedy decoding\)"):
        GenstructConfig(source="x.jsonl", temperature=float("inf"))


def test_the_recipe_makes_each_stage_once_until_it_is_resolved(monkeypatch):
    from genstruct_datasets import generate

    made = []
    real = generate.GenstructGenerator.__init__

    def init(self, *args, **kwargs):
        made.append(kwargs.get("backend"))
        real(self, *args, **kwargs)

    config = GenstructConfig(source="org/corpus", backend="transformers", split_documents=True)
    monkeypatch.setattr(generate.GenstructGenerator, "__init__", init)
    config.settings(), config.recipe(), config.generator(), config.check_models()
    assert made == []  # made once, when the recipe was checked, and kept
    config.generation["temperature"] = 0.5  # settings changed by hand: resolve makes the stages again
    config.resolve()
    assert config.generator().temperature == 0.5 and len(made) == 2
