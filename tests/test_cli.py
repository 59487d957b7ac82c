import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import transformers
from datasets import load_dataset
from huggingface_hub import DatasetCard

DATA = Path(__file__).parent / "data"
COMMAND = shutil.which("genstruct-datasets")
pytestmark = pytest.mark.skipif(COMMAND is None, reason="the console script is installed by `pip install -e .`")


def run(*args: str, tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {**offline_environment(tmp_path / "cache"), **(env or {})}
    return subprocess.run([COMMAND, *args], capture_output=True, text=True, env=environment, timeout=600)


def offline_environment(cache: Path) -> dict[str, str]:
    """This process's environment, offline, without a token, with a datasets cache of its own."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(cache)}
    environment.pop("HF_TOKEN", None)
    return environment


def passages_corpus(path: Path, count: int) -> Path:
    """A JSON-lines file of `count` short passages (title, content), one per shard with --shard-size 1."""
    rows = [
        {"title": f"Passage {i}", "content": f"Passage {i} is about the Moon and its phases. " * 3}
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def sharded_run_args(corpus: Path, generator: str, reward_model: str) -> list[str]:
    return [
        "run", str(corpus), "--no-split", "--text-column", "content", "--shard-size", "1",
        "--model", generator, "--reward-model", reward_model,
        "--num-samples", "2", "--max-new-tokens", "24", "--seed", "0",
    ]  # fmt: skip


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "articles.jsonl"
    rows = [
        {"heading": "Moon", "body": (DATA / "moon_wikipedia.txt").read_text()},
        {"heading": "Beekeeping", "body": (DATA / "plain_essay.txt").read_text()},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_run_writes_a_dataset_folder_and_a_summary(tmp_path, corpus, taught_generator, tiny_reward_model):
    output = tmp_path / "pairs"
    args = [
        "run", str(corpus), "--title-column", "heading", "--text-column", "body",
        "--model", taught_generator, "--reward-model", tiny_reward_model,
        "--num-samples", "2", "--max-new-tokens", "24", "--seed", "0", "--limit", "5",
        "--output", str(output), "--license", "cc-by-sa-4.0",
    ]  # fmt: skip
    result = run(*args, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "passages: 5, candidates: 10, parsed: 10, kept: 5"
    assert lines[1] == "outcomes: finish_reason: stop=10"
    assert lines[2].startswith("reward: mean ")
    assert lines[3] == "quality" and lines[4].startswith("  pairs among candidates ")
    assert lines[-2] == f"generated with: transformers {transformers.__version__} (static batching) on cpu"
    assert lines[-1] == f"written to: {output}"
    assert "Generating" in result.stderr  # progress bars for each stage, on stderr
    pairs = load_dataset(str(output), split="train")
    assert pairs.num_rows == 5 and pairs["instruction"][0]
    card = DatasetCard.load(output / "README.md")
    assert card.data.license == "cc-by-sa-4.0" and "| candidates | 10 |" in card.text
    assert f"| `model` | `{taught_generator}` |" in card.text
    assert f"the completions were generated with transformers {transformers.__version__}." in card.text
    assert f"| `engine` | `transformers {transformers.__version__}` |" in card.text


DRIVER = [sys.executable, str(Path(__file__).parent / "cli_driver.py")]


def kill_after_two_shards(command: list[str], env: dict, shards: Path, log: Path) -> list[int]:
    """Start `command`, SIGKILL it once two shards are in the folder `shards`, and return the finished ones.

    The command's stderr goes to `log`, shown when the run did not stop between its first and last shard.
    """
    with log.open("w") as stderr:
        first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 300
        while len(list(shards.glob("*/candidates-*.parquet"))) < 2 and first.poll() is None:
            assert time.monotonic() < deadline, "no shard was finished in time"
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait()
    finished = sorted(int(path.name.split("-")[1]) for path in shards.glob("*/candidates-*.parquet"))
    assert 2 <= len(finished) < 6, f"not killed between its first and last shard: {log.read_text()[-3000:]}"
    return finished


def generated(calls: Path) -> list[str]:
    return sorted(calls.read_text().splitlines())


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_finished_shards(tmp_path, taught_generator, tiny_reward_model):
    corpus = passages_corpus(tmp_path / "passages.jsonl", 6)
    args = [*sharded_run_args(corpus, taught_generator, tiny_reward_model), "--output", str(tmp_path / "pairs")]
    environment = offline_environment(tmp_path / "cache")
    shards = tmp_path / "cache" / "genstruct-work"
    first_calls, calls = tmp_path / "first-calls.txt", tmp_path / "calls.txt"
    command = [*DRIVER, "--calls", str(first_calls), *args]
    finished = kill_after_two_shards(command, environment, shards, tmp_path / "killed.log")

    second = subprocess.run(
        [*DRIVER, "--calls", str(calls), *args], env=environment, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"Resuming: {len(finished)} of 6 shards were finished by an earlier run and are reused." in second.stderr
    # The generator ran on the passages of unfinished shards (one passage each) only, each once. The shard in
    # progress at the kill may be spared too: if its generation had finished, the datasets cache keeps it.
    unfinished = {f"Passage {k}" for k in range(6) if k not in finished}
    never_started = unfinished - set(generated(first_calls))
    assert never_started <= set(generated(calls)) <= unfinished
    assert len(generated(calls)) == len(set(generated(calls)))
    pairs = load_dataset(str(tmp_path / "pairs"), split="train", download_mode="force_redownload")
    assert sorted(pairs["title"]) == [f"Passage {i}" for i in range(6)]  # every passage exactly once
    assert not list(shards.glob("*/*"))  # the finished build's shards are cleaned up

    # --force runs the model on every passage again, where the same command would read the cache.
    forced_calls = tmp_path / "forced-calls.txt"
    forced = subprocess.run(
        [*DRIVER, "--calls", str(forced_calls), *args, "--force"], env=environment, capture_output=True, text=True
    )
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert generated(forced_calls) == [f"Passage {k}" for k in range(6)]


@pytest.mark.slow
def test_a_killed_push_resumes_on_another_machine_from_the_repo(tmp_path, taught_generator, tiny_reward_model):
    corpus = passages_corpus(tmp_path / "passages.jsonl", 6)
    hub = tmp_path / "hub"
    # The command against a Hub whose repositories are folders (tests/hub_fake.py), with a token.
    args = [*sharded_run_args(corpus, taught_generator, tiny_reward_model), "--push-to-hub", "me/moon-pairs"]
    uploaded = hub / "me" / "moon-pairs" / ".genstruct-work"
    finished = kill_after_two_shards(
        [*DRIVER, "--hub", str(hub), *args],
        {**offline_environment(tmp_path / "machine-1"), "HF_TOKEN": "hf_fake"},
        uploaded,
        tmp_path / "killed.log",
    )

    # Another machine: an empty cache, and the repository's shards.
    calls = tmp_path / "calls.txt"
    second = subprocess.run(
        [*DRIVER, "--hub", str(hub), "--calls", str(calls), *args],
        env={**offline_environment(tmp_path / "machine-2"), "HF_TOKEN": "hf_fake"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"Resuming: {len(finished)} of 6 shards were finished by an earlier run and are reused." in second.stderr
    assert generated(calls) == [f"Passage {k}" for k in range(6) if k not in finished]
    pairs = load_dataset(str(hub / "me" / "moon-pairs"), split="train", download_mode="force_redownload")
    assert sorted(pairs["title"]) == [f"Passage {i}" for i in range(6)]  # every passage exactly once
    assert not list(uploaded.rglob("*.parquet"))  # the published dataset replaced the run's shards


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun comes with torch")
def test_run_under_torchrun_builds_every_passage_once(tmp_path, taught_generator, tiny_reward_model):
    corpus = passages_corpus(tmp_path / "passages.jsonl", 5)
    args = sharded_run_args(corpus, taught_generator, tiny_reward_model)
    single = run(*args, "--output", str(tmp_path / "one"), tmp_path=tmp_path / "single")
    assert single.returncode == 0, single.stderr[-3000:]
    environment = offline_environment(tmp_path / "shared-cache")
    ranks = subprocess.run(
        [shutil.which("torchrun"), "--nproc_per_node", "2", "--master_port", str(_free_port()),
         "-m", "genstruct_datasets.cli", *args, "--output", str(tmp_path / "two")],
        capture_output=True, text=True, env=environment, timeout=600,
    )  # fmt: skip
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    # Shards 1, 3, 5 on rank 0 and 2, 4 on rank 1; rank 0 alone writes the dataset and prints the summary.
    assert len(re.findall(r"Shard \d of 5: 1 passages\.", ranks.stderr)) == 5
    assert ranks.stdout.count("written to: ") == 1
    one = load_dataset("parquet", data_files=str(tmp_path / "one" / "data" / "*.parquet"), split="train")
    two = load_dataset("parquet", data_files=str(tmp_path / "two" / "data" / "*.parquet"), split="train")
    assert sorted(two["title"]) == [f"Passage {i}" for i in range(5)]
    assert two.to_list() == one.to_list()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_run_with_two_worker_processes_gives_the_same_pairs(tmp_path, corpus, taught_generator, tiny_reward_model):
    common = [
        "run", str(corpus), "--title-column", "heading", "--text-column", "body",
        "--model", taught_generator, "--reward-model", tiny_reward_model,
        "--num-samples", "2", "--max-new-tokens", "24", "--seed", "0", "--limit", "4",
    ]  # fmt: skip
    single = run(*common, "--output", str(tmp_path / "one"), tmp_path=tmp_path)
    workers = run(*common, "--num-proc", "2", "--output", str(tmp_path / "two"), tmp_path=tmp_path / "other-cache")
    assert single.returncode == 0 and workers.returncode == 0, workers.stderr[-3000:]
    one = load_dataset("parquet", data_files=str(tmp_path / "one" / "data" / "*.parquet"), split="train")
    two = load_dataset("parquet", data_files=str(tmp_path / "two" / "data" / "*.parquet"), split="train")
    assert two.to_list() == one.to_list()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["missing.jsonl"], "Source 'missing.jsonl' does not exist", id="missing-file"),
        pytest.param(
            ["CORPUS"], "'title', 'text', which the dataset does not have; it has: heading, body", id="column"
        ),
        pytest.param(["CORPUS", "--num-samples", "0"], "num_samples must be a positive integer, got 0.", id="setting"),
        pytest.param(["CORPUS", "--push-to-hub", "me/x"], "--push-to-hub me/x needs a Hugging Face token", id="token"),
        pytest.param(
            ["CORPUS", "--dedup-threshold", "1.5"], "--dedup-threshold must be in (0, 1], got 1.5", id="dedup"
        ),
    ],
)
def test_bad_input_exits_with_one_line_before_any_model_loads(tmp_path, corpus, args, message):
    args = [str(corpus) if a == "CORPUS" else a for a in args]
    # A model that does not exist: reaching it would fail differently.
    result = run(
        "run", *args, "--model", str(tmp_path / "no-model"), tmp_path=tmp_path, env={"HF_HOME": str(tmp_path)}
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("genstruct-datasets: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_help_reads_well(tmp_path):
    result = run("run", "--help", tmp_path=tmp_path)
    assert result.returncode == 0
    for option in ("--num-samples", "--quantization {8bit,4bit}", "--push-to-hub REPO", "--limit LIMIT", "examples:"):
        assert option in result.stdout


def test_report_prints_a_table_and_json(tmp_path):
    from datasets import Dataset

    from genstruct_datasets import save_local

    pairs = Dataset.from_dict(
        {
            "content": ["The Moon orbits Earth and shows phases.", "Bees dance to share food sources."],
            "instruction": ["Why does the Moon show phases?", "Explain how bees share food."],
            "response": ["The Moon orbits Earth.", "Bees dance."],
            "reward": [2.0, 1.0],
        }
    )
    folder = save_local(pairs, tmp_path / "pairs")
    table = run("report", str(folder), tmp_path=tmp_path)
    assert table.returncode == 0, table.stderr[-2000:]
    assert table.stdout.startswith("quality\n  pairs among candidates")
    assert "reward (mean / median)                    1.500 / 1.500" in table.stdout
    as_json = run("report", str(folder), "--json", tmp_path=tmp_path)
    assert json.loads(as_json.stdout)["validity"]["pairs"] == 2
    # `report --json | head`: a reader that goes away early is no failure.
    piped = subprocess.Popen(
        [COMMAND, "report", str(folder), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=offline_environment(tmp_path / "cache"),
    )
    piped.stdout.close()
    assert piped.wait(timeout=600) == 0 and b"Broken pipe" not in piped.stderr.read()
    missing = run("report", str(tmp_path / "nothing.parquet"), tmp_path=tmp_path)
    assert missing.returncode == 2 and "is neither a dataset folder nor a Hub dataset id" in missing.stderr
    no_split = run("report", str(folder), "--split", "test", tmp_path=tmp_path)
    assert no_split.returncode == 2 and "Traceback" not in no_split.stderr
    assert "genstruct-datasets: error: cannot read" in no_split.stderr
