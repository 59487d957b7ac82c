import pytest
from datasets import Dataset

from genstruct_datasets import MissingColumnsError, parse_completion, parse_pairs

# Shaped like Genstruct-7B's output on the p-value passage of its model card (new tokens only).
GOOD = (
    "Dr. Smith is testing a new drug and obtains a p-value of 0.03 against a significance level of 0.05. "
    "Should she reject the null hypothesis, and what does that tell her about the drug?\n"
    "[[[Assistant]]] The p-value measures how likely results at least this extreme would be if the null "
    "hypothesis were true.\n\nSince 0.03 is below 0.05, she rejects the null hypothesis: the effect is "
    "statistically significant. It does not, by itself, prove that the drug works."
)


def test_parses_a_real_shaped_completion():
    pair = parse_completion(GOOD)
    assert pair.ok and pair.error is None and not pair.run_on
    assert pair.instruction.startswith("Dr. Smith is testing") and pair.instruction.endswith("about the drug?")
    assert pair.response.startswith("The p-value measures")
    assert "\n\nSince 0.03" in pair.response  # paragraphs inside the answer are kept
    assert pair.response.endswith("that the drug works.")


@pytest.mark.parametrize(
    "run_on",
    [
        pytest.param("\n[[[User]]] And what if p were 0.07?\n[[[Assistant]]] Then...", id="further-user-turn"),
        pytest.param("\n\n[[[Title]]] Null hypothesis\n[[[Content]]] In statistics...", id="new-document"),
        pytest.param("\n[[[Assistant]]] A second answer.", id="second-assistant-turn"),
        pytest.param("</s>trailing text", id="literal-eos"),
    ],
)
def test_run_on_is_cut_off(run_on):
    pair = parse_completion(GOOD + run_on)
    assert pair.ok and pair.run_on
    assert pair.response == parse_completion(GOOD).response


@pytest.mark.parametrize(
    ("text", "error"),
    [
        pytest.param(None, "no_completion", id="none"),
        pytest.param("", "no_completion", id="empty"),
        pytest.param("  \n ", "no_completion", id="blank"),
        pytest.param("Dr. Smith obtains a p-value of 0.03. Should she reject", "no_assistant_marker", id="cut-off"),
        pytest.param("\n[[[Assistant]]] The p-value is low.", "empty_instruction", id="empty-instruction"),
        pytest.param("What is a p-value?\n[[[Assistant]]]   ", "empty_response", id="empty-response"),
        pytest.param("What is a p-value?\n[[[Assistant]]] \n[[[User]]] Thanks", "empty_response", id="only-run-on"),
    ],
)
def test_failure_shapes(text, error):
    pair = parse_completion(text)
    assert pair.error == error
    assert pair.instruction is None and pair.response is None and not pair.ok


def test_length_cut_answer_is_rejected_unless_it_had_ended():
    cut = "What is a p-value?\n[[[Assistant]]] The p-value is the probability of obtaining"
    assert parse_completion(cut, finish_reason="length").error == "truncated_response"
    assert parse_completion(cut, finish_reason="stop").ok
    ended = cut + " data.\n[[[User]]] And a"
    assert parse_completion(ended, finish_reason="length").ok


def test_parse_pairs_as_batched_map():
    ds = Dataset.from_dict(
        {
            "title": ["p-value", "p-value", "p-value"],
            "completion": [GOOD, "Should she reject", None],
            "finish_reason": ["stop", "length", "invalid_input"],
        }
    )
    out = ds.map(parse_pairs, batched=True, batch_size=2)
    assert out.column_names == ["title", "completion", "finish_reason", "instruction", "response", "parse_error"]
    assert out["parse_error"] == [None, "no_assistant_marker", "no_completion"]
    assert out["instruction"][0] == parse_completion(GOOD).instruction
    assert out["response"][1:] == [None, None]


def test_parse_pairs_names_the_missing_column():
    with pytest.raises(MissingColumnsError, match="'completion'.*it has: text") as info:
        parse_pairs({"text": ["x"]})
    assert isinstance(info.value, KeyError)
