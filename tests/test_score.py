import logging

import pytest
from datasets import Dataset

from genstruct_datasets import InvalidConfigError, MissingColumnsError, RewardScorer, score_pairs
from genstruct_datasets.models import load_model

PAIRS = {
    "instruction": [
        "Dr. Smith obtains a p-value of 0.03 at a significance level of 0.05. Should she reject the null hypothesis?",
        "Why does the Moon always show the same face to Earth?",
        None,
        "What is tea?",
        "Which half of the Roman Empire lasted longer?",
    ],
    "response": [
        "Yes. Since 0.03 is below 0.05, the result is statistically significant and she rejects the null hypothesis.",
        "Because of tidal locking: its rotation period equals its orbital period.",
        None,
        "",
        "The eastern half, which lasted until the fall of Constantinople in 1453.",
    ],
}


def test_rewards_for_pairs_and_none_for_the_rest(tiny_reward_model):
    out = Dataset.from_dict(PAIRS).map(RewardScorer(tiny_reward_model), batched=True)
    assert out.column_names == ["instruction", "response", "reward"]
    rewards = out["reward"]
    assert rewards[2] is None and rewards[3] is None
    assert all(isinstance(rewards[i], float) for i in (0, 1, 4))
    assert len({rewards[0], rewards[1], rewards[4]}) == 3


def test_length_sorted_batches_give_the_same_rewards_in_row_order(tiny_reward_model):
    together = RewardScorer(tiny_reward_model, batch_size=8, dtype="float32")(PAIRS)["reward"]
    alone = [
        RewardScorer(tiny_reward_model, batch_size=8, dtype="float32")({"instruction": [q], "response": [a]})[
            "reward"
        ][0]
        for q, a in zip(PAIRS["instruction"], PAIRS["response"])
    ]
    assert [r is None for r in together] == [r is None for r in alone]
    assert [r for r in together if r is not None] == pytest.approx([r for r in alone if r is not None], abs=1e-5)


def test_text_pair_encoding_truncates_the_response_only(tiny_reward_model):
    scorer = RewardScorer(tiny_reward_model, max_length=32)
    tokenizer = load_model("sequence_classification", tiny_reward_model, device="cpu").tokenizer
    instruction = "Why does the Moon always show the same face to Earth?"
    features, instruction_cut = scorer._encode(tokenizer, instruction, "Because of tidal locking. " * 40)
    ids = features["input_ids"]
    assert len(ids) == 32 and not instruction_cut
    assert features["token_type_ids"] == [0] * (ids.index(tokenizer.sep_token_id) + 1) + [1] * (
        31 - ids.index(tokenizer.sep_token_id)
    )
    assert (
        ids[0] == tokenizer.cls_token_id
        and ids[-1] == tokenizer.sep_token_id
        and ids.count(tokenizer.sep_token_id) == 2
    )
    first_segment = ids[1 : ids.index(tokenizer.sep_token_id)]
    assert tokenizer.decode(first_segment) == instruction


def test_an_instruction_longer_than_max_length_is_still_scored(tiny_reward_model, caplog):
    with caplog.at_level(logging.WARNING, logger="genstruct_datasets"):
        out = RewardScorer(tiny_reward_model, max_length=16)({"instruction": ["Why? " * 50], "response": ["Because."]})
    assert isinstance(out["reward"][0], float)
    assert "1 instruction(s) alone are longer than max_length=16" in caplog.text


def test_a_chat_model_still_scores_an_instruction_longer_than_max_length(tiny_chat_reward_model, caplog):
    scorer = RewardScorer(tiny_chat_reward_model, max_length=16)
    with caplog.at_level(logging.WARNING, logger="genstruct_datasets"):
        out = scorer({"instruction": ["Why? " * 50], "response": ["Because."]})
    assert isinstance(out["reward"][0], float)
    assert "1 instruction(s) alone are longer than max_length=16" in caplog.text


def test_chat_template_models_get_a_conversation(tiny_chat_reward_model):
    scorer = RewardScorer(tiny_chat_reward_model, max_length=40)
    tokenizer = load_model("sequence_classification", tiny_chat_reward_model, device="cpu").tokenizer
    instruction = "Why does the Moon always show the same face to Earth?"
    features, instruction_cut = scorer._encode(tokenizer, instruction, "Because of tidal locking. " * 40)
    ids = features["input_ids"]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert len(ids) <= 40 and not instruction_cut
    assert text.startswith(f"<|user|>\n{instruction}\n<|assistant|>\nBecause of tidal locking.")
    rewards = scorer(PAIRS)["reward"]
    assert [r is None for r in rewards] == [False, False, True, True, False]


def test_a_classifier_with_several_labels_is_refused(tmp_path, tiny_reward_model):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_reward_model, num_labels=3)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_reward_model).save_pretrained(tmp_path)
    with pytest.raises(InvalidConfigError, match="has 3 labels; a reward model has exactly one"):
        RewardScorer(str(tmp_path))(PAIRS)


def test_missing_column_is_named_before_any_model_loads(tmp_path):
    with pytest.raises(MissingColumnsError, match=r"'response'.*it has: instruction, answer\. Run parse_pairs first"):
        RewardScorer(str(tmp_path / "no-such-model"))({"instruction": ["Q"], "answer": ["A"]})


def test_a_batch_without_pairs_loads_no_model(tmp_path):
    out = RewardScorer(str(tmp_path / "no-such-model"))({"instruction": [None], "response": [None]})
    assert out == {"reward": [None]}


def test_default_instance_is_openassistants_model():
    assert score_pairs.model == "OpenAssistant/reward-model-deberta-v3-large-v2"
    with pytest.raises(InvalidConfigError, match="max_length must be a positive integer"):
        RewardScorer(max_length=0)


def test_builder_gives_a_one_logit_deberta(tiny_reward_model):
    model = load_model("sequence_classification", tiny_reward_model, device="cpu").model
    assert type(model).__name__ == "DebertaV2ForSequenceClassification" and model.config.num_labels == 1


def test_segment_ids_reach_a_model_that_uses_them(tmp_path, tiny_reward_model):
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_reward_model, type_vocab_size=2)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    torch.nn.init.normal_(model.deberta.embeddings.token_type_embeddings.weight, std=1.0)
    model.save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tiny_reward_model)
    tokenizer.save_pretrained(tmp_path)
    question, answer = "Why does the Moon show phases?", "Sunlight lights half of it."
    with torch.inference_mode():
        expected = model.eval()(**tokenizer(question, answer, return_tensors="pt")).logits[0, 0].item()
    assert RewardScorer(str(tmp_path))({"instruction": [question], "response": [answer]})["reward"] == [
        pytest.approx(expected, abs=1e-6)
    ]
