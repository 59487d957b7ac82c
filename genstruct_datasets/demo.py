"""`genstruct-datasets demo`: the whole recipe offline on a CPU, with tiny stand-in models, in about a minute.

The models are those of [`genstruct_datasets.testing`]: a tiny Mistral taught to write one fixed pair for any
Genstruct prompt, and a tiny random reward model, both with the real Mistral-7B tokenizer. They are built once per
package version in a per-user folder (``$HF_HOME/genstruct-datasets/demo-models/<version>``) and reused. The run is
the `run` command's own, on the passages that ship with the package (`DEMO_PASSAGES`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from pathlib import Path

from . import __version__
from ._atomic import PARTIAL_SUFFIX, atomic_path
from .errors import MissingDependencyError

logger = logging.getLogger(__name__)

DEMO_PASSAGES = Path(__file__).parent / "data" / "passages.jsonl"
"""Twelve passages (`title`, `content`) that ship with the package, one of them empty to show a passage left out.
`examples/passages.jsonl` is the same file."""

_NEEDS = {"mistral_common": "mistral-common", "sentencepiece": "sentencepiece", "google.protobuf": "protobuf"}
_STALE_BUILD_SECONDS = 3600

GPU_COMMAND = """\
That was a demo, with tiny stand-in models that write one fixed pair for any passage. For real pairs, on a GPU:

  genstruct-datasets run passages.jsonl --output pairs/ --num-samples 4 --seed 0

passages.jsonl: your passages, JSON lines with title and content (as the demo's: {passages}).
The first run downloads {generator} and {reward_model}.
With vLLM installed (pip install "genstruct-datasets[vllm]") the vllm engine is used; --backend vllm asks for it."""


def default_models_dir() -> Path:
    """The per-user folder of the demo's models: ``$HF_HOME/genstruct-datasets/demo-models`` (`HF_HOME` defaults to
    ``~/.cache/huggingface``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "genstruct-datasets" / "demo-models"


def demo_models(models_dir: str | os.PathLike | None = None) -> tuple[str, str]:
    """Return the demo's generator and reward model folders, building them the first time.

    They are built in a temporary folder beside their place and renamed into it when both are saved, so that a
    build that is killed never leaves a half model behind; a build killed more than an hour ago leaves a temporary
    folder that the next build deletes.

    Args:
        models_dir (`str` or `os.PathLike`, *optional*, defaults to [`default_models_dir`]): where the models of each
            package version are kept, in a folder named after the version.

    Returns:
        `tuple[str, str]`: the generator's folder and the reward model's.

    Raises:
        [`MissingDependencyError`]: mistral-common, sentencepiece or protobuf is not installed.

    Example:

    ```py
    >>> generator, reward_model = demo_models()  # doctest: +SKIP
    >>> generator  # doctest: +SKIP
    '/home/me/.cache/huggingface/genstruct-datasets/demo-models/0.1.0/generator'
    ```
    """
    root = Path(models_dir) if models_dir is not None else default_models_dir()
    final = root / __version__
    generator, reward_model = final / "generator", final / "reward"
    if (generator / "config.json").is_file() and (reward_model / "config.json").is_file():
        return str(generator), str(reward_model)
    check_demo_dependencies()
    from .testing import build_taught_generator, build_tiny_reward_model

    root.mkdir(parents=True, exist_ok=True)
    _delete_stale_builds(root)
    started = time.monotonic()
    logger.info("Building the demo's tiny models, once (10 to 30 s), in %s", final)
    try:
        with atomic_path(final) as building:
            build_taught_generator(building / "generator")
            build_tiny_reward_model(building / "reward")
            if final.exists():  # an incomplete folder (files deleted by hand): made anew
                shutil.rmtree(final)
    except OSError:  # another demo built them at the same time and was first: use its models
        if not (generator / "config.json").is_file():
            raise
    logger.info("Built the demo's models in %.0f s; later demos reuse them.", time.monotonic() - started)
    return str(generator), str(reward_model)


def check_demo_dependencies() -> None:
    """Raise `MissingDependencyError`, with the pip command, when a package that the demo's models need is missing.

    Raises:
        [`MissingDependencyError`]: mistral-common (the Mistral tokenizer's file), sentencepiece or protobuf (to read
            it) is not installed.
    """
    missing = [package for module, package in _NEEDS.items() if not _installed(module)]
    if missing:
        raise MissingDependencyError(
            f"the demo builds its tiny models with the Mistral tokenizer of mistral-common, and {', '.join(missing)} "
            "is not installed: pip install 'genstruct-datasets[demo]'"
        )


def run_demo(
    output: str | os.PathLike = "genstruct-demo",
    *,
    models_dir: str | os.PathLike | None = None,
    num_samples: int = 2,
    max_new_tokens: int = 32,
    seed: int = 0,
    overwrite: bool = False,
) -> int:
    """Run `genstruct-datasets run` offline on the packaged passages with tiny models, and print the command for a GPU.

    The recipe is the `run` command's own (passages, generation, parsing, scoring, best-of-n, the dataset card with
    its quality figures), with the generator and reward model of [`demo_models`] on the transformers engine. The
    summary and the command to run for real pairs on a GPU are printed on stdout.

    Args:
        output (`str` or `os.PathLike`, *optional*, defaults to `"genstruct-demo"`): the dataset folder to write.
            An earlier output of this package (a demo's or a run's) is replaced; a non-empty folder of anything else
            is refused before the models are built.
        models_dir (`str` or `os.PathLike`, *optional*, defaults to [`default_models_dir`]): where the tiny models are
            kept.
        num_samples (`int`, *optional*, defaults to 2): completions per passage.
        max_new_tokens (`int`, *optional*, defaults to 32): cap on each completion; the taught pair takes 24
            (EOS included).
        seed (`int`, *optional*, defaults to 0): the sampling seed.
        overwrite (`bool`, *optional*, defaults to `False`): write into a non-empty folder that this package did not
            write (its other files are kept).

    Returns:
        `int`: 0, the exit status of `run` when it is done.

    Raises:
        [`OutputExistsError`]: `output` is a non-empty folder that this package did not write, without `overwrite`.
        [`MissingDependencyError`]: the models are not built yet and mistral-common, sentencepiece or protobuf is
            missing.
        [`NothingKeptError`]: no pair was kept (a demo model that no longer writes its pair).

    Example:

    ```py
    >>> from datasets import load_dataset
    >>> run_demo("genstruct-demo")  # doctest: +SKIP
    passages: 11, candidates: 22, parsed: 22, kept: 11
    ...
    >>> load_dataset("genstruct-demo", split="train").num_rows  # doctest: +SKIP
    11
    ```
    """
    from .generate import DEFAULT_GENERATOR
    from .publish import check_output_folder
    from .run import check_writable, run_recipe
    from .score import DEFAULT_REWARD_MODEL
    from .testing import one_torch_thread

    output = str(output)
    check_output_folder(output, overwrite=overwrite)  # before the models are built: a refusal costs nothing
    check_writable(output)
    with one_torch_thread():
        generator, reward_model = demo_models(models_dir)
        recipe = {
            "source": str(DEMO_PASSAGES),
            "model": generator,
            "reward_model": reward_model,
            "backend": "transformers",
            "num_samples": num_samples,
            "max_new_tokens": max_new_tokens,
            "seed": seed,
        }
        result = run_recipe(recipe, output=output, overwrite=overwrite)
    print(result.summary())
    print()
    print(GPU_COMMAND.format(passages=DEMO_PASSAGES, generator=DEFAULT_GENERATOR, reward_model=DEFAULT_REWARD_MODEL))
    return 0


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package (google, of google.protobuf)
        return False


def _delete_stale_builds(root: Path) -> None:
    """Delete the temporary folders of builds that were killed (older than an hour: not a build running now)."""
    for folder in root.glob(f".*{PARTIAL_SUFFIX}"):
        if time.time() - folder.stat().st_mtime > _STALE_BUILD_SECONDS:
            shutil.rmtree(folder, ignore_errors=True)
