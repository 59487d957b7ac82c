"""Score (instruction, response) pairs with a reward model, as a batched `Dataset.map` callable."""

from __future__ import annotations

import logging
import math
from dataclasses import KW_ONLY, dataclass, field

from ._checks import check_number
from ._fingerprint import hash_only_results
from ._tokens import fit_tail, is_text
from .errors import InvalidConfigError, check_columns
from .models import load_model, resolve_device

logger = logging.getLogger(__name__)

DEFAULT_REWARD_MODEL = "OpenAssistant/reward-model-deberta-v3-large-v2"


@dataclass
class RewardScorer:
    """Batched map callable that scores pairs with a reward model.

    Reads the columns `instruction` and `response` and writes `reward`: the model's single logit as a
    float, or None where the row has no pair (either field None or empty). A reward model whose
    tokenizer has a chat template gets a user/assistant conversation; one without (such as
    OpenAssistant's DeBERTa models) gets the text pair ``tokenizer(instruction, response)``. A pair
    longer than `max_length` loses the end of its response, never its instruction; only an instruction
    that alone fills `max_length` is cut too (and counted in a warning).

    The model loads on the first call, once per process and device, and is cached outside the
    instance, so pickling and hashing see the settings only.

    Args:
        model (`str`, *optional*, defaults to `"OpenAssistant/reward-model-deberta-v3-large-v2"`): Hub id or
            local folder of a sequence classifier with one label.
        revision (`str`, *optional*): branch, tag or commit of the model.
        batch_size (`int`, *optional*, defaults to 16): pairs per forward pass, sorted by length.
        max_length (`int`, *optional*, defaults to 512): longest input in tokens.
        dtype (`str`, *optional*, defaults to `"auto"`): weights' dtype.
        device (`str`, *optional*): defaults to ``cuda:{rank % n_gpus}`` with `with_rank=True`, else the first
            GPU, else the CPU.
        instruction_column (`str`, *optional*, defaults to `"instruction"`): column with the instructions.
        response_column (`str`, *optional*, defaults to `"response"`): column with the responses.

    Raises:
        [`InvalidConfigError`]: a setting is out of range, or (on first call) the model has more than one label.
        [`MissingColumnsError`]: (on call) the batch lacks a column; raised before any model loads.

    Example:

    ```py
    >>> from datasets import Dataset
    >>> ds = Dataset.from_dict({"instruction": ["Why is the sky blue?", None], "response": ["Rayleigh.", None]})
    >>> ds.map(RewardScorer(), batched=True)["reward"]  # doctest: +SKIP
    [1.93, None]
    ```
    """

    model: str = field(default=DEFAULT_REWARD_MODEL, metadata={"help": "reward model: a Hub id or a local folder"})
    _: KW_ONLY
    revision: str | None = field(default=None, metadata={"help": "reward model revision (branch, tag or commit)"})
    batch_size: int = field(default=16, metadata={"help": "pairs per forward pass of the reward model"})
    max_length: int = field(default=512, metadata={"help": "longest input of the reward model, in tokens"})
    dtype: str = field(default="auto", metadata={"help": "the reward model's weights' dtype"})
    device: str | None = field(
        default=None, metadata={"help": "the reward model's device (default: cuda:{rank}, else the CPU)"}
    )
    instruction_column: str = field(default="instruction", metadata={"cli": False})
    response_column: str = field(default="response", metadata={"cli": False})

    def __post_init__(self) -> None:
        check_number("batch_size", self.batch_size, integer=True, minimum=1)
        check_number("max_length", self.max_length, integer=True, minimum=1)

    def __call__(self, batch: dict[str, list], rank: int | None = None) -> dict[str, list]:
        """Score one map batch; see the class docstring for the columns."""
        check_columns(
            "RewardScorer",
            batch,
            [self.instruction_column, self.response_column],
            "Run parse_pairs first, or pass instruction_column= and response_column=.",
        )
        instructions, responses = batch[self.instruction_column], batch[self.response_column]
        rewards: list[float | None] = [None] * len(instructions)
        valid = [i for i, (q, a) in enumerate(zip(instructions, responses)) if is_text(q) and is_text(a)]
        if not valid:
            return {"reward": rewards}
        loaded = load_model(
            "sequence_classification",
            self.model,
            revision=self.revision,
            dtype=self.dtype,
            device=resolve_device(self.device, rank),
        )
        if loaded.model.config.num_labels != 1:
            raise InvalidConfigError(
                f"{self.model} has {loaded.model.config.num_labels} labels; a reward model has exactly one "
                "(a scalar score). Pick a reward model such as OpenAssistant/reward-model-deberta-v3-large-v2."
            )
        encoded, cut = {}, 0
        for i in valid:
            encoded[i], instruction_cut = self._encode(loaded.tokenizer, instructions[i], responses[i])
            cut += instruction_cut
        if cut:
            logger.warning(
                "%d instruction(s) alone are longer than max_length=%d tokens and were truncated for scoring.",
                cut,
                self.max_length,
            )
        order = sorted(valid, key=lambda i: len(encoded[i]["input_ids"]), reverse=True)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            scores = self._score(loaded, [encoded[i] for i in chunk])
            for i, score in zip(chunk, scores):
                rewards[i] = score
        not_a_number = sum(math.isnan(rewards[i]) for i in valid)
        if not_a_number:
            logger.warning(
                "%d reward(s) came out NaN (an overflow? try dtype='float32'); select_best never keeps them.",
                not_a_number,
            )
        return {"reward": rewards}

    def _encode(self, tokenizer, instruction: str, response: str) -> tuple[dict[str, list[int]], bool]:
        """The model inputs of one pair, cut to `max_length`, and whether the instruction itself had to be cut.

        Text pairs keep their `token_type_ids` where the tokenizer makes them (BERT-like reward models use them).
        """
        if getattr(tokenizer, "chat_template", None):
            ids, cut = self._conversation(tokenizer, instruction, response)
            return {"input_ids": ids}, cut
        instruction_length = len(tokenizer(instruction, add_special_tokens=False)["input_ids"])
        fits = instruction_length + tokenizer.num_special_tokens_to_add(pair=True) < self.max_length
        encoded = tokenizer(
            instruction,
            response,
            truncation="only_second" if fits else "longest_first",
            max_length=self.max_length,
        )
        return {name: encoded[name] for name in ("input_ids", "token_type_ids") if name in encoded}, not fits

    def _conversation(self, tokenizer, instruction: str, response: str) -> tuple[list[int], bool]:
        """A user/assistant conversation's token ids, the response cut to fit `max_length`."""
        ids, _ = fit_tail(
            tokenizer, lambda text: _conversation_ids(tokenizer, instruction, text), response, self.max_length
        )
        if ids is not None:
            return ids, False
        # The instruction alone fills max_length: it has to be cut too.
        return _conversation_ids(tokenizer, instruction, response)[: self.max_length], True

    def _score(self, loaded, features: list[dict[str, list[int]]]) -> list[float]:
        import torch

        padded = loaded.tokenizer.pad(features, return_tensors="pt")
        inputs = {name: tensor.to(loaded.device) for name, tensor in padded.items()}
        with torch.inference_mode():
            logits = loaded.model(**inputs).logits
        return logits[:, 0].float().cpu().tolist()


hash_only_results(RewardScorer, ("batch_size", "device"))

score_pairs = RewardScorer()
"""The default [`RewardScorer`]: OpenAssistant/reward-model-deberta-v3-large-v2.

Example:

```py
>>> ds = ds.map(score_pairs, batched=True)  # doctest: +SKIP
```
"""


def _conversation_ids(tokenizer, instruction: str, response: str) -> list[int]:
    messages = [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
