"""The two transformers engines: static batching (sub-batches, padding, out-of-memory) and continuous batching."""

import logging

import pytest

from genstruct_datasets import GenstructGenerator
from genstruct_datasets.models import load_model


def test_sub_batches_run_longest_first_and_rows_come_back_in_order(
    monkeypatch, spy_on_generate, tiny_generator, passages
):
    calls = spy_on_generate(tiny_generator)
    batched = GenstructGenerator(tiny_generator, max_new_tokens=5, batch_size=2)
    out = batched(passages)
    lengths = [int(ids.shape[1]) for ids in calls]
    assert len(calls) == 2 and lengths[0] > lengths[1]
    # Each passage alone, without padding, gives the same greedy completion in the same row.
    single = GenstructGenerator(tiny_generator, max_new_tokens=5, batch_size=1)
    assert out["completion"] == [
        single({"title": [t], "content": [c]})["completion"][0] for t, c in zip(passages["title"], passages["content"])
    ]
    assert out["title"] == passages["title"]


def test_left_padding_with_a_real_pad_id_and_no_warnings(
    monkeypatch, spy_on_generate, tiny_generator, passages, caplog, recwarn
):
    calls = spy_on_generate(tiny_generator)
    monkeypatch.setattr(logging.getLogger("transformers"), "propagate", True)
    with caplog.at_level(logging.WARNING):
        GenstructGenerator(tiny_generator, max_new_tokens=3, batch_size=4)(passages)
    tokenizer = load_model("causal_lm", tiny_generator, device="cpu").tokenizer
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    ids = calls[0]
    assert ids[-1, 0] == tokenizer.pad_token_id and ids[0, 0] == tokenizer.bos_token_id  # shortest row padded left
    assert (ids[:, -1] == ids[0, -1]).all()  # every prompt ends right at "[[[User]]] "
    messages = [r.getMessage() for r in caplog.records] + [str(w.message) for w in recwarn]
    assert not [m for m in messages if "pad" in m.lower() or "attention mask" in m.lower()], messages


def test_out_of_memory_halves_the_sub_batch_and_remembers_it(monkeypatch, tiny_generator, passages, caplog):
    import torch

    settings = {"max_new_tokens": 6, "num_samples": 2, "seed": 3, "batch_size": 4}
    expected = GenstructGenerator(tiny_generator, **settings)(passages)
    loaded = load_model("causal_lm", tiny_generator, device="cpu")
    loaded.state.clear()  # what fitted in memory is learnt per model and process
    model = loaded.model
    real, sizes = model.generate, []

    def generate_in_little_memory(*args, **kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        if sizes[-1] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "generate", generate_in_little_memory)
    with caplog.at_level(logging.WARNING, logger="genstruct_datasets"):
        out = GenstructGenerator(tiny_generator, **settings)(passages)
    assert sizes == [4, 2, 1, 1, 1, 1]
    assert out == expected  # every row once, in order, with the same seeded samples
    assert "Out of memory with 4 prompts per generate call; retrying with 2." in caplog.text
    sizes.clear()
    GenstructGenerator(tiny_generator, **settings)(passages)
    assert sizes == [1, 1, 1, 1]  # the size that worked is remembered


def test_out_of_memory_with_one_prompt_is_raised(monkeypatch, tiny_generator):
    import torch

    model = load_model("causal_lm", tiny_generator, device="cpu").model

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(model, "generate", no_memory)
    with pytest.raises(torch.OutOfMemoryError):
        GenstructGenerator(tiny_generator, max_new_tokens=2, batch_size=1)(
            {"title": ["Moon"], "content": ["The Moon."]}
        )


@pytest.mark.slow
def test_continuous_batching_gives_the_static_backends_greedy_completions(tiny_generator, passages):
    static = GenstructGenerator(tiny_generator, max_new_tokens=12, batch_size=2)(passages)
    continuous = GenstructGenerator(tiny_generator, max_new_tokens=12, backend="continuous")(passages)
    assert continuous == static


@pytest.mark.slow
def test_continuous_batching_forks_samples(taught_generator, passages):
    gen = GenstructGenerator(taught_generator, max_new_tokens=30, num_samples=3, seed=0, backend="continuous")
    out = gen(passages)
    assert out["sample_index"] == [0, 1, 2] * 4 and out["title"] == [t for t in passages["title"] for _ in range(3)]
    assert set(out["finish_reason"]) <= {"stop", "length"}
    assert all(isinstance(c, str) and c for c in out["completion"])
