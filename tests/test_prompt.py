from genstruct_datasets import format_prompt, passage_id
from genstruct_datasets.prompt import GENSTRUCT_CHAT_TEMPLATE

EXPECTED = (
    "[[[Title]]] p-value\n"
    "[[[Content]]] The p-value is used in the context of null hypothesis testing.\n"
    "\n"
    "The following is an interaction between a user and an AI assistant that is related to the above text.\n"
    "\n"
    "[[[User]]] "
)


def test_format_prompt_is_exact():
    prompt = format_prompt("p-value", "The p-value is used in the context of null hypothesis testing.")
    assert prompt == EXPECTED
    assert prompt.endswith("[[[User]]] ") and not prompt.endswith("  ")


def test_chat_template_renders_bos_and_prompt(mistral_tokenizer):
    assert mistral_tokenizer.chat_template == GENSTRUCT_CHAT_TEMPLATE
    message = [{"title": "p-value", "content": "The p-value is used in the context of null hypothesis testing."}]
    text = mistral_tokenizer.apply_chat_template(message, tokenize=False)
    assert text == "<s>" + EXPECTED
    ids = mistral_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == mistral_tokenizer.bos_token_id and ids.count(mistral_tokenizer.bos_token_id) == 1
    assert mistral_tokenizer.decode(ids, skip_special_tokens=True) == EXPECTED.rstrip(" ") + " "


def test_chat_template_keeps_quotes_and_braces(mistral_tokenizer):
    title, content = "O'Brien {x}", 'He said "{{ hi }}" and left.'
    text = mistral_tokenizer.apply_chat_template([{"title": title, "content": content}], tokenize=False)
    assert text == "<s>" + format_prompt(title, content)


def test_passage_id_is_stable_and_distinguishes_fields():
    # A literal value: the id must not change between processes, machines or releases.
    assert passage_id("Moon", "The Moon orbits Earth.") == "7e38ee707adb9656"
    assert passage_id("ab", "c") != passage_id("a", "bc")
    assert passage_id(None, "x") != passage_id("", "x")
    assert len({passage_id(t, "body") for t in ("a", "b", "c")}) == 3
