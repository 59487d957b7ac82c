"""The Genstruct prompt: its exact text, a chat template for tokenizers, and passage ids."""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasets import Dataset

TITLE_MARKER = "[[[Title]]]"
CONTENT_MARKER = "[[[Content]]]"
USER_MARKER = "[[[User]]]"
ASSISTANT_MARKER = "[[[Assistant]]]"
INTERACTION_LINE = (
    "The following is an interaction between a user and an AI assistant that is related to the above text."
)

_PROMPT = f"{TITLE_MARKER} {{title}}\n{CONTENT_MARKER} {{content}}\n\n{INTERACTION_LINE}\n\n{USER_MARKER} "

GENSTRUCT_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    f"{{{{ '{TITLE_MARKER} ' + message['title'] + '\\n{CONTENT_MARKER} ' + message['content'] + "
    f"'\\n\\n{INTERACTION_LINE}\\n\\n{USER_MARKER} ' }}}}"
    "{% endfor %}"
)
"""Jinja chat template that renders one ``{"title": ..., "content": ...}`` message as the Genstruct prompt.

The rendered text is the tokenizer's BOS token followed by [`format_prompt`]`(title, content)`.

Example:

```py
>>> from transformers import AutoTokenizer
>>> tok = AutoTokenizer.from_pretrained("mistralai/Mistral-7B-v0.1")  # doctest: +SKIP
>>> tok.chat_template = GENSTRUCT_CHAT_TEMPLATE  # doctest: +SKIP
>>> tok.apply_chat_template([{"title": "Moon", "content": "The Moon orbits Earth."}], tokenize=False)  # doctest: +SKIP
'<s>[[[Title]]] Moon\\n[[[Content]]] The Moon orbits Earth.\\n\\n...[[[User]]] '
```
"""


def format_prompt(title: str, content: str) -> str:
    """Build the exact text Genstruct-7B completes from a title and a passage.

    Args:
        title (`str`): the passage's title, e.g. the Wikipedia article name.
        content (`str`): the passage, ideally one paragraph.

    Returns:
        `str`: the prompt, ending in ``"[[[User]]] "`` (one space). It carries no BOS token; the
        tokenizer's chat template ([`GENSTRUCT_CHAT_TEMPLATE`]) adds it.

    Example:

    ```py
    >>> print(format_prompt("Moon", "The Moon orbits Earth."))
    [[[Title]]] Moon
    [[[Content]]] The Moon orbits Earth.
    <BLANKLINE>
    The following is an interaction between a user and an AI assistant that is related to the above text.
    <BLANKLINE>
    [[[User]]]
    ```
    """
    return _PROMPT.format(title=title, content=content)


def passage_id(title: str | None, content: str | None) -> str:
    """Return a stable id for a passage: a digest of its title and content.

    The same title and content give the same id in any process and on any machine, so the
    samples of one passage can be grouped after a shuffle or across shards.

    Args:
        title (`str` or `None`): the passage's title.
        content (`str` or `None`): the passage.

    Returns:
        `str`: 16 hexadecimal characters.

    Example:

    ```py
    >>> passage_id("Moon", "The Moon orbits Earth.") == passage_id("Moon", "The Moon orbits Earth.")
    True
    ```
    """
    digest = hashlib.sha256()
    for part in (title, content):
        # A marker byte keeps None apart from "" and the separator keeps ("ab", "c") apart from ("a", "bc").
        digest.update(b"\x00" if part is None else b"\x01" + part.encode("utf-8"))
        digest.update(b"\xff")
    return digest.hexdigest()[:16]


def as_text(value: object) -> str | None:
    """A value of a text column (a title, a document, a passage) as text: a number is read as the text it is written
    as, since that is what a numeric title means; None (a missing value) stays None.

    Args:
        value (`object`): what the column holds in one row.

    Returns:
        `str` or `None`: the text; an integer as its digits, a float as its shortest form (``1000.0`` as ``"1000"``),
        a float NaN (a missing value in a CSV or parquet file) as None.

    Raises:
        `TypeError`: a value that is not text: a boolean, a list, an object (its message is the type's name, for the
            caller to place in its own message with the column and the row).

    Example:

    ```py
    >>> as_text(1000), as_text(2.5), as_text("Moon"), as_text(None)
    ('1000', '2.5', 'Moon', None)
    ```
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):  # before int: a bool is an int in Python
        raise TypeError("a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    kinds = {list: "a list", tuple: "a list", dict: "an object"}
    raise TypeError(kinds.get(type(value), f"a value of type {type(value).__name__}"))


def passage_ids(passages: Dataset) -> list[str]:
    """The [`passage_id`] of each row of a passages dataset (`title` and `content`), as the generator writes it."""
    return [passage_id(t, c) for t, c in zip(passages["title"], passages["content"])]
