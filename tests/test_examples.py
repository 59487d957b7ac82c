import subprocess
import sys
from pathlib import Path

from datasets import load_dataset

EXAMPLES = Path(__file__).parent.parent / "examples"


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
