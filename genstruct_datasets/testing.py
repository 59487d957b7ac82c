"""Tiny local models for offline tests of Genstruct pipelines.

Everything here is built on the fly from a config, with the real Mistral-7B-v0.1 tokenizer (32000
pieces) that ships inside the `mistral-common` package, so token counts and decoding are those of
Genstruct-7B. Nothing is downloaded. Install with ``pip install 'genstruct-datasets[testing]'``.

Example:

```py
>>> from datasets import Dataset
>>> from genstruct_datasets import GenstructGenerator
>>> from genstruct_datasets.testing import build_taught_generator
>>> path = build_taught_generator("/tmp/taught-genstruct")  # doctest: +SKIP
>>> ds = Dataset.from_dict({"title": ["Moon"], "content": ["The Moon orbits Earth."]})
>>> ds.map(GenstructGenerator(path, max_new_tokens=48), batched=True)["completion"]  # doctest: +SKIP
['What is the main topic of this passage?\\n[[[Assistant]]] It explains one idea in detail.']
```
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import MissingDependencyError
from .prompt import GENSTRUCT_CHAT_TEMPLATE, format_prompt

TAUGHT_INSTRUCTION = "What is the main topic of this passage?"
TAUGHT_RESPONSE = "It explains one idea in detail."
TAUGHT_COMPLETION = f" {TAUGHT_INSTRUCTION}\n[[[Assistant]]] {TAUGHT_RESPONSE}</s>"
"""What a generator from [`build_taught_generator`] writes after any Genstruct prompt (greedy decoding)."""

VLLM_CPU_SHAPE = {"hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 2, "head_dim": 64}
"""A tiny model's shape that vLLM's CPU backend runs: its attention rejects the default head_dim of 16.

Example:

```py
>>> path = build_taught_generator("/tmp/taught-genstruct-vllm", **VLLM_CPU_SHAPE)  # doctest: +SKIP
>>> GenstructGenerator(path, backend="vllm", max_new_tokens=48)  # doctest: +SKIP
```
"""

_TRAINING_PASSAGES = [
    ("Moon", "The Moon is Earth's only natural satellite. It orbits at an average distance of 384,400 km."),
    ("Photosynthesis", "Photosynthesis converts light energy into chemical energy stored in glucose."),
    ("Roman Empire", "The Roman Empire was the post-Republican state of ancient Rome, ruled by emperors."),
    ("Python (programming language)", "Python is a high-level, general-purpose programming language."),
    ("Mount Everest", "Mount Everest is Earth's highest mountain above sea level, in the Himalayas."),
    ("p-value", "The p-value is the probability of obtaining results at least as extreme as those observed."),
    ("Baroque music", "Baroque music is a period or style of Western classical music from about 1600 to 1750."),
    ("Plate tectonics", "Plate tectonics describes the large-scale motion of the plates of Earth's lithosphere."),
    ("Great Barrier Reef", "The Great Barrier Reef is the world's largest coral reef system, off Queensland."),
    ("Insulin", "Insulin is a peptide hormone produced by beta cells of the pancreatic islets."),
    ("Jazz", "Jazz is a music genre that originated in the African-American communities of New Orleans."),
    ("Entropy", "Entropy is a scientific concept most commonly associated with disorder, randomness, or uncertainty."),
]


def mistral_tokenizer_file() -> str:
    """Return the path of the Mistral-7B-v0.1 SentencePiece model shipped by `mistral-common`.

    `GENSTRUCT_MISTRAL_TOKENIZER`, when set, names the file instead: for a machine where `mistral-common` cannot be
    installed whole (benchmarks/gpu.sh carries the file alone, since transformers imports an installed
    `mistral-common`, which needs pydantic).

    Raises:
        [`MissingDependencyError`]: `mistral-common` is not installed and `GENSTRUCT_MISTRAL_TOKENIZER` is not set.
    """
    if os.environ.get("GENSTRUCT_MISTRAL_TOKENIZER"):
        return os.environ["GENSTRUCT_MISTRAL_TOKENIZER"]
    try:
        import mistral_common
    except ImportError as err:
        raise MissingDependencyError(
            "genstruct_datasets.testing needs mistral-common: pip install 'genstruct-datasets[testing]'"
        ) from err
    return os.path.join(os.path.dirname(mistral_common.__file__), "data", "tokenizer.model.v1")


def load_mistral_tokenizer(chat_template: str | None = GENSTRUCT_CHAT_TEMPLATE):
    """Build the real Mistral-7B-v0.1 tokenizer (as Genstruct-7B uses it) from the file in `mistral-common`.

    Args:
        chat_template (`str`, *optional*, defaults to [`GENSTRUCT_CHAT_TEMPLATE`]): set on the tokenizer;
            None leaves it without one.

    Returns:
        `transformers.LlamaTokenizer`: 32000 pieces, BOS added, `<s>`/`</s>`/`<unk>` specials.

    Example:

    ```py
    >>> tok = load_mistral_tokenizer()
    >>> len(tok)
    32000
    ```
    """
    from transformers import LlamaTokenizer

    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(mistral_tokenizer_file(), os.path.join(folder, "tokenizer.model"))
        tokenizer = LlamaTokenizer.from_pretrained(folder, add_bos_token=True, legacy=True)
    tokenizer.chat_template = chat_template
    return tokenizer


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one thread inside the block: the models here are tiny, and on a busy two-core CPU two threads
    that wait on each other trained the taught generator five times slower than one (56 s against 10.5 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def build_tiny_generator(
    path: str | os.PathLike,
    *,
    seed: int = 0,
    max_position_embeddings: int = 1024,
    chat_template: str | None = None,
    **config: int,
) -> str:
    """Save a tiny random Mistral causal LM with the real Mistral tokenizer to `path`.

    It writes noise, never a well-formed pair: use it for shapes, batching and loading. For pairs that
    parse, use [`build_taught_generator`].

    Args:
        path (`str` or `os.PathLike`): folder to write (created if needed).
        seed (`int`, *optional*, defaults to 0): seed of the random weights.
        max_position_embeddings (`int`, *optional*, defaults to 1024): the model's context length.
        chat_template (`str`, *optional*): saved with the tokenizer; by default none is, as for
            checkpoints without one, and the generator falls back to [`GENSTRUCT_CHAT_TEMPLATE`].
        **config: `MistralConfig` settings to change, e.g. ``hidden_size=256, num_hidden_layers=4`` for a
            model big enough that compute counts in a benchmark.

    Returns:
        `str`: the folder, to pass as `GenstructGenerator(model=...)`.
    """
    model = _tiny_mistral(seed, max_position_embeddings, **config)
    return _save(model, load_mistral_tokenizer(chat_template), path)


def build_taught_generator(
    path: str | os.PathLike,
    *,
    seed: int = 0,
    steps: int = 80,
    learning_rate: float = 5e-3,
    max_position_embeddings: int = 1024,
    **config: int,
) -> str:
    """Save a tiny Mistral causal LM taught to answer any Genstruct prompt with one fixed pair.

    A short training loop on the CPU (a few seconds) teaches it to complete every prompt made by
    [`format_prompt`] with [`TAUGHT_COMPLETION`]: ``" {question}\\n[[[Assistant]]] {answer}</s>"``. With
    greedy decoding its completions parse into pairs, so end-to-end tests exercise the whole pipeline.

    Args:
        path (`str` or `os.PathLike`): folder to write (created if needed).
        seed (`int`, *optional*, defaults to 0): seed of the weights and of the training order.
        steps (`int`, *optional*, defaults to 80): optimizer steps.
        learning_rate (`float`, *optional*, defaults to 5e-3): AdamW learning rate.
        max_position_embeddings (`int`, *optional*, defaults to 1024): the model's context length.
        **config: `MistralConfig` settings to change, e.g. ``**VLLM_CPU_SHAPE`` for a model vLLM's CPU backend runs.

    Returns:
        `str`: the folder, to pass as `GenstructGenerator(model=...)`.

    Raises:
        `RuntimeError`: the model did not learn the completion (it always does with the defaults).
    """
    with one_torch_thread():
        model = _teach(seed, steps, learning_rate, max_position_embeddings, **config)
    return _save(model, load_mistral_tokenizer(), path)


def _teach(seed: int, steps: int, learning_rate: float, max_position_embeddings: int, **config: int):
    import torch

    tokenizer = load_mistral_tokenizer()
    model = _tiny_mistral(seed, max_position_embeddings, **config)
    # Passages of one to four paragraphs, so that the answer does not depend on the prompt's length.
    passages = [
        (_TRAINING_PASSAGES[j % 12][0], " ".join(_TRAINING_PASSAGES[(j + k) % 12][1] for k in range(1 + j % 4)))
        for j in range(36)
    ]
    prompts = [
        tokenizer.apply_chat_template([{"title": title, "content": content}], tokenize=False)
        for title, content in passages
    ]
    prompt_ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in prompts]
    # The completion's first piece carries SentencePiece's word-start mark, as the new tokens of Genstruct do.
    target_ids = tokenizer(TAUGHT_COMPLETION.strip().removesuffix("</s>"), add_special_tokens=False)["input_ids"]
    target_ids.append(tokenizer.eos_token_id)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    model.train()
    for _ in range(steps):
        batch = torch.randperm(len(prompt_ids), generator=generator)[:6].tolist()
        sequences = [prompt_ids[i] + target_ids for i in batch]
        input_ids = torch.full((len(batch), max(map(len, sequences))), tokenizer.unk_token_id)
        mask = torch.zeros_like(input_ids)
        rows, positions = [], []
        for row, sequence in enumerate(sequences):
            input_ids[row, : len(sequence)] = torch.tensor(sequence)
            mask[row, : len(sequence)] = 1
            # Only the completion is learned: the logits at the last prompt token and at each completion token.
            first = len(sequence) - len(target_ids) - 1
            rows += [row] * len(target_ids)
            positions += range(first, first + len(target_ids))
        hidden = model.model(input_ids=input_ids, attention_mask=mask).last_hidden_state[rows, positions]
        loss = torch.nn.functional.cross_entropy(model.lm_head(hidden), torch.tensor(target_ids * len(batch)))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    # Two passages it was not trained on: a one-liner and four paragraphs in a new order.
    unseen = [
        format_prompt("Tea", "Tea is a drink."),
        format_prompt("Jazz", " ".join(c for _, c in _TRAINING_PASSAGES[5:9])),
    ]
    for text in unseen:
        check = torch.tensor([tokenizer(tokenizer.bos_token + text, add_special_tokens=False)["input_ids"]])
        with torch.inference_mode():
            output = model.generate(check, max_new_tokens=len(target_ids) + 2, do_sample=False, pad_token_id=0)
        if output[0, check.shape[1] :].tolist()[: len(target_ids)] != target_ids:
            raise RuntimeError(f"the tiny generator did not learn the Genstruct completion in {steps} steps")
    return model


def build_tiny_reward_model(path: str | os.PathLike, *, seed: int = 0) -> str:
    """Save a tiny random DeBERTa-v2 sequence classifier (one logit), shaped like OpenAssistant's reward model.

    Its tokenizer is a DeBERTa-v2 tokenizer over the Mistral SentencePiece model, so it encodes a text
    pair as ``[CLS] instruction [SEP] response [SEP]`` like ``reward-model-deberta-v3-large-v2``. It has
    no chat template, so [`RewardScorer`] feeds it text pairs.

    Args:
        path (`str` or `os.PathLike`): folder to write (created if needed).
        seed (`int`, *optional*, defaults to 0): seed of the random weights.

    Returns:
        `str`: the folder, to pass as `RewardScorer(model=...)`.
    """
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, DebertaV2Tokenizer

    with tempfile.TemporaryDirectory() as folder:
        shutil.copy(mistral_tokenizer_file(), os.path.join(folder, "spm.model"))
        tokenizer = DebertaV2Tokenizer.from_pretrained(folder)
    config = DebertaV2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        position_biased_input=False,
        relative_attention=True,
        pos_att_type=["p2c", "c2p"],
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return _save(DebertaV2ForSequenceClassification(config), tokenizer, path)


def build_tiny_chat_reward_model(path: str | os.PathLike, *, seed: int = 0) -> str:
    """Save a tiny random Mistral sequence classifier (one logit) whose tokenizer has a chat template.

    [`RewardScorer`] feeds such a model a user/assistant conversation rather than a text pair.

    Args:
        path (`str` or `os.PathLike`): folder to write (created if needed).
        seed (`int`, *optional*, defaults to 0): seed of the random weights.

    Returns:
        `str`: the folder, to pass as `RewardScorer(model=...)`.
    """
    import torch
    from transformers import MistralForSequenceClassification

    tokenizer = load_mistral_tokenizer(_CONVERSATION_TEMPLATE)
    tokenizer.pad_token = tokenizer.unk_token
    torch.manual_seed(seed)
    model = MistralForSequenceClassification(_mistral_config(512, num_labels=1, pad_token_id=tokenizer.pad_token_id))
    return _save(model, tokenizer, path)


_CONVERSATION_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '\\n' }}"
    "{% endfor %}"
)


def _mistral_config(max_position_embeddings: int, **overrides):
    from transformers import MistralConfig

    settings = {
        "vocab_size": 32000,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": max_position_embeddings,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    return MistralConfig(**{**settings, **overrides})


def _tiny_mistral(seed: int, max_position_embeddings: int, **overrides):
    import torch
    from transformers import MistralForCausalLM

    torch.manual_seed(seed)
    return MistralForCausalLM(_mistral_config(max_position_embeddings, **overrides))


def _save(model, tokenizer, path: str | os.PathLike) -> str:
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
