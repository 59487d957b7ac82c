"""Split documents into single-paragraph passages sized for Genstruct, as a batched `Dataset.map` callable."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import KW_ONLY, dataclass

from .errors import InvalidConfigError, check_columns
from .generate import DEFAULT_GENERATOR
from .models import load_tokenizer
from .prompt import passage_id

logger = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("title", "content", "document_id", "passage_index")

_BLANK_LINES = re.compile(r"\n[ \t]*\n")
_MARKDOWN_HEADING = re.compile(r"^#{1,6}[ \t]+(.*?)[ \t]*#*[ \t]*$")
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")
# A fragment that leads into what follows: a heading (no closing punctuation) or a line ending in a colon.
_CLOSED = re.compile(r"[.!?\"')\]]$")


@dataclass
class PassageSplitter:
    """Batched map callable that splits documents into single-paragraph passages.

    Genstruct-7B was tuned on single paragraphs from Wikipedia. This stage reads a title column and a
    text column and writes one row per passage: the other input columns repeated, plus `title`,
    `content`, `document_id` (a digest of the document's title and text) and `passage_index` (0, 1, ...
    within the document). The text column is emptied (None) rather than repeated on every passage;
    ``passages.remove_columns(text_column)`` drops it.

    A document is cut at blank lines. A fragment shorter than `min_tokens` (a heading, a caption, a
    one-liner) is merged with its neighbour: a heading, or a line that ends in a colon, with the
    paragraph after it; anything else with the paragraph before it. A heading with no paragraph after
    it ("See also") is dropped. A paragraph longer than
    `max_tokens` is cut at sentence boundaries into pieces of about equal size. Markdown heading marks
    (``## ``) are removed. A document shorter than `min_tokens` in all gives no passage, and is counted
    in a warning. Sizes are counted in tokens of the generator's tokenizer.

    Args:
        tokenizer (`str`, *optional*, defaults to `"NousResearch/Genstruct-7B"`): model id or folder of the
            tokenizer that counts tokens; use the generator's.
        revision (`str`, *optional*): revision of the tokenizer on the Hub.
        min_tokens (`int`, *optional*, defaults to 32): shortest passage worth asking about.
        max_tokens (`int`, *optional*, defaults to 384): longest passage.
        title_column (`str`, *optional*, defaults to `"title"`): column with the document titles.
        text_column (`str`, *optional*, defaults to `"text"`): column with the document texts.

    Raises:
        [`InvalidConfigError`]: sizes out of range.
        [`MissingColumnsError`]: (on call) the batch lacks the title or text column.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> docs = Dataset.from_dict({"title": ["Moon"], "text": ["History\\n\\nThe Moon formed 4.5 billion years ago."]})
    >>> passages = docs.map(PassageSplitter(min_tokens=4), batched=True).remove_columns("text")  # doctest: +SKIP
    >>> passages.column_names  # doctest: +SKIP
    ['title', 'content', 'document_id', 'passage_index']
    ```
    """

    tokenizer: str = DEFAULT_GENERATOR
    _: KW_ONLY
    revision: str | None = None
    min_tokens: int = 32
    max_tokens: int = 384
    title_column: str = "title"
    text_column: str = "text"

    def __post_init__(self) -> None:
        for name in ("min_tokens", "max_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InvalidConfigError(f"{name} must be a positive integer, got {value!r}.")
        if self.min_tokens > self.max_tokens:
            raise InvalidConfigError(
                f"min_tokens={self.min_tokens} is larger than max_tokens={self.max_tokens}; no passage could fit."
            )

    def __call__(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        """Split one map batch of documents; see the class docstring for the columns."""
        check_columns(
            "PassageSplitter",
            batch,
            [self.title_column, self.text_column],
            "Pass title_column= and text_column= to name yours.",
        )
        tokenizer = load_tokenizer(self.tokenizer, revision=self.revision)
        written = (self.text_column, *OUTPUT_COLUMNS)
        passthrough = [key for key in batch if key not in written]
        output: dict[str, list] = {key: [] for key in passthrough}
        # `datasets` needs every input column back when the row count changes; the document's text is
        # not repeated on each of its passages but emptied (unless the stage writes that column itself).
        empty_text = self.text_column not in OUTPUT_COLUMNS
        if empty_text:
            output[self.text_column] = []
        output.update({column: [] for column in OUTPUT_COLUMNS})
        empty = too_short = 0
        for row, (title, text) in enumerate(zip(batch[self.title_column], batch[self.text_column])):
            if not isinstance(text, str) or not text.strip():
                empty += 1
                continue
            passages = self.split(text, tokenizer)
            too_short += not passages
            for index, content in enumerate(passages):
                for key in passthrough:
                    output[key].append(batch[key][row])
                if empty_text:
                    output[self.text_column].append(None)
                output["title"].append(title)
                output["content"].append(content)
                output["document_id"].append(passage_id(title, text))
                output["passage_index"].append(index)
        if empty:
            logger.warning("%d document(s) have an empty or missing %r and gave no passage.", empty, self.text_column)
        if too_short:
            logger.warning(
                "%d document(s) are shorter than min_tokens=%d in all and gave no passage; "
                "lower min_tokens to keep them.",
                too_short,
                self.min_tokens,
            )
        return output

    def split(self, text: str, tokenizer) -> list[str]:
        """Split one document's text into passages (see the class docstring for the rules)."""

        def count(piece: str) -> int:
            return len(tokenizer(piece, add_special_tokens=False)["input_ids"])

        pieces: list[str] = []
        for block in _BLANK_LINES.split(text.replace("\r\n", "\n")):
            block = _clean(block)
            if block:
                pieces.extend(self._cut_long(block, count) if count(block) > self.max_tokens else [block])
        passages: list[str] = []
        lead_in = ""  # short fragments waiting to be joined to the next paragraph
        for piece in pieces:
            if lead_in and count(joined := f"{lead_in}\n{piece}") <= self.max_tokens:
                piece, lead_in = joined, ""
            if count(piece) >= self.min_tokens:
                passages.append(piece)
                lead_in = ""
            elif passages and _CLOSED.search(piece) and count(joined := f"{passages[-1]}\n{piece}") <= self.max_tokens:
                passages[-1] = joined
            else:
                lead_in = f"{lead_in}\n{piece}" if lead_in else piece
        # A closing caption or one-liner joins the last paragraph; a heading with nothing after it
        # ("See also", "References") is dropped.
        if (
            lead_in
            and passages
            and _CLOSED.search(lead_in)
            and count(joined := f"{passages[-1]}\n{lead_in}") <= self.max_tokens
        ):
            passages[-1] = joined
        return passages

    def _cut_long(self, block: str, count) -> list[str]:
        """Cut a paragraph longer than `max_tokens` at sentence boundaries into pieces of about equal size."""
        sentences: list[str] = []
        for sentence in _SENTENCE_END.split(block):
            sentences.extend(self._cut_sentence(sentence, count) if count(sentence) > self.max_tokens else [sentence])
        sizes = [count(sentence) for sentence in sentences]
        target = sum(sizes) / math.ceil(sum(sizes) / self.max_tokens)
        pieces: list[list[str]] = [[]]
        size = 0
        for sentence, n in zip(sentences, sizes):
            if pieces[-1] and (size + n > self.max_tokens or size + n / 2 > target):
                pieces.append([])
                size = 0
            pieces[-1].append(sentence)
            size += n + 1
        return [" ".join(piece) for piece in pieces]

    def _cut_sentence(self, sentence: str, count) -> list[str]:
        """Cut a single sentence longer than `max_tokens` between words."""
        pieces: list[str] = []
        current = ""
        for word in sentence.split(" "):
            candidate = f"{current} {word}" if current else word
            if current and count(candidate) > self.max_tokens:
                pieces.append(current)
                candidate = word
            current = candidate
        return [*pieces, current] if current else pieces


split_passages = PassageSplitter()
"""The default [`PassageSplitter`]: Genstruct-7B's tokenizer, passages of 32 to 384 tokens.

Example:

```py
>>> passages = documents.map(split_passages, batched=True).remove_columns("text")  # doctest: +SKIP
```
"""


def _clean(block: str) -> str:
    lines = []
    for line in block.strip().split("\n"):
        heading = _MARKDOWN_HEADING.match(line.strip())
        lines.append(heading.group(1) if heading else line.rstrip())
    return "\n".join(line for line in lines if line.strip()).strip()
