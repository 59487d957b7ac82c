"""Run `genstruct-datasets` in a subprocess with test instruments: a folder-backed Hub, a log of generator calls.

    python tests/cli_driver.py [--hub ROOT] [--calls FILE] [--pause-at TITLE --paused FILE] [--ray]
        [--write-group N] [--chunks FILE [--pause-after-chunks N --paused FILE]] run SOURCE ...

``--hub`` serves the Hub's repositories from folders under ROOT (`hub_fake.FolderHub`); ``--calls`` appends the
title of every passage the generator is called on to FILE, a line each, as the calls happen, so that a run
killed midway still shows what it generated. ``--pause-at`` stops the run when the generator is called on the
passage TITLE, before it generates: it writes the file ``--paused`` and waits there to be killed, so that a test
kills it at a known point (with a shard a passage, after the shards of the passages before TITLE). ``--ray``
starts a local Ray of one CPU (one shard task at a time) whose workers, where the generator runs with ``--executor
ray``, get the same instruments (`worker_faults`).

``--write-group`` sets how many finished passages the batch checkpoint writes together (`generate.WRITE_GROUP`).
``--chunks`` appends the passage ids of each sub-batch that transformers' static engine generates to FILE, a line
per sub-batch, as they are generated; ``--pause-after-chunks N`` holds the run still once the Nth sub-batch is
generated, before the engine reports it (a sub-batch in flight), writing ``--paused``, until the test kills it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import worker_faults
from hub_fake import FolderHub

from genstruct_datasets import GenstructGenerator, generate
from genstruct_datasets.cli import main


def log_generator_calls(path: Path) -> None:
    real_call = GenstructGenerator.__call__

    def call(self, batch, rank=None):
        with path.open("a") as log:
            log.writelines(f"{title}\n" for title in batch["title"])
        return real_call(self, batch, rank)

    GenstructGenerator.__call__ = call


def pause_at(title: str, paused: Path) -> None:
    real_call = GenstructGenerator.__call__

    def call(self, batch, rank=None):
        if title in batch["title"]:
            paused.write_text(title)
            while True:  # until the test kills the run
                time.sleep(60)
        return real_call(self, batch, rank)

    GenstructGenerator.__call__ = call


def log_chunks(path: Path, pause_after: int | None, paused: Path | None) -> None:
    from genstruct_datasets.engines import TransformersEngine

    real_chunk = TransformersEngine._generate_chunk
    generated = []

    def generate_chunk(self, loaded, tokenizer, generation_config, requests, chunk, decoding):
        new_tokens = real_chunk(self, loaded, tokenizer, generation_config, requests, chunk, decoding)
        with path.open("a") as log:
            log.write(" ".join(requests[i].passage_id for i in chunk) + "\n")
        generated.append(chunk)
        if len(generated) == pause_after:
            paused.write_text(str(len(generated)))
            while True:  # until the test kills the run
                time.sleep(60)
        return new_tokens

    TransformersEngine._generate_chunk = generate_chunk


def start_ray(calls: Path | None, pause_at: str | None, paused: Path | None) -> None:
    """A local Ray whose workers log and pause the generator as this process would (see `worker_faults`)."""
    import ray

    instruments = {"calls": calls} if calls else {}
    if pause_at:
        instruments |= {"pause_at": pause_at, "paused": paused}
    if instruments:  # beside the files the test reads, so that they go with its folder
        faults = Path(instruments.get("paused") or calls).with_suffix(".faults.json")
        worker_faults.write(faults, **instruments)
        # The workers inherit this process's environment: the faults file, and this folder to import from.
        os.environ[worker_faults.FAULTS] = str(faults)
    paths = [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    ray.init(num_cpus=1, include_dashboard=False, runtime_env={"worker_process_setup_hook": "worker_faults.install"})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--hub", type=Path)
    parser.add_argument("--calls", type=Path)
    parser.add_argument("--pause-at")
    parser.add_argument("--paused", type=Path)
    parser.add_argument("--ray", action="store_true")
    parser.add_argument("--write-group", type=int)
    parser.add_argument("--chunks", type=Path)
    parser.add_argument("--pause-after-chunks", type=int)
    options, command = parser.parse_known_args()
    if options.ray:
        start_ray(options.calls, options.pause_at, options.paused)
    if options.hub:
        FolderHub(options.hub).install(setattr)
    if options.calls:
        log_generator_calls(options.calls)
    if options.pause_at:
        pause_at(options.pause_at, options.paused)
    if options.write_group:
        generate.WRITE_GROUP = options.write_group
    if options.chunks:
        log_chunks(options.chunks, options.pause_after_chunks, options.paused)
    sys.exit(main(command))
