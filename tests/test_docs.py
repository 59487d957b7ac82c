"""Every ```python block of README.md and docs/*.md runs as written, each in a fresh Python, offline.

The blocks name the real models and datasets (NousResearch/Genstruct-7B, the default reward model,
wikimedia/wikipedia); the test puts tiny stand-ins under those names in a Hugging Face cache of its own
(`HF_HOME`), so that a block takes the path a user's code takes: a Hub id resolved from the local cache. The Hub's
repositories are folders (`hub_fake.FolderHub`, logged in with a dummy token), the OpenAI-compatible server of
the engine examples is `completion_server.FlakyServer` on 127.0.0.1:8000, and the files a block reads
(`passages.jsonl`, `notes/`, `evals/my_bench.jsonl`) are in its working folder.

A block that cannot run here has ``<!-- docs-test: skip (why) -->`` on the line above its fence; a block that
needs vLLM, Ray or bitsandbytes gets the marker of its extra, and is skipped where that is not installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import completion_server
import pytest

from genstruct_datasets.generate import DEFAULT_GENERATOR
from genstruct_datasets.score import DEFAULT_REWARD_MODEL

ROOT = Path(__file__).parent.parent
TESTS = Path(__file__).parent
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = re.compile(r"<!-- docs-test: skip \((?P<why>.+)\) -->")
BLOCK_TIMEOUT = 300
"""Seconds a block may take, from its start: the slowest (a whole run, then publishing) takes about 20 s here."""
SERVER = "http://127.0.0.1:8000/v1"
"""The OpenAI-compatible server the engine examples send their prompts to."""
NEEDS = {"vllm": 'backend="vllm"', "quantization": 'quantization="', "ray": "RayExecutor("}
"""Marker: what in a block needs that marker's extra (see conftest.py)."""
WIKIPEDIA = ("wikimedia/wikipedia", "20231101.en")
"""The Hub dataset the corpus examples read: a two-article stand-in in the test's `datasets` cache."""
# Run the block as a script, the Hub's repositories being folders under the first argument.
DRIVER = """
import runpy, sys
from hub_fake import FolderHub
FolderHub(sys.argv[1]).install(setattr)
runpy.run_path(sys.argv[2], run_name="__main__")
"""


@dataclass
class Block:
    """A ```python block: where it is, its code, and why it is not run (None: it is run)."""

    file: Path
    line: int
    code: str
    skip: str | None

    @property
    def name(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    """The ```python blocks of a markdown file, with the skip marker of the line above each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, start = [], None
    for number, line in enumerate(lines, start=1):
        if start is None and line.strip() == "```python":
            start = number
        elif start is not None and line.strip() == "```":
            marker = SKIP.fullmatch(lines[start - 2].strip()) if start > 1 else None
            code = "\n".join(lines[start : number - 1]) + "\n"
            blocks.append(Block(path, start, code, marker and marker.group("why")))
            start = None
    return blocks


BLOCKS = [block for path in MARKDOWN for block in python_blocks(path)]


def params() -> list:
    cases = []
    for block in BLOCKS:
        marks = [getattr(pytest.mark, marker) for marker, needle in NEEDS.items() if needle in block.code]
        if block.skip:
            marks.append(pytest.mark.skip(reason=block.skip))
        cases.append(pytest.param(block, id=block.name, marks=marks))
    return cases


def snapshot(hub_cache: Path, repo_id: str, folder: str, kind: str = "models") -> Path:
    """Put `folder` in the Hub cache as the `main` of `repo_id`, as a download leaves it (snapshot and ref)."""
    repo = hub_cache / f"{kind}--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(f"tiny {repo_id}".encode()).hexdigest()
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


def cache_hub_dataset(datasets_cache: Path, repo_id: str, name: str, rows: list[dict], scratch: Path) -> None:
    """Prepare `rows` in the `datasets` cache as `load_dataset(repo_id, name)` leaves a Hub dataset there, so that
    it loads offline ("Using the latest cached version of the dataset"), streamed or not."""
    from datasets import Dataset
    from datasets.packaged_modules.parquet.parquet import Parquet

    Dataset.from_list(rows).to_parquet(scratch / "train.parquet")
    namespace, dataset = repo_id.split("/")
    staging = scratch / "staging"
    builder = Parquet(
        cache_dir=str(staging),
        dataset_name=dataset,
        config_name=name,
        config_id=name,
        hash=hashlib.sha1(f"tiny {repo_id}".encode()).hexdigest(),
        data_files={"train": str(scratch / "train.parquet")},
    )
    builder.download_and_prepare()
    # The builder has no repo_id (its files are not the repository's), so its folder lacks the namespace.
    shutil.copytree(staging / dataset, datasets_cache / f"{namespace}___{dataset}")


@pytest.fixture(scope="session")
def docs_home(tmp_path_factory, taught_generator, tiny_reward_model) -> Path:
    """A Hugging Face home whose caches hold the names the docs use: Genstruct-7B (the taught generator), the
    default reward model, and two Wikipedia articles."""
    home = tmp_path_factory.mktemp("docs-hf-home")  # hub/ (models) and datasets/ (the Hub dataset)
    snapshot(home / "hub", DEFAULT_GENERATOR, taught_generator)
    snapshot(home / "hub", DEFAULT_REWARD_MODEL, tiny_reward_model)
    articles = [
        {"id": "1", "url": "https://en.wikipedia.org/wiki/Moon", "title": "Moon",
         "text": (TESTS / "data" / "moon_wikipedia.txt").read_text()},
        {"id": "2", "url": "https://en.wikipedia.org/wiki/Tea", "title": "Tea",
         "text": "Tea is an aromatic beverage prepared by pouring hot water over cured leaves.\n\n"
                 "After plain water, tea is the most widely consumed drink in the world."},
    ]  # fmt: skip
    cache_hub_dataset(home / "datasets", *WIKIPEDIA, articles, tmp_path_factory.mktemp("wikipedia"))
    return home


def working_folder(path: Path) -> Path:
    """The files the blocks read, as their text describes them."""
    path.mkdir()
    # Three passages of the example corpus: each is a paragraph of a few sentences, longer than min_tokens.
    passages = (ROOT / "examples" / "passages.jsonl").read_text().splitlines(keepends=True)[:3]
    (path / "passages.jsonl").write_text("".join(passages))
    (path / "notes").mkdir()
    shutil.copy(TESTS / "data" / "genstruct_guide.md", path / "notes")
    shutil.copy(TESTS / "data" / "plain_essay.txt", path / "notes")
    (path / "evals").mkdir()
    benchmark = {"question": "What is the Moon?", "answer": "Earth's only natural satellite."}
    (path / "evals" / "my_bench.jsonl").write_text(json.dumps(benchmark) + "\n")
    return path


def run_block(block: Block, home: Path, folder: Path) -> subprocess.CompletedProcess:
    """Run `block` as a script in `folder`, with a Hugging Face home of its own whose Hub cache is `home`'s (the
    models) and whose `datasets` cache starts as a copy of `home`'s (the Hub dataset)."""
    (folder / "block.py").write_text(block.code)
    shutil.copytree(home / "datasets", folder / "hf-home" / "datasets")
    env = {
        **os.environ,
        "HF_HOME": str(folder / "hf-home"),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_DATASETS_CACHE": str(folder / "hf-home" / "datasets"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_TOKEN": "hf_docs_test",  # logged in, to the folder hub
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, "-c", DRIVER, str(folder / "hub"), str(folder / "block.py")],
        cwd=working_folder(folder / "work"),
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
    )


@pytest.fixture(scope="session")
def server():
    """`completion_server.FlakyServer` on 127.0.0.1:8000, the server the engine examples name; None if that port is
    taken."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8000)) == 0:
            yield None
            return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(completion_server, "free_port", lambda: 8000)
        server = completion_server.FlakyServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def block_runs(request, docs_home, server, tmp_path_factory) -> dict[str, Future]:
    """The runs of the blocks this session selected and does not skip, started together two at a time (a block
    keeps about one CPU core busy), by block name."""
    blocks = [
        item.callspec.params["block"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_the_block_runs_as_written"
        and not item.get_closest_marker("skip")
    ]
    blocks = [block for block in blocks if server is not None or SERVER not in block.code]
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {
            block.name: pool.submit(run_block, block, docs_home, tmp_path_factory.mktemp("block")) for block in blocks
        }


def test_the_blocks_are_found_and_each_skip_marker_is_right_above_one():
    assert {path.name for path in MARKDOWN} >= {"README.md", "corpus.md", "publishing.md"}
    assert len(BLOCKS) >= 16 and all(block.code.strip() for block in BLOCKS)
    for path in MARKDOWN:
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if SKIP.fullmatch(line.strip()):
                assert lines[number : number + 1] == ["```python"], f"{path.name}:{number}: no ```python block below"


@pytest.mark.slow
@pytest.mark.parametrize("block", params())
def test_the_block_runs_as_written(block, block_runs, server):
    if SERVER in block.code and server is None:
        pytest.skip("127.0.0.1:8000 is taken, and the block sends its prompts there")
    ran = block_runs[block.name].result()
    assert ran.returncode == 0, f"{block.name} failed:\n{block.code}\n{ran.stderr[-4000:]}"
    if SERVER in block.code:
        assert server.requests, "the block's prompts did not reach the server"
