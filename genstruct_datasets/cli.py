"""The `genstruct-datasets` command: a corpus to a published Genstruct dataset in one line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import typing
from datetime import datetime, timezone
from pathlib import Path

from . import __version__
from ._paths import looks_local
from .builder import load_genstruct
from .dedup import dedup_pairs
from .engines import BACKENDS, ENGINES, engine_options, engines_taking
from .errors import (
    EngineStartError,
    ExecutorError,
    FailedPassagesError,
    GenstructError,
    InvalidConfigError,
    MissingTokenError,
    SourceError,
)
from .executors import EXECUTORS, Executor, make_executor
from .generate import DEFAULT_GENERATOR
from .hub_shards import HubShards
from .models import check_model_reachable
from .recipe import GenstructConfig
from .report import REPORT_FILE, RunReport, format_cost, format_headline, format_run_report, format_stages, run_report
from .runstats import RunStats
from .score import DEFAULT_REWARD_MODEL
from .sources import STRUCTURED_FORMATS, TEXT_FORMATS, not_here_nor_reachable, passage_columns, source_fingerprint

logger = logging.getLogger("genstruct_datasets")

EPILOG = """examples:
  genstruct-datasets demo                                 # the whole recipe offline on a CPU, with tiny models
  genstruct-datasets run passages.jsonl --output pairs/   # title and content columns: read as passages, unsplit
  genstruct-datasets run wikimedia/wikipedia --name 20231101.en --limit 1000 --push-to-hub me/wiki-genstruct
  genstruct-datasets run notes/ --backend transformers --quantization 4bit --num-samples 4 --output notes-pairs/
  genstruct-datasets run docs.jsonl --backend vllm --max-model-len 4096 --gpu-memory-utilization 0.85 --output out/
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genstruct-datasets",
        description="Turn a corpus of text passages into a grounded instruction dataset with Genstruct-7B.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="split documents, generate, parse, score, keep the best pair of each passage, save or publish",
        description="Split documents into passages, generate Genstruct completions, parse them into pairs, "
        "score them with a reward model, keep the best pair of each passage, and save or publish the result. "
        "A second run with the same recipe reads the result from the cache.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = run.add_argument_group("source")
    source.add_argument(
        "source", metavar="SOURCE", help="a Hub dataset id, or a .jsonl/.csv/.parquet/.txt/.md file or folder"
    )
    source.add_argument("--name", help="the Hub dataset's config, e.g. 20231101.en")
    source.add_argument("--split", default="train", help="the source split (default: %(default)s)")
    source.add_argument("--title-column", default="title", help="column with document titles (default: %(default)s)")
    source.add_argument(
        "--text-column",
        help="column with document texts (default: text; a source with a content column and no text column holds "
        "passages: its rows are read as they are, without splitting)",
    )
    source.add_argument(
        "--no-split",
        dest="split_documents",
        action="store_false",
        default=None,
        help="the text column holds single passages already: do not split documents",
    )
    source.add_argument("--limit", type=int, help="use only the first N passages, for a trial run")

    generation = run.add_argument_group("generation")
    generation.add_argument("--model", default=DEFAULT_GENERATOR, help="generator model (default: %(default)s)")
    generation.add_argument("--revision", help="generator model revision (branch, tag or commit)")
    generation.add_argument(
        "--num-samples", type=int, default=4, help="completions per passage (default: %(default)s)"
    )
    generation.add_argument(
        "--max-new-tokens", type=int, default=512, help="cap per completion (default: %(default)s)"
    )
    generation.add_argument(
        "--temperature", type=float, default=0.7, help="sampling temperature; 0 is greedy (default: %(default)s)"
    )
    generation.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling (default: %(default)s)")
    generation.add_argument("--seed", type=int, help="makes sampling repeatable")
    generation.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="the engine: auto (vllm with a CUDA GPU and vLLM installed, else transformers), static batches in "
        "transformers, transformers' continuous batching, vLLM in this process, or an OpenAI-compatible server "
        "(default: %(default)s)",
    )
    generation.add_argument(
        "--num-proc",
        type=int,
        metavar="N",
        help="worker processes for generation and scoring, one model each (one per GPU: cuda:{rank})",
    )
    _add_engine_options(run.add_argument_group("engine options (each applies to the engines named in brackets)"))

    execution = run.add_argument_group("execution")
    execution.add_argument(
        "--executor",
        choices=EXECUTORS,
        help="where the shards are built: this process (local), the ranks of torchrun / accelerate launch, or the "
        'GPUs of a Ray cluster, a task per shard (ray; pip install "genstruct-datasets[ray]") (default: torchrun '
        "when WORLD_SIZE is above 1, else local)",
    )
    execution.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="with --executor ray: the Ray cluster to connect to (auto: the one `ray start` runs here; default: "
        "RAY_ADDRESS, else a cluster running here, else a local Ray started for the run)",
    )

    scoring = run.add_argument_group("scoring and selection")
    scoring.add_argument("--reward-model", default=DEFAULT_REWARD_MODEL, help="reward model (default: %(default)s)")
    scoring.add_argument("--reward-revision", help="reward model revision (branch, tag or commit)")
    scoring.add_argument("--min-reward", type=float, help="drop pairs scored below this")

    scoring.add_argument(
        "--dedup-threshold",
        type=float,
        metavar="J",
        help="drop instructions that nearly repeat a better-rewarded one (MinHash Jaccard >= J, e.g. 0.8)",
    )

    output = run.add_argument_group("output")
    output.add_argument(
        "--output",
        metavar="FOLDER",
        help="write parquet shards and a dataset card to FOLDER, whole or not at all (a failure leaves the previous "
        "output as it was)",
    )
    output.add_argument(
        "--overwrite",
        action="store_true",
        help="allow --output to replace a non-empty folder that genstruct-datasets did not write",
    )
    output.add_argument(
        "--push-to-hub",
        metavar="REPO",
        help="publish to this Hub dataset repository; finished shards are uploaded to it as they finish, and a "
        "re-run (on any machine) continues from them",
    )
    output.add_argument("--private", action="store_true", help="create the Hub repository as private")
    output.add_argument("--license", help="license id for the dataset card (mind the source's terms)")
    output.add_argument(
        "--shard-size",
        type=int,
        default=1000,
        metavar="N",
        help="passages per shard; a killed run started again redoes at most one shard (default: %(default)s)",
    )
    output.add_argument("--cache-dir", help="where built datasets are cached (default: the datasets cache)")
    output.add_argument(
        "--force",
        action="store_true",
        help="build anew: split, generate and score again, even where this recipe was built (or partly built) "
        "before, e.g. after a model's main branch moved; an interrupted forced run is resumed without --force",
    )

    demo = commands.add_parser(
        "demo",
        help="run the whole recipe offline on a CPU, with tiny stand-in models, on passages shipped with the package",
        description="Build tiny stand-in models once (cached), run the recipe of `run` on a dozen passages that ship "
        "with the package, write the dataset folder and print the summary, and the command for real pairs on a GPU. "
        "Nothing is downloaded. Needs the [demo] extra (mistral-common's Mistral tokenizer).",
    )
    demo.add_argument(
        "--output",
        metavar="FOLDER",
        default="genstruct-demo",
        help="the dataset folder to write; an earlier output of genstruct-datasets (a demo's or a run's) is replaced "
        "(default: %(default)s)",
    )
    demo.add_argument(
        "--overwrite", action="store_true", help="allow --output to replace a non-empty folder of anything else"
    )

    report = commands.add_parser(
        "report",
        help="print the quality figures of a dataset folder or Hub repository",
        description="Measure a Genstruct dataset (a folder written by `run --output` or a Hub dataset repository): "
        "validity, diversity, grounding, question form, lengths and rewards.",
    )
    report.add_argument("dataset", metavar="FOLDER_OR_REPO", help="a dataset folder or a Hub dataset id")
    report.add_argument("--config", help="the dataset config (default: the dataset's default)")
    report.add_argument("--split", default="train", help="the split to measure (default: %(default)s)")
    report.add_argument("--json", action="store_true", help="print the figures as JSON, for machines")
    return parser


def _add_engine_options(group: argparse._ArgumentGroup) -> None:
    """One flag per engine option, made from the engines' dataclass fields: an option is declared once, there.

    A flag left out is not passed on, so that each engine keeps its own default and is not given options it does
    not take.
    """
    hints = {name: hint for engine in ENGINES.values() for name, hint in typing.get_type_hints(engine).items()}
    for name, field in engine_options().items():
        if field.metadata.get("cli") is False:
            continue
        flag = "--" + name.replace("_", "-")
        text = f"{field.metadata.get('help', '')} [{', '.join(engines_taking(name))}]"
        kind = next((arg for arg in typing.get_args(hints[name]) if arg is not type(None)), hints[name])
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
        elif typing.get_origin(kind) is typing.Literal:
            group.add_argument(flag, choices=typing.get_args(kind), default=argparse.SUPPRESS, help=text)
        else:
            group.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=text)


def _executor(args: argparse.Namespace) -> Executor:
    """The executor of `--executor`, with `--ray-address` for Ray.

    Raises:
        [`InvalidConfigError`]: `--ray-address` without `--executor ray`.
    """
    if args.ray_address is not None and args.executor != "ray":
        raise InvalidConfigError(
            f"--ray-address {args.ray_address} connects to a Ray cluster; add --executor ray (got --executor "
            f"{args.executor or 'default'})."
        )
    options = {"address": args.ray_address} if args.executor == "ray" else {}
    return make_executor(args.executor, **options)


def _check_writable(folder: str) -> None:
    """Refuse an output folder that cannot be written, before any work: it is written beside itself, then swapped in.

    Raises:
        [`InvalidConfigError`]: the folder, or the folder it would be made in, is not a writable folder.
    """
    path = Path(folder).expanduser().absolute()
    parent = path.parent
    while not parent.exists():  # where the missing folders would be made
        parent = parent.parent
    blocked = next(
        (p for p in (parent, path) if p.exists() and (not p.is_dir() or not os.access(p, os.W_OK | os.X_OK))), None
    )
    if blocked is not None:
        what = "not a folder" if not blocked.is_dir() else "not writable"
        raise InvalidConfigError(f"--output {folder}: {str(blocked)!r} is {what}; name a folder you can write to.")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 done, 2 bad input, 1 another failure)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    try:
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args.output, overwrite=args.overwrite)
        return _run(args) if args.command == "run" else _report(args)
    except BrokenPipeError:
        # The reader went away (`report --json | head`): not a failure. Point stdout at devnull so that Python's
        # flush at exit does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (FailedPassagesError, EngineStartError, ExecutorError) as err:  # not bad input: something else failed
        print(f"genstruct-datasets: error: {err}", file=sys.stderr)
        return 1
    except GenstructError as err:
        print(f"genstruct-datasets: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback of every frame in flight
        resume = " Finished shards are kept: run the same command again to resume." if args.command == "run" else ""
        print(f"genstruct-datasets: interrupted.{resume}", file=sys.stderr)
        return 130
    except OSError as err:  # a model or file that cannot be read, a full disk, a network failure
        print(f"genstruct-datasets: error: {err}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    started = datetime.now(timezone.utc)
    settings = {
        "title_column": args.title_column,
        "text_column": args.text_column,
        "split_documents": args.split_documents,
        "limit": args.limit,
        "model": args.model,
        "model_revision": args.revision,
        "reward_revision": args.reward_revision,
        "num_samples": args.num_samples,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "seed": args.seed,
        "backend": args.backend,
        "engine_options": {name: getattr(args, name) for name in engine_options() if hasattr(args, name)},
        "reward_model": args.reward_model,
        "min_reward": args.min_reward,
        "shard_size": args.shard_size,
    }
    for key in ("text_column", "split_documents"):  # left out unless given: see passage_columns below
        if settings[key] is None:
            del settings[key]
    # The checks that need no model come first: the settings and the token here, then the source and its
    # columns, which the builder reads before it loads any model.
    config = GenstructConfig(source=args.source, source_name=args.name, source_split=args.split, **settings)
    if args.dedup_threshold is not None and not 0 < args.dedup_threshold <= 1:
        raise InvalidConfigError(f"--dedup-threshold must be in (0, 1], got {args.dedup_threshold}.")
    executor = _executor(args)
    local = source_fingerprint(args.source) is not None
    if args.output:
        from .publish import check_output_folder

        check_output_folder(args.output, overwrite=args.overwrite)
        _check_writable(args.output)
    if args.push_to_hub:
        from huggingface_hub import get_token

        if not get_token():
            raise MissingTokenError(
                f"--push-to-hub {args.push_to_hub} needs a Hugging Face token: run `hf auth login` or set HF_TOKEN."
            )
    # A Hub model that cannot be had now (offline, not downloaded) is said before the source is read. A server's
    # model is the server's name for it.
    if config.generator().engine.name != "openai":
        check_model_reachable(args.model, revision=args.revision)
    check_model_reachable(args.reward_model, revision=args.reward_revision, option="--reward-model")
    if "text_column" not in settings:  # looked at (and said) once, here: the builder is given the columns
        settings = {
            "text_column": "text",
            **passage_columns(args.source, args.name, cache_dir=args.cache_dir),
            **settings,
        }
        config = GenstructConfig(source=args.source, source_name=args.name, source_split=args.split, **settings)
    if args.num_proc is not None and args.num_proc > 1:
        import multiprocess

        multiprocess.set_start_method("spawn", force=True)  # CUDA does not survive a fork
    # Finished shards go to the Hub repository as they finish: a crash there loses at most one shard.
    shards = HubShards(args.push_to_hub, private=args.private) if args.push_to_hub else None
    pairs = load_genstruct(
        args.source,
        args.name,
        split=args.split,
        cache_dir=args.cache_dir,
        download_mode="force_redownload" if args.force else None,
        num_proc=args.num_proc,
        push_shards_to=shards,
        executor=executor,
        **settings,
    )
    if pairs is None:  # a rank other than 0 under torchrun: its shards are done, rank 0 writes the output
        return 0
    best = pairs["train"]
    candidates = pairs.get("candidates")  # None without best-of-n: then train holds every candidate
    stats = RunStats.of(best)  # None: not measured
    if args.dedup_threshold is not None:
        candidates = pairs["train"] if candidates is None else candidates
        best = dedup_pairs(best, threshold=args.dedup_threshold)
    recipe = config.recipe()
    recipe["selection"]["dedup_threshold"] = args.dedup_threshold
    # Measured once: the summary, the card, the picture and the saved report are renderings of it.
    report = run_report(best, candidates, stats=stats, recipe=recipe)
    if best.num_rows == 0:
        print(_nothing_kept(report), file=sys.stderr)
        return 1
    card_settings = {
        "report": report,
        "recipe": recipe,
        "candidates": candidates,
        "license": args.license,
        "source_datasets": None if local else [args.source],
    }
    destinations = []
    if args.output:
        from .publish import save_local

        destinations.append(str(save_local(best, args.output, overwrite=args.overwrite, **card_settings)))
    if args.push_to_hub:
        from .publish import publish

        publish(best, args.push_to_hub, private=args.private, shards=shards, **card_settings)
        destinations.append(f"https://huggingface.co/datasets/{args.push_to_hub}")
    engine = stats.engine if stats is not None and stats.engine else config.generator().engine.describe()
    _print_summary(report, destinations, engine=engine, cached=stats is not None and stats.measured_before(started))
    return 0


def _nothing_kept(report: RunReport) -> str:
    """Why a run kept no pair, from the candidates' outcomes, and what to look at."""
    outcomes = ", ".join(f"{name}={value}" for name, value in report.outcomes.items()) or "none"
    floor = (report.recipe or {}).get("selection", {}).get("min_reward")
    if floor is not None and report.counts.get("parsed"):
        return (
            f"genstruct-datasets: error: no pair was kept: all {report.counts['parsed']} pairs scored below "
            f"--min-reward {floor}, so nothing was written. Lower --min-reward, or leave it out to keep every best "
            "pair."
        )
    return (
        f"genstruct-datasets: error: no pair was kept from {report.counts['candidates']} candidates (outcomes: "
        f"{outcomes}), so nothing was written. Check the generator (--model), --max-new-tokens (completions cut "
        "before [[[Assistant]]]) and --min-reward."
    )


def _report(args: argparse.Namespace) -> int:
    import json

    local = Path(args.dataset).exists()
    if not local and (looks_local(args.dataset) or Path(args.dataset).suffix in (*STRUCTURED_FORMATS, *TEXT_FORMATS)):
        raise SourceError(f"{args.dataset!r} is neither a dataset folder nor a Hub dataset id.")
    # The run's own report when the output holds it for this config and split; else the data is measured.
    report = _saved_report(args.dataset, local=local, config_name=args.config, split=args.split)
    if report is None:
        report = run_report(_read_split(args, local=local))
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else format_run_report(report))
    return 0


def _read_split(args: argparse.Namespace, *, local: bool):
    import datasets

    try:
        return datasets.load_dataset(
            args.dataset,
            args.config,
            split=args.split,
            # datasets caches a folder by its name and card, not its files: read a folder afresh.
            download_mode="force_redownload" if local else None,
        )
    except ValueError as err:  # an unknown split or config
        raise SourceError(f"cannot read {args.dataset!r}: {err}") from err
    except ConnectionError as err:  # no such folder here, and the Hub cannot be asked
        raise not_here_nor_reachable(args.dataset, err) from err


def _saved_report(dataset: str, *, local: bool, config_name: str | None, split: str) -> RunReport | None:
    """The [`RunReport`] that `run` saved with a folder or a Hub repository, or None when it has none."""
    if local:
        return RunReport.load(dataset, config_name=config_name, split=split)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        path = hf_hub_download(dataset, REPORT_FILE, repo_type="dataset")
    except (HfHubHTTPError, OSError, ValueError):  # no such file or repository, offline, a bad id
        return None
    return RunReport.load(Path(path).parent, config_name=config_name, split=split)


def _print_summary(report: RunReport, destinations: list[str], *, engine: str, cached: bool = False) -> None:
    """The run's report in a few lines on stdout: counts, outcomes, rewards, quality, cost, engine, where it went.

    `cached`: the dataset was read from the cache, so the cost is that of the earlier build, not of this run.
    """
    print(", ".join(f"{name}: {value}" for name, value in report.counts.items()))
    if report.outcomes:
        print("outcomes: " + ", ".join(f"{name}={value}" for name, value in report.outcomes.items()))
    if report.rewards:
        print("reward: " + ", ".join(f"{name} {value:.3f}" for name, value in report.rewards.items()))
    if report.quality is not None:
        print(format_headline(report.quality))
    print(format_stages(report))
    if report.stats is not None:
        if cached:
            built = report.stats.finished_at
            print(f"read from the cache: nothing was generated now; the cost below is that of the build of {built}")
        print(format_cost(report.stats))
    else:
        print("cost: not measured (the build recorded no time or tokens)")
    print(f"generated with: {engine}")
    print("written to: " + (", ".join(destinations) if destinations else "the datasets cache only (use --output)"))


if __name__ == "__main__":
    sys.exit(main())
