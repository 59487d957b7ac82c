"""What a run would do, without doing it: the dry run of [`run_recipe`] (``genstruct-datasets run --dry-run``).

A dry run reads the source and cuts its passages as the run would (the same builder, [`make_builder`]), looks at
which shards are finished in the work folder or the shard store, counts the prompts' tokens with the generator's
tokenizer (the tokenizer alone: no model loads) and says where the output would go. It generates, scores and writes
nothing.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .stage_counts import StageCount

if TYPE_CHECKING:
    import datasets

    from .builder import GenstructBuilder
    from .recipe import GenstructConfig
    from .run import RunOptions
    from .shards import ShardJob

_BATCH = 1000
"""Passages whose prompts are tokenized in one call."""


@dataclass
class PromptTokens:
    """The prompts' lengths in tokens of the generator's tokenizer, as the generation stage renders them.

    Args:
        total (`int`): every prompt's tokens, added up.
        min (`int`), median (`float`), max (`int`): per passage.
        not_prompted (`int`): passages with an empty title or content, which are not prompted (``invalid_input``).
    """

    total: int
    min: int
    median: float
    max: int
    not_prompted: int = 0


@dataclass
class RunPlan:
    """What a run of a recipe would do, found without loading a model or writing anything ([`plan_run`]).

    Args:
        source (`str`): the recipe's source.
        passages_stage ([`StageCount`]): the passages stage: documents read, kept, dropped by reason (``too_short``,
            ``beyond_limit``).
        passages (`int`): the passages cut from them.
        shard_size (`int`): passages per shard.
        shards (`int`): the run's shards.
        shards_in_work (`int`): finished shards in the work folder, reused.
        shards_in_store (`int`): finished shards in the shard store (``--push-to-hub``), fetched and reused.
        passages_to_generate (`int`): the passages of the shards left to build (none when the build is cached).
        cached (`bool`): the recipe's dataset is in the cache: the run reads it back and generates nothing.
        forced (`bool`): ``--force``: nothing finished is reused.
        num_samples (`int`): completions per passage.
        tokenizer (`str`): the tokenizer that counted the prompts (the generator's).
        prompt_tokens ([`PromptTokens`], *optional*): the prompts' lengths; None without any passage to prompt.
        outputs (`list[str]`): where the run would write (a folder, a Hub repository); empty: the cache only.
    """

    source: str
    passages_stage: StageCount
    passages: int
    shard_size: int
    shards: int
    shards_in_work: int
    shards_in_store: int
    passages_to_generate: int
    cached: bool
    forced: bool
    num_samples: int
    tokenizer: str
    prompt_tokens: PromptTokens | None
    outputs: list[str] = field(default_factory=list)

    @property
    def generations(self) -> int:
        """The completions of the whole run: passages × samples."""
        return self.passages * self.num_samples

    @property
    def generations_left(self) -> int:
        """The completions this run would make: those of the shards left to build."""
        return self.passages_to_generate * self.num_samples

    def summary(self) -> str:
        """The plan in a few lines, as ``genstruct-datasets run --dry-run`` prints it; see [`format_plan`]."""
        return format_plan(self)


def plan_run(recipe: GenstructConfig, options: RunOptions) -> RunPlan:
    """What [`run_recipe`] would do with this recipe and these options, without loading a model or writing anything.

    The recipe is resolved and its passages read and cut by the run's own builder ([`make_builder`]); the shards
    finished in the work folder are verified as a run verifies them (but a broken one is left in place: the run
    deletes it), and those of the shard store are listed without creating anything.

    Args:
        recipe ([`GenstructConfig`]): the recipe (resolved here, in place, as a run resolves it).
        options ([`RunOptions`]): where the run would write and how it would run.

    Returns:
        [`RunPlan`]: passages, shards, prompt tokens, generations and outputs.

    Raises:
        [`SourceError`], [`InvalidSourceError`], [`MissingColumnsError`], [`ModelNotFoundError`]: as the run raises
            them (see [`load_genstruct`]).

    Example:

    ```py
    >>> from genstruct_datasets import GenstructConfig, RunOptions
    >>> plan = plan_run(GenstructConfig(source="passages.jsonl", num_samples=4), RunOptions())  # doctest: +SKIP
    >>> plan.generations  # doctest: +SKIP
    44
    ```
    """
    from .builder import make_builder

    builder = make_builder(
        recipe,
        cache_dir=options.cache_dir,
        download_mode="force_redownload" if options.force else None,
        token=options.token,
        push_shards_to=options.shard_store(),
    )
    passages = builder.passages  # read and cut once, as the build reads them (and counted in its stats)
    job = builder.shard_job()
    in_work, in_store = _finished_shards(builder, job)
    todo = 0 if builder.cached else sum(job.size(k) for k in range(job.count) if k not in in_work | in_store)
    generator = recipe.generator()
    outputs = [where for where in (options.output, options.push_to_hub) if where]
    return RunPlan(
        source=str(recipe.source),
        passages_stage=builder.stats.stages[0],
        passages=passages.num_rows,
        shard_size=recipe.shard_size,
        shards=job.count,
        shards_in_work=len(in_work),
        shards_in_store=len(in_store),
        passages_to_generate=todo,
        cached=builder.cached,
        forced=options.force,
        num_samples=generator.num_samples,
        tokenizer=generator.model,
        prompt_tokens=prompt_tokens(passages, generator.model, revision=generator.revision),
        outputs=outputs,
    )


def _finished_shards(builder: GenstructBuilder, job: ShardJob) -> tuple[set[int], set[int]]:
    """The finished shards a run would reuse: in the work folder (verified), and in the store only."""
    if not builder.reuse_work:  # a forced build starts from nothing
        return set(), set()
    in_work = {k for k, path in enumerate(job.paths) if path.exists() and job.problem(k) is None}
    held = builder.shard_store.held(builder.config_id) if builder.shard_store is not None else set()
    in_store = {k for k, path in enumerate(job.paths) if k not in in_work and path.name in held}
    return in_work, in_store


def prompt_tokens(passages: datasets.Dataset, model: str, *, revision: str | None = None) -> PromptTokens | None:
    """The lengths of the passages' prompts, rendered as the generation stage renders them (the model's chat
    template, else Genstruct's), in tokens of the model's tokenizer; the model itself is not loaded.

    Args:
        passages (`datasets.Dataset`): `title` and `content`.
        model (`str`): the generator, whose tokenizer counts.
        revision (`str`, *optional*): the generator's revision.

    Returns:
        [`PromptTokens`] or None: None when no passage can be prompted.
    """
    from ._tokens import is_text, prepare_tokenizer
    from .models import load_tokenizer

    tokenizer = prepare_tokenizer(load_tokenizer(model, revision=revision))
    sizes: list[int] = []
    not_prompted = 0
    for batch in passages.select_columns(["title", "content"]).iter(batch_size=_BATCH):
        pairs = [(t, c) for t, c in zip(batch["title"], batch["content"]) if is_text(t) and is_text(c)]
        not_prompted += len(batch["title"]) - len(pairs)
        rendered = [tokenizer.apply_chat_template([{"title": t, "content": c}], tokenize=False) for t, c in pairs]
        if rendered:
            sizes += map(len, tokenizer(rendered, add_special_tokens=False)["input_ids"])
    if not sizes:
        return None
    return PromptTokens(sum(sizes), min(sizes), statistics.median(sizes), max(sizes), not_prompted)


def format_plan(plan: RunPlan) -> str:
    """A [`RunPlan`] as the lines ``run --dry-run`` prints.

    Example:

    ```py
    >>> from genstruct_datasets.stage_counts import StageCount
    >>> plan = RunPlan("docs.jsonl", StageCount("passages", "documents", 3, 2, {"too_short": 1}), passages=5,
    ...                shard_size=4, shards=2, shards_in_work=1, shards_in_store=0, passages_to_generate=1,
    ...                cached=False, forced=False, num_samples=2, tokenizer="model",
    ...                prompt_tokens=PromptTokens(500, 80, 100, 120), outputs=["out/"])
    >>> print(format_plan(plan))
    dry run of docs.jsonl: no model loaded, nothing generated or written
      passages       5 from 2 of 3 documents (left out: too_short 1)
      shards         2 of up to 4 passages: 1 finished and reused (1 in the work folder, 0 in the store), 1 to build
      prompt tokens  500 in all; per passage min 80, median 100, max 120 (tokenizer of model)
      generations    5 passages x 2 samples = 10; 2 left to make (1 passage)
      output         out/
    ```
    """
    stage = plan.passages_stage
    dropped = ", ".join(f"{reason} {n:,}" for reason, n in stage.dropped.items())
    reused = plan.shards_in_work + plan.shards_in_store
    if plan.cached:
        shards = f"{plan.shards:,} of up to {plan.shard_size:,} passages: built before, read back from the cache"
    elif plan.forced:
        shards = f"{plan.shards:,} of up to {plan.shard_size:,} passages: all built anew (--force)"
    else:
        shards = (
            f"{plan.shards:,} of up to {plan.shard_size:,} passages: {reused:,} finished and reused "
            f"({plan.shards_in_work:,} in the work folder, {plan.shards_in_store:,} in the store), "
            f"{plan.shards - reused:,} to build"
        )
    tokens = plan.prompt_tokens
    prompts = (
        "no passage to prompt"
        if tokens is None
        else f"{tokens.total:,} in all; per passage min {tokens.min:,}, median {tokens.median:,g}, max {tokens.max:,}"
        f" (tokenizer of {plan.tokenizer})"
        + (
            f"; {tokens.not_prompted:,} passage(s) without a title or content, not prompted"
            if tokens.not_prompted
            else ""
        )
    )
    lines = [
        f"dry run of {plan.source}: no model loaded, nothing generated or written",
        f"  passages       {plan.passages:,} from {stage.kept:,} of {stage.seen:,} documents"
        + (f" (left out: {dropped})" if dropped else ""),
        f"  shards         {shards}",
        f"  prompt tokens  {prompts}",
        f"  generations    {plan.passages:,} passages x {plan.num_samples} samples = {plan.generations:,}; "
        f"{plan.generations_left:,} left to make ({plan.passages_to_generate:,} passage"
        f"{'' if plan.passages_to_generate == 1 else 's'})",
        f"  output         {', '.join(plan.outputs) or 'none (no --output or --push-to-hub): the cache only'}",
    ]
    return "\n".join(lines)
