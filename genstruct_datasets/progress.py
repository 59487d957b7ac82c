"""Where a run stands: passages done of the whole corpus, candidates, failures, speed, ETA and cost, in one view.

A [`RunProgress`] covers the shards of a run: the generator feeds it per map batch where it generates in the same
process ([`report_batch`], called by `generate.py`), and the executor per finished shard, for the shards built
elsewhere (map worker processes, Ray workers). Passages of shards reused from an earlier run count as done, not as
speed: the speed, the ETA and the cost come from the work of this run alone. On a terminal the view is a `tqdm` bar;
without one (CI, `nohup`, a Slurm log) it is a log line every `interval` seconds, read from an injected clock.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .runstats import RunStats, format_duration

logger = logging.getLogger(__name__)

LOG_INTERVAL = 30.0
"""Seconds between two progress lines without a terminal (the run's `progress_interval` changes it)."""


@dataclass(frozen=True)
class Prices:
    """What generation costs: prompt and completion tokens of a server, or GPU time.

    Args:
        prompt_per_million (`float`, *optional*): the price of a million prompt tokens.
        completion_per_million (`float`, *optional*): the price of a million completion tokens.
        per_gpu_hour (`float`, *optional*): the price of a GPU for an hour; a run costs its wall time × its GPUs.

    Example:

    ```py
    >>> Prices(0.2, 0.6).cost(prompt_tokens=1_000_000, completion_tokens=500_000, seconds=60, gpus=1)
    0.5
    >>> Prices(per_gpu_hour=2.0).cost(prompt_tokens=0, completion_tokens=0, seconds=1800, gpus=4)
    4.0
    ```
    """

    prompt_per_million: float | None = None
    completion_per_million: float | None = None
    per_gpu_hour: float | None = None

    def cost(self, *, prompt_tokens: int, completion_tokens: int, seconds: float, gpus: int) -> float:
        """The cost of `prompt_tokens` and `completion_tokens`, and of `gpus` GPUs for `seconds`."""
        tokens = (self.prompt_per_million or 0.0) * prompt_tokens + (self.completion_per_million or 0.0) * (
            completion_tokens
        )
        return tokens / 1e6 + (self.per_gpu_hour or 0.0) * gpus * seconds / 3600

    def basis(self, gpus: int = 1) -> str:
        """The prices in words: ``"0.2 per million prompt tokens, 0.6 per million completion tokens"``."""
        parts = []
        if self.prompt_per_million is not None or self.completion_per_million is not None:
            parts.append(
                f"{self.prompt_per_million or 0:g} per million prompt tokens, "
                f"{self.completion_per_million or 0:g} per million completion tokens"
            )
        if self.per_gpu_hour is not None:
            parts.append(f"{self.per_gpu_hour:g} per GPU-hour × {gpus} GPU{'s' if gpus != 1 else ''}")
        return "; ".join(parts)


@dataclass
class RunCost:
    """What a finished run cost at the given [`Prices`], and what the whole corpus costs at that rate.

    Args:
        amount (`float`): the cost of this run's work (its tokens, or its wall time × GPUs).
        projected (`float`, *optional*): the cost of every passage of the corpus at this run's cost per passage;
            None when this run generated nothing.
        basis (`str`): the prices it was reckoned from, in words.
    """

    amount: float
    projected: float | None = None
    basis: str = ""

    @classmethod
    def of(cls, stats: RunStats, prices: Prices) -> RunCost:
        """The cost of the build that `stats` measure."""
        gpus = max(1, stats.gpus)
        amount = prices.cost(
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.generated_tokens,
            seconds=stats.wall_seconds,
            gpus=gpus,
        )
        projected = amount * stats.passages / stats.generated_passages if stats.generated_passages else None
        return cls(amount, projected, prices.basis(gpus))

    def describe(self) -> str:
        """The cost in a few words: ``"1.20 (the whole corpus about 3.60; at 2 per GPU-hour × 1 GPU)"``."""
        whole = f"the whole corpus about {self.projected:,.2f}; " if self.projected is not None else ""
        return f"{self.amount:,.2f} ({whole}at {self.basis})"


@dataclass(frozen=True)
class BatchFigures:
    """What one map batch of the generator made: `passages` prompted, `candidates` (samples) written, passages
    `failed` (a sample with ``finish_reason="error"``), completion `tokens` and `prompt_tokens`."""

    passages: int
    candidates: int
    failed: int
    tokens: int
    prompt_tokens: int


@dataclass(frozen=True)
class ProgressSnapshot:
    """Where a run stands at one moment: what [`RunProgress`] shows, logs and hands to its listener.

    Args:
        total (`int`): passages of the run's shards (the corpus, for a run of every shard).
        done (`int`): passages done, the reused ones included.
        reused (`int`): passages of shards finished by an earlier run.
        candidates (`int`): candidates (samples) made by this run.
        failed (`int`): passages whose generation failed in this run.
        tokens (`int`), prompt_tokens (`int`): completion and prompt tokens of this run.
        elapsed (`float`): seconds since this run's view started.
        shards_done (`int`), shards_total (`int`): shards finished (reused included), of how many.
        cost (`float`, *optional*), projected_cost (`float`, *optional*): this run's cost so far, and for the
            passages of this run when all are done; None without prices (or, projected, before any passage).
    """

    total: int
    done: int
    reused: int
    candidates: int
    failed: int
    tokens: int
    prompt_tokens: int
    elapsed: float
    shards_done: int
    shards_total: int
    cost: float | None = None
    projected_cost: float | None = None

    @property
    def passages_per_second(self) -> float | None:
        """Passages per second of this run (reused ones left out); None before any."""
        made = self.done - self.reused
        return made / self.elapsed if made > 0 and self.elapsed > 0 else None

    @property
    def tokens_per_second(self) -> float | None:
        """Completion tokens per second of this run; None before any."""
        return self.tokens / self.elapsed if self.tokens and self.elapsed > 0 else None

    @property
    def eta(self) -> float | None:
        """Seconds left at this run's speed; None before this run has done a passage."""
        speed = self.passages_per_second
        return (self.total - self.done) / speed if speed else None

    def line(self) -> str:
        """The figures as one log line.

        Example:

        ```py
        >>> snapshot = ProgressSnapshot(total=10, done=6, reused=2, candidates=8, failed=0, tokens=400,
        ...                             prompt_tokens=900, elapsed=8.0, shards_done=3, shards_total=5)
        >>> snapshot.line().split(", ")[-2:]
        ['8.0 s elapsed', 'about 8.0 s left.']
        ```
        """
        parts = [
            f"{self.done:,} of {self.total:,} passages ({self.done / max(self.total, 1):.0%}"
            + (f"; {self.reused:,} reused)" if self.reused else ")"),
            f"shard {self.shards_done} of {self.shards_total}",
            f"{self.candidates:,} candidates",
            f"{self.failed:,} failed",
        ]
        if self.tokens_per_second is not None:
            parts.append(f"{self.tokens_per_second:,.0f} tokens/s")
        eta = self.eta
        left = "done" if self.done >= self.total else (f"about {format_duration(eta)} left" if eta else "ETA ?")
        parts.append(f"{format_duration(self.elapsed)} elapsed, {left}")
        if self.cost is not None:
            projected = f", about {self.projected_cost:,.2f} in all" if self.projected_cost is not None else ""
            parts.append(f"cost {self.cost:,.2f} so far{projected}")
        return "Progress: " + ", ".join(parts) + "."


@dataclass
class ProgressOptions:
    """How a build shows where it stands: the prices of its cost, how often it logs, and who else is told.

    Args:
        prices ([`Prices`], *optional*): the prices that make the cost figures; None shows none.
        interval (`float`, *optional*, defaults to `LOG_INTERVAL`): seconds between two log lines without a terminal.
        on_shard (`Callable`, *optional*): called with a [`ProgressSnapshot`] each time a shard is finished (the live
            dataset card of a run that pushes to the Hub); its failures are warnings, never the run's.
        live (`bool`, *optional*): draw a `tqdm` bar (True) or log lines (False); defaults to a bar where stderr is a
            terminal.
        clock (`Callable`, *optional*, defaults to `time.monotonic`): the clock the speed and the intervals read.
    """

    prices: Prices | None = None
    interval: float = LOG_INTERVAL
    on_shard: Callable[[ProgressSnapshot], Any] | None = field(default=None, repr=False)
    live: bool | None = None
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)


class RunProgress:
    """One progress view for a whole run: passages done of the total, candidates, failures, tokens/s, elapsed, ETA and
    cost, as a `tqdm` bar on a terminal, else as a log line at a steady interval.

    Figures come two ways: per map batch from the generator in this process ([`add_batch`], through
    [`report_batch`]), and per finished shard ([`add_shard`]) with the figures that the shard's build measured;
    a shard's figures replace those its batches gave in this process, so nothing counts twice. While the view is
    open (``with RunProgress(...)``), `datasets`' own per-map bars are off; they are restored after.

    Args:
        total (`int`): passages of the run's shards.
        reused (`int`, *optional*, defaults to 0): passages of shards reused from an earlier run: done, but not speed.
        shards (`int`, *optional*, defaults to 1): shards of the run.
        shards_reused (`int`, *optional*, defaults to 0): shards reused.
        samples_per_passage (`int`, *optional*, defaults to 1): candidates of a generated passage (for shards built
            elsewhere, whose candidates are counted from their passages).
        gpus (`int`, *optional*, defaults to 1): GPUs the run uses, for a price per GPU-hour.
        options ([`ProgressOptions`], *optional*): prices, interval, listener, bar or lines, clock.

    Example:

    ```py
    >>> clock = iter([0.0, *[10.0] * 9]).__next__  # seconds: the start, then 10 s at each reading
    >>> options = ProgressOptions(live=False, clock=clock)
    >>> with RunProgress(4, reused=2, shards=2, shards_reused=1, options=options) as view:
    ...     view.add_shard(2, RunStats(generated_passages=2, generated_tokens=100))
    >>> view.snapshot().done, view.snapshot().tokens_per_second
    (4, 10.0)
    ```
    """

    def __init__(
        self,
        total: int,
        *,
        reused: int = 0,
        shards: int = 1,
        shards_reused: int = 0,
        samples_per_passage: int = 1,
        gpus: int = 1,
        options: ProgressOptions | None = None,
    ) -> None:
        self.options = options or ProgressOptions()
        self.total, self.reused, self.samples_per_passage, self.gpus = total, reused, samples_per_passage, gpus
        self.shards, self.shards_done = shards, shards_reused
        self._settled = BatchFigures(0, 0, 0, 0, 0)  # of finished shards
        self._pending = BatchFigures(0, 0, 0, 0, 0)  # of this process's batches since the last finished shard
        self._lock = threading.Lock()
        self._start = self._last_line = self.options.clock()
        self._bar: Any = None
        self._redirect: Any = None
        self._bars_were_on = False
        self._pid = os.getpid()

    def __enter__(self) -> RunProgress:
        import datasets

        global _ACTIVE
        self._bars_were_on = datasets.utils.logging.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        live = self.options.live if self.options.live is not None else sys.stderr.isatty()
        if live:
            from tqdm.auto import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(total=self.total, initial=self.reused, unit="passage", desc="Generating", leave=True)
            self._redirect = logging_redirect_tqdm()  # log lines above the bar, not through it
            self._redirect.__enter__()
        _ACTIVE = self
        return self

    def __exit__(self, *exc: object) -> None:
        import datasets

        global _ACTIVE
        _ACTIVE = None
        if self._bar is not None:
            self._bar.close()
            self._redirect.__exit__(*exc)
        else:
            logger.info(self.snapshot().line())
        if self._bars_were_on:
            datasets.enable_progress_bars()

    def add_batch(self, batch: BatchFigures) -> None:
        """Count a map batch generated in this process (settled when its shard is finished)."""
        with self._lock:
            self._pending = _plus(self._pending, batch)
        self._show(batch.passages)

    def add_shard(self, passages: int, stats: RunStats, failed: int = 0) -> None:
        """Count a finished shard of `passages`, `failed` of which failed, with the figures its build measured; the
        batches this process counted for it are replaced by them."""
        shard = BatchFigures(
            passages=passages - failed,
            candidates=stats.generated_passages * self.samples_per_passage,
            failed=failed,
            tokens=stats.generated_tokens,
            prompt_tokens=stats.prompt_tokens,
        )
        with self._lock:
            before = self._pending.passages
            self._settled, self._pending = _plus(self._settled, shard), BatchFigures(0, 0, 0, 0, 0)
            self.shards_done += 1
        self._show(shard.passages - before)
        if self.options.on_shard is not None:
            snapshot = self.snapshot()
            try:
                self.options.on_shard(snapshot)
            except Exception as err:  # noqa: BLE001  a listener's failure (the Hub card) is never the run's
                logger.warning("Progress listener failed (%s: %s); the run goes on.", type(err).__name__, err)

    def snapshot(self) -> ProgressSnapshot:
        """The figures now."""
        with self._lock:
            made = _plus(self._settled, self._pending)
        elapsed = self.options.clock() - self._start
        cost = projected = None
        prices = self.options.prices
        if prices is not None:
            cost = prices.cost(
                prompt_tokens=made.prompt_tokens, completion_tokens=made.tokens, seconds=elapsed, gpus=self.gpus
            )
            if made.passages:
                projected = cost * (self.total - self.reused) / made.passages
        return ProgressSnapshot(
            total=self.total,
            done=self.reused + made.passages,
            reused=self.reused,
            candidates=made.candidates,
            failed=made.failed,
            tokens=made.tokens,
            prompt_tokens=made.prompt_tokens,
            elapsed=elapsed,
            shards_done=self.shards_done,
            shards_total=self.shards,
            cost=cost,
            projected_cost=projected,
        )

    def _show(self, passages: int) -> None:
        """Move the bar on, or log a line when `interval` seconds have passed since the last one."""
        snapshot = self.snapshot()
        if self._bar is not None:
            self._bar.update(passages)
            cost = f", cost {snapshot.cost:,.2f}" if snapshot.cost is not None else ""
            rate = f", {snapshot.tokens_per_second:,.0f} tokens/s" if snapshot.tokens_per_second else ""
            self._bar.set_postfix_str(f"{snapshot.candidates:,} candidates, {snapshot.failed} failed{rate}{cost}")
            return
        now = self.options.clock()
        if now - self._last_line >= self.options.interval:
            self._last_line = now
            logger.info(snapshot.line())


_ACTIVE: RunProgress | None = None


def report_batch(batch: BatchFigures) -> bool:
    """Hand a map batch's figures to the run's view open in this process; False where there is none (a map called
    outside a build, or a worker process, which its shard's figures count once finished)."""
    view = _ACTIVE
    if view is None or view._pid != os.getpid():
        return False
    view.add_batch(batch)
    return True


def _plus(a: BatchFigures, b: BatchFigures) -> BatchFigures:
    return BatchFigures(*(x + y for x, y in zip(dataclasses.astuple(a), dataclasses.astuple(b))))
