"""The column schema of a run's candidates: what every shard and every split the builder writes holds, and the
`messages` column that publishing adds to the pairs.

It sits at the bottom of the package so that checkpointing ([`ShardJob`] verifies a shard's columns against it) and
the builder (its splits' features) read the same schema without importing each other.
"""

from __future__ import annotations

import datasets

FEATURES = datasets.Features(
    {
        "title": datasets.Value("string"),
        "content": datasets.Value("string"),
        "document_id": datasets.Value("string"),
        "passage_index": datasets.Value("int32"),
        "passage_id": datasets.Value("string"),
        "sample_index": datasets.Value("int32"),
        "completion": datasets.Value("string"),
        "finish_reason": datasets.Value("string"),
        "completion_tokens": datasets.Value("int32"),
        "content_truncated": datasets.Value("bool"),
        "instruction": datasets.Value("string"),
        "response": datasets.Value("string"),
        "parse_error": datasets.Value("string"),
        "reward": datasets.Value("float64"),
    }
)
"""The columns of every shard and every split the builder writes; other columns of the source are not kept."""

MESSAGES = "messages"
MESSAGES_FEATURE = datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")})
"""The `messages` column that [`save_local`] and [`publish`] add to the pairs they write: TRL's conversational format,
``[{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]``."""


def pair_messages(batch: dict[str, list]) -> dict[str, list]:
    """Each pair of a batch as a conversation in TRL's format, for a batched `Dataset.map`: a user turn (the
    instruction) and an assistant turn (the response); None for a row that holds no pair (a failed parse).

    Reads `instruction`, `response` and, where there is one, `parse_error`; writes `messages`.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"instruction": ["Why?", None], "response": ["Because.", None]})
    >>> [row["messages"] for row in ds.map(pair_messages, batched=True)]
    [[{'role': 'user', 'content': 'Why?'}, {'role': 'assistant', 'content': 'Because.'}], None]
    ```
    """
    errors = batch.get("parse_error") or [None] * len(batch["instruction"])
    return {
        MESSAGES: [
            [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]
            if instruction is not None and response is not None and error is None
            else None
            for instruction, response, error in zip(batch["instruction"], batch["response"], errors)
        ]
    }
