import math

import pytest
from datasets import Dataset

from genstruct_datasets import InvalidConfigError, MissingColumnsError, select_best
from genstruct_datasets.filters.base import Drop
from genstruct_datasets.filters.rip import RIPFilter, reward_spread

NAN = float("nan")

# Seven passages, their samples' rewards chosen, the rows of one passage spread apart (so that a small batch size
# splits them):
#   p1 3.7 2.5 2.8       lowest 2.5, gap 1.2   (a wide gap)
#   p2 1.0 0.0 0.5       lowest 0.0, gap 1.0   (a low lowest)
#   p3 2.0 [0.1] 1.8     lowest 1.8, gap 0.2   (0.1 is a parse error's: not scored)
#   p4 4.0 1.0 NaN       lowest 1.0, gap 3.0   (NaN is no reward)
#   p5 2.2 None None     lowest 2.2, gap 0.0   (one scored sample)
#   p6 None None         nothing scored: no pair kept
#   p7 1.5 1.5           lowest 1.5, gap 0.0   (a tie: the rejected sample is the higher sample index)
ROWS = [
    # passage, sample, reward, parse_error, response
    ("p1", 0, 3.7, None, "One two three four five."),
    ("p2", 0, 1.0, None, "Good."),
    ("p3", 0, 2.0, None, "Fine answer here."),
    ("p4", 0, 4.0, None, "The best answer of all."),
    ("p5", 0, 2.2, None, "Only one scored."),
    ("p6", 0, None, "no_completion", None),
    ("p7", 0, 1.5, None, "Tied first."),
    ("p1", 1, 2.5, None, "Low."),
    ("p2", 1, 0.0, None, "Zero reward answer with six words."),
    ("p3", 1, 0.1, "no_assistant_marker", "Not a pair at all really."),
    ("p4", 1, 1.0, None, "Weak one, two."),
    ("p5", 1, None, "truncated_response", "Cut."),
    ("p6", 1, None, "no_completion", None),
    ("p7", 1, 1.5, None, "Tied second, longer."),
    ("p1", 2, 2.8, None, "Middle one."),
    ("p2", 2, 0.5, None, "Half."),
    ("p3", 2, 1.8, None, "Lower but fine here too."),
    ("p4", 2, NAN, None, "Not a number."),
    ("p5", 2, None, None, "Unscored."),
]

# passage -> (reward_min, reward_gap, rejected_words)
SPREAD = {
    "p1": (2.5, 1.2, 1),
    "p2": (0.0, 1.0, 6),
    "p3": (1.8, 0.2, 5),
    "p4": (1.0, 3.0, 3),
    "p5": (2.2, 0.0, 3),
    "p6": (None, None, None),
    "p7": (1.5, 0.0, 3),
}


def candidates() -> Dataset:
    names = ("passage_id", "sample_index", "reward", "parse_error", "response")
    columns = {name: [row[i] for row in ROWS] for i, name in enumerate(names)}
    columns["instruction"] = [None if r is None else f"Question {i}?" for i, r in enumerate(columns["response"])]
    return Dataset.from_dict(columns)


def spread_of(ds: Dataset) -> list[tuple]:
    rows = ds.select_columns(["passage_id", "reward_min", "reward_gap", "rejected_words"]).to_list()
    return [(r["passage_id"], r["reward_min"], r["reward_gap"], r["rejected_words"]) for r in rows]


def approx(rows: list[tuple]) -> list[tuple]:
    return [tuple(round(v, 9) if isinstance(v, float) else v for v in row) for row in rows]


@pytest.mark.parametrize("batch_size", [pytest.param(10_000, id="one-batch"), pytest.param(4, id="passages-split")])
def test_reward_spread_gives_each_passage_its_lowest_reward_gap_and_rejected_length(batch_size):
    found = candidates()
    best, scored = reward_spread(select_best(found), found, batch_size=batch_size)
    assert list(best["passage_id"]) == ["p1", "p2", "p3", "p4", "p5", "p7"]
    assert approx(spread_of(best)) == [(p, *SPREAD[p]) for p in best["passage_id"]]
    # Every candidate of a passage carries its passage's values, scored or not.
    assert approx(spread_of(scored)) == [(row[0], *SPREAD[row[0]]) for row in ROWS]
    assert scored.num_rows == len(ROWS) and scored.column_names[: len(found.column_names)] == found.column_names


def test_both_splits_get_the_same_features():
    found = candidates()
    best, scored = reward_spread(select_best(found), found)
    assert best.features == scored.features
    for name, dtype in (("reward_min", "float64"), ("reward_gap", "float64"), ("rejected_words", "int32")):
        assert best.features[name] == scored.features[name] and best.features[name].dtype == dtype
    assert set(best.column_names) == set(scored.column_names)


def test_reward_spread_again_reads_the_cache_and_replaces_its_own_columns():
    found = candidates()
    best = select_best(found)
    first, _ = reward_spread(best, found)
    again, _ = reward_spread(best, found)
    assert first._fingerprint == again._fingerprint
    twice, _ = reward_spread(first, found)
    assert twice.column_names == first.column_names and spread_of(twice) == spread_of(first)


def test_reward_spread_needs_scored_candidates():
    found = candidates()
    with pytest.raises(MissingColumnsError, match=r"reward_spread needs the column\(s\) 'reward'"):
        reward_spread(select_best(found), found.remove_columns("reward"))
    with pytest.raises(MissingColumnsError, match=r"reward_spread needs the column\(s\) 'passage_id'"):
        reward_spread(select_best(found).remove_columns("passage_id"), found)
    with pytest.raises(InvalidConfigError, match="batch_size must be a positive integer, got 0"):
        reward_spread(select_best(found), found, batch_size=0)


def test_reward_spread_of_no_scored_candidate_is_none():
    found = candidates().filter(lambda row: row["passage_id"] == "p6")
    best, scored = reward_spread(found.select([]), found)
    assert best.num_rows == 0 and set(RIPFilter().apply(best).figures) >= {"reward_min_cut"}
    assert spread_of(scored) == [("p6", None, None, None)] * 2


def rip(quantile: float = 0.5):
    found = candidates()
    best, _ = reward_spread(select_best(found), found)
    return RIPFilter(quantile=quantile).apply(best, found)


def test_rip_keeps_and_drops_the_passages_the_rule_says():
    # lowest rewards 2.5 0.0 1.8 1.0 2.2 1.5: median 1.65; gaps 1.2 1.0 0.2 3.0 0.0 0.0: median 0.6.
    found = rip()
    assert found.figures["quantile"] == 0.5 and found.figures["paper"] == "arXiv 2501.18578"
    assert found.figures["reward_min_cut"] == pytest.approx(1.65)
    assert found.figures["reward_gap_cut"] == pytest.approx(0.6)
    assert list(found.kept["passage_id"]) == ["p3", "p5"]
    assert found.drops == {
        ("p1", 0): Drop("reward_gap_above", "reward_gap 1.2 > 0.6"),  # its lowest (2.5) is high
        ("p2", 0): Drop("reward_min_below", "reward_min 0 < 1.65"),  # its gap (1.0) is wide too: one reason
        ("p4", 0): Drop("reward_min_below", "reward_min 1 < 1.65"),
        ("p7", 0): Drop("reward_min_below", "reward_min 1.5 < 1.65"),
    }
    count = found.count
    assert (count.name, count.unit, count.seen, count.kept) == ("rip", "pairs", 6, 2)
    assert count.dropped == {"reward_min_below": 3, "reward_gap_above": 1}
    assert count.seen == count.kept + sum(count.dropped.values()) == found.kept.num_rows + len(found.drops)


def test_a_lower_quantile_moves_both_cut_points_and_drops_less():
    # quantile 0.25 of the lowest rewards: 1.125; quantile 0.75 of the gaps: 1.15.
    found = rip(0.25)
    assert found.figures["reward_min_cut"] == pytest.approx(1.125)
    assert found.figures["reward_gap_cut"] == pytest.approx(1.15)
    assert list(found.kept["passage_id"]) == ["p3", "p5", "p7"]
    assert {key[0]: drop.reason for key, drop in found.drops.items()} == {
        "p1": "reward_gap_above",
        "p2": "reward_min_below",
        "p4": "reward_min_below",
    }
    assert set(found.kept["passage_id"]) >= set(rip(0.5).kept["passage_id"]) >= set(rip(0.75).kept["passage_id"])


def test_pairs_without_the_signals_are_kept_and_count_for_no_cut_point():
    pairs = Dataset.from_dict(
        {
            "passage_id": ["a", "b", "c", "d"],
            "sample_index": [0, 0, 0, 0],
            "reward_min": [0.0, None, 1.0, 2.0],
            "reward_gap": [0.0, None, 5.0, 0.0],
        }
    )
    found = RIPFilter().apply(pairs)
    assert found.figures["reward_min_cut"] == 1.0 and found.figures["reward_gap_cut"] == 0.0
    assert list(found.kept["passage_id"]) == ["b", "d"]
    assert {k[0]: d.reason for k, d in found.drops.items()} == {"a": "reward_min_below", "c": "reward_gap_above"}
    none = RIPFilter().apply(pairs.select([1]))
    assert none.figures["reward_min_cut"] is None and none.figures["reward_gap_cut"] is None
    assert none.kept.num_rows == 1 and none.count.dropped == {}


def test_rip_needs_the_spread():
    found = candidates()
    needs = r"the RIP filter needs the column\(s\) 'reward_min', 'reward_gap'.*Run reward_spread\(best, candidates\)"
    with pytest.raises(MissingColumnsError, match=needs):
        RIPFilter().apply(select_best(found), found)


@pytest.mark.parametrize(
    "quantile",
    [
        pytest.param(0, id="zero"),
        pytest.param(1, id="one"),
        pytest.param(1.0, id="one-float"),
        pytest.param(-0.5, id="negative"),
        pytest.param(1.5, id="above-one"),
        pytest.param(math.nan, id="nan"),
        pytest.param(True, id="bool"),
        pytest.param("0.5", id="text"),
    ],
)
def test_a_quantile_outside_0_1_is_refused(quantile):
    with pytest.raises(InvalidConfigError, match=rf"rip_quantile must be in \(0, 1\), got {quantile!r}\."):
        RIPFilter(quantile=quantile)
