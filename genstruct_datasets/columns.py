"""The column schema of a run's candidates: what every shard and every split the builder writes holds.

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
