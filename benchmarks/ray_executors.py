"""The Ray executor against the local one, and the two Ray designs against each other, on the same corpus.

In one run, on the same passages (the example paragraphs, mixed lengths), with the tiny taught models of
`genstruct_datasets.testing` (a Mistral that writes one fixed pair, a one-label reward model), it times:

- **local**: `run_recipe(..., executor="local")`, every shard in this process, one after the other;
- **Ray, a task per shard** (`RayExecutor`, what the package ships): `run_recipe(..., executor=RayExecutor())`
  from a process without Ray, so with the start of a local Ray (``ray.init``, timed alone too), the workers' start
  and their model loads;
- **Ray Data** (a prototype, not in the package): ``ray.data.from_items(passages)`` through
  ``map_batches(Generate, concurrency=...)`` (an actor pool holding the generator), ``map_batches(parse_pairs)`` and
  ``map_batches(Score, ...)`` (an actor pool holding the reward model), streaming, so that scoring runs on its own
  resources while generation runs on others; the rows are written as parquet, as the shards are;
- **Ray's overhead alone**: the local executor with one torch thread against the Ray executor on a local Ray of one
  CPU (one worker of one thread, a shard at a time), start-up, workers' start and model loads included, so that
  parallelism does not hide what Ray costs.

Each build has a cache folder of its own, so nothing is read back from another's cache, and loads its models
anew. The Ray runs get the
machine's CPUs (``--num-cpus``); Ray gives each worker one thread per CPU it holds (`OMP_NUM_THREADS`).

    python benchmarks/ray_executors.py                  # 200 passages, shards of 25
    python benchmarks/ray_executors.py --passages 400 --shard-size 50

It prints a table and writes JSON (``--output``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import result_json
from workload import passages

from genstruct_datasets import (
    GenstructGenerator,
    RayExecutor,
    RewardScorer,
    RunOptions,
    clear_model_cache,
    parse_pairs,
    run_recipe,
    testing,
)


def corpus(folder: Path, count: int) -> Path:
    """`count` passages of mixed lengths, made unique by their number (else best-of-n would merge repeats)."""
    data = passages(count)
    path = folder / "passages.jsonl"
    rows = [{"title": f"{t} ({i})", "content": c} for i, (t, c) in enumerate(zip(data["title"], data["content"]))]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def build(source: Path, recipe: dict, cache_dir: Path, executor) -> int:
    """One build with `executor`, its models loaded anew (as in a fresh process); the number of candidates."""
    clear_model_cache()
    result = run_recipe({"source": str(source), **recipe}, RunOptions(cache_dir=str(cache_dir), executor=executor))
    return result.candidates.num_rows


class Generate:
    """Ray Data's generation actor: the generator, its model loaded once per actor."""

    def __init__(self, settings: dict) -> None:
        self.generator = GenstructGenerator(**settings)

    def __call__(self, batch: dict) -> dict:
        return self.generator({name: list(values) for name, values in batch.items()})


class Score:
    """Ray Data's scoring actor: the reward model, loaded once per actor."""

    def __init__(self, model: str) -> None:
        self.scorer = RewardScorer(model)

    def __call__(self, batch: dict) -> dict:
        return self.scorer({name: list(values) for name, values in batch.items()})


def parse(batch: dict) -> dict:
    return parse_pairs({name: list(values) for name, values in batch.items()})


def ray_data(source: Path, recipe: dict, folder: Path, shard_size: int, generators: int) -> int:
    """The Ray Data design: actor pools for the two models, streaming; the number of candidates written."""
    import ray

    def pool(size: int):
        return ray.data.ActorPoolStrategy(size=size)

    rows = [json.loads(line) for line in source.read_text().splitlines()]
    generation = {
        "model": recipe["model"],
        "num_samples": recipe["num_samples"],
        "max_new_tokens": recipe["max_new_tokens"],
        "seed": recipe["seed"],
    }
    candidates = (
        ray.data.from_items(rows)
        .map_batches(Generate, fn_constructor_args=(generation,), batch_size=shard_size, compute=pool(generators))
        .map_batches(parse, batch_size=shard_size)
        .map_batches(Score, fn_constructor_args=(recipe["reward_model"],), batch_size=shard_size, compute=pool(1))
    )
    candidates.write_parquet(str(folder))
    return ray.data.read_parquet(str(folder)).count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=200)
    parser.add_argument("--shard-size", type=int, default=25)
    parser.add_argument("--num-samples", type=int, default=2)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray")
    parser.add_argument(
        "--generators", type=int, default=1, help="Ray Data: generation actors (the scoring actor takes a CPU too)"
    )
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "ray-executors-cpu.json"))
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="genstruct-bench-ray-"))
    source = corpus(folder, args.passages)
    recipe = {
        "model": testing.build_taught_generator(folder / "generator"),
        "reward_model": testing.build_tiny_reward_model(folder / "reward"),
        "split_documents": False,
        "text_column": "content",
        "num_samples": args.num_samples,
        "max_new_tokens": 32,
        "seed": 0,
        "shard_size": args.shard_size,
    }
    rows = []

    def add(name: str, seconds: float, candidates: int | None, **extra) -> None:
        rows.append({"name": name, "seconds": seconds, "candidates": candidates, **extra})

    import ray
    import torch

    threads = torch.get_num_threads()
    start = time.perf_counter()
    candidates = build(source, recipe, folder / "local", "local")
    local = time.perf_counter() - start
    add(f"local executor ({threads} torch threads)", local, candidates)

    # What Ray does with the same CPUs: a worker process per CPU, each with one thread.
    executor = RayExecutor(init_options={"num_cpus": args.num_cpus, "include_dashboard": False})
    start = time.perf_counter()
    executor.connect()
    startup = time.perf_counter() - start
    candidates = build(source, recipe, folder / "ray-tasks", executor)
    tasks = time.perf_counter() - start
    add("Ray: start-up alone (ray.init, local)", startup, None)
    add(f"Ray: a task per shard, {args.num_cpus} CPUs, start-up included", tasks, candidates, vs_local=tasks / local)
    add(f"Ray: a task per shard, {args.num_cpus} CPUs, after start-up", tasks - startup, candidates,
        vs_local=(tasks - startup) / local)  # fmt: skip

    start = time.perf_counter()
    candidates = ray_data(source, recipe, folder / "ray-data", args.shard_size, args.generators)
    data = time.perf_counter() - start
    add("Ray Data: actor pools, streaming, after start-up", data, candidates, vs_local=data / local)
    add("Ray Data: with the same start-up", data + startup, candidates, vs_local=(data + startup) / local)
    ray.shutdown()

    # Ray's own cost, parallelism aside: one worker of one thread against this process with one thread.
    torch.set_num_threads(1)
    start = time.perf_counter()
    candidates = build(source, recipe, folder / "local-1", "local")
    single = time.perf_counter() - start
    add("local executor (1 torch thread)", single, candidates)
    torch.set_num_threads(threads)
    start = time.perf_counter()
    RayExecutor(init_options={"num_cpus": 1, "include_dashboard": False}).connect()
    startup = time.perf_counter() - start
    candidates = build(source, recipe, folder / "ray-tasks-1", RayExecutor())
    tasks = time.perf_counter() - start
    add("Ray: start-up alone, again", startup, None)
    add("Ray: a task per shard, 1 CPU, start-up included", tasks, candidates, vs_local_1=tasks / single)

    print(f"{'run':<56} {'candidates':>10} {'s':>8} {'vs local':>9} {'vs local, 1 thread':>18}")
    for row in rows:
        ratio = f"{row['vs_local']:.2f}" if "vs_local" in row else ""
        single_ratio = f"{row['vs_local_1']:.2f}" if "vs_local_1" in row else ""
        print(f"{row['name']:<56} {row['candidates'] or '':>10} {row['seconds']:>8.2f} {ratio:>9} {single_ratio:>18}")
    result = {
        "machine": result_json.machine(ray=ray.__version__, ray_cpus=args.num_cpus, torch_threads=threads),
        "settings": {
            "models": "testing.build_taught_generator, testing.build_tiny_reward_model",
            "passages": args.passages,
            "shard_size": args.shard_size,
            "num_samples": args.num_samples,
            "max_new_tokens": recipe["max_new_tokens"],
            "ray_data_generators": args.generators,
        },
        "rows": rows,
    }
    result_json.write(args.output, result)
    ray.shutdown()


if __name__ == "__main__":
    main()
