"""Publish a Genstruct dataset made from the first articles of a Wikipedia dump on the Hub.

Reads a config of `wikimedia/wikipedia` (e.g. ``20231101.en``), splits its articles into passages, writes
best-of-n Genstruct pairs with `load_genstruct`, and publishes them with a dataset card with `publish`, the
data and the card in one commit. With ``--repo-id``, each finished shard of 1000 passages is uploaded to the
repository as it finishes (`HubShards`): run the same command again after a crash, here or on another machine,
and it goes on from the shards there. Needs a GPU, network access and a Hub token with write access
(``hf auth login`` or ``HF_TOKEN``):

    python examples/wikipedia_to_hub.py --repo-id me/wiki-genstruct --limit 1000 --num-samples 4

The same job on the command line:

    genstruct-datasets run wikimedia/wikipedia --name 20231101.en --limit 1000 --num-samples 4 \\
        --license cc-by-sa-4.0 --push-to-hub me/wiki-genstruct

``--output FOLDER`` also writes the same parquet shards and card to a folder, or, without ``--repo-id``, only
there. ``--source`` (not shown in ``--help``) reads other documents with ``title`` and ``text``: another
Hub dataset, or local ``.jsonl``/``.csv``/``.parquet``/``.txt``/``.md`` files. A second run with the same
settings reads the pairs back from the `datasets` cache without loading any model.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from genstruct_datasets import GenstructConfig, HubShards, load_genstruct, publish, save_local
from genstruct_datasets.generate import DEFAULT_GENERATOR
from genstruct_datasets.report import dataset_stats
from genstruct_datasets.score import DEFAULT_REWARD_MODEL

WIKIPEDIA = "wikimedia/wikipedia"
LICENSE = "cc-by-sa-4.0"  # Wikipedia's text license, which pairs written from it inherit

logger = logging.getLogger("wikipedia_to_hub")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=WIKIPEDIA, help=argparse.SUPPRESS)
    parser.add_argument(
        "--name", default="20231101.en", help="the Wikipedia config: dump date and language (%(default)s)"
    )
    parser.add_argument("--limit", type=int, default=1000, help="use only the first N passages (%(default)s)")
    parser.add_argument("--repo-id", help="the Hub dataset repository to publish to, e.g. me/wiki-genstruct")
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    parser.add_argument("--output", metavar="FOLDER", help="also (or, without --repo-id, only) write to FOLDER")
    parser.add_argument("--license", default=LICENSE, help="license id for the dataset card (%(default)s)")
    parser.add_argument("--model", default=DEFAULT_GENERATOR, help="generator model (%(default)s)")
    parser.add_argument("--reward-model", default=DEFAULT_REWARD_MODEL, help="reward model (%(default)s)")
    parser.add_argument("--num-samples", type=int, default=4, help="completions per passage (%(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="cap on each completion (%(default)s)")
    parser.add_argument("--quantization", choices=["8bit", "4bit"], help="load the generator with bitsandbytes")
    parser.add_argument("--seed", type=int, help="makes sampling repeatable")
    parser.add_argument("--min-reward", type=float, help="drop pairs scored below this")
    args = parser.parse_args()
    if not args.repo_id and not args.output:
        parser.error("give --repo-id to publish on the Hub, --output FOLDER to save locally, or both")
    if args.repo_id:
        from huggingface_hub import get_token

        # Fail now rather than after generation: publish() needs a token with write access.
        if not get_token():
            parser.error(f"--repo-id {args.repo_id} needs a Hugging Face token: run `hf auth login` or set HF_TOKEN")
    return args


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args()

    # A Hub dataset has configs such as 20231101.en; local files have none.
    local = Path(args.source).exists()
    name = None if local else args.name
    # One set of settings for both the build and the card, so that the card describes what was built.
    settings = {
        "limit": args.limit,
        "model": args.model,
        "reward_model": args.reward_model,
        "num_samples": args.num_samples,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "engine_options": {"quantization": args.quantization} if args.quantization else {},
        "min_reward": args.min_reward,
    }
    recipe = GenstructConfig(source=args.source, source_name=name, **settings).recipe()
    shards = HubShards(args.repo_id, private=args.private) if args.repo_id else None
    pairs = load_genstruct(args.source, name, push_shards_to=shards, **settings)
    best, candidates = pairs["train"], pairs["candidates"]

    stats = dataset_stats(best, candidates)
    logger.info("Counts: %s", ", ".join(f"{key} {value}" for key, value in stats["counts"].items()))
    if stats["rewards"]:
        logger.info("Reward: %s", ", ".join(f"{key} {value:.3f}" for key, value in stats["rewards"].items()))

    card = {
        "recipe": recipe,
        "candidates": candidates,
        "license": args.license,
        "source_datasets": None if local else [args.source],  # the card links Hub datasets only
    }
    if args.output:
        folder = save_local(best, args.output, repo_id=args.repo_id, **card)
        print(f"Saved {best.num_rows} pairs to {folder}")
    if args.repo_id:
        commit = publish(best, args.repo_id, private=args.private, shards=shards, **card)
        print(f"Published {best.num_rows} pairs: {commit.commit_url}")


if __name__ == "__main__":
    main()
