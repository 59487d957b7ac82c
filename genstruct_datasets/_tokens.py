"""Token-level helpers of the generation and scoring stages: the tokenizer set-up, prompt fitting, decoding."""

from __future__ import annotations

from typing import Any

from .prompt import GENSTRUCT_CHAT_TEMPLATE


def is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def prepare_tokenizer(tokenizer):
    """Give the cached tokenizer what batched generation needs: our template, a pad token, left padding."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = GENSTRUCT_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def render(tokenizer, title: str, content: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"title": title, "content": content}], tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def fit_prompt(tokenizer, title: str, content: str, budget: int) -> tuple[list[int] | None, bool]:
    """Tokenize the prompt, cutting the end of the content until it fits in `budget` tokens."""
    return fit_tail(tokenizer, lambda text: render(tokenizer, title, text), content, budget, strip_cut=True)


def fit_tail(tokenizer, render, text: str, budget: int, *, strip_cut: bool = False) -> tuple[list[int] | None, bool]:
    """The ids of `render(text)`, the end of `text` cut until they fit in `budget` tokens.

    Returns (ids, whether text was cut), or (None, False) when even an empty `text` does not fit. The frame
    that `render` puts around `text` (a prompt, a conversation) is never cut. With `strip_cut`, a cut text
    loses its trailing white space.
    """
    ids = render(text)
    if len(ids) <= budget:
        return ids, False
    frame = len(render(""))
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    keep = min(len(text_ids), budget - frame)
    while keep > 0:
        cut = tokenizer.decode(text_ids[:keep])
        ids = render(cut.rstrip() if strip_cut else cut)
        if len(ids) <= budget:
            return ids, True
        keep -= len(ids) - budget
    return None, False


def context_length(model, tokenizer) -> int:
    lengths = [getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    # Tokenizers without a limit report a huge sentinel (int(1e30)); ignore it.
    return min(length for length in lengths if isinstance(length, int) and 0 < length < 10**9)


def stop_token_ids(generation_config, tokenizer) -> set[int]:
    eos = generation_config.eos_token_id
    ids = set(eos) if isinstance(eos, list) else {eos}
    ids.add(tokenizer.eos_token_id)
    return {i for i in ids if i is not None}


def decode(tokenizer, tokens: list[int], stop_ids: set[int]) -> tuple[str, str, int]:
    for position, token in enumerate(tokens):
        if token in stop_ids:
            text = tokenizer.decode(tokens[:position], skip_special_tokens=True)
            return text.lstrip(" "), "stop", position + 1
    return tokenizer.decode(tokens, skip_special_tokens=True).lstrip(" "), "length", len(tokens)
