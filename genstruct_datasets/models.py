"""Load models lazily, once per process and device, outside any pickled state.

`datasets` pickles and hashes map callables to fingerprint their results. The callables of this
package therefore hold settings only; the models they use live in the process-wide cache of this
module, keyed by everything that changes what is loaded.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ._paths import is_local_path, looks_local
from .errors import InvalidConfigError, MissingDependencyError, ModelNotFoundError, ModelUnreachableError

logger = logging.getLogger(__name__)

Quantization = Literal["8bit", "4bit"]
QUANTIZATIONS = ("8bit", "4bit")

HUB_PROBE_TIMEOUT = 3.0
"""Seconds [`check_model_reachable`] waits for the Hub to answer about a model that is not in the local cache."""

_CACHE: dict[tuple, Any] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class LoadedModel:
    """A model and its tokenizer, placed on one device, and what its users learnt about it in this process.

    `state` holds such lessons, e.g. the largest sub-batch that fits in memory: it lives and dies with the model.
    """

    model: Any
    tokenizer: Any
    device: Any
    state: dict = field(default_factory=dict, compare=False)


def resolve_device(device: str | None, rank: int | None = None) -> str:
    """Pick the device a model runs on.

    Args:
        device (`str`, *optional*): an explicit device (``"cpu"``, ``"cuda:1"``); wins when given.
        rank (`int`, *optional*): the worker rank that `Dataset.map(..., with_rank=True)` passes.

    Returns:
        `str`: ``"cuda:{(LOCAL_RANK + rank) % n}"`` with n visible GPUs, where `LOCAL_RANK` is set by
        `torchrun` / `accelerate launch` (0 otherwise) and `rank` defaults to 0; else ``"cpu"``.

    Example:

    ```py
    >>> resolve_device("cpu", rank=3)
    'cpu'
    ```
    """
    if device is not None:
        return device
    import torch

    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        return f"cuda:{(local_rank + (rank or 0)) % torch.cuda.device_count()}"
    return "cpu"


def distributed_node() -> tuple[int, int]:
    """(rank, world size) of this process under `torchrun` / `accelerate launch`, from `RANK` and `WORLD_SIZE`; (0, 1)
    otherwise.

    Example:

    ```py
    >>> distributed_node()  # a plain `python` process
    (0, 1)
    ```
    """
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def validate_quantization(quantization: str | None) -> None:
    """Raise `InvalidConfigError` for a quantization other than None, ``"8bit"`` or ``"4bit"``."""
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise InvalidConfigError(
            f"quantization={quantization!r} is not supported; use one of {QUANTIZATIONS} or None (no quantization)."
        )


def _quantization_config(quantization: str | None, dtype: Any) -> Any:
    if quantization is None:
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        logger.debug("bitsandbytes does not import: %r", err)
        raise MissingDependencyError(
            f"quantization={quantization!r} needs bitsandbytes: pip install 'genstruct-datasets[quantization]'"
        ) from None
    import torch
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute_dtype = dtype if isinstance(dtype, torch.dtype) else torch.bfloat16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype)


def _torch_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        return "auto"
    try:
        resolved = getattr(torch, dtype)
    except AttributeError:
        resolved = None
    if not isinstance(resolved, torch.dtype):
        raise InvalidConfigError(
            f"dtype={dtype!r} is not a torch dtype; use 'auto', 'bfloat16', 'float16' or 'float32'."
        )
    if device == "cpu" and resolved is torch.float16:
        logger.warning("dtype='float16' is slow and imprecise on the CPU; 'float32' or 'bfloat16' are better there.")
    return resolved


def load_model(
    kind: Literal["causal_lm", "sequence_classification"],
    name: str,
    *,
    revision: str | None = None,
    quantization: str | None = None,
    dtype: str = "auto",
    device: str = "cpu",
) -> LoadedModel:
    """Load a model and its tokenizer once per process and device, and return the cached pair.

    Args:
        kind (`str`): ``"causal_lm"`` for a generator, ``"sequence_classification"`` for a reward model.
        name (`str`): a Hub model id or a local folder.
        revision (`str`, *optional*): branch, tag or commit of the model on the Hub.
        quantization (`str`, *optional*): ``"8bit"`` or ``"4bit"`` through bitsandbytes.
        dtype (`str`, *optional*, defaults to `"auto"`): the weights' dtype; ``"auto"`` keeps the checkpoint's.
        device (`str`, *optional*, defaults to `"cpu"`): where the model is placed (by accelerate).

    Returns:
        [`LoadedModel`]: the model in eval mode, its tokenizer and the device of its inputs.

    Raises:
        [`InvalidConfigError`]: an unknown quantization or dtype.
        [`MissingDependencyError`]: quantization without bitsandbytes installed.

    Example:

    ```py
    >>> loaded = load_model("causal_lm", "NousResearch/Genstruct-7B", device="cuda:0")  # doctest: +SKIP
    >>> loaded is load_model("causal_lm", "NousResearch/Genstruct-7B", device="cuda:0")  # doctest: +SKIP
    True
    ```
    """
    validate_quantization(quantization)
    key = (kind, name, revision, quantization, dtype, device)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load(kind, name, revision=revision, quantization=quantization, dtype=dtype, device=device)
        return _CACHE[key]


def _load(kind: str, name: str, *, revision: str | None, quantization: str | None, dtype: str, device: str):
    check_model_path(name)
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    torch_dtype = _torch_dtype(dtype, device)
    auto_class = AutoModelForCausalLM if kind == "causal_lm" else AutoModelForSequenceClassification
    logger.info("Loading %s (revision %s, quantization %s) on %s", name, revision or "main", quantization, device)
    setting = "model" if kind == "causal_lm" else "reward_model"
    tokenizer = _from_pretrained(AutoTokenizer, name, revision, setting)
    model = auto_class.from_pretrained(
        name,
        revision=revision,
        dtype=torch_dtype,
        quantization_config=_quantization_config(quantization, torch_dtype),
        device_map={"": device},
    )
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, device=torch.device(device))


def load_tokenizer(name: str, *, revision: str | None = None) -> Any:
    """Load a tokenizer once per process and return the cached one.

    Args:
        name (`str`): a Hub model id or a local folder.
        revision (`str`, *optional*): branch, tag or commit of the model on the Hub.

    Returns:
        `transformers.PreTrainedTokenizerBase`: the tokenizer.
    """
    key = ("tokenizer", name, revision)
    with _LOCK:
        if key not in _CACHE:
            check_model_path(name, tokenizer_only=True)
            from transformers import AutoTokenizer

            _CACHE[key] = _from_pretrained(AutoTokenizer, name, revision, "model")
        return _CACHE[key]


def _from_pretrained(auto_class: Any, name: str, revision: str | None, setting: str) -> Any:
    """`auto_class.from_pretrained`, where a model that cannot be had now (offline, never downloaded) is one
    [`ModelUnreachableError`] that names the ways out and the setting (`setting`) to change, rather than transformers'
    chained connection errors (kept in a DEBUG log line)."""
    try:
        return auto_class.from_pretrained(name, revision=revision)
    except OSError as err:
        failure = err
    try:
        check_model_reachable(name, revision=revision, setting=setting)
    except ModelNotFoundError as unreachable:
        logger.debug("Loading %s failed: %r", name, failure)
        raise unreachable from None
    raise failure


def check_model_path(name: str, *, tokenizer_only: bool = False) -> None:
    """Check that a model given as a local folder is there and holds a saved model; a Hub id passes unchecked.

    Without this, transformers takes a missing folder for a malformed Hub id ("Repo id must be in the form...")
    and an empty folder for a tokenizer that needs sentencepiece.

    Args:
        name (`str`): a Hub model id or a local folder.
        tokenizer_only (`bool`, *optional*, defaults to `False`): only a tokenizer is loaded from it (the
            tokenizer of a model that a server runs): its tokenizer files suffice.

    Raises:
        [`ModelNotFoundError`]: `name` is a local path (see `looks_local`) that does not exist, a file, or a
            folder with neither a ``config.json`` nor (with `tokenizer_only`) tokenizer files.

    Example:

    ```py
    >>> check_model_path("NousResearch/Genstruct-7B")  # a Hub id: nothing to check here
    >>> check_model_path("./no-such-folder")
    Traceback (most recent call last):
    ModelNotFoundError: model folder './no-such-folder' does not exist; check the path, or use a Hub model id.
    ```
    """
    path = Path(name)
    hint = "point it at a folder written by save_pretrained, or use a Hub model id such as NousResearch/Genstruct-7B."
    if not path.exists():
        if looks_local(name):
            raise ModelNotFoundError(f"model folder {name!r} does not exist; check the path, or use a Hub model id.")
        return
    if not path.is_dir():
        raise ModelNotFoundError(f"model {name!r} is a file, not a model folder; {hint}")
    files = {child.name for child in path.iterdir()}
    wanted = {"config.json"} | ({"tokenizer.json", "tokenizer_config.json"} if tokenizer_only else set())
    if not files & wanted:
        what = "is empty" if not files else f"holds no {' or '.join(sorted(wanted))}"
        raise ModelNotFoundError(f"model folder {name!r} {what}: it holds no saved model; {hint}")


def check_model_reachable(
    name: str,
    *,
    revision: str | None = None,
    setting: str = "model",
    token: str | bool | None = None,
    timeout: float | None = None,
) -> None:
    """Check that a model given as a Hub id can be loaded now: it is in the local Hugging Face cache, or the Hub is up.

    Without this, a run offline (``HF_HUB_OFFLINE=1``, or no network) reads and splits the whole source before
    the model fails to load, with a long traceback, or waits on a network that is not there. A local folder passes
    unchecked here (see [`check_model_path`]); so does a model the Hub answers about, whatever it answers (a missing
    or gated model is reported when it loads, with the Hub's own reason).

    Args:
        name (`str`): a Hub model id or a local folder.
        revision (`str`, *optional*): branch, tag or commit of the model on the Hub.
        setting (`str`, *optional*, defaults to `"model"`): the setting that names this model, for the message
            (``"reward_model"`` for a reward model); the command line says it as its flag (``--reward-model``).
        token (`str` or `bool`, *optional*): a Hub token, for private or gated models.
        timeout (`float`, *optional*, defaults to [`HUB_PROBE_TIMEOUT`]): seconds to wait for the Hub.

    Raises:
        [`ModelUnreachableError`]: the model is no folder here and its ``config.json`` is not in the local cache, and
            the Hub is off (``HF_HUB_OFFLINE=1``) or does not answer within `timeout`; the message names both
            possibilities (a mistyped folder such as ``models/nope``, or a Hub id).
        [`ModelNotFoundError`]: the model is no folder here and the Hub has no model of that name.

    Example:

    ```py
    >>> check_model_reachable("./models/genstruct")  # a local folder: nothing to check here
    >>> check_model_reachable("NousResearch/Genstruct-7B")  # HF_HUB_OFFLINE=1, and never downloaded
    Traceback (most recent call last):
    ModelUnreachableError: model NousResearch/Genstruct-7B is not in the local Hugging Face cache and the Hub is ...
    ```
    """
    if is_local_path(name):
        return
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError

    try:
        cached = huggingface_hub.try_to_load_from_cache(name, "config.json", revision=revision)
    except ValueError:  # not a valid repo id: loading says so
        return
    if isinstance(cached, str):
        return
    # Not a folder here, nor cached: `models/nope` may be a mistyped folder as well as a Hub id, so say both.
    here = f"there is no folder {name!r} here ({os.getcwd()})"
    if huggingface_hub.is_offline_mode():
        why = "the Hub is off (HF_HUB_OFFLINE=1)"
    else:
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

        try:
            huggingface_hub.model_info(
                name, revision=revision, token=token, timeout=HUB_PROBE_TIMEOUT if timeout is None else timeout
            )
            return
        except RepositoryNotFoundError as err:
            if isinstance(err, GatedRepoError):
                return  # gated: loading says how to ask for access
            raise ModelNotFoundError(
                f"model {name} is neither a local folder nor a model on the Hub: {here}, and the Hub has no model "
                f"of that name (or it is private: hf auth login). Check the path ({setting}=./PATH for a folder) or "
                "the model id."
            ) from None
        except HfHubHTTPError:  # the Hub answered (gated, a bad revision): loading says why
            return
        except Exception as err:  # a network error or a timeout, of whichever HTTP client huggingface_hub uses
            logger.debug("The Hub did not answer about %s: %r", name, err)
            why = f"the Hub cannot be reached ({type(err).__name__})"
    raise ModelUnreachableError(
        f"model {name} is not in the local Hugging Face cache and {why}: pass {setting}=PATH, a local model folder; "
        f"download it once where there is a network (hf download {name}); or try `genstruct-datasets demo`, which "
        f"runs offline with tiny stand-in models. If it is meant as a folder: {here}; check the path."
    )


_HEADS = (
    ("ForCausalLM", "a causal LM"),
    ("LMHeadModel", "a causal LM"),
    ("ForSequenceClassification", "a sequence classifier"),
    ("ForMaskedLM", "a masked LM"),
    ("ForConditionalGeneration", "a conditional generator (sequence-to-sequence or multimodal)"),
    ("ForTokenClassification", "a token classifier"),
    ("ForQuestionAnswering", "a question-answering model"),
    ("Model", "a base model without a head"),
)


def _read_config(name: str, revision: str | None, token: str | bool | None) -> Any:
    """The model's config (no weights), or None where it cannot be read now: loading the model then says why."""
    check_model_path(name)
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name, revision=revision, token=token)
    except (OSError, ValueError) as err:
        logger.debug("Cannot read the config of %s now (%s); its kind is checked when it loads.", name, err)
        return None


def _what_it_is(config: Any) -> str:
    """What a config says its model is, for a message: ``MistralForCausalLM, a causal LM``."""
    architectures = list(getattr(config, "architectures", None) or [])
    if not architectures:
        return f"a {config.model_type} model"
    name = architectures[0]
    kind = next((kind for suffix, kind in _HEADS if name.endswith(suffix)), "a model of another kind")
    return f"{name}, {kind}"


def check_generator(name: str, *, revision: str | None = None, token: str | bool | None = None) -> None:
    """Check, from its config alone, that a generator is a causal LM; weights are not loaded.

    A config that cannot be read now (a Hub id while offline, a model of a type transformers does not know) is not
    an error here: loading the model says why.

    Args:
        name (`str`): a Hub model id or a local folder.
        revision (`str`, *optional*): branch, tag or commit of the model on the Hub.
        token (`str` or `bool`, *optional*): a Hub token, for private or gated models.

    Raises:
        [`ModelNotFoundError`]: a local folder that is missing or holds no model (see [`check_model_path`]).
        [`InvalidConfigError`]: the model is not a causal LM (a reward model's folder, say), named by its architecture.

    Example:

    ```py
    >>> check_generator("./reward-model")  # doctest: +SKIP
    Traceback (most recent call last):
    InvalidConfigError: model ./reward-model is DebertaV2ForSequenceClassification, a sequence classifier, not a ...
    ```
    """
    config = _read_config(name, revision, token)
    if config is None:
        return
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    architectures = list(getattr(config, "architectures", None) or [])
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and (
        not architectures or any(a in causal or a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    ):
        return
    raise InvalidConfigError(
        f"model {name} is {_what_it_is(config)}, not a causal LM: the generator writes the pairs. Pass a causal LM "
        "such as NousResearch/Genstruct-7B as model=; a reward model goes to reward_model=."
    )


def check_reward_model(name: str, *, revision: str | None = None, token: str | bool | None = None) -> None:
    """Check, from its config alone, that a reward model is a sequence classifier with one label (a scalar score);
    weights are not loaded.

    A config that cannot be fetched now (a Hub id while offline) is not an error here: loading the model says why.

    Args:
        name (`str`): a Hub model id or a local folder.
        revision (`str`, *optional*): branch, tag or commit of the model on the Hub.
        token (`str` or `bool`, *optional*): a Hub token, for private or gated models.

    Raises:
        [`ModelNotFoundError`]: a local folder that is missing or holds no model (see [`check_model_path`]).
        [`InvalidConfigError`]: the model is not a sequence classifier (a generator's folder, say: its architecture
            is named), or has more (or fewer) than one label.
    """
    config = _read_config(name, revision, token)
    if config is None:
        return
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

    classifiers = set(MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.values())
    architectures = list(getattr(config, "architectures", None) or [])
    pick = "Pick one such as reward_model=OpenAssistant/reward-model-deberta-v3-large-v2."
    if architectures and not any(a in classifiers or a.endswith("ForSequenceClassification") for a in architectures):
        raise InvalidConfigError(
            f"reward model {name} is {_what_it_is(config)}, not a sequence classifier with one label (a scalar "
            f"score); a generator goes to model=. {pick}"
        )
    if config.num_labels != 1:
        raise InvalidConfigError(
            f"reward model {name} has {config.num_labels} labels; a reward model has exactly one (a scalar score). "
            f"{pick}"
        )


def load_once(key: tuple, load: Callable[[], Any]) -> Any:
    """Return the object cached under `key` in this process, calling `load()` to make it the first time.

    For models that `load_model` does not make (a `vllm.LLM`, say): they live in the same cache, outside any pickled
    state, and [`clear_model_cache`] forgets them too.
    """
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = load()
        return _CACHE[key]


def clear_model_cache() -> None:
    """Forget every cached model of this process, so that the next call loads it anew."""
    with _LOCK:
        _CACHE.clear()
