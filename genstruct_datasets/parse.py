"""Parse Genstruct completions into (instruction, response) pairs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import check_columns
from .prompt import ASSISTANT_MARKER

_ASSISTANT = re.compile(re.escape(ASSISTANT_MARKER))
# A further turn or a new document after the answer: the model ran on past the end of its pair.
_RUN_ON = re.compile(r"\[\[\[(?:User|Assistant|Title|Content)\]\]\]|</s>")

PARSE_ERRORS = (
    "no_completion",
    "no_assistant_marker",
    "empty_instruction",
    "empty_response",
    "truncated_response",
)
"""Every value `parse_error` can take besides None."""


@dataclass(frozen=True)
class ParsedPair:
    """The outcome of parsing one completion.

    Attributes:
        instruction (`str` or `None`): the user's turn, stripped; None when there is no pair.
        response (`str` or `None`): the assistant's turn, stripped and cut before any run-on turn; None
            when there is no pair.
        error (`str` or `None`): None for a pair, else one of `PARSE_ERRORS`.
        run_on (`bool`): the completion went on into a further turn, which was cut off.
    """

    instruction: str | None
    response: str | None
    error: str | None = None
    run_on: bool = False

    @property
    def ok(self) -> bool:
        """Whether the completion gave a usable pair."""
        return self.error is None


def parse_completion(text: str | None, *, finish_reason: str | None = None) -> ParsedPair:
    """Split one Genstruct completion into an instruction and a response.

    A completion is what the model wrote after the prompt's ``"[[[User]]] "``: normally
    ``"{instruction}\\n[[[Assistant]]] {response}"``. Whatever follows a further ``[[[User]]]``,
    ``[[[Assistant]]]``, ``[[[Title]]]`` or ``[[[Content]]]`` marker (or a literal ``</s>``) is a run-on
    and is cut off.

    Args:
        text (`str` or `None`): the completion, without the prompt.
        finish_reason (`str`, *optional*): the generator's `finish_reason`. With ``"length"`` the response
            was cut by ``max_new_tokens``; unless a run-on shows that the answer had ended, the pair is
            rejected as ``"truncated_response"``.

    Returns:
        [`ParsedPair`]: the pair, or the reason there is none (``"no_completion"``, ``"no_assistant_marker"``,
        ``"empty_instruction"``, ``"empty_response"``, ``"truncated_response"``).

    Example:

    ```py
    >>> pair = parse_completion("Why does the Moon show phases?\\n[[[Assistant]]] Because sunlight...")
    >>> pair.instruction, pair.response, pair.error
    ('Why does the Moon show phases?', 'Because sunlight...', None)
    >>> parse_completion("Why does the Moon show phases?").error
    'no_assistant_marker'
    ```
    """
    if text is None or not text.strip():
        return ParsedPair(None, None, "no_completion")
    marker = _ASSISTANT.search(text)
    if marker is None:
        return ParsedPair(None, None, "no_assistant_marker")
    instruction = text[: marker.start()].strip()
    response = text[marker.end() :]
    run_on = _RUN_ON.search(response)
    if run_on is not None:
        response = response[: run_on.start()]
    response = response.strip()
    if not instruction:
        return ParsedPair(None, None, "empty_instruction", run_on is not None)
    if not response:
        return ParsedPair(None, None, "empty_response", run_on is not None)
    if finish_reason == "length" and run_on is None:
        return ParsedPair(None, None, "truncated_response")
    return ParsedPair(instruction, response, None, run_on is not None)


def parse_pairs(batch: dict[str, list], *, completion_column: str = "completion") -> dict[str, list[Any]]:
    """Batched map function that parses completions into (instruction, response) pairs.

    Reads the columns `completion` and, when present, `finish_reason`; writes `instruction`,
    `response` (None where there is no pair) and `parse_error` (None, or the reason: see
    [`parse_completion`]). Rows are never dropped: ``ds.filter(lambda r: r["parse_error"] is None)``
    keeps the pairs on purpose.

    Args:
        batch (`dict[str, list]`): a batch of rows, as `Dataset.map(..., batched=True)` passes it.
        completion_column (`str`, *optional*, defaults to `"completion"`): the column to parse.

    Returns:
        `dict[str, list]`: the three new columns.

    Raises:
        [`MissingColumnsError`]: the batch has no `completion_column`.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"completion": ["What is X?\\n[[[Assistant]]] X is Y.", "What is X?"]})
    >>> ds.map(parse_pairs, batched=True)["parse_error"]
    [None, 'no_assistant_marker']
    ```
    """
    check_columns(
        "parse_pairs", batch, [completion_column], "Run genstruct_generate first, or pass completion_column=."
    )
    completions = batch[completion_column]
    finish_reasons = batch.get("finish_reason") or [None] * len(completions)
    parsed = [parse_completion(text, finish_reason=reason) for text, reason in zip(completions, finish_reasons)]
    return {
        "instruction": [pair.instruction for pair in parsed],
        "response": [pair.response for pair in parsed],
        "parse_error": [pair.error for pair in parsed],
    }
