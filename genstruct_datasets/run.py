"""One run of a recipe, from the checks to the written dataset: the one entry point of the CLI, the demo and Python.

[`run_recipe`] takes a recipe ([`GenstructConfig`], or its settings) and where to write ([`RunOptions`]), checks
everything that can be checked before any work (the settings, the output folder, the token, the models), builds the
dataset ([`build_genstruct`]: shards through an executor, cached), runs the filters on the kept pairs, measures the
run once ([`run_report`]) and writes it to a folder and the Hub. It returns a [`RunResult`]; it prints nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._checks import check_number, check_workers
from .errors import InvalidConfigError, MissingTokenError, NothingKeptError
from .executors import EXECUTORS, Executor, make_executor
from .progress import LOG_INTERVAL, Prices, ProgressOptions, RunCost

if TYPE_CHECKING:
    from datasets import Dataset

    from .filters import FilterOutcome, PairFilter
    from .hub_shards import HubShards
    from .plan import RunPlan
    from .recipe import GenstructConfig
    from .report import RunReport

logger = logging.getLogger(__name__)


@dataclass
class RunOptions:
    """Where a run writes and how it runs: the settings of a run that are not part of its recipe (they change
    neither the rows nor the recipe's cache key). The command line's output and execution flags are made from these
    fields.

    Args:
        output (`str`, *optional*): a folder to write the dataset to (parquet shards and a card), whole or not at all.
        overwrite (`bool`, *optional*, defaults to `False`): let `output` replace a non-empty folder that this
            package did not write.
        push_to_hub (`str`, *optional*): a Hub dataset repository to publish to; finished shards go there as they
            finish, and a run on any machine continues from them.
        private (`bool`, *optional*, defaults to `False`): create that repository as private.
        license (`str`, *optional*): the license id for the dataset card.
        full_paths (`bool`, *optional*, defaults to `False`): name local models and sources by their full paths in
            the dataset card and the run report; by default they are named by their file or folder name and a short
            content hash ([`local_name`]), so that no path of this machine is published.
        cache_dir (`str`, *optional*): where built datasets are cached (defaults to the `datasets` cache).
        force (`bool`, *optional*, defaults to `False`): build anew, even where the recipe was built before.
        executor (`str` or [`Executor`], *optional*): ``"local"``, ``"torchrun"`` or ``"ray"``, or an executor made
            with its own options (default: torchrun under a `WORLD_SIZE` above 1, else local).
        ray_address (`str`, *optional*): with the Ray executor, the cluster to connect to.
        num_proc (`int`, *optional*): worker processes of generation and scoring, one model each.
        dry_run (`bool`, *optional*, defaults to `False`): say what the run would do ([`RunPlan`]: passages, shards
            finished and to build, prompt tokens, generations, output) without loading a model or writing anything.
        price_per_million_tokens (`str` or `tuple[float, float]`, *optional*): the prices of a million prompt and
            of a million completion tokens (``"0.2,0.6"``), for the cost that the progress view, the summary, the
            report and the card show.
        price_per_gpu_hour (`float`, *optional*): the price of a GPU for an hour, instead: a run costs its wall time
            × its GPUs.
        progress_interval (`float`, *optional*, defaults to 30): seconds between two progress lines where stderr is
            not a terminal (a log file, CI, Slurm); a terminal shows a bar instead.
        token (`str`, *optional*): a Hub token (defaults to the saved login or `HF_TOKEN`).

    Raises:
        [`InvalidConfigError`]: `num_proc` is not a positive integer, a price is not a non-negative number (or both
            kinds of price are given), or `progress_interval` is negative.
    """

    output: str | None = field(
        default=None,
        metadata={
            "group": "output",
            "metavar": "FOLDER",
            "help": "write parquet shards and a dataset card to FOLDER, whole or not at all (a failure leaves the "
            "previous output as it was)",
        },
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "switch": True,
            "group": "output",
            "help": "allow --output to replace a non-empty folder that genstruct-datasets did not write",
        },
    )
    push_to_hub: str | None = field(
        default=None,
        metadata={
            "group": "output",
            "metavar": "REPO",
            "help": "publish to this Hub dataset repository; finished shards are uploaded to it as they finish, and "
            "a re-run (on any machine) continues from them",
        },
    )
    private: bool = field(
        default=False, metadata={"switch": True, "group": "output", "help": "create the Hub repository as private"}
    )
    license: str | None = field(
        default=None, metadata={"group": "output", "help": "license id for the dataset card (mind the source's terms)"}
    )
    full_paths: bool = field(
        default=False,
        metadata={
            "switch": True,
            "group": "output",
            "help": "name local models and sources by their full paths in the dataset card and the run report "
            "(default: by their file or folder name and a short content hash, so that no path of this machine is "
            "published)",
        },
    )
    cache_dir: str | None = field(
        default=None,
        metadata={"group": "output", "help": "where built datasets are cached (default: the datasets cache)"},
    )
    force: bool = field(
        default=False,
        metadata={
            "switch": True,
            "group": "output",
            "help": "build anew: split, generate and score again, even where this recipe was built (or partly "
            "built) before, e.g. after a model's main branch moved; an interrupted forced run is resumed without "
            "--force",
        },
    )
    executor: str | Executor | None = field(
        default=None,
        metadata={
            "group": "execution",
            "choices": EXECUTORS,
            "help": "where the shards are built: this process (local), the ranks of torchrun / accelerate launch, "
            'or the GPUs of a Ray cluster, a task per shard (ray; pip install "genstruct-datasets[ray]") '
            "(default: torchrun when WORLD_SIZE is above 1, else local)",
        },
    )
    ray_address: str | None = field(
        default=None,
        metadata={
            "group": "execution",
            "metavar": "ADDR",
            "help": "with --executor ray: the Ray cluster to connect to (auto: the one `ray start` runs here; "
            "default: RAY_ADDRESS, else a cluster running here, else a local Ray started for the run)",
        },
    )
    num_proc: int | None = field(
        default=None,
        metadata={
            "group": "execution",
            "metavar": "N",
            "help": "worker processes for generation and scoring, one model each (one per GPU: cuda:{rank})",
        },
    )
    dry_run: bool = field(
        default=False,
        metadata={
            "switch": True,
            "group": "execution",
            "help": "say what the run would do: the passages (and those left out), the shards (finished ones reused), "
            "the prompts' tokens, the generations and the output; no model is loaded, nothing is generated or written",
        },
    )
    price_per_million_tokens: str | tuple[float, float] | None = field(
        default=None,
        metadata={
            "group": "progress",
            "metavar": "IN,OUT",
            "help": "prices of a million prompt tokens and of a million completion tokens (a server's), e.g. 0.2,0.6: "
            "the progress view, the summary and the card show the run's cost",
        },
    )
    price_per_gpu_hour: float | None = field(
        default=None,
        metadata={
            "group": "progress",
            "metavar": "P",
            "help": "price of a GPU for an hour, for the run's cost instead: its wall time × the GPUs it uses",
        },
    )
    progress_interval: float = field(
        default=LOG_INTERVAL,
        metadata={
            "group": "progress",
            "metavar": "SECONDS",
            "help": "seconds between two progress lines where stderr is not a terminal (a log file, CI, Slurm); "
            "a terminal shows a bar",
        },
    )
    token: str | None = field(default=None, repr=False, metadata={"cli": False})

    def __post_init__(self) -> None:
        check_workers("num_proc", self.num_proc)
        check_number("price_per_gpu_hour", self.price_per_gpu_hour, minimum=0, optional=True)
        check_number("progress_interval", self.progress_interval, minimum=0, detail="(seconds)")
        if self.price_per_million_tokens is not None and self.price_per_gpu_hour is not None:
            raise InvalidConfigError(
                "--price-per-million-tokens and --price-per-gpu-hour are two ways to price a run; give one."
            )
        self.prices()  # checks the token prices

    def prices(self) -> Prices | None:
        """The prices of the run's cost, or None when none was given.

        Raises:
            [`InvalidConfigError`]: `price_per_million_tokens` is not two non-negative numbers.
        """
        if self.price_per_gpu_hour is not None:
            return Prices(per_gpu_hour=self.price_per_gpu_hour)
        if self.price_per_million_tokens is None:
            return None
        given = self.price_per_million_tokens
        parts = given.split(",") if isinstance(given, str) else list(given)
        try:
            prompt, completion = (float(part) for part in parts)
        except (TypeError, ValueError):
            raise InvalidConfigError(
                f"--price-per-million-tokens must be two prices, of prompt and of completion tokens, as IN,OUT "
                f"(e.g. 0.2,0.6), got {given!r}."
            ) from None
        for name, price in (("the prompt token price", prompt), ("the completion token price", completion)):
            check_number(name, price, minimum=0, detail="in --price-per-million-tokens")
        return Prices(prompt, completion)

    def progress(self, store: HubShards | None = None) -> ProgressOptions:
        """How the build shows where it stands: these prices and interval, and with `push_to_hub` a dataset card on
        the Hub updated as shards land ([`LiveCard`])."""
        on_shard = None
        if self.push_to_hub and store is not None:
            from .publish import LiveCard

            on_shard = LiveCard(self.push_to_hub, token=self.token)
        return ProgressOptions(prices=self.prices(), interval=self.progress_interval, on_shard=on_shard)

    def make_executor(self) -> Executor:
        """The executor these options name, given the cluster's address where there is one (an executor that takes
        no address refuses it).

        Raises:
            [`InvalidConfigError`]: an unknown executor, or `ray_address` for an executor that connects to no cluster.
        """
        if self.ray_address is None:
            return make_executor(self.executor)
        try:
            return make_executor(self.executor, address=self.ray_address)
        except InvalidConfigError:
            raise InvalidConfigError(
                f"--ray-address {self.ray_address} connects to a Ray cluster; add --executor ray (got --executor "
                f"{self.executor or 'default'})."
            ) from None

    def shard_store(self) -> HubShards | None:
        """Where finished shards go as they finish: the Hub repository of `push_to_hub`, else none (a crash there
        loses at most one shard)."""
        from .hub_shards import HubShards

        return HubShards(self.push_to_hub, private=self.private, token=self.token) if self.push_to_hub else None


@dataclass
class RunResult:
    """What a run made: the kept pairs, every candidate, the run's report, and where they were written.

    Args:
        train (`datasets.Dataset`): the pairs kept (the best of each passage with best-of-n, after the filters).
        candidates (`datasets.Dataset`, *optional*): every candidate, with its outcome; None without best-of-n
            (then `train` holds every candidate).
        report ([`RunReport`]): every figure of the run, measured once (counts, stages, quality, cost, recipe).
        destinations (`list[str]`): the folder and the Hub page written.
        engine (`str`): the engine that generated, its version and device.
        cached (`bool`): the dataset was read from the cache: nothing was generated now, and the cost in the report
            is the earlier build's.
    """

    train: Dataset
    candidates: Dataset | None
    report: RunReport
    destinations: list[str] = field(default_factory=list)
    engine: str = ""
    cached: bool = False

    def summary(self) -> str:
        """The run in a few lines, as `genstruct-datasets run` prints it: counts, stages, quality, cost, engine and
        where it went."""
        from .report import format_summary

        return format_summary(self.report, self.destinations, engine=self.engine, cached=self.cached)


def run_recipe(
    recipe: GenstructConfig | Mapping[str, Any], options: RunOptions | None = None, **option_settings: Any
) -> RunResult | RunPlan | None:
    """Run a recipe: check it, build (or read back) its dataset, filter, measure once, write; return what it made.

    The checks that need no model come first, before the source is read: the recipe's settings, the output folder,
    a Hub token, the models' reachability. A second run of the same recipe reads the build from the cache and
    generates nothing; a run killed midway is resumed by the same call, shard by shard.

    Args:
        recipe ([`GenstructConfig`] or `Mapping`): the recipe, or its settings (``source=`` and the flat settings
            [`GenstructConfig`] takes, e.g. ``model=``, ``num_samples=``, ``min_reward=``).
        options ([`RunOptions`], *optional*): where to write and how to run.
        **option_settings: [`RunOptions`]' fields, instead of `options`.

    Returns:
        [`RunResult`] or None: None in a `torchrun` rank other than 0 (its shards are built; rank 0 writes). With
        ``dry_run=True``, the [`RunPlan`] of what the run would do, after the same checks, with no model loaded.

    Raises:
        [`InvalidConfigError`], [`OutputExistsError`], [`MissingTokenError`], [`ModelUnreachableError`]: bad input,
            found before any work.
        [`SourceError`], [`InvalidSourceError`], [`MissingColumnsError`], [`ModelNotFoundError`]: see
            [`load_genstruct`]; found before any model loads.
        [`FailedPassagesError`]: some passages failed to generate (the rest is kept; the same call resumes).
        [`NothingKeptError`]: no pair was kept, so nothing was written.

    Example:

    ```py
    >>> from genstruct_datasets import run_recipe
    >>> result = run_recipe({"source": "passages.jsonl", "num_samples": 4}, output="pairs/")  # doctest: +SKIP
    >>> print(result.summary())  # doctest: +SKIP
    passages: 12, candidates: 48, parsed: 46, kept: 12
    ...
    ```
    """
    from .recipe import GenstructConfig

    if options is not None and option_settings:
        raise InvalidConfigError(f"Give the run's options in options= or as keywords, not both: {option_settings}.")
    options = options or RunOptions(**option_settings)
    recipe = recipe if isinstance(recipe, GenstructConfig) else GenstructConfig(**recipe)
    started = datetime.now(timezone.utc)
    executor = options.make_executor()
    # Made once: a filter's check reads what it needs (a benchmark's index), and its apply uses it.
    filters = recipe.filters()
    _check_before_work(recipe, options, filters)
    if options.dry_run:
        from .plan import plan_run

        return plan_run(recipe, options)
    store = options.shard_store()
    pairs = _build(recipe, options, executor, store)
    if pairs is None:  # a rank other than 0 under torchrun: its shards are done, rank 0 writes the output
        return None
    return _finish(recipe, options, pairs, filters, store, started)


def _check_before_work(recipe: GenstructConfig, options: RunOptions, filters: list[PairFilter]) -> None:
    """What can be refused before the source is read: the output folder and the token (where the run writes), then, in
    the order a user expects, local source files that are not there, the models' reachability and the filters' models
    and datasets. (The models' kind is read from their configs once the source's columns are known, before any model
    loads.)"""
    from .sources import check_source

    if options.output:
        from .publish import check_output_folder

        check_output_folder(options.output, overwrite=options.overwrite)
        check_writable(options.output)
    if options.push_to_hub:
        from huggingface_hub import get_token

        if not (options.token or get_token()):
            raise MissingTokenError(
                f"push_to_hub={options.push_to_hub} needs a Hugging Face token: run `hf auth login` or set HF_TOKEN."
            )
    check_source(str(recipe.source))
    # A Hub model that cannot be had now (offline, not downloaded) is said before the source is read; so is a
    # filter's model or dataset.
    recipe.check_models_reachable(token=options.token)
    for found in filters:
        found.check()


def _build(recipe: GenstructConfig, options: RunOptions, executor: Executor, store: HubShards | None):
    """Build (or read back) the recipe's dataset with the run's executor and shard store."""
    from .builder import build_genstruct

    if options.num_proc is not None and options.num_proc > 1:
        import multiprocess

        multiprocess.set_start_method("spawn", force=True)  # CUDA does not survive a fork
    return build_genstruct(
        recipe,
        cache_dir=options.cache_dir,
        download_mode="force_redownload" if options.force else None,
        token=options.token,
        num_proc=options.num_proc,
        push_shards_to=store,
        executor=executor,
        progress=options.progress(store),
    )


def _finish(
    recipe: GenstructConfig,
    options: RunOptions,
    pairs,
    filters: list[PairFilter],
    store: HubShards | None,
    started: datetime,
) -> RunResult:
    """Filter the built pairs, measure the run once, and write it where the options say."""
    from .report import CardInfo, run_report
    from .runstats import RunStats
    from .sources import is_local

    best, candidates = pairs["train"], pairs.get("candidates")  # no candidates without best-of-n
    stats = RunStats.of(best)  # None: not measured
    filtered = _filter(filters, best, candidates)
    best, candidates, outcomes = filtered.kept, filtered.candidates, filtered.outcomes
    # Measured once: the summary, the card, the picture and the saved report are renderings of it.
    report = run_report(
        best,
        candidates,
        stats=stats,
        recipe=recipe.recipe(),
        full_paths=options.full_paths,
        filters=[o.count for o in outcomes],
        filters_figures={o.count.name: o.figures for o in outcomes},
        selection=filtered.selection,
    )
    prices = options.prices()
    if prices is not None and stats is not None:
        report.cost = RunCost.of(stats, prices)
    if best.num_rows == 0:
        raise NothingKeptError(nothing_kept(report))
    card = CardInfo(license=options.license, source_datasets=None if is_local(recipe.source) else [recipe.source])
    destinations = []
    if options.output:
        from .publish import save_local

        destinations.append(str(save_local(best, options.output, overwrite=options.overwrite, report=report,
                                           candidates=candidates, card=card)))  # fmt: skip
    if options.push_to_hub:
        from .publish import publish

        publish(best, options.push_to_hub, private=options.private, token=options.token, shards=store, report=report,
                candidates=candidates, card=card)  # fmt: skip
        destinations.append(f"https://huggingface.co/datasets/{options.push_to_hub}")
    engine = stats.engine if stats is not None and stats.engine else recipe.generator().engine.describe()
    cached = stats is not None and stats.measured_before(started)
    return RunResult(best, candidates, report, destinations, engine, cached)


@dataclass
class _Filtered:
    """The pairs as selection kept them (with their reward spread), as the filters kept them, every candidate (marked
    with why a filter dropped it), and the filters' outcomes."""

    selection: Dataset
    kept: Dataset
    candidates: Dataset | None
    outcomes: list[FilterOutcome]


def _filter(filters: list[PairFilter], best: Dataset, candidates: Dataset | None) -> _Filtered:
    """Run the recipe's `filters` on the kept pairs, each on what the one before kept; the pairs they drop stay in the
    candidates, with the filter's name and why (`filtered_by`, `filter_detail`: both splits get the columns).

    With best-of-n, every row first gets its passage's reward spread (`reward_min`, `reward_gap`, `rejected_words`),
    which RIP reads and a user can filter on."""
    from .filters import mark_drops
    from .filters.rip import reward_spread

    if candidates is not None:
        best, candidates = reward_spread(best, candidates)
    outcomes = []
    kept = best
    for found in filters:
        outcomes.append(found.apply(kept, candidates))
        kept = outcomes[-1].kept
    if not outcomes:
        return _Filtered(best, best, candidates, outcomes)
    # Without best-of-n the kept pairs were every candidate: the rows dropped now stay in a candidates split.
    candidates = mark_drops(best if candidates is None else candidates, outcomes)
    return _Filtered(best, mark_drops(kept, []), candidates, outcomes)


def nothing_kept(report: RunReport) -> str:
    """Why a run kept no pair, from the candidates' outcomes, and what to look at."""
    outcomes = ", ".join(f"{name}={value}" for name, value in report.outcomes.items()) or "none"
    floor = (report.recipe or {}).get("selection", {}).get("min_reward")
    if floor is not None and report.counts.get("parsed"):
        return (
            f"no pair was kept: all {report.counts['parsed']} pairs scored below min_reward={floor}, so nothing "
            "was written. Lower min_reward=, or leave it out to keep every best pair."
        )
    return (
        f"no pair was kept from {report.counts['candidates']} candidates (outcomes: {outcomes}), so nothing was "
        "written. Check the generator (model=), max_new_tokens= (completions cut before [[[Assistant]]]) and "
        "min_reward=."
    )


def check_writable(folder: str | os.PathLike) -> None:
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
        raise InvalidConfigError(f"output={folder}: {str(blocked)!r} is {what}; name a folder you can write to.")
