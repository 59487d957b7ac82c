"""A user's mistake is one line from Python too: the problem and the fix, in Python terms (``model=``, ``source=``),
without the chain of library errors underneath, and the source said before the models."""

import json
import logging

import pytest

from genstruct_datasets import (
    ModelUnreachableError,
    SourceError,
    load_genstruct,
    run_recipe,
)
from genstruct_datasets.models import clear_model_cache, load_model, load_tokenizer

ENTRY_POINTS = [
    pytest.param(lambda source, **recipe: load_genstruct(source, **recipe), id="load_genstruct"),
    pytest.param(
        lambda source, cache_dir, **recipe: run_recipe({"source": source, **recipe}, cache_dir=cache_dir),
        id="run_recipe",
    ),
]


def assert_one_line_in_python_terms(err: BaseException, setting: str) -> None:
    message = str(err)
    assert "\n" not in message and f"{setting}=" in message and "--" not in message
    # Nothing chained above it: a traceback shows this error alone.
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "passages.jsonl"
    path.write_text(json.dumps({"title": "Moon", "content": "The Moon orbits the Earth. " * 20}) + "\n")
    return path


@pytest.mark.parametrize("call", ENTRY_POINTS)
def test_a_missing_source_is_said_before_a_model_that_cannot_be_had(call, tmp_path):
    # The default models are Hub ids, not cached here, and the Hub is off: the source is still what is reported.
    missing = r"^source '.*missing\.jsonl' does not exist; pass an existing file or folder as source=, or a Hub"
    with pytest.raises(SourceError, match=missing) as raised:
        call(str(tmp_path / "missing.jsonl"), cache_dir=str(tmp_path / "cache"))
    assert_one_line_in_python_terms(raised.value, "source")


@pytest.mark.parametrize("call", ENTRY_POINTS)
def test_a_hub_model_not_cached_offline_is_one_line_that_names_the_setting(call, corpus, tmp_path):
    with pytest.raises(ModelUnreachableError) as raised:
        call(str(corpus), model="me/not-cached", reward_model=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    assert str(raised.value).startswith("model me/not-cached is not in the local Hugging Face cache")
    assert_one_line_in_python_terms(raised.value, "model")
    with pytest.raises(ModelUnreachableError, match=r": pass reward_model=PATH, a local model folder; ") as raised:
        call(str(corpus), model=str(tmp_path), reward_model="me/not-cached", cache_dir=str(tmp_path / "cache"))
    assert_one_line_in_python_terms(raised.value, "reward_model")


@pytest.mark.parametrize(
    ("load", "setting"),
    [
        pytest.param(lambda name: load_model("causal_lm", name), "model", id="generator"),
        pytest.param(lambda name: load_model("sequence_classification", name), "reward_model", id="reward-model"),
        pytest.param(load_tokenizer, "model", id="tokenizer"),
    ],
)
def test_a_model_that_fails_to_load_offline_hides_transformers_chain(load, setting, caplog):
    # A map stage loads its model lazily (the README's quick start): transformers' OSError, and the Hub client's
    # errors under it, were chained above the one line that says what to do.
    clear_model_cache()
    caplog.set_level(logging.DEBUG, logger="genstruct_datasets.models")
    with pytest.raises(ModelUnreachableError, match=rf"^model me/not-cached is not .*: pass {setting}=PATH") as raised:
        load("me/not-cached")
    assert_one_line_in_python_terms(raised.value, setting)
    assert "Loading me/not-cached failed: OSError(" in caplog.text  # the cause, for whoever looks for it


@pytest.mark.parametrize("call", ENTRY_POINTS)
def test_a_hub_dataset_that_cannot_be_had_offline_is_one_line(call, tmp_path):
    # Local "models" that are never loaded: the source fails to read first.
    unreachable = r"^'me/no-such-dataset' is not a local file or folder, and the Hub dataset of that name"
    with pytest.raises(SourceError, match=unreachable) as raised:
        call("me/no-such-dataset", model=str(tmp_path), reward_model=str(tmp_path), cache_dir=str(tmp_path / "c"))
    assert_one_line_in_python_terms(raised.value, "source")
