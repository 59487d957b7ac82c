"""Probes and faults for the generator in other processes (Ray workers), which a test's monkeypatch cannot reach.

A process that ran `install` (a Ray worker, through ``runtime_env={"worker_process_setup_hook":
"worker_faults.install"}``, with this folder on `PYTHONPATH`) reads, at each generator call, the JSON file named by
`GENSTRUCT_TEST_FAULTS`, when it exists; the test writes it, so that one Ray serves several tests:

- ``{"calls": FILE}``: append the title of each passage the generator is called on to FILE, a line each;
- ``{"raise_at": TITLE}``: raise ``OSError("No space left on device")`` when called on TITLE (a full disk);
- ``{"die_once_at": TITLE, "died": FILE}``: end the process (``os._exit``, as a killed worker or a lost node) the
  first time the generator is called on TITLE, leaving FILE so that the next attempt goes on;
- ``{"pause_at": TITLE, "paused": FILE}``: write FILE and wait to be killed, when called on TITLE;
- ``{"nodes": FILE}``: append ``TITLE NODE_ID PID`` to FILE for each passage: the Ray node and the process of the call;
- ``{"meet": FOLDER, "meet_count": N}``: wait, at each call, until N calls are in FOLDER at once (so that N shards are
  built side by side; a `TimeoutError` after a minute says they were not);
- ``{"kill_raylet": PID, "killed": FILE}``: in a worker of the Ray node whose raylet is PID (the worker's parent),
  the first time the generator is called there: SIGKILL the raylet, which takes its node down, leave FILE, and end.

A process whose environment names a folder in `GENSTRUCT_TEST_HUB` also serves the Hub from it (`hub_fake.FolderHub`),
as the test process does: the Ray workers of a test's cluster upload their shards to the same fake Hub.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

FAULTS = "GENSTRUCT_TEST_FAULTS"
HUB = "GENSTRUCT_TEST_HUB"


def write(path: Path, **faults: str | Path) -> None:
    """Set the faults of every process that reads `path` (see the module's docstring); none: delete the file."""
    if not faults:
        path.unlink(missing_ok=True)
        return
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({name: str(value) for name, value in faults.items()}))
    os.replace(partial, path)


def install() -> None:
    """Wrap the generator's call in this process with the faults of the file named by `GENSTRUCT_TEST_FAULTS`; serve
    the Hub from the folder named by `GENSTRUCT_TEST_HUB`, if any."""
    from genstruct_datasets import GenstructGenerator

    if os.environ.get(HUB):
        from hub_fake import FolderHub

        FolderHub(Path(os.environ[HUB])).install(setattr)

    real_call = GenstructGenerator.__call__

    def call(self, batch, rank=None):
        faults = _read()
        titles = batch["title"]
        if "calls" in faults:
            with open(faults["calls"], "a") as log:
                log.writelines(f"{title}\n" for title in titles)
        if "nodes" in faults:
            import ray

            node = ray.get_runtime_context().get_node_id()
            with open(faults["nodes"], "a") as log:
                log.writelines(f"{title} {node} {os.getpid()}\n" for title in titles)
        if "meet" in faults:
            _meet(Path(faults["meet"]), int(faults["meet_count"]))
        if faults.get("kill_raylet") == str(os.getppid()) and not Path(faults["killed"]).exists():
            Path(faults["killed"]).write_text(str(os.getpid()))
            os.kill(os.getppid(), signal.SIGKILL)
            os._exit(1)
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


def _meet(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(list(folder.iterdir())) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(list(folder.iterdir()))} of {count} shards were built side by side")
        time.sleep(0.05)


def _read() -> dict[str, str]:
    path = os.environ.get(FAULTS)
    try:
        return json.loads(Path(path).read_text()) if path else {}
    except FileNotFoundError:
        return {}
