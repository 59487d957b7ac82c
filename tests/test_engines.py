"""The engines' registry: names into engines in one place, their own options, the default engine, the CLI's flags."""

import dataclasses
import importlib.util
import os
import pickle
import sys

import pytest
from datasets.fingerprint import Hasher

from genstruct_datasets import (
    RECIPE_DEFAULTS,
    GenerationSettings,
    GenstructConfig,
    GenstructGenerator,
    InvalidConfigError,
    MissingDependencyError,
    cli,
)
from genstruct_datasets.engines import (
    ENGINES,
    ContinuousEngine,
    TransformersEngine,
    VLLMEngine,
    default_backend,
    make_engine,
)
from genstruct_datasets.engines.base import finish_reason


@pytest.mark.vllm
def test_each_name_makes_its_engine_with_its_own_options():
    assert make_engine("transformers", {"batch_size": 4}) == TransformersEngine(batch_size=4)
    assert make_engine("continuous", {"dtype": "bfloat16"}) == ContinuousEngine(dtype="bfloat16")
    assert make_engine("vllm", {"max_model_len": 512}) == VLLMEngine(max_model_len=512)
    assert make_engine("openai", {"base_url": "http://127.0.0.1:1/v1"}).max_retries == 5
    assert set(ENGINES) == {"transformers", "continuous", "vllm", "openai"}


@pytest.mark.parametrize(
    ("backend", "options", "match"),
    [
        pytest.param(
            "vllm", {"batch_size": 8},
            "batch_size is an option of the 'transformers' engine, not of the 'vllm' engine: pass "
            "backend='transformers', or leave batch_size out. The 'vllm' engine's options are: dtype,",
            id="static-option-to-vllm",
        ),
        pytest.param("continuous", {"batch_size": 8}, "not of the 'continuous' engine", id="continuous"),
        pytest.param("openai", {"base_url": "http://h/v1", "device": "cpu"}, "option of the 'transformers' and "
                     "'continuous' engines, not of the 'openai' engine", id="device-to-openai"),
        pytest.param("transformers", {"num_sample": 4}, "num_sample is neither a setting of GenstructGenerator nor "
                     "an option of any engine", id="typo"),
        pytest.param("vllm", {"gpu_memory_utilization": 1.5}, r"must be in \(0, 1\], got 1.5", id="memory",
                     marks=pytest.mark.vllm),
        pytest.param("vllm", {"tensor_parallel_size": 0}, "tensor_parallel_size must be a positive integer", id="tp",
                     marks=pytest.mark.vllm),
        pytest.param("vllm", {"quantization": "2bit"}, "quantization='2bit' is not supported", id="vllm-quantization"),
        pytest.param("openai", {"base_url": "http://h/v1", "request_timeout": 0}, "timeout must be > 0", id="timeout"),
        pytest.param("openai", {"base_url": "http://h/v1", "max_concurrency": 0}, "concurrency must be", id="conc"),
        pytest.param("openai", {"base_url": "notaurl"}, "base_url='notaurl' is not an http", id="not-a-url"),
        pytest.param("openai", {"base_url": "http://h/v1", "max_requests_per_minute": 0},
                     "max_requests_per_minute must be a positive integer, got 0", id="rpm"),
        pytest.param("openai", {"base_url": "http://h/v1", "max_tokens_per_minute": 1.5},
                     "max_tokens_per_minute must be a positive integer, got 1.5", id="tpm"),
    ],
)  # fmt: skip
def test_options_are_checked_by_their_engine(backend, options, match):
    with pytest.raises(InvalidConfigError, match=match):
        GenstructGenerator("m", backend=backend, **options)


def test_an_engine_instance_takes_its_options_itself():
    gen = GenstructGenerator("m", backend=TransformersEngine(batch_size=32))
    assert gen.backend == "transformers" and gen.engine.batch_size == 32
    with pytest.raises(InvalidConfigError, match="give the options to the engine itself"):
        GenstructGenerator("m", backend=TransformersEngine(), batch_size=4)


def test_auto_is_vllm_only_with_a_cuda_gpu_and_vllm_installed(monkeypatch):
    import torch

    has_vllm = importlib.util.find_spec("vllm") is not None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_backend() == ("vllm" if has_vllm else "transformers")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_backend() == "transformers"
    assert GenstructGenerator("m").backend == "transformers"
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "vllm" else real_find_spec(name))
    assert default_backend() == "transformers"


def test_auto_takes_transformers_when_the_options_ask_for_it(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())  # as if vLLM were installed
    assert default_backend({"max_model_len": 4096}) == "vllm"
    assert default_backend({"batch_size": 32}) == "transformers"  # a static-batching option
    assert default_backend({"device": "cuda:1"}) == "transformers"
    assert default_backend({"quantization": "4bit"}) == "transformers"  # bitsandbytes
    assert GenstructGenerator("m", batch_size=32).backend == "transformers"


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("stop", "stop"), ("length", "length"), (None, "stop"), ("abort", "error"), ("error", "error"),
     ("content_filter", "stop"), ("repetition", "stop")],
)  # fmt: skip
def test_the_engines_finish_reasons_are_ours(reason, expected):
    assert finish_reason(reason) == expected


@pytest.mark.parametrize(
    ("visible", "rank", "local_rank", "expected"),
    [
        pytest.param(None, 1, None, "1", id="second-worker"),
        pytest.param("2,3", 1, None, "3", id="within-the-visible-gpus"),
        pytest.param(None, None, "3", "3", id="torchrun-rank"),
        pytest.param("5", None, None, "5", id="one-process-left-alone"),
    ],
)
def test_a_vllm_worker_sees_its_own_gpu(monkeypatch, visible, rank, local_rank, expected):
    import torch

    from genstruct_datasets.engines import vllm_engine

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4 if visible is None else len(visible.split(",")))
    for name, value in (("CUDA_VISIBLE_DEVICES", visible), ("LOCAL_RANK", local_rank)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    vllm_engine._pin_gpu(rank, tensor_parallel_size=1)
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == expected


def test_vllm_missing_is_said_before_anything_runs(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "vllm" else real_find_spec(name))
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'genstruct-datasets\[vllm\]' \(on a CPU-only"):
        GenstructGenerator("m", backend="vllm")


@pytest.mark.vllm
def test_run_options_stay_out_of_the_fingerprint_and_travel_to_workers():
    def gen(backend, **options):
        return GenstructGenerator("m", max_new_tokens=4, backend=backend, **options)

    assert Hasher.hash(gen("vllm", gpu_memory_utilization=0.5, enforce_eager=True)) == Hasher.hash(gen("vllm"))
    assert Hasher.hash(gen("vllm", max_model_len=512)) != Hasher.hash(gen("vllm"))
    assert Hasher.hash(gen("vllm")) != Hasher.hash(gen("transformers"))
    server = {"base_url": "http://127.0.0.1:1/v1"}
    assert Hasher.hash(gen("openai", **server, max_concurrency=2, api_key="sk-a")) == Hasher.hash(
        gen("openai", base_url="http://127.0.0.1:2/v1", api_key="sk-b", request_timeout=5)
    )
    copy = pickle.loads(pickle.dumps(gen("openai", **server, max_concurrency=2, api_key="sk-a")))
    assert copy.engine.max_concurrency == 2 and copy.engine.api_key == "sk-a"  # workers get every setting
    assert "sk-a" not in repr(copy)


@pytest.mark.vllm
def test_the_cli_has_one_flag_per_engine_option_and_passes_only_those_given(monkeypatch, tmp_path):
    seen = {}
    source = tmp_path / "docs.jsonl"
    source.write_text('{"title": "Moon", "text": "The Moon orbits Earth."}\n')

    def build_genstruct(recipe, **options):
        seen.update(recipe.generation)
        raise SystemExit(0)

    monkeypatch.setattr("genstruct_datasets.builder.build_genstruct", build_genstruct)
    monkeypatch.setattr(GenstructConfig, "check_models_reachable", lambda *args, **kwargs: None)  # never loaded
    with pytest.raises(SystemExit):
        cli.main(["run", str(source), "--backend", "vllm", "--max-model-len", "512", "--no-enable-prefix-caching"])
    assert seen["backend"] == "vllm"
    stage = {f.name for f in dataclasses.fields(GenerationSettings)} | set(RECIPE_DEFAULTS)
    assert {k: v for k, v in seen.items() if k not in stage} == {"max_model_len": 512, "enable_prefix_caching": False}
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    for flag in (
        "--batch-size",
        "--gpu-memory-utilization",
        "--max-concurrency",
        "--request-timeout",
        "--max-retries",
        "--max-requests-per-minute",
        "--max-tokens-per-minute",
    ):
        assert flag in help_text
    assert "--api-key" not in help_text  # a key belongs in OPENAI_API_KEY, not in the shell's history


def test_what_the_run_needs_to_know_is_asked_of_the_engine():
    from genstruct_datasets.engines import ContinuousEngine, OpenAIServerEngine, TransformersEngine

    server = OpenAIServerEngine(base_url="http://127.0.0.1:8000/v1")
    assert not server.loads_model and not server.needs_token_ids and server.gpus_per_model == 0
    for engine in (TransformersEngine(), ContinuousEngine()):
        assert engine.loads_model and engine.needs_token_ids and engine.gpus_per_model == 1


@pytest.mark.vllm
def test_a_vllm_model_split_over_gpus_asks_for_them_all():
    from genstruct_datasets.engines import VLLMEngine

    assert VLLMEngine(tensor_parallel_size=2).gpus_per_model == 2
