"""The whole job of the quick start, end to end, on tiny local models."""

import json

import pytest
from completion_server import FlakyServer
from datasets import load_dataset

from genstruct_datasets import GenstructGenerator, RewardScorer, load_genstruct, parse_pairs, select_best, testing


def test_passages_to_best_pairs_and_back_from_parquet(tmp_path, taught_generator, tiny_reward_model, passages):
    rows = [{"title": t, "content": c} for t, c in zip(passages["title"], passages["content"])]
    rows.append({"title": "Empty", "content": ""})
    with open(tmp_path / "passages.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)

    ds = load_dataset("json", data_files=str(tmp_path / "passages.jsonl"), split="train")
    ds = ds.map(GenstructGenerator(taught_generator, num_samples=3, max_new_tokens=32, seed=0), batched=True)
    ds = ds.map(parse_pairs, batched=True)
    ds = ds.map(RewardScorer(tiny_reward_model), batched=True)
    assert ds.num_rows == 4 * 3 + 1
    assert ds.filter(lambda row: row["finish_reason"] == "invalid_input")["title"] == ["Empty"]
    parsed = ds.filter(lambda row: row["parse_error"] is None)
    assert parsed.num_rows >= 8  # sampling at temperature 0.7 still mostly writes the taught pair
    assert all(isinstance(r, float) for r in parsed["reward"])

    best = select_best(ds)
    assert sorted(best["title"]) == sorted(passages["title"])
    for row in best:
        candidates = parsed.filter(lambda r, pid=row["passage_id"]: r["passage_id"] == pid)
        assert row["reward"] == max(candidates["reward"])
        assert row["instruction"] and row["response"] and row["parse_error"] is None
    assert testing.TAUGHT_INSTRUCTION in best["instruction"]

    best.to_parquet(tmp_path / "best.parquet")
    reloaded = load_dataset("parquet", data_files=str(tmp_path / "best.parquet"), split="train")
    assert reloaded.features == best.features
    assert reloaded.to_list() == best.to_list()


@pytest.mark.slow
def test_run_pipeline_is_the_three_maps_timed(tmp_path, taught_generator, tiny_reward_model, passages):
    from datasets import Dataset

    from genstruct_datasets import run_pipeline

    ds = Dataset.from_dict({"title": [*passages["title"], "Empty"], "content": [*passages["content"], ""]})
    generator = GenstructGenerator(taught_generator, num_samples=2, max_new_tokens=32, seed=0)
    result = run_pipeline(ds, generator, RewardScorer(tiny_reward_model))
    by_hand = ds.map(generator, batched=True).map(parse_pairs, batched=True)
    by_hand = by_hand.map(RewardScorer(tiny_reward_model), batched=True)
    assert result.failed == 0 and result.rows.to_list() == by_hand.to_list()
    stats = result.stats
    assert set(stats.seconds) == {"generate", "parse", "score"} and all(s >= 0 for s in stats.seconds.values())
    # The empty passage is never prompted: it costs nothing and does not count as generated.
    assert stats.generated_passages == 4
    assert stats.generated_tokens == sum(by_hand["completion_tokens"]) > 0


# Three samples of each passage that differ, so that their rewards differ: the best-of-n choice is visible.
ANSWERS = [
    " Why does the Moon show phases?\n[[[Assistant]]] Because sunlight lights the half facing the Sun.",
    " What is it?\n[[[Assistant]]] No idea, ask someone else.",
    " Explain the passage in detail.\n[[[Assistant]]] The passage says many things about many topics at length.",
]


def test_best_of_n_end_to_end_keeps_each_passages_highest_reward(tmp_path, tiny_reward_model, passages):
    corpus = tmp_path / "passages.jsonl"
    corpus.write_text(
        "".join(json.dumps({"title": t, "content": c}) + "\n" for t, c in zip(passages["title"], passages["content"]))
    )
    # Each request's samples differ, and where the passage is asked again (seed moved on) they come in another order.
    server = FlakyServer(completion=lambda body, i: ANSWERS[(i + body.get("seed", 0)) % len(ANSWERS)])
    try:
        ds = load_genstruct(
            source=str(corpus),
            split_documents=False,
            text_column="content",
            min_tokens=4,  # short passages, read as they are (counted in words: the server's model has no tokenizer)
            model="tiny",
            backend="openai",
            base_url=server.base_url,
            reward_model=tiny_reward_model,
            num_samples=3,
            seed=0,
            cache_dir=str(tmp_path / "builds"),
        )
    finally:
        server.close()
    candidates = {}
    for row in ds["candidates"]:
        candidates.setdefault(row["passage_id"], []).append(row)
    assert sorted(ds["train"]["title"]) == sorted(passages["title"])
    for row in ds["train"]:
        rewards = [candidate["reward"] for candidate in candidates[row["passage_id"]]]
        assert len(set(rewards)) == 3  # the samples differ, and so do their rewards
        assert row["reward"] == max(rewards) and row["instruction"] in {a.split("\n")[0].strip() for a in ANSWERS}
