"""Turn passages into best-of-n instruction pairs with Genstruct-7B and a reward model.

The whole pipeline as `datasets` steps: `run_pipeline` generates completions, parses them into pairs and scores
the pairs (three batched `Dataset.map` calls, the same the builder and its executors run on each shard), then
`select_best` keeps the best pair of each passage. The result is saved as parquet and a few pairs are printed.

With a GPU and network access (downloads Genstruct-7B and the reward model):

    python examples/generate_pairs.py --num-samples 4 --output pairs.parquet

Offline on a CPU in well under a minute, with tiny stand-in models built on the fly
(needs ``pip install 'genstruct-datasets[testing]'``):

    HF_HUB_OFFLINE=1 python examples/generate_pairs.py --tiny --num-samples 2 --max-new-tokens 48
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections import Counter
from pathlib import Path

from datasets import load_dataset

from genstruct_datasets import GenstructGenerator, RewardScorer, run_pipeline, select_best
from genstruct_datasets.generate import DEFAULT_GENERATOR
from genstruct_datasets.score import DEFAULT_REWARD_MODEL

PASSAGES = Path(__file__).with_name("passages.jsonl")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", default=str(PASSAGES), help="JSON lines with title and content (%(default)s)")
    parser.add_argument("--generator", default=DEFAULT_GENERATOR, help="generator model (%(default)s)")
    parser.add_argument("--reward-model", default=DEFAULT_REWARD_MODEL, help="reward model (%(default)s)")
    parser.add_argument("--num-samples", type=int, default=4, help="completions per passage (%(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="cap on each completion (%(default)s)")
    parser.add_argument("--quantization", choices=["8bit", "4bit"], help="load the generator with bitsandbytes")
    parser.add_argument("--seed", type=int, help="makes sampling repeatable")
    parser.add_argument("--output", default="pairs.parquet", help="parquet file to write (%(default)s)")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="use tiny offline models from genstruct_datasets.testing instead of --generator and --reward-model",
    )
    return parser.parse_args()


def run(args: argparse.Namespace, generator: str, reward_model: str) -> None:
    ds = load_dataset("json", data_files=args.passages, split="train")

    generate = GenstructGenerator(
        generator,
        num_samples=args.num_samples,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        quantization=args.quantization,
    )
    result = run_pipeline(ds, generate, RewardScorer(reward_model))
    if result.failed:  # only a server engine fails passages; the same call again retries them
        raise SystemExit(f"{result.failed} passages failed to generate; run again to retry them.")
    ds = result.rows

    print(f"{ds.num_rows} candidates from {len(set(ds['passage_id']))} passages")
    for column in ("finish_reason", "parse_error"):
        counts = Counter(ds[column])
        print(f"  {column}: " + ", ".join(f"{value}={n}" for value, n in counts.most_common()))

    best = select_best(ds)
    best.to_parquet(args.output)
    print(f"{best.num_rows} pairs written to {args.output}\n")

    for row in best.select(range(min(3, best.num_rows))):
        print(f"## {row['title']} (sample {row['sample_index']}, reward {row['reward']:.3f})")
        print(f"Instruction: {row['instruction']}")
        print(f"Response: {row['response']}\n")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args()
    if not args.tiny:
        run(args, args.generator, args.reward_model)
        return

    from genstruct_datasets.testing import build_taught_generator, build_tiny_reward_model

    with tempfile.TemporaryDirectory(prefix="genstruct-tiny-") as folder:
        generator = build_taught_generator(Path(folder) / "generator")
        reward_model = build_tiny_reward_model(Path(folder) / "reward")
        run(args, generator, reward_model)


if __name__ == "__main__":
    main()
