import logging
import re

import pytest
from datasets import Dataset

from genstruct_datasets import (
    GenstructGenerator,
    InvalidConfigError,
    MissingColumnsError,
    format_prompt,
    genstruct_generate,
    parse_pairs,
    passage_id,
    testing,
)


def test_output_rows_and_columns(tiny_generator, passages):
    gen = GenstructGenerator(tiny_generator, num_samples=3, max_new_tokens=6, seed=0)
    out = Dataset.from_dict(passages).map(gen, batched=True)
    assert out.column_names == [
        "title",
        "content",
        "source",
        "passage_id",
        "sample_index",
        "completion",
        "finish_reason",
        "completion_tokens",
        "content_truncated",
    ]
    assert out.num_rows == 12
    assert out["title"] == [t for t in passages["title"] for _ in range(3)]
    assert out["source"] == [s for s in passages["source"] for _ in range(3)]
    assert out["sample_index"] == [0, 1, 2] * 4
    assert out["passage_id"][:3] == [passage_id(passages["title"][0], passages["content"][0])] * 3
    assert set(out["finish_reason"]) <= {"stop", "length"}
    for completion, reason, n_tokens in zip(out["completion"], out["finish_reason"], out["completion_tokens"]):
        assert isinstance(completion, str) and "[[[Title]]]" not in completion and "<s>" not in completion
        assert n_tokens == 6 if reason == "length" else 1 <= n_tokens <= 6


def test_taught_generator_writes_pairs_that_parse(taught_generator, passages, mistral_tokenizer):
    gen = GenstructGenerator(taught_generator, max_new_tokens=40)
    out = Dataset.from_dict(passages).map(gen, batched=True).map(parse_pairs, batched=True)
    expected = testing.TAUGHT_COMPLETION.strip().removesuffix("</s>")
    assert out["completion"] == [expected] * 4
    assert out["finish_reason"] == ["stop"] * 4
    # The EOS counts as a generated token.
    assert (
        out["completion_tokens"] == [len(mistral_tokenizer(expected, add_special_tokens=False)["input_ids"]) + 1] * 4
    )
    assert out["parse_error"] == [None] * 4
    assert out["instruction"] == [testing.TAUGHT_INSTRUCTION] * 4
    assert out["response"] == [testing.TAUGHT_RESPONSE] * 4


def test_generation_logs_its_progress_every_interval(monkeypatch, caplog, taught_generator, passages):
    from datasets.fingerprint import Hasher

    import genstruct_datasets.generate as generate

    monkeypatch.setattr(generate, "PROGRESS_INTERVAL", 0.0)  # a line after every batch
    monkeypatch.setattr(generate, "_METER", generate._GenerationMeter())  # this process, from zero
    gen = GenstructGenerator(taught_generator, max_new_tokens=40)
    fingerprint = Hasher.hash(gen)
    with caplog.at_level(logging.INFO, logger="genstruct_datasets.generate"):
        out = Dataset.from_dict(passages).map(gen, batched=True, batch_size=3)
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("Generated ")]
    per_passage = out["completion_tokens"][0]  # the taught completion, the same for every passage
    assert [re.sub(r"[\d.]+ (passages/s|tokens/s|s of)", r"N \1", line) for line in lines] == [
        f"Generated 3 passages and {3 * per_passage} tokens so far in this process; N passages/s and N tokens/s over "
        "the last N s of generation.",
        f"Generated 4 passages and {4 * per_passage} tokens so far in this process; N passages/s and N tokens/s over "
        "the last N s of generation.",
    ]
    assert Hasher.hash(gen) == fingerprint  # the meter is no part of the generator


def test_same_seed_same_completions(tiny_generator, passages):
    ds = Dataset.from_dict(passages)

    def sample(seed):
        return ds.map(GenstructGenerator(tiny_generator, num_samples=2, max_new_tokens=8, seed=seed), batched=True)

    first, again, other = sample(1)["completion"], sample(1)["completion"], sample(2)["completion"]
    assert first == again
    assert first != other
    assert first[0] != first[1]  # the samples of one passage differ


@pytest.mark.slow
def test_a_seeded_sample_does_not_depend_on_its_batch(tiny_generator, passages):
    settings = {"num_samples": 2, "max_new_tokens": 8, "seed": 7}
    together = GenstructGenerator(tiny_generator, batch_size=4, **settings)(passages)["completion"]
    reversed_batch = {key: values[::-1] for key, values in passages.items()}
    in_pairs = GenstructGenerator(tiny_generator, batch_size=2, **settings)(reversed_batch)["completion"]
    assert together == [c for i in range(3, -1, -1) for c in in_pairs[2 * i : 2 * i + 2]]
    alone = GenstructGenerator(tiny_generator, batch_size=1, **settings)(
        {"title": passages["title"][2:3], "content": passages["content"][2:3]}
    )["completion"]
    assert alone == together[4:6]


def test_a_model_without_a_template_gets_genstructs(monkeypatch, spy_on_generate, tiny_generator, mistral_tokenizer):
    calls = spy_on_generate(tiny_generator)
    GenstructGenerator(tiny_generator, max_new_tokens=2)({"title": ["Moon"], "content": ["The Moon orbits Earth."]})
    assert (
        mistral_tokenizer.decode(calls[0][0])
        == "<s> " + format_prompt("Moon", "The Moon orbits Earth.").rstrip(" ") + " "
    )


def test_a_model_with_its_own_template_keeps_it(monkeypatch, spy_on_generate, tmp_path, mistral_tokenizer):
    path = testing.build_tiny_generator(tmp_path / "own", chat_template="{{ bos_token }}Q: {{ messages[0]['title'] }}")
    calls = spy_on_generate(path)
    GenstructGenerator(path, max_new_tokens=2)({"title": ["Moon"], "content": ["The Moon orbits Earth."]})
    assert mistral_tokenizer.decode(calls[0][0], skip_special_tokens=True) == "Q: Moon"


def test_long_passage_is_fitted_by_truncating_the_content(
    monkeypatch, spy_on_generate, tiny_generator, mistral_tokenizer, caplog
):
    calls = spy_on_generate(tiny_generator)
    long_content = "Tea is an aromatic beverage prepared by pouring hot water over cured leaves. " * 200
    batch = {"title": ["Tea", "Moon"], "content": [long_content, "The Moon orbits Earth."]}
    with caplog.at_level(logging.WARNING, logger="genstruct_datasets"):
        out = GenstructGenerator(tiny_generator, max_new_tokens=4, max_prompt_tokens=128)(batch)
    assert out["finish_reason"][0] in {"stop", "length"} and out["completion"][0] is not None
    prompt = mistral_tokenizer.decode(calls[0][0], skip_special_tokens=True)
    assert calls[0].shape[1] <= 128
    assert prompt.startswith("[[[Title]]] Tea\n[[[Content]]] Tea is an aromatic beverage")
    assert prompt.endswith(
        "\n\nThe following is an interaction between a user and an AI assistant that is related to the above text."
        "\n\n[[[User]]] "
    )
    assert "1 passage(s) were longer than the prompt budget of 128 tokens" in caplog.text
    assert out["content_truncated"] == [True, False] and out["content"][0] == long_content  # said, not hidden


def test_the_card_counts_the_truncated_passages():
    from genstruct_datasets.report import dataset_stats

    ds = Dataset.from_dict(
        {"passage_id": ["a", "b", "c"], "finish_reason": ["stop"] * 3, "content_truncated": [True, False, True]}
    )
    assert dataset_stats(ds)["outcomes"]["content truncated to the prompt budget"] == 2


def test_default_budget_is_the_models_context(monkeypatch, spy_on_generate, tmp_path):
    path = testing.build_tiny_generator(tmp_path / "short-context", max_position_embeddings=96)
    calls = spy_on_generate(path)
    out = GenstructGenerator(path, max_new_tokens=16)({"title": ["Tea"], "content": ["Tea is a drink. " * 100]})
    assert calls[0].shape[1] <= 96 - 16 and out["finish_reason"][0] in {"stop", "length"}


def test_title_longer_than_the_budget_is_invalid_input(tiny_generator):
    out = GenstructGenerator(tiny_generator, max_new_tokens=2, max_prompt_tokens=64)(
        {"title": ["Tea " * 60, "Moon"], "content": ["Tea is a drink.", "The Moon orbits Earth."]}
    )
    assert out["finish_reason"][0] == "invalid_input" and out["completion"][0] is None
    assert out["finish_reason"][1] in {"stop", "length"}


def test_invalid_rows_are_kept_with_a_reason(tiny_generator, caplog):
    batch = {"title": ["Moon", None, "", "Sun"], "content": ["The Moon orbits Earth.", "x", "y", "   "]}
    with caplog.at_level(logging.WARNING, logger="genstruct_datasets"):
        out = GenstructGenerator(tiny_generator, num_samples=2, max_new_tokens=2)(batch)
    assert out["title"] == ["Moon", "Moon", None, "", "Sun"]
    assert out["finish_reason"][2:] == ["invalid_input"] * 3
    assert out["completion"][2:] == [None] * 3 and out["completion_tokens"][2:] == [0] * 3
    assert "3 of 4 passages have an empty or missing 'title' or 'content'" in caplog.text


def test_a_batch_of_invalid_rows_loads_no_model(tmp_path):
    gen = GenstructGenerator(str(tmp_path / "no-such-model"))
    assert gen({"title": [None], "content": [""]})["finish_reason"] == ["invalid_input"]


def test_missing_column_is_named_before_any_model_loads(tmp_path):
    gen = GenstructGenerator(str(tmp_path / "no-such-model"))
    with pytest.raises(MissingColumnsError, match=r"'content'.*it has: title, text\. Pass title_column="):
        Dataset.from_dict({"title": ["Moon"], "text": ["The Moon."]}).map(gen, batched=True)


def test_custom_column_names(tiny_generator):
    gen = GenstructGenerator(tiny_generator, max_new_tokens=2, title_column="heading", content_column="body")
    out = Dataset.from_dict({"heading": ["Moon"], "body": ["The Moon orbits Earth."]}).map(gen, batched=True)
    assert out["passage_id"] == [passage_id("Moon", "The Moon orbits Earth.")]


def test_with_rank_runs_on_the_cpu(tiny_generator, passages):
    gen = GenstructGenerator(tiny_generator, max_new_tokens=2)
    out = Dataset.from_dict(passages).map(gen, batched=True, with_rank=True)
    assert out.num_rows == 4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"num_samples": 0}, "num_samples must be a positive integer, got 0", id="num-samples"),
        pytest.param({"batch_size": 2.5}, "batch_size must be a positive integer", id="batch-size"),
        pytest.param({"num_samples": 4, "do_sample": False}, "identical greedy completions", id="greedy-best-of-n"),
        pytest.param({"quantization": "3bit"}, r"quantization='3bit' is not supported; use one of", id="quantization"),
        pytest.param({"temperature": -0.5}, r"temperature must be >= 0 \(0 for greedy decoding\)", id="temperature"),
        pytest.param({"temperature": float("nan")}, "temperature must be >= 0", id="temperature-nan"),
        pytest.param({"temperature": 0, "num_samples": 2}, "with temperature=0 would give 2 identical", id="t0-n2"),
        pytest.param({"temperature": 0, "do_sample": True}, "cannot go with do_sample=True", id="t0-sampling"),
        pytest.param(
            {"base_url": "http://x"},
            "base_url is an option of the 'openai' engine, not of the 'transformers'",
            id="option",
        ),
        pytest.param({"backend": "tgi"}, r"backend='tgi' is not one of \('auto', 'transformers'", id="backend"),
        pytest.param({"top_p": 1.5}, r"top_p must be in \(0, 1\]", id="top-p"),
        pytest.param({"max_prompt_tokens": 0}, "max_prompt_tokens must be a positive integer", id="prompt-budget"),
    ],
)
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(InvalidConfigError, match=match):
        GenstructGenerator("any", **{"backend": "transformers", **kwargs})


def test_max_new_tokens_that_fill_the_context_are_refused(tmp_path):
    path = testing.build_tiny_generator(tmp_path / "tiny-context", max_position_embeddings=32)
    with pytest.raises(InvalidConfigError, match="max_new_tokens=64 leaves no room for a prompt"):
        GenstructGenerator(path, max_new_tokens=64)({"title": ["Moon"], "content": ["The Moon."]})


def test_default_instance_is_genstruct_7b():
    assert genstruct_generate.model == "NousResearch/Genstruct-7B"
    assert genstruct_generate.num_samples == 1 and not genstruct_generate.sampling
    assert GenstructGenerator(num_samples=4).sampling


@pytest.mark.slow
def test_two_worker_processes_give_the_single_process_rows(tiny_generator, passages):
    import multiprocess

    # As on GPUs, where CUDA does not survive a fork: spawned workers, one model each, cuda:{rank} there.
    multiprocess.set_start_method("spawn", force=True)
    try:
        ds = Dataset.from_dict(passages)
        gen = GenstructGenerator(tiny_generator, max_new_tokens=6, num_samples=2, seed=0)
        single = ds.map(gen, batched=True, batch_size=1)
        workers = ds.map(gen, batched=True, batch_size=1, with_rank=True, num_proc=2)
    finally:
        multiprocess.set_start_method("fork", force=True)
    assert workers.to_list() == single.to_list()


def test_columns_the_stage_writes_are_replaced_not_doubled(tiny_generator, passages):
    rerun = dict(passages, completion=["old"] * 4, passage_id=["x"] * 4)
    out = Dataset.from_dict(rerun).map(GenstructGenerator(tiny_generator, max_new_tokens=2), batched=True)
    assert out.num_rows == 4 and "old" not in out["completion"]
    assert out["passage_id"][0] == passage_id(passages["title"][0], passages["content"][0])


def test_temperature_zero_is_greedy(tiny_generator, passages):
    greedy = GenstructGenerator(tiny_generator, max_new_tokens=6, do_sample=False)
    zero = GenstructGenerator(tiny_generator, max_new_tokens=6, temperature=0, do_sample=None)
    assert not zero.sampling and zero(passages) == greedy(passages)
    # With one sample, do_sample=None decodes greedily at any temperature; the rule shows where sampling would be
    # chosen: several samples a passage at temperature 0 are greedy, hence identical, hence refused.
    assert GenstructGenerator(tiny_generator, max_new_tokens=6, num_samples=2).sampling
    with pytest.raises(InvalidConfigError, match="num_samples=2 with temperature=0 would give 2 identical greedy"):
        GenstructGenerator(tiny_generator, max_new_tokens=6, num_samples=2, temperature=0, do_sample=None)
