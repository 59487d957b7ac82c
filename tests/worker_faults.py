"""Probes and faults for the generator in other processes (Ray workers), which a test's monkeypatch cannot reach.

A process that ran `install` (a Ray worker, through ``runtime_env={"worker_process_setup_hook":
"worker_faults.install"}``, with this folder on `PYTHONPATH`) reads, at each generator call, the JSON file named by
`GENSTRUCT_TEST_FAULTS`, when it exists; the test writes it, so that one Ray serves several tests:

- ``{"calls": FILE}``: append the title of each passage the generator is called on to FILE, a line each;
- ``{"raise_at": TITLE}``: raise ``OSError("No space left on device")`` when called on TITLE (a full disk);
- ``{"die_once_at": TITLE, "died": FILE}``: end the process (``os._exit``, as a killed worker or a lost node) the
  first time the generator is called on TITLE, leaving FILE so that the next attempt goes on;
- ``{"pause_at": TITLE, "paused": FILE}``: write FILE and wait to be killed, when called on TITLE.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

FAULTS = "GENSTRUCT_TEST_FAULTS"


def write(path: Path, **faults: str | Path) -> None:
    """Set the faults of every process that reads `path` (see the module's docstring); none: delete the file."""
    if not faults:
        path.unlink(missing_ok=True)
        return
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({name: str(value) for name, value in faults.items()}))
    os.replace(partial, path)


def install() -> None:
    """Wrap the generator's call in this process with the faults of the file named by `GENSTRUCT_TEST_FAULTS`."""
    from genstruct_datasets import GenstructGenerator

    real_call = GenstructGenerator.__call__

    def call(self, batch, rank=None):
        faults = _read()
        titles = batch["title"]
        if "calls" in faults:
            with open(faults["calls"], "a") as log:
                log.writelines(f"{title}\n" for title in titles)
        if faults.get("raise_at") in titles:
            raise OSError("No space left on device")
        if faults.get("die_once_at") in titles and not Path(faults["died"]).exists():
            Path(faults["died"]).write_text(str(os.getpid()))
            os._exit(1)
        if faults.get("pause_at") in titles:
            Path(faults["paused"]).write_text(str(os.getpid()))
            while True:  # until the test kills the run
                time.sleep(60)
        return real_call(self, batch, rank)

    GenstructGenerator.__call__ = call


def _read() -> dict[str, str]:
    path = os.environ.get(FAULTS)
    try:
        return json.loads(Path(path).read_text()) if path else {}
    except FileNotFoundError:
        return {}
