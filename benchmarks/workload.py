"""What the throughput benchmarks share: the passages they generate for, and the model card's call for one."""

from __future__ import annotations

import json
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples" / "passages.jsonl"


def passages(count: int) -> dict[str, list[str]]:
    """`count` passages of mixed lengths: the example paragraphs, whole and cut to a third or two thirds."""
    rows = [json.loads(line) for line in EXAMPLES.read_text().splitlines()]
    rows = [row for row in rows if row["content"]]
    titles, contents = [], []
    for i in range(count):
        row = rows[i % len(rows)]
        words = row["content"].split()
        titles.append(row["title"])
        contents.append(" ".join(words[: len(words) * (1 + i % 3) // 3]))
    return {"title": titles, "content": contents}


def generate_one(model, tokenizer, title: str, content: str, max_new_tokens: int) -> int:
    """The model card's call for one passage, forced to `max_new_tokens`: the number of tokens it wrote."""
    inputs = tokenizer.apply_chat_template([{"title": title, "content": content}], return_tensors="pt")
    inputs = inputs["input_ids"] if hasattr(inputs, "keys") else inputs
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    output = model.generate(
        inputs.to(model.device),
        max_new_tokens=max_new_tokens,
        min_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=pad,
    )
    return output.shape[1] - inputs.shape[1]
