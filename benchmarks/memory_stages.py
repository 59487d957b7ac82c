"""Where `genstruct-datasets run` holds its memory: the peak of anonymous memory in each stage, in one process.

`memory.py` measures the whole command under GNU time; this runs the same command in-process (`cli.main`) on
the same corpus and tiny models, with the stages wrapped, and a thread reading `RssAnon` from
`/proc/self/status` every 5 ms (Linux). Each stage's row is the highest anonymous memory seen while it was the
innermost running stage; "other" is the time between stages (imports, reading the source, the CLI itself).

    python benchmarks/memory_stages.py 10000
    python benchmarks/memory_stages.py 30000 --output-json benchmarks/results/memory-stages-30k.json

A stage whose peak grows with the number of passages is what makes the command's peak grow.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import result_json
from memory import corpus, run_command

# The modules, not the functions of the same names that the package exports.
builder, publish, publish_folder, report, report_data, cli, shards = (
    importlib.import_module(f"genstruct_datasets.{module}")
    for module in ("builder", "publish", "publish.folder", "report", "report.data", "cli", "shards")
)

STAGES: list[tuple[Any, str, str]] = [
    (shards.ShardJob, "build", "generate, parse and score a shard"),
    (builder.GenstructBuilder, "build_shards", "shard loop (outside the shards' stages)"),
    (builder.GenstructBuilder, "_candidates", "read the shards back (Dataset.from_parquet)"),
    (builder, "select_best", "select_best"),
    (builder.GenstructBuilder, "_prepare_split", "write the splits"),
    (report_data, "quality_report", "quality_report"),
    (publish, "save_local", "save_local: parquet shards"),
    (publish_folder, "plot_quality", "save_local: plot_quality"),
    (publish_folder, "build_card", "save_local: build_card (dataset_stats)"),
    (report, "format_summary", "summary"),
]


def anonymous_mib() -> float:
    """This process's resident anonymous memory, in MiB."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"^RssAnon:\s+(\d+) kB", status, re.MULTILINE).group(1)) / 1024


class StageMeter:
    """The peak of anonymous memory and the seconds of each stage, the innermost running one taking the time."""

    def __init__(self, every: float = 0.005):
        self.stack = ["other"]
        self.rows: dict[str, dict[str, Any]] = {}
        self.peak, self.started = anonymous_mib(), time.perf_counter()
        self._lock, self._done = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(every,), daemon=True)
        self._thread.start()

    def _poll(self, every: float) -> None:
        while not self._done.wait(every):
            now = anonymous_mib()
            with self._lock:
                self.peak = max(self.peak, now)

    def _close_interval(self) -> None:
        """End the interval of the stage on top of the stack: fold its peak and seconds into the stage's row."""
        now = anonymous_mib()
        with self._lock:
            peak, self.peak = max(self.peak, now), now
        row = self.rows.setdefault(self.stack[-1], {"calls": 0, "seconds": 0.0, "peak_anonymous_mib": 0.0})
        row["seconds"] += time.perf_counter() - self.started
        row["peak_anonymous_mib"] = max(row["peak_anonymous_mib"], peak)
        row["anonymous_after_mib"] = now
        self.started = time.perf_counter()

    def wrap(self, owner: Any, name: str, label: str) -> None:
        """Count `owner.name` as the stage `label` while it runs."""
        function: Callable = getattr(owner, name)

        @functools.wraps(function)
        def measured(*args, **kwargs):
            self._close_interval()
            self.stack.append(label)
            try:
                return function(*args, **kwargs)
            finally:
                self._close_interval()
                self.stack.pop()
                self.rows[label]["calls"] += 1

        setattr(owner, name, measured)

    def stop(self) -> dict[str, dict[str, Any]]:
        self._close_interval()
        self._done.set()
        self._thread.join()
        return self.rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("passages", type=int, help="passages in the corpus")
    parser.add_argument("--output-json", help="also write the rows as JSON here")
    args = parser.parse_args()
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})

    with tempfile.TemporaryDirectory(prefix="genstruct-memory-stages-") as folder:
        folder = Path(folder)
        # The models are built in another process, so that building them leaves nothing in this one's memory.
        generator, reward_model = str(folder / "taught"), str(folder / "tiny-deberta")
        build = (
            "from genstruct_datasets import testing; "
            f"testing.build_taught_generator({generator!r}); testing.build_tiny_reward_model({reward_model!r})"
        )
        subprocess.run([sys.executable, "-c", build], check=True, capture_output=True)
        corpus_path = corpus(folder / "passages.jsonl", args.passages)
        command = run_command(corpus_path, folder / "out", generator, reward_model)[1:]
        meter = StageMeter()
        for owner, name, label in STAGES:
            meter.wrap(owner, name, label)
        code = cli.main([*command, "--cache-dir", str(folder / "cache")])
        rows = meter.stop()
    if code:
        raise SystemExit(f"genstruct-datasets run failed ({code})")

    print(f"\n{args.passages:,} passages\n")
    print("| stage | calls | seconds | peak anonymous memory | anonymous memory after |\n|---|---:|---:|---:|---:|")
    order = ["other", *(label for _, _, label in STAGES)]
    for label, row in sorted(rows.items(), key=lambda item: order.index(item[0])):
        calls = row["calls"] or ""
        print(
            f"| {label} | {calls} | {row['seconds']:.1f} | {row['peak_anonymous_mib']:.0f} MiB "
            f"| {row['anonymous_after_mib']:.0f} MiB |"
        )
    if args.output_json:
        result = {
            "machine": result_json.machine(),
            "passages": args.passages,
            "command": " ".join(["genstruct-datasets", *command]),
            "stages": rows,
        }
        result_json.write(args.output_json, result)


if __name__ == "__main__":
    main()
