"""Decontamination's cost: the index of a benchmark-sized set, then one pass over a run's pairs.

Synthetic, seeded text: words drawn from a Zipf-like vocabulary (frequent short words, a long tail), a benchmark
of `--rows` rows (a question of ~30 words and an answer of ~10, as in MMLU or GSM8K) written to a JSONL file, and
`--pairs` pairs (an instruction of ~15 words and a response of ~45). One pair in 100 has 13 consecutive words of a
benchmark question planted in its response, in upper case with punctuation, so the pass has something to find.

    python benchmarks/decontamination.py                       # 15,000 benchmark rows against 100,000 pairs
    python benchmarks/decontamination.py --rows 1000 --pairs 10000 --output-json /tmp/decon-small.json

It times `Decontaminate.check()` (reading the file and building the index) and `Decontaminate.apply()` (the pass),
each the best of `--repeats`, measures the index's memory with tracemalloc on a separate build, prints a table and
writes JSON (``--output-json``).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import tracemalloc
from pathlib import Path

import result_json
from datasets import Dataset, disable_progress_bars

from genstruct_datasets.filters.decontaminate import Decontaminate, build_index, parse_benchmark, read_benchmark

RESULTS = Path(__file__).parent / "results"


def vocabulary(size: int, rng: random.Random) -> tuple[list[str], list[float]]:
    """`size` distinct made-up words, and cumulative Zipf weights (the first words are the most frequent)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choices(letters, k=rng.randint(2, 10))))
    cumulative, total = [], 0.0
    for rank in range(1, size + 1):
        total += 1 / rank
        cumulative.append(total)
    return sorted(words, key=len), cumulative


def text(rng: random.Random, vocab: tuple[list[str], list[float]], mean: int) -> list[str]:
    words, cumulative = vocab
    return rng.choices(words, cum_weights=cumulative, k=max(1, int(rng.gauss(mean, mean / 5))))


def make_data(rows: int, pairs: int, seed: int) -> tuple[list[dict], Dataset, int]:
    rng = random.Random(seed)
    vocab = vocabulary(20_000, rng)
    benchmark = [
        {"question": " ".join(text(rng, vocab, 30)) + "?", "answer": " ".join(text(rng, vocab, 10)) + "."}
        for _ in range(rows)
    ]
    instructions, responses, planted = [], [], 0
    for i in range(pairs):
        instructions.append(" ".join(text(rng, vocab, 15)).capitalize() + "?")
        response = text(rng, vocab, 45)
        if i % 100 == 0:
            question = benchmark[rng.randrange(rows)]["question"].rstrip("?").split()
            if len(question) >= 13:
                start = rng.randrange(len(question) - 12)
                response[10:10] = [word.upper() + "," for word in question[start : start + 13]]
                planted += 1
        responses.append(" ".join(response) + ".")
    data = Dataset.from_dict(
        {
            "passage_id": [f"p{i}" for i in range(pairs)],
            "sample_index": [0] * pairs,
            "instruction": instructions,
            "response": responses,
        }
    )
    return benchmark, data, planted


def best_of(repeats: int, work):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=15_000, help="benchmark rows")
    parser.add_argument("--pairs", type=int, default=100_000, help="pairs to decontaminate")
    parser.add_argument("--ngram", type=int, default=13)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-json", default=str(RESULTS / "decontamination-cpu.json"))
    args = parser.parse_args()
    disable_progress_bars()

    start = time.perf_counter()
    benchmark, pairs, planted = make_data(args.rows, args.pairs, args.seed)
    print(f"made {args.rows:,} benchmark rows and {args.pairs:,} pairs in {time.perf_counter() - start:.1f} s")
    bench_words = sum(len(row["question"].split()) + len(row["answer"].split()) for row in benchmark) / args.rows
    pair_words = sum(len(i.split()) + len(r.split()) for i, r in zip(pairs["instruction"], pairs["response"]))

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in benchmark))

        def index():
            decontaminate = Decontaminate([str(path)], ngram=args.ngram)
            decontaminate.check()
            return decontaminate

        index_s, decontaminate = best_of(args.repeats, index)
        pass_s, found = best_of(args.repeats, lambda: decontaminate.apply(pairs))

        spec = parse_benchmark(str(path))
        rows, columns = read_benchmark(spec)
        tracemalloc.start()
        kept_alive = build_index(spec, rows, columns, args.ngram)
        index_bytes = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        del kept_alive

    figures = found.figures["benchmarks"][str(path)]
    removed = figures["removed"]
    table = [
        ("index (read + hash)", f"{args.rows:,} rows", index_s, args.rows / index_s),
        ("pass (hash + look up)", f"{args.pairs:,} pairs", pass_s, args.pairs / pass_s),
    ]
    print(f"\n{'step':<24}{'items':>16}{'seconds':>10}{'items/s':>12}")
    for name, items, seconds, rate in table:
        print(f"{name:<24}{items:>16}{seconds:>10.2f}{rate:>12,.0f}")
    print(
        f"\nindex: {figures['ngrams']:,} distinct {args.ngram}-grams, {index_bytes / 2**20:.1f} MiB "
        f"({index_bytes / max(figures['ngrams'], 1):.0f} bytes each); benchmark ~{bench_words:.0f} words a row, "
        f"pairs ~{pair_words / args.pairs:.0f} words each"
    )
    print(f"removed {removed:,} pairs; planted {planted:,}")
    result_json.write(
        args.output_json,
        {
            "machine": result_json.machine(),
            "settings": {
                "benchmark_rows": args.rows,
                "pairs": args.pairs,
                "ngram": args.ngram,
                "repeats": args.repeats,
                "seed": args.seed,
                "benchmark_words_per_row": round(bench_words, 1),
                "pair_words": round(pair_words / args.pairs, 1),
            },
            "index": {
                "seconds": round(index_s, 3),
                "rows_per_s": round(args.rows / index_s),
                "ngrams": figures["ngrams"],
                "memory_mib": round(index_bytes / 2**20, 2),
            },
            "pass": {"seconds": round(pass_s, 3), "pairs_per_s": round(args.pairs / pass_s)},
            "removed": removed,
            "planted": planted,
        },
    )


if __name__ == "__main__":
    main()
