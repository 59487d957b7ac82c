import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset, load_dataset
from datasets.fingerprint import Hasher

from genstruct_datasets import (
    GenstructGenerator,
    InvalidConfigError,
    MissingDependencyError,
    ModelNotFoundError,
    ModelUnreachableError,
    RewardScorer,
)
from genstruct_datasets.models import (
    check_model_path,
    check_model_reachable,
    check_reward_model,
    load_model,
    load_tokenizer,
    resolve_device,
)

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


@pytest.mark.slow
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
    # With the models loaded, the callables still pickle to their settings alone, never the weights: same hashes.
    assert [Hasher.hash(gen), Hasher.hash(scorer)] == runs[0]
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


@pytest.fixture
def folders(tmp_path) -> Path:
    """A folder with an empty folder, a tokenizer-only folder and a file in it."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "tokenizer.json").write_text("{}")
    (tmp_path / "weights.gguf").write_text("")
    return tmp_path


@pytest.mark.parametrize(
    ("name", "match"),
    [
        pytest.param("{root}/missing", r"model folder '.*/missing' does not exist; check the path", id="missing"),
        pytest.param("./missing", r"model folder '\./missing' does not exist", id="relative"),
        pytest.param("~/missing-model-folder", r"'~/missing-model-folder' does not exist", id="home"),
        pytest.param(
            "{root}/empty", r"'.*/empty' is empty: it holds no saved model; point it at a folder", id="empty"
        ),
        pytest.param("{root}/tokenizer", r"'.*/tokenizer' holds no config\.json", id="no-config"),
        pytest.param("{root}/weights.gguf", r"'.*weights\.gguf' is a file, not a model folder", id="file"),
    ],
)
def test_a_model_folder_that_holds_no_model_is_named(folders, name, match):
    with pytest.raises(ModelNotFoundError, match=match):
        check_model_path(name.format(root=folders))


def test_hub_ids_and_tokenizer_folders_pass(folders, tiny_reward_model):
    check_model_path("NousResearch/Genstruct-7B")
    check_model_path("gpt2")
    check_model_path(str(folders / "tokenizer"), tokenizer_only=True)  # the tokenizer of a server's model
    check_model_path(tiny_reward_model)


@pytest.mark.parametrize(
    "load",
    [
        pytest.param(lambda name: load_tokenizer(name), id="tokenizer"),
        pytest.param(lambda name: load_model("causal_lm", name), id="model"),
    ],
)
def test_loading_checks_the_folder_first(folders, load):
    # Without the check: "Repo id must be in the form..." for a missing folder, "install sentencepiece" for an
    # empty one.
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load(str(folders / "missing"))
    with pytest.raises(ModelNotFoundError, match="is empty"):
        load(str(folders / "empty"))


def test_the_reward_models_label_count_is_read_from_its_config(tmp_path, tiny_reward_model):
    check_reward_model(tiny_reward_model)
    check_reward_model("OpenAssistant/reward-model-deberta-v3-large-v2")  # offline: left to loading
    folder = tmp_path / "classifier"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert", "id2label": {"0": "neg", "1": "pos"}}))
    with pytest.raises(InvalidConfigError, match=r"reward model .*classifier has 2 labels; a reward model has"):
        check_reward_model(str(folder))


def test_a_hub_model_is_reachable_offline_only_from_the_local_cache(tmp_path, monkeypatch):
    import huggingface_hub

    repo = tmp_path / "models--me--tiny"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    check_model_reachable("me/tiny")
    check_model_reachable("me/tiny", revision="abc123")
    check_model_reachable("./no/such/folder")  # a local path: check_model_path's business
    message = r"^model me/tiny is not in the local Hugging Face cache and the Hub is off \(HF_HUB_OFFLINE=1\): pass "
    with pytest.raises(ModelUnreachableError, match=message + "reward_model=PATH, a local model folder"):
        check_model_reachable("me/tiny", revision="v2", setting="reward_model")
    with pytest.raises(ConnectionError, match=r"hf download me/other\); or try `genstruct-datasets demo`"):
        check_model_reachable("me/other")


def test_a_name_that_is_no_folder_here_nor_on_the_hub_says_both(monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    from genstruct_datasets.errors import ModelNotFoundError

    def not_found(*args, **kwargs):
        error = RepositoryNotFoundError.__new__(RepositoryNotFoundError)  # as the Hub's 404 raises it, no response
        Exception.__init__(error, "404 Repository Not Found")
        raise error

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(huggingface_hub, "model_info", not_found)
    match = r"^model models/nope is neither a local folder nor a model on the Hub: there is no folder 'models/nope'"
    with pytest.raises(ModelNotFoundError, match=match):
        check_model_reachable("models/nope")
