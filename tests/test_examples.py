import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_dataset

EXAMPLES = Path(__file__).parent.parent / "examples"

pytestmark = pytest.mark.slow  # each runs a whole example script


def test_generate_pairs_example_runs_offline(tmp_path):
    output = tmp_path / "pairs.parquet"
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "generate_pairs.py"),
            "--tiny",
            "--num-samples",
            "2",
            "--max-new-tokens",
            "32",
            "--seed",
            "0",
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "23 candidates from 12 passages" in result.stdout
    assert "finish_reason: stop=22, invalid_input=1" in result.stdout
    assert "12 passages, 11 kept, 1 without a valid pair left out" in result.stderr
    pairs = load_dataset("parquet", data_files=str(output), split="train")
    assert pairs.num_rows == 11 and "Empty passage" not in pairs["title"]


def test_wikipedia_to_hub_example_publishes_to_a_repo(monkeypatch, tmp_path, taught_generator, tiny_reward_model):
    import json
    import runpy

    from hub_fake import FolderHub

    hub = FolderHub(tmp_path / "hub")
    hub.install(monkeypatch.setattr)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    corpus = tmp_path / "articles.jsonl"
    text = (Path(__file__).parent / "data" / "moon_wikipedia.txt").read_text()
    corpus.write_text(json.dumps({"title": "Moon", "text": text}) + "\n")
    monkeypatch.setattr(
        sys,
        "argv",
        ["wikipedia_to_hub.py", "--source", str(corpus), "--limit", "3", "--repo-id", "me/wiki-genstruct",
         "--model", taught_generator, "--reward-model", tiny_reward_model,
         "--num-samples", "2", "--max-new-tokens", "24", "--seed", "0"],
    )  # fmt: skip
    runpy.run_path(str(EXAMPLES / "wikipedia_to_hub.py"), run_name="__main__")
    files = hub.files("me/wiki-genstruct")
    uploads = [what for name, what in hub.calls if name == "upload_file"]
    assert uploads and all(what.startswith(".genstruct-work/") for what in uploads)  # the shard, as it finished
    assert "README.md" in files and not [name for name in files if name.startswith(".genstruct-work/")]
    pairs = load_dataset(str(hub.repo("me/wiki-genstruct")), split="train", download_mode="force_redownload")
    assert pairs.num_rows == 3 and set(pairs["title"]) == {"Moon"}
