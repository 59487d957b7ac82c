import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import transformers
from datasets import load_dataset
from huggingface_hub import DatasetCard

from genstruct_datasets import RunReport, RunStats

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
    assert f"| `model` | `{Path(taught_generator).name} (local, sha256 " in card.text  # no path of this machine
    assert f"the completions were generated with transformers {transformers.__version__}." in card.text
    assert f"| `engine` | `transformers {transformers.__version__}` |" in card.text


DRIVER = [sys.executable, str(Path(__file__).parent / "cli_driver.py")]


def kill_after_two_shards(command: list[str], env: dict, shards: Path, log: Path) -> list[int]:
    """Run the `cli_driver` command `command` until it has finished the shards of Passage 0 and 1 (a passage a
    shard) and holds still at Passage 2, wait for those two shards to be in the folder `shards` (the work folder, or
    the Hub repository's, where uploads go on in the background), SIGKILL it, and return the finished shards.

    The command's stderr goes to `log`, shown when it did not get there.
    """
    paused = log.with_suffix(".paused")
    command = [*DRIVER, "--pause-at", "Passage 2", "--paused", str(paused), *command[len(DRIVER) :]]
    with log.open("w") as stderr:
        first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 300
        # No race with the run: it waits at Passage 2, so that nothing more is finished while the files land.
        while not (paused.exists() and len(list(shards.glob("*/candidates-*.parquet"))) == 2):
            assert first.poll() is None and time.monotonic() < deadline, f"no pause: {log.read_text()[-3000:]}"
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait()
    return sorted(int(path.name.split("-")[1]) for path in shards.glob("*/candidates-*.parquet"))


def generated(calls: Path) -> list[str]:
    return sorted(calls.read_text().splitlines())


def forget_map_caches(cache: Path) -> None:
    """Delete the `datasets` map caches under `cache`, keeping the work folder's finished shards: a shard built
    again then calls the generator, which the log of calls shows, instead of reading its generation back."""
    for path in cache.rglob("cache-*.arrow"):
        if "genstruct-work" not in path.parts:
            path.unlink()


def run_stats(folder: Path) -> RunStats:
    """The figures of the run that wrote `folder`, from its ``genstruct-report.json``."""
    return RunReport.load(folder).stats


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_finished_shards(tmp_path, taught_generator, tiny_reward_model):
    corpus = passages_corpus(tmp_path / "passages.jsonl", 6)
    args = [*sharded_run_args(corpus, taught_generator, tiny_reward_model), "--output", str(tmp_path / "pairs")]
    environment = offline_environment(tmp_path / "cache")
    shards = tmp_path / "cache" / "genstruct-work"
    first_calls, calls = tmp_path / "first-calls.txt", tmp_path / "calls.txt"
    command = [*DRIVER, "--calls", str(first_calls), *args]
    finished = kill_after_two_shards(command, environment, shards, tmp_path / "killed.log")
    assert finished == [0, 1]
    forget_map_caches(tmp_path / "cache")  # reuse is then seen in the generator's calls, not hidden by the caches

    second = subprocess.run(
        [*DRIVER, "--calls", str(calls), *args], env=environment, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming: 2 of 6 shards were finished by an earlier run and are reused." in second.stderr
    # The generator ran on the passages of unfinished shards (one passage each) only, each once.
    assert generated(first_calls) == ["Passage 0", "Passage 1"]
    assert generated(calls) == [f"Passage {k}" for k in range(2, 6)]
    stats = run_stats(tmp_path / "pairs")
    assert (stats.shards_reused, stats.generated_passages) == (2, 4)
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
    assert finished == [0, 1]

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
    assert "Resuming: 2 of 6 shards were finished by an earlier run and are reused." in second.stderr
    assert generated(calls) == [f"Passage {k}" for k in range(2, 6)]
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
    assert "  passages generated  5 of 5\n" in ranks.stdout  # the cost counts both ranks' shards, not rank 0's
    one = load_dataset("parquet", data_files=str(tmp_path / "one" / "data" / "train-*.parquet"), split="train")
    two = load_dataset("parquet", data_files=str(tmp_path / "two" / "data" / "train-*.parquet"), split="train")
    assert sorted(two["title"]) == [f"Passage {i}" for i in range(5)]
    assert two.to_list() == one.to_list()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun comes with torch")
def test_torchrun_with_more_ranks_than_shards(tmp_path, taught_generator, tiny_reward_model):
    corpus = passages_corpus(tmp_path / "passages.jsonl", 1)  # one shard for two ranks
    args = sharded_run_args(corpus, taught_generator, tiny_reward_model)
    ranks = subprocess.run(
        [shutil.which("torchrun"), "--nproc_per_node", "2", "--master_port", str(_free_port()),
         "-m", "genstruct_datasets.cli", *args, "--output", str(tmp_path / "out")],
        capture_output=True, text=True, env=offline_environment(tmp_path / "cache"), timeout=600,
    )  # fmt: skip
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    assert load_dataset(str(tmp_path / "out"), split="train")["title"] == ["Passage 0"]


@pytest.mark.slow
def test_two_ranks_with_work_folders_of_their_own_meet_through_the_hub(tmp_path, taught_generator, tiny_reward_model):
    corpus = passages_corpus(tmp_path / "passages.jsonl", 4)
    args = [*sharded_run_args(corpus, taught_generator, tiny_reward_model), "--push-to-hub", "me/moon-pairs"]
    hub = tmp_path / "hub"
    # Two machines, as torchrun starts them (gloo on the CPU): no shared folder, one Hub (tests/hub_fake.py).
    node = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "HF_TOKEN": "hf_fake"}
    ranks = []
    for rank in (0, 1):
        machine = tmp_path / f"machine-{rank}"
        machine.mkdir()
        command = [*DRIVER, "--hub", str(hub), "--calls", str(machine / "calls.txt"), *args]
        command += ["--cache-dir", str(machine / "cache")]
        environment = {**offline_environment(machine / "datasets"), **node, "RANK": str(rank), "LOCAL_RANK": "0"}
        with (machine / "stderr.log").open("w") as log:
            ranks.append(subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=log, text=True))
    try:
        outputs = [rank.communicate(timeout=600)[0] for rank in ranks]
    finally:
        for rank in ranks:
            rank.kill()
    for k, rank in enumerate(ranks):
        assert rank.returncode == 0, (tmp_path / f"machine-{k}" / "stderr.log").read_text()[-3000:]
    # Each rank generated its own block of shards, and rank 0 took rank 1's from the repository.
    assert generated(tmp_path / "machine-0" / "calls.txt") == ["Passage 0", "Passage 1"]
    assert generated(tmp_path / "machine-1" / "calls.txt") == ["Passage 2", "Passage 3"]
    assert "written to: https://huggingface.co/datasets/me/moon-pairs" in outputs[0] and outputs[1] == ""
    pairs = load_dataset(str(hub / "me" / "moon-pairs"), split="train", download_mode="force_redownload")
    assert sorted(pairs["title"]) == [f"Passage {i}" for i in range(4)]  # every passage exactly once
    assert not list((hub / "me" / "moon-pairs").rglob(".genstruct-work/*/*"))  # published: the shards are gone


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
    one = load_dataset("parquet", data_files=str(tmp_path / "one" / "data" / "train-*.parquet"), split="train")
    two = load_dataset("parquet", data_files=str(tmp_path / "two" / "data" / "train-*.parquet"), split="train")
    assert two.to_list() == one.to_list()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["missing.jsonl"], "source 'missing.jsonl' does not exist", id="missing-file"),
        pytest.param(
            ["CORPUS"], "'title', 'text', which the dataset does not have; it has: heading, body", id="column"
        ),
        pytest.param(["CORPUS", "--num-samples", "0"], "num_samples must be a positive integer, got 0.", id="setting"),
        pytest.param(["CORPUS", "--push-to-hub", "me/x"], "--push-to-hub me/x needs a Hugging Face token", id="token"),
        pytest.param(["CORPUS", "--dedup-threshold", "1.5"], "dedup_threshold must be in (0, 1], got 1.5", id="dedup"),
        pytest.param(["BROKEN"], "broken.jsonl', line 2: not valid JSON (Expecting value)", id="malformed"),
    ],
)
def test_bad_input_exits_with_one_line_before_any_model_loads(tmp_path, corpus, args, message):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"title": "Moon", "text": "The Moon."}\n{"title": \n')
    args = [{"CORPUS": str(corpus), "BROKEN": str(broken)}.get(a, a) for a in args]
    # Models that do not exist: reaching them would fail differently.
    models = ["--model", str(tmp_path / "no-model"), "--reward-model", str(tmp_path / "no-reward-model")]
    result = run("run", *args, *models, tmp_path=tmp_path, env={"HF_HOME": str(tmp_path)})
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("genstruct-datasets: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    # The line alone: no "Generating train split" bar of the source's reading above it, no traceback.
    assert result.stderr.splitlines() == errors


@pytest.mark.parametrize(
    ("args", "usage", "hint"),
    [
        pytest.param(
            ["run", "docs.jsonl", "--num-sampels", "2"],
            "usage: genstruct-datasets run SOURCE [options] (all of them: genstruct-datasets run --help)",
            "genstruct-datasets run: error: unrecognized arguments: --num-sampels 2 (did you mean --num-samples?)",
            id="run",
        ),
        pytest.param(
            ["report", "pairs/", "--jsno", "--split=train", "--confg=x"],
            "usage: genstruct-datasets report [-h]",
            "genstruct-datasets report: error: unrecognized arguments: --jsno --confg=x "
            "(did you mean --json?; did you mean --config?)",
            id="report",
        ),
        pytest.param(
            ["demo", "--frobnicate"],
            "usage: genstruct-datasets demo [-h]",
            "genstruct-datasets demo: error: unrecognized arguments: --frobnicate",
            id="no-close-flag",
        ),
    ],
)
def test_a_mistyped_flag_gets_the_commands_usage_and_the_closest_flag(capsys, args, usage, hint):
    from genstruct_datasets.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    lines = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2
    assert lines[0].startswith(usage) and lines[-1] == hint  # the command's usage, not the top level's
    assert not any("Traceback" in line or "COMMAND ..." in line for line in lines)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        pytest.param(  # the default models are Hub ids, not cached here: the missing source is said first
            ["MISSING"], "does not exist; pass an existing file or folder as SOURCE, or a Hub dataset id.", id="source"
        ),
        pytest.param(["DOCS", "--model", "me/not-cached", "--reward-model", "FOLDER"], ": pass --model PATH, a ",
                     id="model"),
        pytest.param(["DOCS", "--model", "FOLDER", "--reward-model", "me/not-cached"], ": pass --reward-model PATH, ",
                     id="reward-model"),
        pytest.param(["me/no-such-dataset", "--model", "FOLDER", "--reward-model", "FOLDER"],
                     "cannot be had now (ConnectionError); check the path (SOURCE), or the network", id="hub-dataset"),
    ],
)  # fmt: skip
def test_errors_name_the_flags_on_the_command_line(cli, tmp_path, args, said):
    documents = tmp_path / "documents.jsonl"
    documents.write_text(json.dumps({"title": "Moon", "text": "The Moon orbits the Earth. " * 20}) + "\n")
    places = {"MISSING": str(tmp_path / "missing.jsonl"), "DOCS": str(documents), "FOLDER": str(tmp_path)}
    status, lines = cli("run", *[places.get(arg, arg) for arg in args], "--cache-dir", str(tmp_path / "cache"))
    assert status == 2 and len(lines) == 1 and said in lines[0], lines
    assert not re.search(r"(?<![\w-])[a-z_]+=", lines[0]), lines[0]  # no setting left in Python terms


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
    assert json.loads(as_json.stdout)["quality"]["validity"]["pairs"] == 2
    # `report --json | head`: a reader that goes away early is no failure.
    piped = subprocess.Popen(
        [COMMAND, "report", str(folder), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=offline_environment(tmp_path / "cache"),
    )
    piped.stdout.close()
    assert piped.wait(timeout=600) == 0 and b"Broken pipe" not in piped.stderr.read()
    for name in (str(tmp_path / "nothing.parquet"), "./no-such-folder"):
        missing = run("report", name, tmp_path=tmp_path)
        assert missing.returncode == 2 and "is neither a dataset folder nor a Hub dataset id" in missing.stderr
    no_split = run("report", str(folder), "--split", "test", tmp_path=tmp_path)
    assert no_split.returncode == 2 and "Traceback" not in no_split.stderr
    assert "genstruct-datasets: error: cannot read" in no_split.stderr


def test_failed_passages_exit_1_and_the_same_command_finishes_the_run(
    tmp_path, taught_generator, tiny_reward_model, capsys
):
    from completion_server import FlakyServer

    from genstruct_datasets import cli

    corpus = passages_corpus(tmp_path / "passages.jsonl", 3)
    server = FlakyServer(status=503, failing=lambda body: "Passage 1 " in body["prompt"])
    args = [
        *sharded_run_args(corpus, taught_generator, tiny_reward_model), "--backend", "openai",
        "--base-url", server.base_url, "--max-retries", "0", "--cache-dir", str(tmp_path / "cache"),
        "--output", str(tmp_path / "out"),
    ]  # fmt: skip
    try:
        assert cli.main(args) == 1
        message = capsys.readouterr().err.strip().splitlines()[-1]
        assert message == (
            "genstruct-datasets: error: 1 passage(s) failed to generate (finish_reason='error', e.g. a server that "
            "failed past its retries); everything else is kept. Run the same command again to retry them."
        )
        assert not (tmp_path / "out").exists()
        server.requests.clear()
        server.failing = None
        assert cli.main(args) == 0
    finally:
        server.close()
    assert [body["prompt"].count("Passage 1 ") > 0 for body in server.requests] == [True]
    assert load_dataset(str(tmp_path / "out"), split="train").num_rows == 3


def test_an_output_folder_of_someone_else_is_refused_before_any_work(tmp_path, corpus):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "README.md").write_text("my notes")
    result = run(
        "run", str(corpus), "--model", str(tmp_path / "no-model"), "--output", str(foreign), tmp_path=tmp_path
    )
    assert result.returncode == 2 and (foreign / "README.md").read_text() == "my notes"
    assert result.stderr.strip() == (
        f"genstruct-datasets: error: {str(foreign)!r} is not empty and was not written by genstruct-datasets; name "
        "a new or empty folder, or pass --overwrite to write the dataset into it (its README.md is replaced)."
    )


def test_a_run_that_keeps_no_pair_exits_1_and_writes_nothing(tmp_path, tiny_generator, tiny_reward_model):
    corpus = passages_corpus(tmp_path / "passages.jsonl", 2)
    args = [*sharded_run_args(corpus, tiny_generator, tiny_reward_model), "--output", str(tmp_path / "out")]
    args[args.index("--max-new-tokens") + 1] = "4"
    result = run(*args, tmp_path=tmp_path)
    assert result.returncode == 1 and not (tmp_path / "out").exists()
    assert "error: no pair was kept from 4 candidates (outcomes: finish_reason: length=4" in result.stderr


@pytest.fixture
def cli(capsys):
    """``cli(*args)``: run the command in this process; returns its exit status and its lines on stderr."""
    from genstruct_datasets.cli import main

    package = logging.getLogger("genstruct_datasets")
    level = package.level

    def call(*args: str) -> tuple[int, list[str]]:
        try:
            status = main(list(args))
        except KeyboardInterrupt:
            pytest.fail("Ctrl-C went up as a traceback")
        stderr = capsys.readouterr().err
        assert "Traceback" not in stderr
        return status, [line for line in stderr.splitlines() if line.startswith("genstruct-datasets: ")]

    yield call
    package.setLevel(level)


@pytest.fixture
def no_model_loads(monkeypatch):
    import genstruct_datasets.models as models

    monkeypatch.setattr(models, "_load", lambda *args, **kwargs: pytest.fail("a model was loaded"))


def two_labels(folder: Path, reward_model: str) -> str:
    """A reward model's config (all that the check reads) with two labels instead of one."""
    folder.mkdir()
    config = json.loads((Path(reward_model) / "config.json").read_text())
    config |= {"id2label": {"0": "bad", "1": "good"}, "label2id": {"bad": 0, "good": 1}}
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


ROW = json.dumps({"title": "Bees", "text": (DATA / "plain_essay.txt").read_text()}) + "\n"


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        pytest.param({"c.jsonl": ""}, [], r"'.*c\.jsonl' is empty; add documents to it", id="empty-jsonl"),
        pytest.param(
            {"c.jsonl": ROW.encode() + "Café\n".encode("latin-1")}, [],
            r"'.*c\.jsonl' is not UTF-8 text \(byte 0xe9 on line 2\); convert it", id="not-utf-8",
        ),
        pytest.param(
            {"c.jsonl": ROW + '{"title": "x",\n'}, [], r"'.*c\.jsonl', line 2: not valid JSON \(.*\); fix or remove",
            id="malformed-line",
        ),
        pytest.param(
            {"c/a.jsonl": ROW, "c/b.jsonl": ROW + "{\n", "c/c.jsonl": ROW}, [],
            r"'.*c/b\.jsonl', line 2: not valid JSON", id="bad-file-in-a-folder",
        ),
        pytest.param(
            {"c.jsonl": '{"title": "x", "text": ""}\n{"title": "y", "text": "Short."}\n'}, [],
            r"none of the 2 document\(s\) of '.*c\.jsonl' gave a passage: their 'text' is empty, or shorter than",
            id="no-passage",
        ),
        pytest.param(
            {"c.jsonl": ROW}, ["--model", "MISSING"], r"model folder '.*missing-model' does not exist; check the path",
            id="missing-model-folder",
        ),
        pytest.param(
            {"c.jsonl": ROW}, ["--model", "./no/such/model"], r"model folder './no/such/model' does not exist",
            id="local-looking-model",
        ),
        pytest.param(
            {"c.jsonl": ROW}, ["--model", "EMPTY"], r"model folder '.*empty-model' is empty: it holds no saved model",
            id="empty-model-folder",
        ),
        pytest.param(
            {"c.jsonl": ROW}, ["--reward-model", "TWO_LABELS"],
            r"reward model .*two-labels has 2 labels; a reward model has exactly one", id="two-label-reward-model",
        ),
        pytest.param(
            {"c.jsonl": ROW, "file": "x"}, ["--output", "OUTPUT_IN_A_FILE"],
            r"--output .*: '.*file' is not a folder; name a folder you can write to", id="unwritable-output",
        ),
        pytest.param(
            {"c.jsonl": ROW}, ["--min-reward", "nan"], r"min_reward must be a finite number, got nan", id="nan-reward"
        ),
        pytest.param(
            {"c.jsonl": ROW}, ["--num-proc", "0"], r"num_proc must be a positive integer .*, got 0", id="no-workers"
        ),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2_before_any_model_runs(
    cli, no_model_loads, tmp_path, tiny_generator, tiny_reward_model, make, args, message
):
    for name, content in make.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    (tmp_path / "empty-model").mkdir()
    names = {
        "MISSING": str(tmp_path / "missing-model"),
        "EMPTY": str(tmp_path / "empty-model"),
        "TWO_LABELS": str(tmp_path / "two-labels"),
        "OUTPUT_IN_A_FILE": str(tmp_path / "file" / "out"),
    }
    if "TWO_LABELS" in args:
        two_labels(tmp_path / "two-labels", tiny_reward_model)
    args = [names.get(arg, arg) for arg in args]
    models = ["--model", tiny_generator, "--reward-model", tiny_reward_model]
    source = tmp_path / next(iter(make)).split("/")[0]  # the file, or the folder
    status, lines = cli("run", str(source), *models, *args, "--cache-dir", str(tmp_path / "cache"))
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith("genstruct-datasets: error: ") and re.search(message, lines[0]), lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["run", "no-such-folder/"], r"source 'no-such-folder' does not exist", id="folder-with-a-slash"),
        pytest.param(
            ["run", "mycorpus"], r"'mycorpus' is not a local file or folder, and the Hub dataset of that name cannot "
            r"be had now", id="offline-hub-name",
        ),
        pytest.param(["report", "genstruct-dem"], r"'genstruct-dem' is not a local file or folder", id="report-typo"),
    ],
)  # fmt: skip
def test_a_mistyped_path_offline_is_bad_input(cli, no_model_loads, tmp_path, tiny_generator, tiny_reward_model,
                                              monkeypatch, args, message):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    models = ["--model", tiny_generator, "--reward-model", tiny_reward_model] if args[0] == "run" else []
    status, lines = cli(*args, *models)
    assert status == 2 and len(lines) == 1 and re.search(message, lines[0]), lines


ESSAY = (DATA / "plain_essay.txt").read_text()


@pytest.mark.parametrize(
    ("rows", "args", "message"),
    [
        pytest.param(
            [{"title": True, "text": ESSAY}], [], r"'.*c\.jsonl', line 1: 'title' holds a boolean \(true\), not text",
            id="bool-title",
        ),
        pytest.param(
            [{"title": "Bees", "text": ESSAY}, {"title": "Wasps", "text": ["a", "b"]}], [],
            r"'.*c\.jsonl', line 2: 'text' holds a list \(\[\"a\", \"b\"\]\), not text", id="list-text",
        ),
        pytest.param(
            [{"title": "Bees", "content": {"a": 1}}], ["--no-split", "--text-column", "content"],
            r"line 1: 'content' holds an object \(\{\"a\": 1\}\), not text", id="object-content",
        ),
        pytest.param(
            [{"title": "Bees", "text": "Short."}], [],
            r"shorter than the shortest passage, 32 tokens\. .* --min-tokens N, at most --max-tokens",
            id="all-too-short",
        ),
    ],
)  # fmt: skip
def test_text_columns_that_are_not_text_are_one_line_and_exit_2(
    cli, no_model_loads, tmp_path, tiny_generator, tiny_reward_model, rows, args, message
):
    source = tmp_path / "c.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / "out"
    models = ["--model", tiny_generator, "--reward-model", tiny_reward_model]
    status, lines = cli("run", str(source), *models, *args, "--output", str(output), "--cache-dir", f"{tmp_path}/c")
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith("genstruct-datasets: error: ") and re.search(message, lines[0]), lines[0]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["c", "c.jsonl"]  # no output, no staging folder


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--model", "REWARD", "--reward-model", "REWARD"],
            r"model .*reward\S* is DebertaV2ForSequenceClassification, a sequence classifier, not a causal LM",
            id="reward-model-as-generator",
        ),
        pytest.param(
            ["--model", "GENERATOR", "--reward-model", "GENERATOR"],
            r"reward model .* is MistralForCausalLM, a causal LM, not a sequence classifier with one label",
            id="generator-as-reward-model",
        ),
        pytest.param(
            ["--model", "models/nope", "--reward-model", "REWARD"],
            r"model models/nope is not in the local Hugging Face cache .* If it is meant as a folder: there is no "
            r"folder 'models/nope' here",
            id="relative-path-that-does-not-exist",
        ),
    ],
)  # fmt: skip
def test_models_of_the_wrong_kind_are_refused_before_any_model_loads(
    cli, no_model_loads, monkeypatch, tmp_path, tiny_generator, tiny_reward_model, args, message
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    source = tmp_path / "c.jsonl"
    source.write_text(json.dumps({"title": "Moon", "text": (DATA / "moon_wikipedia.txt").read_text()}) + "\n")
    names = {"REWARD": tiny_reward_model, "GENERATOR": tiny_generator}
    args = [names.get(arg, arg) for arg in args]
    status, lines = cli("run", str(source), *args, "--output", "out", "--cache-dir", "cache")
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith("genstruct-datasets: error: ") and re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()  # nothing written; `no_model_loads` saw no model load


def test_ctrl_c_is_one_line_that_says_how_to_resume(cli, monkeypatch, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("genstruct_datasets.builder.build_genstruct", interrupted)
    models = ["--model", str(tmp_path / "gen"), "--reward-model", str(tmp_path / "rm")]  # never loaded
    status, lines = cli("run", str(DATA / "plain_essay.txt"), *models)
    assert status == 130
    assert lines == [
        "genstruct-datasets: interrupted. Finished shards are kept: run the same command again to resume."
    ]


def test_report_on_plain_documents_exits_2_and_says_what_it_found(cli, tmp_path):
    folder = tmp_path / "documents"
    folder.mkdir()
    rows = [{"title": "Moon", "text": "The Moon orbits Earth."}, {"title": "Bees", "text": "Bees dance."}]
    (folder / "documents.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    status, lines = cli("report", str(folder))
    assert status == 2
    assert lines == [
        f"genstruct-datasets: error: {str(folder)!r} holds no pairs: its 'train' split has 2 rows with the column(s) "
        "title, text, and no instruction or response. `report` measures a dataset of pairs, as `run --output` "
        f"writes it; to make pairs of these documents, run `genstruct-datasets run {folder} --output FOLDER`."
    ]


def test_report_on_a_malformed_jsonl_names_the_file_and_the_line(cli, tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    good = json.dumps({"instruction": "Why?", "response": "Because."})
    (folder / "pairs.jsonl").write_text(f'{good}\n{good}\n{{"instruction": \n')
    status, lines = cli("report", str(folder))
    assert status == 2
    assert lines == [
        f"genstruct-datasets: error: {str(folder / 'pairs.jsonl')!r}, line 3: not valid JSON (Expecting value); "
        "fix or remove that line."
    ]


def test_sigterm_is_one_line_exit_143_and_the_handler_is_restored(cli, monkeypatch, tmp_path):
    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler or `kill` sends
        time.sleep(30)  # the handler raises here
        pytest.fail("SIGTERM was not handled")

    monkeypatch.setattr("genstruct_datasets.builder.build_genstruct", terminated)
    previous = signal.getsignal(signal.SIGTERM)
    models = ["--model", str(tmp_path / "gen"), "--reward-model", str(tmp_path / "rm")]  # never loaded
    status, lines = cli("run", str(DATA / "plain_essay.txt"), *models)
    assert status == 143
    assert lines == [
        "genstruct-datasets: interrupted by SIGTERM. Finished shards are kept: run the same command again to resume."
    ]
    assert signal.getsignal(signal.SIGTERM) is previous


@pytest.mark.slow
def test_sigterm_in_a_real_run_keeps_its_shards_and_the_same_command_resumes(
    tmp_path, taught_generator, tiny_reward_model
):
    corpus = passages_corpus(tmp_path / "passages.jsonl", 3)
    output = tmp_path / "out"
    args = [*sharded_run_args(corpus, taught_generator, tiny_reward_model), "--output", str(output)]
    environment = offline_environment(tmp_path / "cache")
    paused, calls = tmp_path / "paused", tmp_path / "calls.txt"
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen([*DRIVER, "--calls", str(calls), "--pause-at", "Passage 1", "--paused", str(paused),
                                  *args], env=environment, stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
        deadline = time.monotonic() + 300
        while not paused.exists():
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.2)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 143
    stderr = (tmp_path / "first.log").read_text()
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.splitlines()[-1] == (
        "genstruct-datasets: interrupted by SIGTERM. Finished shards are kept: run the same command again to resume."
    )
    assert not output.exists()
    assert generated(calls) == ["Passage 0"]  # Passage 1 was paused before the generator ran
    second = subprocess.run([*DRIVER, "--calls", str(calls), *args], env=environment, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert second.returncode == 0, second.stderr[-3000:]
    assert generated(calls) == ["Passage 0", "Passage 1", "Passage 2"]  # Passage 0's shard reused, not rebuilt
    assert load_dataset(str(output), split="train").num_rows == 3


@pytest.mark.slow
def test_ctrl_c_in_a_real_run_resumes_with_the_same_command(tmp_path, taught_generator, tiny_reward_model):
    corpus = passages_corpus(tmp_path / "passages.jsonl", 3)
    args = [*sharded_run_args(corpus, taught_generator, tiny_reward_model), "--output", str(tmp_path / "out")]
    environment = offline_environment(tmp_path / "cache")
    paused = tmp_path / "paused"
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen([*DRIVER, "--pause-at", "Passage 1", "--paused", str(paused), *args],
                                 env=environment, stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
        deadline = time.monotonic() + 300
        while not paused.exists():
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.2)
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=60) == 130
    stderr = (tmp_path / "first.log").read_text()
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.splitlines()[-1] == (
        "genstruct-datasets: interrupted. Finished shards are kept: run the same command again to resume."
    )
    forget_map_caches(tmp_path / "cache")  # reuse is then seen in the generator's calls, not hidden by the caches
    calls = tmp_path / "calls.txt"
    second = subprocess.run(
        [*DRIVER, "--calls", str(calls), *args], env=environment, capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming: 1 of 3 shards were finished by an earlier run and are reused." in second.stderr
    assert generated(calls) == ["Passage 1", "Passage 2"]  # Passage 0's shard is reused, not generated again
    stats = run_stats(tmp_path / "out")
    assert (stats.shards_reused, stats.generated_passages) == (1, 2)


def test_passages_in_title_and_content_are_read_as_passages(cli, tmp_path, caplog, taught_generator,
                                                            tiny_reward_model):  # fmt: skip
    source = Path(__file__).parent.parent / "examples" / "passages.jsonl"  # the quick start's own file
    first = json.loads(source.read_text().splitlines()[0])
    with caplog.at_level(logging.INFO, logger="genstruct_datasets"):
        status, _ = cli("run", str(source), "--limit", "1", "--model", taught_generator, "--reward-model",
                        tiny_reward_model, "--num-samples", "1", "--max-new-tokens", "24", "--seed", "0",
                        "--output", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"))  # fmt: skip
    assert status == 0
    said = [r.getMessage() for r in caplog.records if "'content' column and no 'text' column" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"{source} has a 'content' column")
    pairs = load_dataset(str(tmp_path / "out"), split="train")
    assert pairs["content"] == [first["content"]] and pairs["title"] == [first["title"]]  # whole, not split


def test_a_passage_read_as_is_shorter_than_min_tokens_is_counted_not_generated(
    cli, generated, tmp_path, taught_generator, tiny_reward_model
):
    corpus = passages_corpus(tmp_path / "passages.jsonl", 2)
    with corpus.open("a") as file:
        file.write(json.dumps({"title": "Stub", "content": "Too short."}) + "\n")
    args = [*sharded_run_args(corpus, taught_generator, tiny_reward_model), "--cache-dir", str(tmp_path / "cache")]
    status, errors = cli(*args, "--output", str(tmp_path / "out"))
    assert status == 0, errors
    assert sorted(generated) == ["Passage 0", "Passage 1"]  # "Too short." was never sent to the model
    passages = RunReport.load(tmp_path / "out").stages[0]
    assert (passages.name, passages.seen, passages.kept, passages.dropped) == ("passages", 3, 2, {"too_short": 1})
    assert "Stub" not in load_dataset(str(tmp_path / "out"), split="candidates")["title"]


def test_one_run_is_measured_once_and_writes_every_candidate(
    monkeypatch, capsys, tmp_path, taught_generator, tiny_reward_model
):
    from hub_fake import FolderHub

    import genstruct_datasets
    from genstruct_datasets import GenstructGenerator, RunReport, RunStats, quality, report
    from genstruct_datasets.cli import main

    corpus = passages_corpus(tmp_path / "passages.jsonl", 3)
    with corpus.open("a") as file:  # a passage that cannot be prompted (no title): an invalid_input candidate
        file.write(
            json.dumps({"title": "", "content": "A passage without a title is read, never prompted. " * 3}) + "\n"
        )
    real_call = GenstructGenerator.__call__

    def second_samples_lose_their_answer(self, batch, rank=None):
        output = real_call(self, batch, rank)
        output["completion"] = [
            text.split("[[[Assistant]]]")[0] if index == 1 and text else text
            for text, index in zip(output["completion"], output["sample_index"])
        ]
        return output

    monkeypatch.setattr(GenstructGenerator, "__call__", second_samples_lose_their_answer)
    calls = Counter()
    for name, original in [
        ("quality_report", quality.quality_report),
        ("dataset_stats", report.dataset_stats),
        ("distributions", report.distributions),
    ]:

        def spy(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        for module in [m for n, m in sys.modules.items() if n.startswith("genstruct_datasets")]:
            if getattr(module, name, None) is original:
                monkeypatch.setattr(module, name, spy)
    stats = RunStats(
        engine="transformers (static batching) on cpu",
        versions={"genstruct-datasets": genstruct_datasets.__version__},
        passages=4,
        generated_passages=4,
        generated_tokens=160,
        seconds={"passages": 0.1, "generate": 2.0, "parse": 0.1, "score": 0.4, "select": 0.1},
        wall_seconds=3.0,
        shards=4,
        shards_reused=1,
    )
    monkeypatch.setattr(RunStats, "of", classmethod(lambda cls, ds: stats))  # what the builder saved
    hub = FolderHub(tmp_path / "hub")
    hub.install(monkeypatch.setattr)
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    output = tmp_path / "pairs"
    args = [*sharded_run_args(corpus, taught_generator, tiny_reward_model), "--cache-dir", str(tmp_path / "cache")]
    assert main([*args, "--output", str(output), "--push-to-hub", "me/pairs"]) == 0
    summary = capsys.readouterr().out.splitlines()

    # Each figure once: for the summary, the folder's card, picture and report, and the Hub's.
    assert calls == {"quality_report": 1, "dataset_stats": 1, "distributions": 1}
    assert summary[0] == "passages: 4, candidates: 7, parsed: 3, kept: 3"  # one sample of the empty passage
    assert "  pairs among candidates                    42.9%" in summary
    cost = summary[summary.index("cost") + 1 : -2]
    assert cost == [
        "  engine              transformers (static batching) on cpu",
        "  executor            local",
        "  generated tokens    160 (40 per passage)",
        "  passages generated  4 of 4",
        "  speed               80.0 tokens/s, 2.00 passages/s",
        "  wall time           passages 0.1 s, generate 2.0 s, parse 0.1 s, score 0.4 s, select 0.1 s; 3.0 s in all",
        "  shards reused       1 of 4",
    ]
    assert summary[-2] == "generated with: transformers (static batching) on cpu"
    card = (output / "README.md").read_text()
    assert "| speed | 80.0 tokens/s, 2.00 passages/s |" in card and "| shards reused | 1 of 4 |" in card
    assert "| pairs among candidates | 42.9% |" in card

    # Every candidate is written, the invalid input and the failed parses with their reasons.
    for folder in (output, hub.repo("me/pairs")):
        written = load_dataset(str(folder), split="candidates", download_mode="force_redownload")
        assert written.num_rows == 7 and "invalid_input" in written["finish_reason"]
        assert written["parse_error"].count("no_assistant_marker") == 3
        assert load_dataset(str(folder), split="train", download_mode="force_redownload").num_rows == 3

    # `report` prints the run's own report; another split is measured from its rows.
    assert main(["report", str(output), "--json"]) == 0
    saved = json.loads(capsys.readouterr().out)
    assert RunReport.from_dict(saved) == RunReport.load(output) and saved["stats"]["tokens_per_second"] == 80.0
    assert calls == {"quality_report": 1, "dataset_stats": 1, "distributions": 1}  # not measured again
    assert main(["report", str(output), "--split", "candidates", "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["quality"]["validity"]["candidates"] == 7 and measured["quality"]["validity"]["pairs"] == 3
    assert measured["quality"]["validity"]["parse_error"]["no_assistant_marker"] == 3
    assert measured["stats"] is None
    assert main(["report", str(output), "--split", "candidates"]) == 0
    assert "  pairs among candidates                    42.9%" in capsys.readouterr().out


def test_a_run_whose_pairs_all_score_below_the_floor_says_so():
    from genstruct_datasets.cli import in_cli_terms
    from genstruct_datasets.report import RunReport
    from genstruct_datasets.run import nothing_kept

    report = RunReport(
        counts={"passages": 60, "candidates": 120, "parsed": 120, "kept": 0},
        outcomes={"finish_reason: stop": 120},
        recipe={"selection": {"best_of_n": True, "min_reward": 0.5}},
    )
    assert "genstruct-datasets: error: " + in_cli_terms(nothing_kept(report)) == (
        "genstruct-datasets: error: no pair was kept: all 120 pairs scored below --min-reward 0.5, so nothing was "
        "written. Lower --min-reward, or leave it out to keep every best pair."
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--temperature", "inf"], r"temperature must be finite and >= 0 .*, got inf\.$", id="temp"),
        pytest.param(["--top-p", "inf"], r"top_p must be finite and in \(0, 1\], got inf\.$", id="top-p"),
        pytest.param(["--min-reward", "inf"], r"min_reward must be a finite number, got inf\.", id="min-reward"),
        pytest.param(
            ["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--request-timeout", "inf"],
            r"request_timeout must be finite and > 0 seconds, got inf\.$", id="request-timeout",
        ),
        pytest.param(
            ["--num-samples", "99999999999"],
            r"num_samples must be at most 64 \(completions per passage.*\), got 9+\.$", id="num-samples",
        ),
        pytest.param(
            ["--num-proc", "99999999999"], rf"num_proc must be at most {os.cpu_count()} \(.*this machine has "
            rf"{os.cpu_count()} CPUs\), got 9+\.$", id="num-proc",
        ),
    ],
)  # fmt: skip
def test_numbers_out_of_bounds_are_one_line_and_exit_2(cli, no_model_loads, tmp_path, tiny_generator,
                                                       tiny_reward_model, args, message):  # fmt: skip
    (tmp_path / "c.jsonl").write_text(ROW)
    models = ["--model", tiny_generator, "--reward-model", tiny_reward_model]
    status, lines = cli("run", str(tmp_path / "c.jsonl"), *models, *args, "--cache-dir", str(tmp_path / "cache"))
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith("genstruct-datasets: error: ") and re.search(message, lines[0]), lines[0]


def test_a_refused_key_stops_the_run_at_once_with_exit_2(cli, tmp_path, taught_generator, tiny_reward_model):
    from completion_server import FlakyServer

    corpus = passages_corpus(tmp_path / "passages.jsonl", 3)
    server = FlakyServer(status=401, failing=lambda body: True)
    try:
        status, lines = cli(
            *sharded_run_args(corpus, taught_generator, tiny_reward_model), "--backend", "openai",
            "--base-url", server.base_url, "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "out"),
        )  # fmt: skip
    finally:
        server.close()
    assert status == 2 and len(lines) == 1, lines
    assert re.fullmatch(
        rf"genstruct-datasets: error: the server at {re.escape(server.base_url)} refused the API key \(401: busy\); "
        r"set OPENAI_API_KEY \(or the engine's api_key\) to a key it accepts\.",
        lines[0],
    ), lines[0]
    assert len(server.requests) == 1  # one shard, one request: not every shard in turn
    assert not (tmp_path / "out").exists()


def test_a_server_that_cannot_be_reached_stops_the_run_after_one_shard(cli, tmp_path, taught_generator,
                                                                        tiny_reward_model, caplog):  # fmt: skip
    from completion_server import free_port

    corpus = passages_corpus(tmp_path / "passages.jsonl", 3)
    address = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with caplog.at_level(logging.WARNING, logger="genstruct_datasets"):
        status, lines = cli(
            *sharded_run_args(corpus, taught_generator, tiny_reward_model), "--backend", "openai",
            "--base-url", address, "--max-retries", "0", "--cache-dir", str(tmp_path / "cache"),
            "--output", str(tmp_path / "out"),
        )  # fmt: skip
    assert status == 1 and len(lines) == 1, lines
    assert lines[0].startswith(
        f"genstruct-datasets: error: the server at {address} could not be reached for any of the 1 request(s)"
    ), lines[0]
    assert "check the address (--base-url or OPENAI_BASE_URL) and that the server is up" in lines[0]
    assert caplog.text.count("A request failed after 0 retries") == 1  # the first shard's passage, not all three
    assert not (tmp_path / "out").exists()
