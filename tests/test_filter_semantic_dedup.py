import json
import pickle
import sys

import numpy as np
import pytest
from datasets import Dataset
from datasets.fingerprint import Hasher

pytest.importorskip("semhash", reason='the [filters] extra: pip install "genstruct-datasets[filters]"')
pytest.importorskip("model2vec", reason="the [filters] extra")

from genstruct_datasets.errors import (
    InvalidConfigError,
    MissingDependencyError,
    ModelNotFoundError,
    ModelUnreachableError,
    SourceError,
)
from genstruct_datasets.filters.base import Drop
from genstruct_datasets.filters.semantic_dedup import SemanticDedup
from genstruct_datasets.models import clear_model_cache

pytest.importorskip("semhash")
pytest.importorskip("model2vec")

# Word groups: the words of a group share one direction (synonyms), the groups are random directions apart.
SYNONYMS = [
    ["make", "produce", "create"],
    ["food", "nourishment"],
    ["plants", "vegetation"],
    ["novel", "book"],
    ["wrote", "authored"],
]
WORDS = ["how", "do", "who", "the", "first", "why", "is", "sky", "blue", "what", "causes", "tides", "rain"]

PLANTS = "How do plants make food?"
PLANTS_AGAIN = "How do vegetation produce nourishment?"  # other words, the same meaning
NOVEL = "Who wrote the first novel?"
NOVEL_AGAIN = "Who authored the first book?"
SKY = "Why is the sky blue?"
TIDES = "What causes tides?"


@pytest.fixture(scope="session")
def tiny_embedding_model(tmp_path_factory) -> str:
    """A model2vec model over a 30-word vocabulary, 32 dimensions, in which synonyms have near vectors."""
    from model2vec import StaticModel
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    tokens = ["[UNK]", "[PAD]", *WORDS, *(word for group in SYNONYMS for word in group)]
    tokenizer = Tokenizer(WordLevel({token: i for i, token in enumerate(tokens)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(tokens), 32)).astype(np.float32)
    for group in SYNONYMS:
        base = vectors[tokens.index(group[0])]
        for word in group[1:]:
            vectors[tokens.index(word)] = base + rng.normal(scale=0.05, size=32)
    folder = tmp_path_factory.mktemp("potion-tiny")
    StaticModel(vectors=vectors, tokenizer=tokenizer).save_pretrained(folder)
    return str(folder)


@pytest.fixture(autouse=True)
def _fresh_models():
    clear_model_cache()
    yield
    clear_model_cache()


def make_pairs(instructions, rewards) -> Dataset:
    return Dataset.from_dict(
        {
            "passage_id": [f"p{i}" for i in range(len(instructions))],
            "sample_index": [0] * len(instructions),
            "instruction": list(instructions),
            "response": ["an answer"] * len(instructions),
            "reward": list(rewards),
        }
    )


def test_a_near_repeat_in_meaning_is_dropped_for_the_better_rewarded_pair(tiny_embedding_model):
    pairs = make_pairs([PLANTS, NOVEL, PLANTS_AGAIN, SKY], [0.1, 0.5, 0.9, 0.3])
    found = SemanticDedup(embedding_model=tiny_embedding_model).apply(pairs)
    assert found.kept["passage_id"] == ["p1", "p2", "p3"]  # the order of the pairs is kept
    assert found.drops == {("p0", 0): Drop("semantic_duplicate", "p2")}  # p2 has the better reward


def test_different_instructions_are_all_kept(tiny_embedding_model):
    pairs = make_pairs([PLANTS, NOVEL, SKY, TIDES], [0.1, 0.2, 0.3, 0.4])
    found = SemanticDedup(embedding_model=tiny_embedding_model).apply(pairs)
    assert found.kept["passage_id"] == ["p0", "p1", "p2", "p3"]
    assert found.drops == {}
    assert (found.count.seen, found.count.kept, found.count.dropped) == (4, 4, {})


def test_exact_copies_and_missing_rewards(tiny_embedding_model):
    pairs = make_pairs([SKY, SKY, SKY], [None, 0.2, 0.2])
    found = SemanticDedup(embedding_model=tiny_embedding_model).apply(pairs)
    # p1 and p2 tie: the first in order stays; a pair without a reward ranks last.
    assert found.kept["passage_id"] == ["p1"]
    assert found.drops == {("p0", 0): Drop("semantic_duplicate", "p1"), ("p2", 0): Drop("semantic_duplicate", "p1")}


def test_against_a_local_file_drops_the_pair_that_repeats_one_of_its_rows(tiny_embedding_model, tmp_path):
    existing = tmp_path / "existing.jsonl"
    rows = [{"prompt": TIDES, "id": 7}, {"prompt": NOVEL_AGAIN, "id": 8}]
    existing.write_text("".join(json.dumps(row) + "\n" for row in rows))
    pairs = make_pairs([PLANTS, NOVEL, PLANTS_AGAIN, SKY], [0.1, 0.9, 0.5, 0.3])
    dedup = SemanticDedup(embedding_model=tiny_embedding_model, against=[str(existing)])
    found = dedup.apply(pairs)

    assert found.drops == {
        ("p1", 0): Drop("repeats_existing", f"{existing}#1"),  # the best reward, but in the existing set
        ("p0", 0): Drop("semantic_duplicate", "p2"),
    }
    assert found.kept["passage_id"] == ["p2", "p3"]
    count = found.count
    assert count.name == "semantic_dedup" and count.unit == "pairs"
    assert count.dropped == {"repeats_existing": 1, "semantic_duplicate": 1}
    assert count.seen == count.kept + sum(count.dropped.values()) == len(pairs)
    assert found.figures == {
        "threshold": 0.9,
        "embedding_model": tiny_embedding_model,
        "against": [str(existing)],
        "repeats_existing": {str(existing): 1},
    }


def test_against_reads_the_instruction_column_first(tiny_embedding_model, tmp_path):
    existing = tmp_path / "existing.csv"
    existing.write_text(f'title,instruction\n"{PLANTS}","{SKY}"\n')  # the title would repeat p0, the instruction p1
    pairs = make_pairs([PLANTS, SKY], [0.1, 0.2])
    found = SemanticDedup(embedding_model=tiny_embedding_model, against=[str(existing)]).apply(pairs)
    assert found.drops == {("p1", 0): Drop("repeats_existing", f"{existing}#0")}


def test_a_lower_threshold_drops_more(tiny_embedding_model):
    pairs = make_pairs([PLANTS, "How do plants make rain?"], [0.9, 0.1])
    assert SemanticDedup(embedding_model=tiny_embedding_model).apply(pairs).drops == {}
    loose = SemanticDedup(threshold=0.5, embedding_model=tiny_embedding_model).apply(pairs)
    assert loose.drops == {("p1", 0): Drop("semantic_duplicate", "p0")}


def test_no_pairs(tiny_embedding_model):
    found = SemanticDedup(embedding_model=tiny_embedding_model).apply(make_pairs([], []))
    assert len(found.kept) == 0 and found.count.seen == 0


@pytest.mark.parametrize(
    "threshold",
    [pytest.param(0, id="zero"), pytest.param(1.5, id="above-one"), pytest.param(float("nan"), id="nan"),
     pytest.param("0.9", id="string")],
)  # fmt: skip
def test_a_threshold_out_of_range_is_refused(threshold):
    with pytest.raises(InvalidConfigError, match=r"threshold must be in \(0, 1\] \(the cosine similarity"):
        SemanticDedup(threshold=threshold)


def test_a_threshold_of_one_is_accepted():
    assert SemanticDedup(threshold=1).threshold == 1


def test_a_missing_model_folder_is_one_clear_error(tmp_path):
    missing = str(tmp_path / "no-such-model")
    dedup = SemanticDedup(embedding_model=missing)
    with pytest.raises(ModelNotFoundError, match=r"^model folder '.*no-such-model' does not exist; check the path"):
        dedup.check()
    with pytest.raises(ModelNotFoundError, match="no-such-model' does not exist"):
        dedup.apply(make_pairs([SKY], [0.1]))


def test_a_hub_model_not_cached_offline_names_it_and_the_local_way():
    dedup = SemanticDedup(embedding_model="minishlab/no-such-potion")
    with pytest.raises(
        ModelUnreachableError,
        match=r"^embedding model minishlab/no-such-potion is not in the local .*"
        r"\(HF_HUB_OFFLINE=1\): pass embedding_model=PATH, a local copy",
    ):
        dedup.check()
    with pytest.raises(ModelNotFoundError, match="no-such-potion"):  # ModelUnreachableError is a ModelNotFoundError
        dedup.apply(make_pairs([SKY], [0.1]))


def test_a_folder_that_is_no_model2vec_model(tmp_path):
    folder = tmp_path / "not-model2vec"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match=r"embedding model '.*not-model2vec' cannot be loaded as a model2vec"):
        SemanticDedup(embedding_model=str(folder)).apply(make_pairs([SKY], [0.1]))


def test_a_missing_against_file_is_refused_before_any_work(tiny_embedding_model, tmp_path):
    dedup = SemanticDedup(embedding_model=tiny_embedding_model, against=[str(tmp_path / "gone.jsonl")])
    with pytest.raises(SourceError, match=r"dataset to deduplicate against '.*gone.jsonl' does not exist"):
        dedup.check()


def test_a_missing_package_gives_the_pip_command(monkeypatch, tiny_embedding_model):
    monkeypatch.setitem(sys.modules, "semhash", None)
    dedup = SemanticDedup(embedding_model=tiny_embedding_model)
    with pytest.raises(MissingDependencyError, match=r'semhash is not installed; pip install "genstruct-datasets\[f'):
        dedup.check()


def test_the_model_is_never_in_the_pickled_filter(tiny_embedding_model):
    dedup = SemanticDedup(embedding_model=tiny_embedding_model)
    before = (Hasher.hash(dedup), len(pickle.dumps(dedup)))
    dedup.apply(make_pairs([PLANTS, PLANTS_AGAIN], [0.1, 0.2]))  # loads the model
    assert (Hasher.hash(dedup), len(pickle.dumps(dedup))) == before
    assert before[1] < 1000
    assert pickle.loads(pickle.dumps(dedup)) == dedup


def test_the_model_loads_once_per_process(monkeypatch, tiny_embedding_model):
    from model2vec import StaticModel

    loads = []
    load = StaticModel.from_pretrained.__func__
    monkeypatch.setattr(
        StaticModel, "from_pretrained", classmethod(lambda cls, *a, **k: loads.append(a) or load(cls, *a, **k))
    )
    pairs = make_pairs([PLANTS, SKY], [0.1, 0.2])
    SemanticDedup(embedding_model=tiny_embedding_model).apply(pairs)
    SemanticDedup(threshold=0.8, embedding_model=tiny_embedding_model).apply(pairs)
    assert len(loads) == 1


def test_large_indexes_use_the_approximate_search_with_the_same_outcome(monkeypatch, tiny_embedding_model, tmp_path):
    from genstruct_datasets.filters import semantic_dedup

    existing = tmp_path / "existing.jsonl"
    existing.write_text(json.dumps({"instruction": NOVEL_AGAIN}) + "\n")
    pairs = make_pairs([PLANTS, NOVEL, PLANTS_AGAIN, SKY, TIDES], [0.1, 0.9, 0.5, 0.3, 0.2])
    dedup = SemanticDedup(embedding_model=tiny_embedding_model, against=[str(existing)])
    exact = dedup.apply(pairs)
    monkeypatch.setattr(semantic_dedup, "EXACT_SEARCH_ROWS", 0)
    assert semantic_dedup._search(1) == "usearch"
    approximate = dedup.apply(pairs)
    assert (
        approximate.drops
        == exact.drops
        == {
            ("p1", 0): Drop("repeats_existing", f"{existing}#0"),
            ("p0", 0): Drop("semantic_duplicate", "p2"),
        }
    )


def test_a_hub_dataset_to_deduplicate_against_that_cannot_be_had_offline(tiny_embedding_model):
    dedup = SemanticDedup(embedding_model=tiny_embedding_model, against=["nobody/no-such-set"])
    with pytest.raises(SourceError, match=r"^'nobody/no-such-set' is not a local file or folder, and the Hub dataset"):
        dedup.apply(make_pairs([SKY], [0.1]))


@pytest.mark.slow
def test_the_cli_runs_semantic_dedup_on_the_kept_pairs(tiny_embedding_model, recipe, tmp_path):
    from datasets import load_dataset

    from genstruct_datasets.cli import main

    source = tmp_path / "passages.jsonl"
    rows = [{"title": f"Topic {i}", "content": f"Passage {i} says something of its own about topic {i}."}
            for i in range(3)]  # fmt: skip
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = [
        "run",
        str(source),
        "--model",
        recipe["model"],
        "--reward-model",
        recipe["reward_model"],
        "--min-tokens",
        "4",  # one-line passages, read as they are
        "--num-samples",
        "2",
        "--max-new-tokens",
        "24",
        "--seed",
        "0",
        "--cache-dir",
        recipe["cache_dir"],
        "--semantic-dedup",
        "--embedding-model",
        tiny_embedding_model,
        "--output",
        str(tmp_path / "out"),
    ]
    assert main(args) == 0
    # The taught generator writes one instruction for every passage: one pair is kept, the two others repeat it.
    train = load_dataset(str(tmp_path / "out"), split="train")
    candidates = load_dataset(str(tmp_path / "out"), split="candidates")
    assert train.num_rows == 1
    dropped = [detail for by, detail in zip(candidates["filtered_by"], candidates["filter_detail"]) if by]
    assert dropped == [f"semantic_duplicate: {train['passage_id'][0]}"] * 2
    report = json.loads((tmp_path / "out" / "genstruct-report.json").read_text())
    assert report["stages"][-1] == {"name": "semantic_dedup", "unit": "pairs", "seen": 3, "kept": 1,
                                    "dropped": {"semantic_duplicate": 2}}  # fmt: skip
    assert report["filters"]["semantic_dedup"]["threshold"] == 0.9
