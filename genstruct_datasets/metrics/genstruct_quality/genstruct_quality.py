"""genstruct_quality: an `evaluate` measurement of Genstruct instruction pairs.

Load it offline from the installed package:

    >>> import evaluate
    >>> from genstruct_datasets.metrics import GENSTRUCT_QUALITY
    >>> quality = evaluate.load(GENSTRUCT_QUALITY)
    >>> quality.compute(instruction=["Why?"], response=["Because."], content=["Because."],
    ...                 parse_error=[None], finish_reason=["stop"], reward=[0.5])
"""

import datasets
import evaluate

from genstruct_datasets.quality import DEFAULT_SAMPLE_SIZE, NEAR_DUPLICATE_THRESHOLD, compute_quality

_DESCRIPTION = """Quality figures of (instruction, response) pairs written from passages: validity (share of
candidates that parsed, counts of each parse_error and finish_reason), diversity of instructions (distinct-1,
distinct-2, near-duplicate share by MinHash), grounding (share of each response's content words found in its
passage), question form (share of instructions that ask something), lengths in words, and reward statistics."""

_KWARGS_DESCRIPTION = """
Args:
    instruction (`list[str | None]`): the instructions, None where a candidate gave no pair.
    response (`list[str | None]`): the responses.
    content (`list[str | None]`): the passages the pairs were written from.
    parse_error (`list[str | None]`): None for a pair, else the reason there is none.
    finish_reason (`list[str | None]`): how each generation ended.
    reward (`list[float | None]`): reward-model scores.
    near_duplicate_threshold (`float`, defaults to 0.8): Jaccard similarity from which two instructions count
        as near-duplicates.
    sample_size (`int`, defaults to 10000): rows measured by the figures that need every value at once
        (diversity, lengths, grounding, reward), drawn uniformly; None measures every row. Counts cover every row.
    seed (`int`, defaults to 0): seed of the sample.
Returns:
    `dict` with `validity`, `diversity`, `question_share`, `lengths`, `grounding` and `reward`, and `sample`
    when more rows were given than `sample_size`; see `genstruct_datasets.quality_report`.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GenstructQuality(evaluate.Measurement):
    def _info(self):
        return evaluate.MeasurementInfo(
            module_type="measurement",
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "instruction": datasets.Value("string"),
                    "response": datasets.Value("string"),
                    "content": datasets.Value("string"),
                    "parse_error": datasets.Value("string"),
                    "finish_reason": datasets.Value("string"),
                    "reward": datasets.Value("float64"),
                }
            ),
        )

    def add_batch(self, **columns):
        """Add a batch of rows; None stands for a candidate without a pair."""
        # evaluate checks that a string column starts with a string, and a failed candidate has None:
        # empty strings and NaN stand for None on the way in, and compute_quality reads them as missing.
        filled = {
            name: [(float("nan") if name == "reward" else "") if value is None else value for value in values]
            for name, values in columns.items()
        }
        return super().add_batch(**filled)

    def _compute(
        self,
        instruction,
        response,
        content,
        parse_error,
        finish_reason,
        reward,
        near_duplicate_threshold=NEAR_DUPLICATE_THRESHOLD,
        sample_size=DEFAULT_SAMPLE_SIZE,
        seed=0,
    ):
        return compute_quality(
            instruction=instruction,
            response=response,
            content=content,
            parse_error=parse_error,
            finish_reason=finish_reason,
            reward=reward,
            near_duplicate_threshold=near_duplicate_threshold,
            sample_size=sample_size,
            seed=seed,
        )
