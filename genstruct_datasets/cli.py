"""The `genstruct-datasets` command: a corpus to a published Genstruct dataset in one line."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import functools
import logging
import os
import re
import signal
import sys
import threading
import typing
from collections.abc import Iterator
from pathlib import Path

from . import __version__
from ._flags import Flag, add_flags, flags_of
from ._paths import is_local_path
from .engines import ENGINES, engine_options, engines_taking
from .errors import (
    EngineStartError,
    ExecutorError,
    FailedPassagesError,
    GenstructError,
    InvalidSourceError,
    NothingKeptError,
    ServerUnreachableError,
    SourceError,
)
from .generate import GenerationSettings
from .passages import PassageSplitter
from .recipe import RECIPE_DEFAULTS, SCORER_PREFIX, GenstructConfig
from .report import REPORT_FILE, RunReport, format_run_report, run_report
from .run import RunOptions, run_recipe
from .score import RewardScorer
from .sources import (
    STRUCTURED_FORMATS,
    TEXT_FORMATS,
    not_here_nor_reachable,
    quiet_loading_bars,
    structured_file_problem,
)

logger = logging.getLogger("genstruct_datasets")

EPILOG = """examples:
  genstruct-datasets demo                                 # the whole recipe offline on a CPU, with tiny models
  genstruct-datasets run passages.jsonl --output pairs/   # title and content columns: read as passages, unsplit
  genstruct-datasets run wikimedia/wikipedia --name 20231101.en --limit 1000 --push-to-hub me/wiki-genstruct
  genstruct-datasets run notes/ --backend transformers --quantization 4bit --num-samples 4 --output notes-pairs/
  genstruct-datasets run docs.jsonl --backend vllm --max-model-len 4096 --gpu-memory-utilization 0.85 --output out/
"""


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose commands report an unknown flag themselves: the command's own usage, and the flag it
    is closest to (``did you mean --num-samples?``), exit status 2. Python 3.14's ``suggest_on_error`` suggests among
    choices only, and the package supports 3.10."""

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            commands = next((a.choices for a in self._actions if isinstance(a, argparse._SubParsersAction)), {})
            command = commands.get(getattr(parsed, "command", None), self)
            command.error(unrecognized(extras, command))
        return parsed


def unrecognized(extras: list[str], parser: argparse.ArgumentParser) -> str:
    """The error for arguments that `parser` does not take, with the closest of its flags to each unknown one.

    Example:

    ```py
    >>> parser = argparse.ArgumentParser()
    >>> _ = parser.add_argument("--num-samples")
    >>> unrecognized(["--num-sampels", "2"], parser)
    'unrecognized arguments: --num-sampels 2 (did you mean --num-samples?)'
    ```
    """
    flags = [flag for flag in parser._option_string_actions if flag.startswith("--")]
    hints = [
        f"did you mean {close[0]}?"
        for extra in extras
        if extra.startswith("--") and (close := difflib.get_close_matches(extra.split("=", 1)[0], flags, n=1))
    ]
    return f"unrecognized arguments: {' '.join(extras)}" + (f" ({'; '.join(hints)})" if hints else "")


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="genstruct-datasets",
        description="Turn a corpus of text passages into a grounded instruction dataset with Genstruct-7B.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        usage="%(prog)s SOURCE [options] (all of them: %(prog)s --help)",
        help="split documents, generate, parse, score, keep the best pair of each passage, save or publish",
        description="Split documents into passages, generate Genstruct completions, parse them into pairs, "
        "score them with a reward model, keep the best pair of each passage, and save or publish the result. "
        "A second run with the same recipe reads the result from the cache.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups = {name: run.add_argument_group(title) for name, title in RUN_GROUPS.items()}
    groups["source"].add_argument(
        "source", metavar="SOURCE", help="a Hub dataset id, or a .jsonl/.csv/.parquet/.txt/.md file or folder"
    )
    for group, flags in run_flags().items():
        add_flags(groups[group], flags)
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


RUN_GROUPS = {
    "source": "source",
    "passages": "passages",
    "generation": "generation",
    "engine": "engine options (each applies to the engines named in brackets)",
    "scoring": "scoring",
    "selection": "selection and filters",
    "execution": "execution",
    "progress": "progress and cost",
    "output": "output",
}
"""The groups of `run`'s flags, in the order --help shows them."""
PAIR_COLUMNS = ("instruction", "response")
"""The columns without which `report` has no pairs to measure."""


def run_flags() -> dict[str, list[Flag]]:
    """`run`'s flags by group, made from the settings dataclasses: the recipe's own fields, each stage's settings, the
    engines' options and the run's options. A setting is declared once, there, with its default and help."""
    recipe_fields = {
        f.name: f.metadata.get("group") for f in dataclasses.fields(GenstructConfig) if f.metadata.get("group")
    }
    run_fields = {f.name: f.metadata.get("group") for f in dataclasses.fields(RunOptions)}
    flags: dict[str, list[Flag]] = {name: [] for name in RUN_GROUPS}
    for flag in flags_of(GenstructConfig, keep=lambda f: f.name in recipe_fields):
        flags[recipe_fields[flag.dest]].append(flag)
    for flag in flags_of(PassageSplitter):
        flags["source" if flag.dest.endswith("_column") else "passages"].append(flag)
    flags["generation"] += flags_of(
        GenerationSettings, dest=lambda f: f.metadata.get("recipe_name", f.name), defaults=RECIPE_DEFAULTS
    )
    flags["engine"] += engine_flags()
    flags["scoring"] += flags_of(RewardScorer, dest=lambda f: SCORER_PREFIX + f.name)
    for flag in flags_of(RunOptions):
        flags[run_fields[flag.dest]].append(flag)
    return flags


def engine_flags() -> list[Flag]:
    """One flag per engine option, from the engines' dataclass fields, naming the engines that take it.

    A flag left out is not passed on, so that each engine keeps its own default and is not given options it does
    not take.
    """
    hints = {name: hint for engine in ENGINES.values() for name, hint in typing.get_type_hints(engine).items()}
    return [
        Flag(field, hints[name], name, field.default, f"[{', '.join(engines_taking(name))}]")
        for name, field in engine_options().items()
        if field.metadata.get("cli") is not False
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 done, 2 bad input, 1 another failure, 130 interrupted by
    Ctrl-C, 143 by SIGTERM). SIGTERM is handled as Ctrl-C is while the command runs: one line, finished shards kept."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    with _sigterm_as_interrupt():
        return _main(args)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, `kill`), raised in the main thread so that the run ends as on Ctrl-C."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Raise [`_Terminated`] in the main thread on SIGTERM for the time of the block; the previous handler after."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers are the main thread's alone
        yield
        return

    def terminated(signum: int, frame: object) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace) -> int:
    """`main` after the parsing: the command run, each way it can end turned into its exit status and one line."""
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
    # Not bad input: the world failed (a server down, a worker lost). A refused key (ServerRefusedError) is the
    # user's to fix, so it is a GenstructError like the others: 2.
    except (FailedPassagesError, EngineStartError, ExecutorError, NothingKeptError, ServerUnreachableError) as err:
        print(f"genstruct-datasets: error: {in_cli_terms(str(err))}", file=sys.stderr)
        return 1
    except GenstructError as err:
        print(f"genstruct-datasets: error: {in_cli_terms(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: one line, not a traceback of every frame in flight
        resume = " Finished shards are kept: run the same command again to resume." if args.command == "run" else ""
        how = " by SIGTERM" if isinstance(err, _Terminated) else ""
        print(f"genstruct-datasets: interrupted{how}.{resume}", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(err, _Terminated) else signal.SIGINT)
    except OSError as err:  # a model or file that cannot be read, a full disk, a network failure
        print(f"genstruct-datasets: error: {err}", file=sys.stderr)
        return 1


_PYTHON_SETTING = re.compile(r"(?<![\w./\\-])([a-z][a-z0-9_]*)=(True\b|False\b)?")
"""A setting named in Python terms in an error's message: ``model=``, ``min_tokens=N``, ``overwrite=True``."""


def in_cli_terms(message: str) -> str:
    """An error's `message`, which names settings in Python terms (``model=PATH``, ``overwrite=True``, ``source=``),
    with each setting that `run` has a flag for written as that flag (``--model PATH``, ``--overwrite``, ``SOURCE``).

    The package's errors speak Python, the language most of its callers use; the command line says the same in its
    own terms here, from the flags that `run_flags` makes of the settings' fields, so that neither drifts.

    Example:

    ```py
    >>> in_cli_terms("pass model=PATH to a local model folder, or overwrite=True")
    'pass --model PATH to a local model folder, or --overwrite'
    >>> in_cli_terms("name the columns: title_column= and text_column=.")
    'name the columns: --title-column and --text-column.'
    ```
    """
    return _PYTHON_SETTING.sub(_as_flag, message)


@functools.cache
def _flags_by_setting() -> dict[str, Flag]:
    return {flag.dest: flag for flags in run_flags().values() for flag in flags}


def _as_flag(setting: re.Match) -> str:
    """The flag of one setting named in Python terms; the text as it was where `run` has no flag for it."""
    name, boolean = setting.group(1), setting.group(2)
    flag = _flags_by_setting().get(name)
    if name == "source":
        typed = "SOURCE"
    elif flag is None:
        return setting.group(0)
    elif boolean is None:
        typed = flag.name
    elif flag.name.startswith("--no-"):  # split_documents=False: --no-split
        return flag.name if boolean == "False" else setting.group(0)
    elif boolean == "True":
        return flag.name
    else:  # a switch has no --no- form: said in Python terms
        return setting.group(0) if flag.field.metadata.get("switch") else "--no-" + flag.name.removeprefix("--")
    following = setting.string[setting.end() : setting.end() + 1]
    return typed if not following or following.isspace() or following in ",.;:)" else f"{typed} "


def _run(args: argparse.Namespace) -> int:
    """`run`: the flags given, split into the recipe and the run's options, run, printed."""
    given = {key: value for key, value in vars(args).items() if key != "command"}
    options = {f.name for f in dataclasses.fields(RunOptions)}
    result = run_recipe(
        GenstructConfig(**{k: v for k, v in given.items() if k not in options}),
        RunOptions(**{k: v for k, v in given.items() if k in options}),
    )
    if result is not None:  # None: a rank other than 0 under torchrun, whose shards are done
        print(result.summary())
    return 0


def _report(args: argparse.Namespace) -> int:
    import json

    local = Path(args.dataset).exists()
    if not local and is_local_path(args.dataset, suffixes=(*STRUCTURED_FORMATS, *TEXT_FORMATS)):
        raise SourceError(f"{args.dataset!r} is neither a dataset folder nor a Hub dataset id.")
    # The run's own report when the output holds it for this config and split; else the data is measured.
    report = _saved_report(args.dataset, local=local, config_name=args.config, split=args.split)
    if report is None:
        rows = _read_split(args, local=local)
        missing = [column for column in PAIR_COLUMNS if column not in rows.column_names]
        if missing:
            raise SourceError(
                f"{args.dataset!r} holds no pairs: its {args.split!r} split has {rows.num_rows} rows with the "
                f"column(s) {', '.join(rows.column_names) or '(none)'}, and no {' or '.join(missing)}. `report` "
                "measures a dataset of pairs, as `run --output` writes it; to make pairs of these documents, run "
                f"`genstruct-datasets run {args.dataset} --output FOLDER`."
            )
        report = run_report(rows)
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else format_run_report(report))
    return 0


def _read_split(args: argparse.Namespace, *, local: bool):
    import datasets

    try:
        with quiet_loading_bars():
            return datasets.load_dataset(
                args.dataset,
                args.config,
                split=args.split,
                # datasets caches a folder by its name and card, not its files: read a folder afresh.
                download_mode="force_redownload" if local else None,
            )
    except (ValueError, datasets.exceptions.DatasetGenerationError) as err:  # a malformed file, an unknown split
        problem = structured_file_problem(args.dataset) if local else None
        if problem:
            raise InvalidSourceError(problem) from err
        if isinstance(err, datasets.exceptions.DatasetGenerationError):
            cause = err.__cause__ or err
            raise InvalidSourceError(f"cannot read {args.dataset!r}: {str(cause).strip().splitlines()[0]}") from err
        raise SourceError(f"cannot read {args.dataset!r}: {err}") from err
    except ConnectionError as err:  # no such folder here, and the Hub cannot be asked
        raise not_here_nor_reachable(args.dataset, err, setting=None) from None


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


if __name__ == "__main__":
    sys.exit(main())
