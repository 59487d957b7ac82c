"""What `SemanticDedup` costs: pairs per second on this machine, alone and against an existing set.

The real embedding model (``minishlab/potion-base-8M``: a 29,528-token vocabulary, 256 dimensions) cannot be
downloaded on a machine without the Hub, so by default this builds a stand-in of the same shape: a model2vec
`StaticModel` with random vectors, 256 dimensions, over a word-level vocabulary of `--vocabulary` words (its
tokenizer splits on whitespace, which is cheaper than potion's subword tokenizer). Pass `--embedding-model` to
time a real one.

The pairs are synthetic instructions of 8 to 16 words; a share of them (`--repeats-share`) are near repeats of
another (one word changed), and the existing set holds a share of the pairs' instructions, one word changed.

    python benchmarks/filters_semantic.py
    python benchmarks/filters_semantic.py --pairs 20000 --against 5000 --output-json \
        benchmarks/results/filters-semantic-cpu.json

Each timing is the best of `--repeats` runs, with the model already loaded (its load is timed apart, once).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import result_json
from datasets import Dataset, disable_progress_bars

from genstruct_datasets.filters.semantic_dedup import SemanticDedup
from genstruct_datasets.models import clear_model_cache


def stand_in_model(folder: Path, vocabulary: int, dimensions: int, seed: int) -> np.ndarray:
    """Save a model2vec model with random vectors over `vocabulary` made-up words in `folder`; return the words."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    words = [f"w{i}" for i in range(vocabulary)]
    tokens = ["[UNK]", "[PAD]", *words]
    tokenizer = Tokenizer(WordLevel({token: i for i, token in enumerate(tokens)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    vectors = np.random.default_rng(seed).normal(size=(len(tokens), dimensions)).astype(np.float32)
    StaticModel(vectors=vectors, tokenizer=tokenizer).save_pretrained(folder)
    return np.array(words)


def instructions(words: np.ndarray, count: int, repeats_share: float, rng: np.random.Generator) -> list[str]:
    """`count` instructions of 8 to 16 words, a `repeats_share` of them an earlier one with one word changed."""
    made: list[str] = []
    for _ in range(count):
        if made and rng.random() < repeats_share:
            made.append(one_word_changed(made[rng.integers(len(made))], words, rng))
        else:
            made.append(" ".join(rng.choice(words, size=rng.integers(8, 17))))
    return made


def one_word_changed(text: str, words: np.ndarray, rng: np.random.Generator) -> str:
    parts = text.split()
    parts[rng.integers(len(parts))] = str(rng.choice(words))
    return " ".join(parts)


def best_time(dedup: SemanticDedup, pairs: Dataset, repeats: int) -> tuple[float, Any]:
    best, found = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        found = dedup.apply(pairs)
        best = min(best, time.perf_counter() - start)
    return best, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20_000, help="synthetic pairs to deduplicate")
    parser.add_argument("--against", type=int, default=5_000, help="rows of the existing set")
    parser.add_argument("--repeats-share", type=float, default=0.1, help="share of near repeats, in both sets")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--vocabulary", type=int, default=29_528, help="words of the stand-in model")
    parser.add_argument("--dimensions", type=int, default=256, help="dimensions of the stand-in model")
    parser.add_argument("--embedding-model", help="a real model2vec model (Hub id or folder) instead of the stand-in")
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing; the best is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-json", help="also write the rows as JSON here")
    args = parser.parse_args()
    disable_progress_bars()
    rng = np.random.default_rng(args.seed)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "stand-in"
        words = stand_in_model(folder, args.vocabulary, args.dimensions, args.seed)
        model = args.embedding_model or str(folder)
        texts = instructions(words, args.pairs, args.repeats_share, rng)
        pairs = Dataset.from_dict(
            {
                "passage_id": [f"p{i}" for i in range(args.pairs)],
                "sample_index": [0] * args.pairs,
                "instruction": texts,
                "reward": rng.random(args.pairs).tolist(),
            }
        )
        existing = Path(tmp) / "existing.jsonl"
        fresh = instructions(words, args.against, 0.0, rng)
        taken = rng.choice(args.pairs, size=int(args.against * args.repeats_share), replace=False)
        for slot, pair in enumerate(taken):
            fresh[slot] = one_word_changed(texts[pair], words, rng)
        existing.write_text("".join(json.dumps({"instruction": text}) + "\n" for text in fresh))

        clear_model_cache()
        alone = SemanticDedup(threshold=args.threshold, embedding_model=model)
        start = time.perf_counter()
        alone.apply(pairs.select(range(2)))  # loads the model
        load = time.perf_counter() - start
        rows = []
        for label, dedup in [
            ("self-dedup", alone),
            (
                f"self-dedup + against {args.against:,} rows",
                SemanticDedup(threshold=args.threshold, embedding_model=model, against=[str(existing)]),
            ),
        ]:
            seconds, found = best_time(dedup, pairs, args.repeats)
            rows.append(
                {
                    "run": label,
                    "pairs": args.pairs,
                    "against_rows": args.against if dedup.against else 0,
                    "seconds": round(seconds, 3),
                    "pairs_per_s": round(args.pairs / seconds),
                    "dropped": found.count.dropped,
                }
            )

    import model2vec
    import semhash.version

    print(f"model: {args.embedding_model or 'stand-in (random vectors)'}; load (first apply of 2 pairs) {load:.2f} s")
    print("| run | pairs | against rows | s | pairs/s | dropped |")
    print("|---|---:|---:|---:|---:|---|")
    for row in rows:
        dropped = ", ".join(f"{reason} {n}" for reason, n in sorted(row["dropped"].items()))
        print(
            f"| {row['run']} | {row['pairs']:,} | {row['against_rows']:,} | {row['seconds']:.2f} | "
            f"{row['pairs_per_s']:,} | {dropped} |"
        )
    if args.output_json:
        result_json.write(
            args.output_json,
            {
                "machine": result_json.machine(semhash=semhash.version.__version__, model2vec=model2vec.__version__),
                "settings": {
                    **{k: v for k, v in vars(args).items() if k != "output_json"},
                    "embedding_model": args.embedding_model
                    or f"stand-in: random vectors, {args.vocabulary} words, {args.dimensions} dimensions",
                },
                "model_load_s": round(load, 3),
                "rows": rows,
                "note": "minishlab/potion-base-8M cannot be downloaded on this machine (no Hub): the stand-in has "
                "its shape (29,528 tokens, 256 dimensions) with a whitespace word-level tokenizer.",
            },
        )


if __name__ == "__main__":
    main()
