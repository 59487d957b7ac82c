"""Split documents into single-paragraph passages sized for Genstruct, as a batched `Dataset.map` callable."""

from __future__ import annotations

import bisect
import logging
import math
import re
from dataclasses import KW_ONLY, dataclass, field

from ._checks import check_number
from .errors import InvalidConfigError, InvalidSourceError, ModelNotFoundError, check_columns
from .generate import DEFAULT_GENERATOR
from .models import load_tokenizer
from .prompt import as_text, passage_id

logger = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("title", "content", "document_id", "passage_index")

_BLANK_LINES = re.compile(r"\n[ \t]*\n")
_MARKDOWN_HEADING = re.compile(r"^#{1,6}[ \t]+(.*?)[ \t]*#*[ \t]*$")
# Where a long paragraph may be cut, best first; each match is the gap between two pieces (whitespace, or nothing).
_SENTENCE_GAP = re.compile(
    r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])"  # after a sentence, before a capital or a digit
    r"|(?:(?<=[。！？])|(?<=[。！？][」』”’）]))(?![」』”’）])\s*"  # after a CJK sentence and its closing quotes
    r"|\n"  # between lines (list items)
)
_CHUNK = 8192  # characters per piece of a long paragraph tokenized in one batch
_WORD_GAP = re.compile(r"\s+|(?<=[，、；：])")  # between words, or after a CJK comma
# A fragment that leads into what follows: a heading (no closing punctuation) or a line ending in a colon.
_CLOSED = re.compile(r"[.!?\"')\]。！？」』”’）]$")


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
    it ("See also") is dropped. A paragraph longer than `max_tokens` is cut into pieces of about equal
    size: between sentences (Latin or CJK) where it can, else between words, else between characters,
    so that no passage is longer than `max_tokens`, whatever the text, in time linear in its length.
    Markdown heading marks (``## ``) are removed. A document shorter than `min_tokens` in all gives no
    passage, and is counted in a warning. Sizes are counted in tokens of the generator's tokenizer.

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
        [`InvalidSourceError`]: (on call) a title or text that is not text (a boolean, a list, an object); a number
            is read as text.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> docs = Dataset.from_dict({"title": ["Moon"], "text": ["History\\n\\nThe Moon formed 4.5 billion years ago."]})
    >>> passages = docs.map(PassageSplitter(min_tokens=4), batched=True).remove_columns("text")  # doctest: +SKIP
    >>> passages.column_names  # doctest: +SKIP
    ['title', 'content', 'document_id', 'passage_index']
    ```
    """

    tokenizer: str = field(default=DEFAULT_GENERATOR, metadata={"cli": False})
    _: KW_ONLY
    revision: str | None = field(default=None, metadata={"cli": False})
    min_tokens: int = field(
        default=32, metadata={"help": "shortest passage worth asking about, in tokens; shorter fragments are merged"}
    )
    max_tokens: int = field(default=384, metadata={"help": "longest passage, in tokens; longer paragraphs are cut"})
    title_column: str = field(default="title", metadata={"help": "column with document titles"})
    text_column: str = field(
        default="text",
        metadata={
            "help": "column with document texts (a source with a content column and no text column holds passages: "
            "its rows are read as they are, without splitting)"
        },
    )

    def __post_init__(self) -> None:
        check_number("min_tokens", self.min_tokens, integer=True, minimum=1)
        check_number("max_tokens", self.max_tokens, integer=True, minimum=1)
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
            title, text = self._as_text(title, self.title_column, row), self._as_text(text, self.text_column, row)
            if text is None or not text.strip():
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
                "lower min_tokens (--min-tokens) to keep them.",
                too_short,
                self.min_tokens,
            )
        return output

    def read_as_is(self, batch: dict[str, list]) -> dict[str, list]:
        """Take each row of one map batch as a passage already (a source of passages, or ``split_documents=False``),
        without splitting it: its own document, `content` its text. A row whose text is empty or shorter than
        `min_tokens` is left out, as a split would leave it out, and counted in a warning; a longer one is kept whole
        (the generation stage fits its prompt to the model's context).

        Args:
            batch (`dict[str, list]`): the rows, with the title and text columns.

        Returns:
            `dict[str, list]`: the kept rows' `title`, `content`, `document_id` and `passage_index` (0), and no other
            column: map it with ``remove_columns=`` the input's columns.

        Example:

        ```py
        >>> stage = PassageSplitter(min_tokens=4, text_column="content")  # doctest: +SKIP
        >>> batch = {"title": ["Moon", "Sun"], "content": ["Too short.", "The Sun is the star at our centre."]}
        >>> stage.read_as_is(batch)["content"]  # doctest: +SKIP
        ['The Sun is the star at our centre.']
        ```
        """
        check_columns(
            "PassageSplitter",
            batch,
            [self.title_column, self.text_column],
            "Pass title_column= and text_column= to name yours.",
        )
        titles = [self._as_text(t, self.title_column, row) for row, t in enumerate(batch[self.title_column])]
        texts = [self._as_text(t, self.text_column, row) for row, t in enumerate(batch[self.text_column])]
        sizes = self._sizes(texts)
        kept = [row for row, size in enumerate(sizes) if texts[row] and texts[row].strip() and size >= self.min_tokens]
        if len(kept) < len(texts):
            logger.warning(
                "%d passage(s) read as they are have an empty %r or one shorter than min_tokens=%d and were left out; "
                "lower min_tokens (--min-tokens) to keep them.",
                len(texts) - len(kept),
                self.text_column,
                self.min_tokens,
            )
        return {
            "title": [titles[row] for row in kept],
            "content": [texts[row] for row in kept],
            "document_id": [passage_id(titles[row], texts[row]) for row in kept],
            "passage_index": [0] * len(kept),
        }

    def _sizes(self, texts: list[str | None]) -> list[int]:
        """The texts' lengths in the tokenizer's tokens; in words where a server's model names no tokenizer that can
        be had here (a name only the server knows): a word is at most a token, so no passage is left out wrongly."""
        if not texts:
            return []
        try:
            tokenizer = load_tokenizer(self.tokenizer, revision=self.revision)
        except ModelNotFoundError as err:
            logger.warning(
                "Counting the passages' words for min_tokens: no tokenizer of %r here (%s).", self.tokenizer, err
            )
            return [len((text or "").split()) for text in texts]
        return [len(ids) for ids in tokenizer([text or "" for text in texts], add_special_tokens=False)["input_ids"]]

    @staticmethod
    def _as_text(value, column: str, row: int) -> str | None:
        """A title or a text as text (a number read as one, see [`as_text`]); another type refused, named."""
        try:
            return as_text(value)
        except TypeError as err:
            raise InvalidSourceError(
                f"PassageSplitter: {column!r} holds {err} in row {row} of a batch, not text; a title or a text is a "
                "string (a number is read as one)."
            ) from None

    def split(self, text: str, tokenizer) -> list[str]:
        """Split one document's text into passages (see the class docstring for the rules)."""

        def count(piece: str) -> int:
            return len(tokenizer(piece, add_special_tokens=False)["input_ids"])

        pieces: list[tuple[str, int]] = []  # each with its size in tokens, counted once
        for block in _BLANK_LINES.split(text.replace("\r\n", "\n")):
            block = _clean(block)
            if block:
                pieces.extend(self._fit(block, tokenizer, count))
        passages: list[str] = []
        lead_in = ""  # short fragments waiting to be joined to the next paragraph
        for piece, size in pieces:
            if lead_in and (n := count(joined := f"{lead_in}\n{piece}")) <= self.max_tokens:
                piece, size, lead_in = joined, n, ""
            if size >= self.min_tokens:
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

    def _fit(self, block: str, tokenizer, count) -> list[tuple[str, int]]:
        """A paragraph as pieces of at most `max_tokens` tokens, each with its size.

        The paragraph is tokenized once; the cuts are chosen in that tokenization (see `_cut_long`), and the pieces
        are counted again on their own, since a piece can tokenize a little differently from the middle of its
        paragraph: the rare one that came out over the budget is cut again. Linear in the paragraph's length.
        """
        starts = _token_starts(block, tokenizer)
        if starts is None:  # no offsets: spread the tokens evenly over the characters; the recount settles it
            size = count(block)
            starts = [k * len(block) // size for k in range(size)]
        elif len(block) <= _CHUNK or len(starts) > self.max_tokens + 4 * len(block) // _CHUNK + 2:
            size = len(starts)  # exact (one chunk), or over the budget by more than the chunks' edges can add
        else:
            size = count(block)
        if size <= self.max_tokens or len(block) < 2:
            return [(block, size)]
        pieces = self._cut_long(block, starts)
        sizes = [len(ids) for ids in tokenizer(pieces, add_special_tokens=False)["input_ids"]]
        fitted: list[tuple[str, int]] = []
        for piece, size in zip(pieces, sizes):
            fitted.extend([(piece, size)] if size <= self.max_tokens else self._fit(piece, tokenizer, count))
        return fitted

    def _cut_long(self, block: str, starts: list[int]) -> list[str]:
        """Cut a paragraph longer than `max_tokens` into pieces of about equal size, in one pass.

        `starts` holds where each token of the paragraph starts. Each cut is the gap nearest to the ideal size of
        the pieces left, no nearer than half of it: a gap between sentences if there is one in reach, else between
        words (or after a CJK comma), else between two tokens, that is, by characters.
        """
        limit = max(1, self.max_tokens - 2)  # room for a piece that tokenizes a little longer on its own
        total = len(starts)
        pieces: list[str] = []
        begin, first = 0, 0  # the next piece's first character and first token
        while total - first > limit:
            target = first + (total - first) / math.ceil((total - first) / limit)
            low, high = first + max(1, math.ceil((target - first) / 2)), first + limit
            end, after = _nearest_gap(block, starts, low, high, target)
            if end <= begin:  # several tokens in one character: cut after it
                end = after = begin + 1
            if piece := block[begin:end].strip():
                pieces.append(piece)
            begin, first = after, bisect.bisect_left(starts, after)
        if piece := block[begin:].strip():
            pieces.append(piece)
        return pieces


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


def _token_starts(block: str, tokenizer) -> list[int] | None:
    """Where each token of `block` starts (None for a tokenizer without offsets). A long block is tokenized in
    chunks cut at spaces, as one batch that the tokenizer runs in parallel; its tokens at the chunks' edges may
    differ a little from the block's own, which only moves a cut by a token."""
    if not getattr(tokenizer, "is_fast", False):
        return None
    chunks = [0]
    while len(block) - chunks[-1] > _CHUNK:
        space = block.rfind(" ", chunks[-1] + _CHUNK // 2, chunks[-1] + _CHUNK)
        chunks.append(space if space > 0 else chunks[-1] + _CHUNK)
    texts = [block[begin:end] for begin, end in zip(chunks, [*chunks[1:], len(block)])]
    offsets = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return [begin + start for begin, chunk in zip(chunks, offsets) for start, _ in chunk]


def _nearest_gap(block: str, starts: list[int], low: int, high: int, target: float) -> tuple[int, int]:
    """The best gap to end a piece at, as (end of the piece, start of the next): the one of the best kind whose
    token index lies in [low, high], nearest to `target`; without any, the start of the token nearest to it."""
    total = len(starts)
    window = (starts[low], starts[high] if high < total else len(block))
    for gaps in (_SENTENCE_GAP, _WORD_GAP):
        best = None
        for gap in gaps.finditer(block, *window):
            index = bisect.bisect_left(starts, gap.start())
            if low <= index <= high and (best is None or abs(index - target) < abs(best[0] - target)):
                best = (index, gap.start(), gap.end())
        if best is not None:
            return best[1], best[2]
    cut = starts[min(high, max(low, round(target)))]
    return cut, cut
