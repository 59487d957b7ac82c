"""Run `genstruct-datasets` in a subprocess with test instruments: a folder-backed Hub, a log of generator calls.

    python tests/cli_driver.py [--hub ROOT] [--calls FILE] run SOURCE ...

``--hub`` serves the Hub's repositories from folders under ROOT (`hub_fake.FolderHub`); ``--calls`` appends the
title of every passage the generator is called on to FILE, a line each, as the calls happen, so that a run
killed midway still shows what it generated.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hub_fake import FolderHub

from genstruct_datasets import GenstructGenerator
from genstruct_datasets.cli import main


def log_generator_calls(path: Path) -> None:
    real_call = GenstructGenerator.__call__

    def call(self, batch, rank=None):
        with path.open("a") as log:
            log.writelines(f"{title}\n" for title in batch["title"])
        return real_call(self, batch, rank)

    GenstructGenerator.__call__ = call


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--hub", type=Path)
    parser.add_argument("--calls", type=Path)
    options, command = parser.parse_known_args()
    if options.hub:
        FolderHub(options.hub).install(setattr)
    if options.calls:
        log_generator_calls(options.calls)
    sys.exit(main(command))
