import pickle
import subprocess
import sys
import time

import pytest
from datasets import Dataset, load_dataset
from datasets.fingerprint import Hasher

from genstruct_datasets import GenstructGenerator, MissingDependencyError, RewardScorer
from genstruct_datasets.models import load_model, resolve_device

HASH_IN_A_FRESH_PROCESS = """
import sys
from datasets.fingerprint import Hasher
from genstruct_datasets import GenstructGenerator, RewardScorer
print(Hasher.hash(GenstructGenerator(sys.argv[1], num_samples=4, seed=3, max_new_tokens=64)))
print(Hasher.hash(RewardScorer(sys.argv[2], batch_size=4)))
"""


def test_models_load_once_per_process_and_device(tiny_generator):
    first = load_model("causal_lm", tiny_generator, device="cpu")
    assert load_model("causal_lm", tiny_generator, device="cpu") is first
    assert load_model("causal_lm", tiny_generator, dtype="float32", device="cpu") is not first
    assert first.model.training is False and str(first.device) == "cpu"


def test_resolve_device(monkeypatch):
    import torch

    assert resolve_device("cuda:3", rank=5) == "cuda:3"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None, rank=1) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [resolve_device(None, rank) for rank in (None, 0, 1, 5)] == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]


def test_fingerprints_are_the_same_in_fresh_processes_and_ignore_loaded_models(
    tiny_generator, tiny_reward_model, passages
):
    runs = [
        subprocess.run(
            [sys.executable, "-c", HASH_IN_A_FRESH_PROCESS, tiny_generator, tiny_reward_model],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for _ in range(2)
    ]
    gen = GenstructGenerator(tiny_generator, num_samples=4, seed=3, max_new_tokens=64)
    scorer = RewardScorer(tiny_reward_model, batch_size=4)
    assert runs[0] == runs[1] == [Hasher.hash(gen), Hasher.hash(scorer)]
    gen(passages)
    scorer({"instruction": ["Why?"], "response": ["Because."]})
    # With the models loaded, the callables still pickle to their settings alone, and hash at once.
    start = time.perf_counter()
    assert [Hasher.hash(gen), Hasher.hash(scorer)] == runs[0]
    assert time.perf_counter() - start < 1.0
    assert len(pickle.dumps(gen)) < 2_000 and len(pickle.dumps(scorer)) < 2_000
    assert Hasher.hash(GenstructGenerator(tiny_generator, num_samples=4, seed=4, max_new_tokens=64)) != runs[0][0]


def test_a_second_identical_map_reuses_the_cache(monkeypatch, tmp_path, tiny_generator, passages):
    Dataset.from_dict(passages).to_parquet(tmp_path / "passages.parquet")
    ds = load_dataset("parquet", data_files=str(tmp_path / "passages.parquet"), split="train")
    first = ds.map(GenstructGenerator(tiny_generator, max_new_tokens=4), batched=True)
    model = load_model("causal_lm", tiny_generator, device="cpu").model

    def must_not_generate(*args, **kwargs):
        raise AssertionError("the second map generated again instead of reusing the cache")

    monkeypatch.setattr(model, "generate", must_not_generate)
    again = ds.map(GenstructGenerator(tiny_generator, max_new_tokens=4), batched=True)
    assert again.cache_files == first.cache_files
    assert again["completion"] == first["completion"]


@pytest.mark.quantization
@pytest.mark.parametrize(("quantization", "layer"), [("8bit", "Linear8bitLt"), ("4bit", "Linear4bit")])
def test_quantized_loading_on_the_cpu(tiny_generator, passages, quantization, layer):
    pytest.importorskip("bitsandbytes")
    gen = GenstructGenerator(tiny_generator, quantization=quantization, max_new_tokens=4, dtype="float32")
    out = gen(passages)
    assert set(out["finish_reason"]) <= {"stop", "length"} and all(isinstance(c, str) for c in out["completion"])
    model = load_model("causal_lm", tiny_generator, quantization=quantization, dtype="float32", device="cpu").model
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == layer
    assert model.config.quantization_config.quant_method == "bitsandbytes"


def test_quantization_without_bitsandbytes_says_how_to_install(monkeypatch, tiny_generator):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'genstruct-datasets\[quantization\]'"):
        load_model("causal_lm", tiny_generator, quantization="4bit", device="cpu")


def test_settings_that_do_not_change_results_do_not_change_the_fingerprint(
    monkeypatch, tmp_path, tiny_generator, passages
):
    def gen(**settings):
        return GenstructGenerator(tiny_generator, max_new_tokens=4, seed=0, num_samples=2, **settings)

    assert Hasher.hash(gen(batch_size=2)) == Hasher.hash(gen(batch_size=16, device="cpu"))
    assert Hasher.hash(gen(batch_size=2)) != Hasher.hash(gen(batch_size=2, temperature=0.9))
    assert Hasher.hash(RewardScorer("m", batch_size=2)) == Hasher.hash(RewardScorer("m", batch_size=64))
    assert pickle.loads(pickle.dumps(gen(batch_size=2))).engine.batch_size == 2  # workers still get every setting
    Dataset.from_dict(passages).to_parquet(tmp_path / "passages.parquet")
    ds = load_dataset("parquet", data_files=str(tmp_path / "passages.parquet"), split="train")
    first = ds.map(gen(batch_size=4), batched=True)
    model = load_model("causal_lm", tiny_generator, device="cpu").model
    monkeypatch.setattr(model, "generate", lambda *a, **k: pytest.fail("a smaller batch_size must reuse the cache"))
    assert ds.map(gen(batch_size=1), batched=True)["completion"] == first["completion"]
