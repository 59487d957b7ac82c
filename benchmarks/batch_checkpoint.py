"""The batch checkpoint's cost: generation with a shard's passages kept as parts as they finish, against without.

In one process, on the same passages and the same tiny random Mistral of `genstruct_datasets.testing`, it times
`run_pipeline`'s generation of one shard (no scoring, the `datasets` cache off) with the checkpoint on (a part
written for every `WRITE_GROUP` passages, as `ShardJob.build` does) and off, the repetitions interleaved (on, off,
on, off...) so that a machine shared with other jobs weighs on both alike. The model is tiny, so that the writes
are as visible as they can be: with Genstruct-7B a group of passages takes seconds to generate, and a part's write
milliseconds.

    python benchmarks/batch_checkpoint.py                  # CPU: 256 passages, batch 16, 16 new tokens, 5 pairs

It prints a table and writes JSON (``--output``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import result_json
from datasets import Dataset
from workload import passages

from genstruct_datasets import GenstructGenerator, run_pipeline, testing
from genstruct_datasets.generate import WRITE_GROUP
from genstruct_datasets.shards import ShardParts


def shard(count: int) -> Dataset:
    """`count` passages of mixed lengths, each its own (a number in the title), as a shard's block holds them."""
    data = passages(count)
    data["title"] = [f"{title} ({i})" for i, title in enumerate(data["title"])]
    return Dataset.from_dict(data)


class TimedWrites:
    """`parts`, adding up the seconds its writes take: the checkpoint's own cost, free of the machine's noise."""

    def __init__(self, parts: ShardParts) -> None:
        self.parts, self.seconds = parts, 0.0

    def __call__(self, rows: dict[str, list]) -> None:
        start = time.perf_counter()
        self.parts(rows)
        self.seconds += time.perf_counter() - start


def generate(block: Dataset, generator: GenstructGenerator, parts: TimedWrites | None) -> tuple[float, int]:
    """Generate the block's completions, keeping them in `parts` where given: (seconds, tokens)."""
    start = time.perf_counter()
    result = run_pipeline(block, generator, None, load_from_cache_file=False, keep=parts)
    seconds = time.perf_counter() - start
    return seconds, sum(n or 0 for n in result.rows["completion_tokens"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per generate call")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=5, help="repetitions of (on, off)")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "batch-checkpoint-cpu.json"))
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="genstruct-bench-"))
    model = testing.build_tiny_generator(folder / "model")
    block = shard(args.passages)
    generator = GenstructGenerator(
        model, max_new_tokens=args.max_new_tokens, backend="transformers", batch_size=args.batch_size, device="cpu"
    )
    generate(block.select(range(args.batch_size)), generator, None)  # the model loads outside the timings

    rows = []
    for pair in range(args.pairs):
        parts = ShardParts.of(folder / f"candidates-{pair:05d}-of-{args.pairs:05d}.parquet", block)
        writes = TimedWrites(parts)
        on, tokens_on = generate(block, generator, writes)
        written = sorted(parts.folder.glob("part-*.parquet"))
        size = sum(path.stat().st_size for path in written)
        parts.clear()
        off, tokens_off = generate(block, generator, None)
        assert tokens_on == tokens_off, "the two runs generated different completions"
        rows.append(
            {"pair": pair + 1, "on_seconds": on, "off_seconds": off, "ratio": on / off, "parts": len(written),
             "part_bytes": size, "write_seconds": writes.seconds, "tokens": tokens_on}
        )  # fmt: skip
        print(f"pair {pair + 1}: on {on:.2f} s, off {off:.2f} s, {len(written)} parts", flush=True)

    median = statistics.median(row["ratio"] for row in rows)
    total = sum(row["on_seconds"] for row in rows) / sum(row["off_seconds"] for row in rows)
    write_share = sum(row["write_seconds"] for row in rows) / sum(row["on_seconds"] for row in rows)
    print()
    print("| pair | on (s) | off (s) | on / off | parts | part bytes | writes (ms) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['pair']} | {row['on_seconds']:.2f} | {row['off_seconds']:.2f} | {row['ratio']:.3f} | "
            f"{row['parts']} | {row['part_bytes']:,} | {row['write_seconds'] * 1000:.0f} |"
        )
    print(f"\nmedian on / off: {median:.3f} ({(median - 1) * 100:+.1f}%), over {len(rows)} interleaved pairs")
    print(f"all on / all off: {total:.3f} ({(total - 1) * 100:+.1f}%)")
    print(f"the writes themselves: {write_share * 100:.2f}% of the time with the checkpoint on")
    result_json.write(
        args.output,
        {
            "machine": result_json.machine(),
            "settings": {**vars(args), "write_group": WRITE_GROUP, "model": "testing.build_tiny_generator"},
            "rows": rows,
            "median_ratio": median,
            "total_ratio": total,
            "write_share": write_share,
        },
    )


if __name__ == "__main__":
    main()
