"""`genstruct-datasets demo`, a default model that cannot be had offline, and `--version`."""

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
from datasets import load_dataset

from genstruct_datasets import __version__, testing
from genstruct_datasets.demo import DEMO_PASSAGES

EXAMPLES = Path(__file__).parent.parent / "examples"
CLI = [sys.executable, "-m", "genstruct_datasets.cli"]


def command(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    environment.pop("HF_TOKEN", None)
    return subprocess.run([*CLI, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)


@pytest.fixture
def cli(capsys):
    """``cli(*args)``: run the command in this process; returns its exit status, stdout and its lines on stderr."""
    from genstruct_datasets.cli import main

    package = logging.getLogger("genstruct_datasets")
    level = package.level

    def call(*args: str) -> tuple[int, str, list[str]]:
        status = main(list(args))
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return status, out, [line for line in err.splitlines() if line.startswith("genstruct-datasets: ")]

    yield call
    package.setLevel(level)


@pytest.fixture
def no_model_builds(monkeypatch):
    for name in ("build_taught_generator", "build_tiny_reward_model"):
        monkeypatch.setattr(testing, name, lambda *args, **kwargs: pytest.fail("a demo model was built"))


def test_the_packaged_passages_are_the_examples():
    assert DEMO_PASSAGES.read_bytes() == (EXAMPLES / "passages.jsonl").read_bytes()


@pytest.mark.slow
def test_the_demo_runs_the_recipe_offline_and_reuses_its_models(tmp_path, monkeypatch, cli, no_model_builds):
    # No HF_HUB_OFFLINE, and a Hub that refuses every connection: the demo needs no network at all.
    hf_home = tmp_path / "hf"
    env = {"HF_HOME": str(hf_home), "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache"), "HF_HUB_OFFLINE": "0"}
    first = command("demo", cwd=tmp_path, env=env | {"HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"})
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Building the demo's tiny models, once" in first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("passages: 11, candidates: 22, ")  # the empty passage is too short
    assert "written to: genstruct-demo" in lines
    assert "  genstruct-datasets run passages.jsonl --output pairs/ --num-samples 4 --seed 0" in lines
    assert "NousResearch/Genstruct-7B" in first.stdout and "--backend vllm" in first.stdout
    output = tmp_path / "genstruct-demo"
    assert (output / "README.md").is_file() and list(output.glob("*.png"))
    pairs = load_dataset(str(output), split="train")
    assert pairs.num_rows == 11 and pairs["instruction"][0] == testing.TAUGHT_INSTRUCTION

    # Again, in this process: the models are reused (building one fails the test), the earlier output replaced.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HOME", str(hf_home))
    status, out, _ = cli("demo", "--output", str(output))
    assert status == 0 and f"written to: {output}" in out
    assert load_dataset(str(output), split="train", download_mode="force_redownload").num_rows == 11


def test_the_demo_refuses_a_foreign_folder_before_building_its_models(tmp_path, monkeypatch, cli, no_model_builds):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HOME", str(tmp_path / "hf"))
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    status, out, lines = cli("demo", "--output", str(notes))
    assert status == 2 and out == "" and (notes / "todo.txt").read_text() == "mine"
    assert lines == [
        f"genstruct-datasets: error: {str(notes)!r} is not empty and was not written by genstruct-datasets; name a "
        "new or empty folder, or pass --overwrite to write the dataset into it (its README.md is "
        "replaced)."
    ]


def test_the_demo_without_mistral_common_says_what_to_install(tmp_path, monkeypatch, cli, no_model_builds):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setitem(sys.modules, "mistral_common", None)  # as if it were not installed
    status, out, lines = cli("demo", "--output", str(tmp_path / "demo"))
    assert status == 2 and out == "" and not (tmp_path / "demo").exists()
    assert lines == [
        "genstruct-datasets: error: the demo builds its tiny models with the Mistral tokenizer of mistral-common, and "
        "mistral-common is not installed: pip install 'genstruct-datasets[demo]'"
    ]


def _closed_port() -> int:
    """A local port that nothing listens on: a connection to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("env", "args", "model", "option", "why"),
    [
        pytest.param(
            {"HF_HUB_OFFLINE": "1"}, [], "NousResearch/Genstruct-7B", "--model", "the Hub is off (HF_HUB_OFFLINE=1)",
            id="offline",
        ),
        pytest.param(
            {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "CLOSED"}, [], "NousResearch/Genstruct-7B", "--model",
            "the Hub cannot be reached (ConnectError)", id="no-network",
        ),
        pytest.param(
            {"HF_HUB_OFFLINE": "1"}, ["--model", "GENERATOR"], "OpenAssistant/reward-model-deberta-v3-large-v2",
            "--reward-model", "the Hub is off (HF_HUB_OFFLINE=1)", id="reward-model",
        ),
    ],
)  # fmt: skip
def test_a_hub_model_that_cannot_be_had_is_one_line_before_the_source_is_read(tmp_path, env, args, model, option, why):
    env = {**env, "HF_HOME": str(tmp_path / "hf")}  # an empty Hugging Face cache
    if env.get("HF_ENDPOINT") == "CLOSED":
        env["HF_ENDPOINT"] = f"http://127.0.0.1:{_closed_port()}"
    args = [str(tmp_path) if arg == "GENERATOR" else arg for arg in args]  # a local folder: checked later
    # The source is there but not valid JSON: had it been read first, the message would say so.
    (tmp_path / "corpus.jsonl").write_text("not json\n")
    result = command("run", "corpus.jsonl", *args, "--output", "out", cwd=tmp_path, env=env)
    assert result.returncode == 2 and result.stdout == "" and not (tmp_path / "out").exists()
    assert result.stderr == (
        f"genstruct-datasets: error: model {model} is not in the local Hugging Face cache and {why}: pass {option} "
        f"PATH, a local model folder; download it once where there is a network (hf download {model}); or try "
        "`genstruct-datasets demo`, which runs offline with tiny stand-in models. If it is meant as a folder: "
        f"there is no folder {model!r} here ({tmp_path}); check the path.\n"
    )


def test_a_servers_model_is_not_looked_for_in_the_cache(cli, tmp_path):
    # The openai engine's model is the server's name for it: only the reward model, a local folder here, is checked.
    status, _, lines = cli(
        "run", str(tmp_path / "missing.jsonl"), "--backend", "openai", "--base-url", "http://127.0.0.1:1/v1",
        "--reward-model", str(tmp_path),
    )  # fmt: skip
    assert status == 2 and len(lines) == 1 and "missing.jsonl' does not exist" in lines[0], lines


def test_version(capsys):
    from genstruct_datasets.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"genstruct-datasets {__version__}\n"
