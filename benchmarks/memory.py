"""Peak memory of `genstruct-datasets run`: does it grow with the size of the corpus?

It builds the tiny taught generator and the tiny DeBERTa reward model of `genstruct_datasets.testing`, writes a
JSON-lines corpus of N passages (40 to 60 words each, drawn from the words of the example paragraphs, so that
no two are alike; the taught generator still writes its one pair for each), and runs the command for each size
(`--repeats` times) under GNU time, offline, with a fresh `datasets` cache per run:

    /usr/bin/time -v genstruct-datasets run passages-N.jsonl --no-split --text-column content \\
        --model TAUGHT --reward-model TINY_DEBERTA --num-samples 1 --max-new-tokens 24 --seed 0 --batch-size 32 \\
        --output out-N

    python benchmarks/memory.py                        # 1,000 and 10,000 passages
    python benchmarks/memory.py --repeats 3            # the median of three runs per size
    python benchmarks/memory.py --sizes 1000 10000 100000

It prints a table of wall time, peak resident set size (GNU time's figure, which counts the pages of the
memory-mapped Arrow files that were read) and peak anonymous memory (the process's own, polled every 0.1 s) per
size, and writes JSON (``--output-json``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import result_json

from genstruct_datasets import testing

EXAMPLES = Path(__file__).parent.parent / "examples" / "passages.jsonl"
GNU_TIME = "/usr/bin/time"


def corpus(path: Path, count: int, seed: int = 0) -> Path:
    """Write `count` passages of 40 to 60 words, each a seeded draw from the example paragraphs' words."""
    rows = [json.loads(line) for line in EXAMPLES.read_text().splitlines()]
    vocabulary = sorted({word for row in rows for word in row["content"].split()})
    titles = [row["title"] for row in rows]
    rng = random.Random(seed)
    with path.open("w") as file:
        for i in range(count):
            content = " ".join(rng.choices(vocabulary, k=rng.randint(40, 60)))
            file.write(json.dumps({"title": f"{rng.choice(titles)} {i}", "content": content}) + "\n")
    return path


def measure(command: list[str], cache: Path) -> dict[str, Any]:
    """Run `command` under GNU time, offline, with the `datasets` cache in `cache`.

    Returns the peak resident set size as GNU time reports it (MiB), which counts the pages of memory-mapped
    Arrow files that were read, the peak of anonymous memory alone (MiB, polled every 0.1 s), and the seconds.
    """
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(cache)}
    environment.pop("HF_TOKEN", None)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([GNU_TIME, "-v", *command], stdout=out, stderr=err, text=True, env=environment)
        anonymous_kib = 0
        while process.poll() is None:
            anonymous_kib = max(anonymous_kib, sum(map(rss_anon_kib, descendants(process.pid))))
            time.sleep(0.1)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{stderr[-3000:]}")
    peak_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", stderr).group(1)
    seconds = sum(float(part) * 60**power for power, part in enumerate(reversed(wall.split(":"))))
    return {
        "peak_rss_mib": peak_kib / 1024,
        "peak_anonymous_mib": anonymous_kib / 1024,
        "seconds": seconds,
        "summary": stdout.strip(),
    }


def descendants(pid: int) -> list[int]:
    """The processes below `pid`, read from /proc (Linux)."""
    found, parents = [], [pid]
    while parents:
        children = []
        for path in Path(f"/proc/{parents.pop()}/task").glob("*/children"):
            try:
                children += map(int, path.read_text().split())
            except OSError:  # the process ended meanwhile
                continue
        found += children
        parents += children
    return found


def rss_anon_kib(pid: int) -> int:
    """The resident anonymous memory of a process, in KiB (0 once it has ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^RssAnon:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) if match else 0


def run_command(corpus_path: Path, output: Path, generator: str, reward_model: str) -> list[str]:
    """The measured command line."""
    return [
        shutil.which("genstruct-datasets") or "genstruct-datasets", "run", str(corpus_path),
        "--no-split", "--text-column", "content", "--model", generator, "--reward-model", reward_model,
        "--num-samples", "1", "--max-new-tokens", "24", "--seed", "0", "--batch-size", "32", "--output", str(output),
    ]  # fmt: skip


def wall_time(seconds: float) -> str:
    """Seconds as GNU time writes them: m:ss.s."""
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def median_row(size: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the runs of one size, with the runs themselves."""
    figures = ("seconds", "peak_rss_mib", "peak_anonymous_mib")
    return {"passages": size, **{name: statistics.median(run[name] for run in runs) for name in figures}, "runs": runs}


def mebibytes(row: dict[str, Any], name: str) -> str:
    """A figure in MiB, with the range over the runs when there are several."""
    values = [run[name] for run in row["runs"]]
    spread = f" ({min(values):.0f} to {max(values):.0f})" if len(values) > 1 else ""
    return f"{row[name]:.0f} MiB{spread}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="passages per run")
    parser.add_argument("--repeats", type=int, default=1, help="runs per size; the table shows their median")
    parser.add_argument("--output-json", default=str(Path(__file__).parent / "results" / "memory-cpu.json"))
    args = parser.parse_args()
    if not Path(GNU_TIME).exists():
        raise SystemExit(f"{GNU_TIME} not found: install GNU time (apt-get install time).")

    rows = []
    with tempfile.TemporaryDirectory(prefix="genstruct-memory-") as folder:
        folder = Path(folder)
        generator = testing.build_taught_generator(folder / "taught")
        reward_model = testing.build_tiny_reward_model(folder / "tiny-deberta")
        for size in args.sizes:
            corpus_path = corpus(folder / f"passages-{size}.jsonl", size)
            runs = []
            for repeat in range(args.repeats):
                command = run_command(corpus_path, folder / f"out-{size}-{repeat}", generator, reward_model)
                runs.append(measure(command, folder / f"cache-{size}-{repeat}"))
                print(f"{size} passages: {runs[-1]['peak_rss_mib']:.0f} MiB, {wall_time(runs[-1]['seconds'])}")
            rows.append(median_row(size, runs))

    print("\n| passages | wall time | peak RSS (GNU time) | peak anonymous memory |\n|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['passages']:,} | {wall_time(row['seconds'])} | {mebibytes(row, 'peak_rss_mib')} "
            f"| {mebibytes(row, 'peak_anonymous_mib')} |"
        )
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        for name in ("peak_rss_mib", "peak_anonymous_mib"):
            growth = (last[name] - first[name]) * 1024 / (last["passages"] - first["passages"])
            print(f"{name}: {growth:+.2f} KiB per passage from {first['passages']:,} to {last['passages']:,}")
    result = {
        "machine": result_json.machine(),
        "settings": {
            "command": "genstruct-datasets run passages-N.jsonl --no-split --text-column content --model TAUGHT "
            "--reward-model TINY_DEBERTA --num-samples 1 --max-new-tokens 24 --seed 0 --batch-size 32 --output out-N",
            "generator": "genstruct_datasets.testing.build_taught_generator",
            "reward_model": "genstruct_datasets.testing.build_tiny_reward_model",
            "passages": "40 to 60 words each, seeded draws from the example paragraphs' words",
            "repeats": args.repeats,
        },
        "rows": rows,
    }
    result_json.write(args.output_json, result)


if __name__ == "__main__":
    main()
