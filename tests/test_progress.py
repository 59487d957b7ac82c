"""Where a run stands: the progress view's figures, its log lines, the cost at given prices, the live Hub card."""

import json
import logging
import re
from pathlib import Path

import datasets
import pytest
from hub_fake import FolderHub
from huggingface_hub import DatasetCard
from test_cli import passages_corpus, run, sharded_run_args

from genstruct_datasets import GenstructConfig, InvalidConfigError, RunOptions, RunStats, run_recipe
from genstruct_datasets.builder import build_genstruct
from genstruct_datasets.progress import BatchFigures, Prices, ProgressOptions, RunCost, RunProgress, report_batch
from genstruct_datasets.publish import LiveCard, hub

REPO = "me/moon-pairs"


class Clock:
    """A clock that moves only when told: `clock.now += 10`."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def sharded(recipe: dict, corpus: Path) -> dict:
    """The conftest recipe on a corpus of passages, a shard each, the cache folder out of it."""
    settings = {k: v for k, v in recipe.items() if k != "cache_dir"}
    return {"source": str(corpus), "split_documents": False, "text_column": "content", "shard_size": 1, **settings}


def test_reused_passages_are_done_but_not_speed_and_batches_count_once():
    clock = Clock()
    options = ProgressOptions(live=False, clock=clock, prices=Prices(per_gpu_hour=3600.0))
    with RunProgress(4, reused=2, shards=4, shards_reused=2, samples_per_passage=2, gpus=2, options=options) as view:
        clock.now = 10.0
        assert report_batch(BatchFigures(passages=1, candidates=2, failed=0, tokens=30, prompt_tokens=50))
        batch = view.snapshot()
        view.add_shard(1, RunStats(generated_passages=1, generated_tokens=30, prompt_tokens=50))
        shard = view.snapshot()
    assert not report_batch(BatchFigures(1, 2, 0, 30, 50))  # no view open: the generator logs on its own
    assert (batch.done, batch.reused, batch.candidates, batch.tokens) == (3, 2, 2, 30)
    # The shard's figures replace those of its batch: nothing counts twice.
    assert (shard.done, shard.candidates, shard.tokens, shard.prompt_tokens, shard.shards_done) == (3, 2, 30, 50, 3)
    # One passage in 10 s by this run: the one left takes 10 s more (counting the reused two as speed would say 3.3).
    assert shard.passages_per_second == 0.1 and shard.eta == pytest.approx(10.0) and shard.tokens_per_second == 3.0
    # 10 s of 2 GPUs at 3600 an hour: 20 so far; the two passages of this run cost 40.
    assert shard.cost == pytest.approx(20.0) and shard.projected_cost == pytest.approx(40.0)


def test_without_a_terminal_a_line_comes_at_each_interval_and_datasets_bars_come_back(caplog):
    clock = Clock()
    assert datasets.utils.logging.is_progress_bar_enabled()
    lines = []
    options = ProgressOptions(live=False, clock=clock, interval=30.0)
    with (
        caplog.at_level(logging.INFO, logger="genstruct_datasets.progress"),
        RunProgress(3, shards=3, options=options) as view,
    ):
        assert not datasets.utils.logging.is_progress_bar_enabled()  # ours says it instead
        clock.now = 29.0
        view.add_shard(1, RunStats(generated_passages=1, generated_tokens=10))
        lines.append(len(caplog.records))
        clock.now = 30.0
        view.add_shard(1, RunStats(generated_passages=1, generated_tokens=10))
        lines.append(len(caplog.records))
    assert lines == [0, 1]  # none before 30 s, one at 30 s
    assert datasets.utils.logging.is_progress_bar_enabled()
    assert caplog.messages[0] == (
        "Progress: 2 of 3 passages (67%), shard 2 of 3, 2 candidates, 0 failed, 1 tokens/s, 30.0 s elapsed, "
        "about 15.0 s left."
    )
    assert caplog.messages[-1].startswith("Progress: 2 of 3 passages")  # the last word, as the view closes


@pytest.mark.slow
def test_a_resumed_run_counts_the_reused_passages_as_done_and_its_own_speed(
    recipe, tmp_path, monkeypatch, crash_in_shard_of
):
    corpus = passages_corpus(tmp_path / "passages.jsonl", 5)
    config = GenstructConfig(**sharded(recipe, corpus))
    with monkeypatch.context() as patch:
        crash_in_shard_of("Passage 2", patch)
        with pytest.raises(OSError, match="No space left"):
            build_genstruct(config, cache_dir=recipe["cache_dir"])
    clock, seen = Clock(), []

    def listen(snapshot):
        clock.now += 10.0  # each shard of this run takes 10 s
        seen.append(snapshot)

    progress = ProgressOptions(live=False, clock=clock, on_shard=listen, prices=Prices(1000.0, 2000.0))
    pairs = build_genstruct(
        GenstructConfig(**sharded(recipe, corpus)), cache_dir=recipe["cache_dir"], progress=progress
    )
    stats = RunStats.of(pairs["train"])
    assert [(s.done, s.total, s.reused, s.shards_done) for s in seen] == [(3, 5, 2, 3), (4, 5, 2, 4), (5, 5, 2, 5)]
    middle, last = seen[1:]
    # Two passages of this run in 10 s: the one left takes 5 s (the reused two counted as speed would say 2.5 s).
    assert middle.elapsed == 10.0 and middle.passages_per_second == 0.2 and middle.eta == pytest.approx(5.0)
    assert last.eta == 0 and last.candidates == 6 and last.failed == 0
    assert (last.tokens, last.prompt_tokens) == (stats.generated_tokens, stats.prompt_tokens)
    assert stats.prompt_tokens > 0 and stats.gpus == 1
    assert last.cost == pytest.approx((1000 * stats.prompt_tokens + 2000 * stats.generated_tokens) / 1e6)


@pytest.mark.slow
def test_the_run_prices_its_work_and_keeps_a_card_on_the_hub_until_the_final_one(
    recipe, tmp_path, monkeypatch, caplog
):
    hub_folder = FolderHub(tmp_path / "hub")
    hub_folder.install(monkeypatch.setattr)
    monkeypatch.setattr(hub, "LIVE_CARD_INTERVAL", 0.0)
    corpus = passages_corpus(tmp_path / "passages.jsonl", 3)
    hub_folder.fail("upload_file", 500, on="README.md")  # the first card update: a warning, not a failed run
    with caplog.at_level(logging.WARNING, logger="genstruct_datasets"):
        result = run_recipe(sharded(recipe, corpus), cache_dir=recipe["cache_dir"], output=str(tmp_path / "out"),
                            push_to_hub=REPO, token="hf_fake", price_per_million_tokens="1000,2000")  # fmt: skip
    assert "Could not update the progress card of me/moon-pairs (HfHubHTTPError" in caplog.text
    cards = [c for c in hub_folder.commits if "README.md" in c.added]
    # The first shard's update failed, the second landed, the last shard's is left to the final card.
    assert [c.message for c in cards[:-1]] == ["Progress: 2 of 3 passages"]
    assert cards[-1].message.startswith("Upload ")
    final = DatasetCard.load(REPO, repo_type="dataset")
    assert "being generated" not in final.text and "## How to load" in final.text
    stats = result.report.stats
    amount = (1000 * stats.prompt_tokens + 2000 * stats.generated_tokens) / 1e6
    assert result.report.cost.amount == pytest.approx(amount) and result.report.cost.projected == pytest.approx(amount)
    assert f"| cost at the given prices | {amount:,.2f} (the whole corpus about" in final.text
    saved = json.loads((tmp_path / "out" / "genstruct-report.json").read_text())
    assert saved["cost"]["amount"] == pytest.approx(amount)
    assert "cost at the given prices" in result.summary()


def test_a_live_card_keeps_the_existing_metadata_and_waits_its_interval(tmp_path, monkeypatch):
    hub_folder = FolderHub(tmp_path / "hub")
    hub_folder.install(monkeypatch.setattr)
    (hub_folder.repo(REPO)).mkdir(parents=True)
    (hub_folder.repo(REPO) / "README.md").write_text("---\nlicense: mit\n---\n# old\n")
    clock = Clock()
    card = LiveCard(REPO, token="hf_fake", interval=600.0, clock=clock)
    with RunProgress(
        10, reused=4, shards=5, shards_reused=2, options=ProgressOptions(live=False, clock=clock)
    ) as view:
        clock.now = 60.0
        view.add_shard(2, RunStats(generated_passages=2, generated_tokens=20))
        assert card(view.snapshot())
        assert not card(view.snapshot())  # within 10 minutes of the last
        clock.now = 660.0
        assert card(view.snapshot())
    assert not LiveCard(REPO, token="hf_fake")(RunProgress(1, shards=1).snapshot())  # a run of one shard
    text = (hub_folder.repo(REPO) / "README.md").read_text()
    live = DatasetCard(text)
    assert live.data.license == "mit" and "6 of 10 (4 reused from an earlier run)" in live.text
    assert "| shards done | 3 of 5 |" in live.text and "| time left | about 22 min 00 s |" in live.text


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"price_per_million_tokens": "0.2"}, "must be two prices, of prompt and of completion tokens, "
                     "as IN,OUT (e.g. 0.2,0.6), got '0.2'.", id="one-price"),
        pytest.param({"price_per_million_tokens": "0.2,-1"}, "the completion token price must be >= 0 in "
                     "--price-per-million-tokens, got -1.0.", id="negative"),
        pytest.param({"price_per_gpu_hour": float("nan")}, "price_per_gpu_hour must be >= 0, got nan.", id="nan"),
        pytest.param({"price_per_gpu_hour": 2.0, "price_per_million_tokens": "1,2"},
                     "two ways to price a run; give one.", id="both"),
        pytest.param({"progress_interval": -1}, "progress_interval must be >= 0 (seconds), got -1.", id="interval"),
    ],
)  # fmt: skip
def test_bad_prices_are_one_line(options, message):
    with pytest.raises(InvalidConfigError, match=re.escape(message)):
        RunOptions(**options)


def test_prices_are_read_and_are_not_part_of_the_recipe():
    assert RunOptions(price_per_million_tokens="0.2, 0.6").prices() == Prices(0.2, 0.6)
    assert RunOptions(price_per_million_tokens=(1, 2)).prices() == Prices(1.0, 2.0)
    assert RunOptions().prices() is None
    stats = RunStats(passages=10, generated_passages=5, wall_seconds=1800.0, gpus=4)
    assert RunCost.of(stats, Prices(per_gpu_hour=2.0)) == RunCost(4.0, 8.0, "2 per GPU-hour × 4 GPUs")


@pytest.mark.slow
def test_a_cli_run_without_a_terminal_logs_where_it_stands(tmp_path, taught_generator, tiny_reward_model):
    corpus = passages_corpus(tmp_path / "passages.jsonl", 3)
    args = [*sharded_run_args(corpus, taught_generator, tiny_reward_model), "--progress-interval", "0",
            "--price-per-gpu-hour", "3.5", "--output", str(tmp_path / "out")]  # fmt: skip
    result = run(*args, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "Progress: " in line]
    assert any("Progress: 1 of 3 passages (33%), shard 1 of 3, 2 candidates, 0 failed" in line for line in lines)
    assert any(" left, cost " in line and "in all." in line for line in lines), lines
    assert "Progress: 3 of 3 passages (100%), shard 3 of 3" in lines[-1] and "done" in lines[-1]
    during = result.stderr.split(lines[0])[1].split(lines[-1])[0]
    assert "Generating:" not in during and "Scoring:" not in during  # datasets' own bars are off while ours shows
    assert "cost at the given prices" in result.stdout and "3.5 per GPU-hour × 1 GPU" in result.stdout
