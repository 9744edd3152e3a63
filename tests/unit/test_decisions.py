"""From scores to decisions: thresholds for a target precision, natural weights, unknowns, lineage nodes,
the correctness model and the order for the human (lokiml.decisions), and abundances (lokiml.abundance).

Small hand-made score tables, so that every threshold and count is known in advance.
"""

import json

import numpy as np
import pandas as pd
import pytest

from lokiml import abundance as ab
from lokiml import decisions as dc


def scored(rows, weight=None, lineages=None):
    """rows: (true class index or -1, [probabilities])."""
    truth = [t for t, _ in rows]
    probs = [p for _, p in rows]
    return dc.Scored([f"o{i}" for i in range(len(rows))], truth, probs,
                     np.ones(len(rows)) if weight is None else weight, lineages)


def ramp(n_right, n_wrong, cls=0, other=1, hi=0.95, lo=0.5, n_classes=2):
    """Objects predicted as ``cls`` with falling probability: the ``n_right`` highest truly ``cls``, the
    ``n_wrong`` lowest truly ``other``."""
    rows = []
    for i, s in enumerate(np.linspace(hi, lo, n_right + n_wrong)):
        p = np.full(n_classes, (1 - s) / (n_classes - 1))
        p[cls] = s
        rows.append((cls if i < n_right else other, p.tolist()))
    return rows


def test_threshold_is_the_lowest_that_reaches_the_target_and_says_its_recall():
    # class 0: 8 right (0.95 ... 0.65) then 2 wrong (0.55, 0.5); 5 more true class-0 objects predicted as 1
    rows = ramp(8, 2) + [(0, [0.3, 0.7])] * 2 + ramp(5, 0, cls=1, other=0, lo=0.55)
    t, curves = dc.class_thresholds(scored(rows), ["a", "b"], [0.9, 0.9])
    a = t.iloc[0]
    # precision 8/9 = 0.889 < 0.9 at the 9th object: the threshold is the 8th's probability, 0.6
    assert a["threshold"] == pytest.approx(0.6) and a["reachable"] == 1
    assert a["valid_precision"] == pytest.approx(1.0) and a["valid_trusted"] == 8 and a["valid_predicted"] == 10
    assert a["valid_recall"] == pytest.approx(8 / 10)  # 10 true class-0 objects, 8 trusted
    # a lower target admits the 9th object: precision 8/9
    t2, _ = dc.class_thresholds(scored(rows), ["a", "b"], [0.85, 0.9])
    assert t2.iloc[0]["threshold"] == pytest.approx(0.55) and t2.iloc[0]["valid_precision"] == pytest.approx(8 / 9)
    # class 1 (0.95, 0.85, 0.75, 0.65, 0.55) also takes the two class-0 objects at 0.7: trusted down to 0.75 only;
    # 7 objects are truly class 1 (those 5 and the 2 mistaken for class 0), 3 of them trusted
    assert t.iloc[1]["threshold"] == pytest.approx(0.75) and t.iloc[1]["valid_recall"] == pytest.approx(3 / 7)


def test_a_class_that_never_reaches_the_target_is_never_trusted():
    rows = [(1, [0.99, 0.01])] + ramp(9, 0)  # the most confident class-0 prediction is wrong
    t, _ = dc.class_thresholds(scored(rows), ["a", "b"], [0.95, 0.95])
    assert t.iloc[0]["reachable"] == 0 and np.isnan(t.iloc[0]["threshold"])
    assert t.iloc[0]["valid_precision"] == pytest.approx(0.9)  # the best it gets, reported
    assert not dc.trusted_mask(np.array([[0.999, 0.001]]), [None, 0.5]).any()
    # a class never predicted has no threshold either
    t, _ = dc.class_thresholds(scored(ramp(5, 0)), ["a", "b"], [0.9, 0.9])
    assert t.iloc[1]["reachable"] == 0 and t.iloc[1]["valid_predicted"] == 0


def test_natural_weights_move_a_rare_class_threshold_up():
    """Balanced, class 0 is right 8 times out of 10 above 0.5; in the export class 1 is 20 times commoner,
    so its two mistakes weigh 20 times more: the threshold must leave them out."""
    rows = [(0, [p, 1 - p]) for p in (0.95, 0.9, 0.85, 0.8, 0.78, 0.75)] + [(1, [0.7, 0.3]), (1, [0.62, 0.38])] \
        + [(0, [0.6, 0.4]), (0, [0.55, 0.45])] + ramp(10, 0, cls=1, other=0, lo=0.55)
    s = scored(rows)
    t_bal, _ = dc.class_thresholds(s, ["a", "b"], [0.75, 0.75])
    assert t_bal.iloc[0]["threshold"] == pytest.approx(0.55)  # 8 right of 10: 0.8 >= 0.75
    s.weight = dc.natural_weights(s.truth, {0: 100, 1: 2000})
    assert s.weight[s.truth == 0].sum() == pytest.approx(100) and s.weight[s.truth == 1].sum() == pytest.approx(2000)
    t_nat, _ = dc.class_thresholds(s, ["a", "b"], [0.75, 0.75])
    assert t_nat.iloc[0]["threshold"] == pytest.approx(0.75)  # only the six above both mistakes
    assert t_nat.iloc[0]["valid_trusted"] == 6


def test_unknowns_count_as_errors_and_raise_the_threshold():
    known = ramp(10, 0)
    unknown = [(dc.UNKNOWN, [0.8, 0.2]), (dc.UNKNOWN, [0.75, 0.25])]
    t_known, _ = dc.class_thresholds(scored(known), ["a", "b"], [0.95, 0.95])
    t_open, _ = dc.class_thresholds(scored(known + unknown), ["a", "b"], [0.95, 0.95])
    assert t_known.iloc[0]["threshold"] == pytest.approx(0.5)
    assert t_open.iloc[0]["threshold"] > 0.8 and t_open.iloc[0]["valid_precision"] >= 0.95


def test_confidence_asks_for_enough_objects():
    few = scored(ramp(10, 0))  # 10 right out of 10: the estimate reaches any target ...
    t, _ = dc.class_thresholds(few, ["a", "b"], [0.9, 0.9], confidence=0.9)
    assert t.iloc[0]["reachable"] == 0  # ... but 10 objects do not show 90 % with confidence
    many = scored(ramp(60, 0))
    t, _ = dc.class_thresholds(many, ["a", "b"], [0.9, 0.9], confidence=0.9)
    assert t.iloc[0]["reachable"] == 1
    lb = dc.wilson_lower(np.array([1.0]), np.array([60]), 0.9)
    assert 0.9 < lb[0] < 1.0


def test_class_targets_per_class_and_unknown_names():
    assert dc.class_targets(["a", "b"], 0.95, {"b": 0.8}) == [0.95, 0.8]
    with pytest.raises(Exception, match="not configured"):
        dc.class_targets(["a", "b"], 0.95, {"c": 0.8})


LINEAGES = {
    "Calanoida": ["living", "Metazoa", "Copepoda", "Calanoida"],
    "Calanoida_egg": ["living", "Metazoa", "Copepoda", "Calanoida", "Calanoida_egg"],
    "Oithona": ["living", "Metazoa", "Copepoda", "Cyclopoida", "Oithona"],
    "Chaetognatha": ["living", "Metazoa", "Chaetognatha"],
    "detritus": ["not-living", "detritus"],
}
CLASSES = list(LINEAGES)


def test_lineage_nodes_above_two_classes_deepest_first():
    nodes = dc.lineage_nodes(LINEAGES, CLASSES)
    by_name = {n.name: sorted(CLASSES[k] for k in n.members) for n in nodes}
    # Calanoida is a class and the parent of Calanoida_egg: a node of both; Copepoda of three; Metazoa and living
    # of the same four (both kept: an unknown may be one and not the other); nothing covers all five classes.
    assert by_name == {"Calanoida": ["Calanoida", "Calanoida_egg"],
                       "Copepoda": ["Calanoida", "Calanoida_egg", "Oithona"],
                       "Metazoa": ["Calanoida", "Calanoida_egg", "Chaetognatha", "Oithona"],
                       "living": ["Calanoida", "Calanoida_egg", "Chaetognatha", "Oithona"]}
    assert [n.name for n in nodes] == ["Calanoida", "Copepoda", "Metazoa", "living"]


def test_node_thresholds_and_the_deepest_trusted_node():
    nodes = dc.lineage_nodes(LINEAGES, CLASSES)
    # uncertain copepods: split between Calanoida and Oithona, but surely copepods; and unknown Cyclopoida
    rows, lineages = [], []
    for i in range(20):
        p = [0.45, 0.05, 0.45, 0.03, 0.02] if i % 2 else [0.40, 0.10, 0.45, 0.03, 0.02]
        rows.append((0 if i % 2 else 2, p))
        lineages.append(set(LINEAGES[CLASSES[rows[-1][0]]]))
    for _ in range(4):  # objects of no configured class under Copepoda: right for the node
        rows.append((dc.UNKNOWN, [0.3, 0.1, 0.5, 0.05, 0.05]))
        lineages.append({"living", "Metazoa", "Copepoda", "Cyclopoida", "Cyclops"})
    for _ in range(6):  # uncertain between Chaetognatha and detritus: no node holds both
        rows.append((3, [0.05, 0.05, 0.05, 0.45, 0.40]))
        lineages.append(set(LINEAGES["Chaetognatha"]))
    s = scored(rows, lineages=lineages)
    thresholds = [0.9] * 5  # no class trusted
    trusted = dc.trusted_mask(s.probs, thresholds)
    assert not trusted.any()
    nodes = dc.node_thresholds(s, nodes, 0.95, None, trusted)
    node = {n.name: n for n in nodes}
    assert node["Copepoda"].threshold is not None and node["Copepoda"].threshold <= 0.9
    assert node["Calanoida"].threshold is None  # half of them are Oithona: never 95 %
    got = dc.trusted_nodes(s.probs, nodes, trusted)
    assert set(got[:24]) == {"Copepoda"}
    assert set(got[24:]) <= {"", "Metazoa"}
    # living covers the same classes as Metazoa and holds the same objects here: left out as redundant
    assert "living" not in node and "Metazoa" in node
    # an object whose class is trusted gets no node
    assert dc.trusted_nodes(s.probs[:1], nodes, np.array([True]))[0] == ""


def test_correctness_model_is_monotone_and_orders_the_review():
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(400):
        s = rng.uniform(0.34, 1.0)
        right = rng.uniform() < s
        c = int(rng.integers(0, 3))
        p = np.full(3, (1 - s) / 2)
        p[c] = s
        rows.append((c if right else (c + 1) % 3, p.tolist()))
    sc = scored(rows)
    model = dc.correctness_model(sc, ["a", "b", "c"])
    assert set(model["per_class"]) == {"a", "b", "c"}
    x = np.linspace(0.34, 1, 30)
    pc = dc.p_correct(model, ["a", "b", "c"], np.zeros(30, dtype=int), x)
    assert np.all(np.diff(pc) >= -1e-12) and pc[0] < 0.6 and pc[-1] > 0.8
    # order: to check before trusted; then least likely right; then the rarer class; then the id
    trusted = np.array([True, False, False, False, False])
    p_right = np.array([0.1, 0.9, 0.5, 0.5, 0.2])
    share = np.array([0.5, 0.5, 0.4, 0.01, 0.5])
    order = dc.review_order(trusted, p_right, share, ["a", "b", "c", "d", "e"])
    assert order.tolist() == [4, 3, 2, 1, 0]
    # on a plateau of the correctness model, the least confident first, before the rarer class
    order = dc.review_order(trusted, p_right, share, ["a", "b", "c", "d", "e"],
                            score=np.array([0.9, 0.9, 0.4, 0.6, 0.3]))
    assert order.tolist() == [4, 2, 3, 1, 0]


def test_decision_rule_round_trip_and_apply(tmp_path):
    nodes = [dc.Node("Copepoda", [0, 1], 2, 0.8, 0.97, 0.5)]
    rule = dc.DecisionRule(["a", "b", "c"], [0.7, None, 0.9], [0.95, 0.95, 0.9], nodes,
                           {"pooled": {"x": [0.3, 1.0], "y": [0.2, 0.99]}, "per_class": {}}, [0.6, 0.3, 0.1], "exp")
    path = tmp_path / "decisions.json"
    path.write_text(json.dumps(rule.to_json()))
    back = dc.DecisionRule.load(path)
    assert back.thresholds == [0.7, None, 0.9] and back.nodes[0].name == "Copepoda" and back.classes == rule.classes
    probs = np.array([[0.8, 0.1, 0.1],    # a, trusted
                      [0.1, 0.85, 0.05],  # b: never trusted; a+b = 0.95 >= 0.8: node Copepoda
                      [0.05, 0.1, 0.85],  # c, below 0.9
                      [0.5, 0.2, 0.3]])   # a, below 0.7; a+b = 0.7 < 0.8: no node
    d = back.apply(probs, ["w", "x", "y", "z"])
    assert d["trusted"].tolist() == [True, False, False, False]
    assert d["node"].tolist() == ["", "Copepoda", "", ""]
    assert d["review_rank"][0] == 4  # the trusted one last
    assert sorted(d["review_rank"].tolist()) == [1, 2, 3, 4]
    assert d["review_rank"][3] == 1  # the lowest probability (0.5) first
    (tmp_path / "bad.json").write_text('{"classes": ["a"]}')
    with pytest.raises(Exception, match="not a decisions file"):
        dc.DecisionRule.load(tmp_path / "bad.json")


def test_unknown_halves_are_stable_and_balanced():
    ids = [f"obj{i}" for i in range(2000)]
    halves = [dc.half_of(i, seed=3) for i in ids]
    assert halves == [dc.half_of(i, seed=3) for i in ids]
    assert 0.45 < halves.count("calibration") / len(ids) < 0.55
    assert halves != [dc.half_of(i, seed=4) for i in ids]


# --------------------------------------------------------------------------------------------
# Abundances
# --------------------------------------------------------------------------------------------

def test_adjusted_counts_invert_the_confusion_rates():
    rates = np.array([[0.8, 0.2, 0.0], [0.1, 0.9, 0.0], [0.0, 0.3, 0.7]])
    true = np.array([[100, 10, 50], [0, 40, 5]], dtype=float)
    predicted = true @ rates  # what classify-and-count would see on average
    adj = ab.adjusted_counts(predicted, rates)
    np.testing.assert_allclose(adj, true, atol=1e-6)
    assert np.abs(predicted - true).sum() > 30  # the raw counts are off
    # counts stay non-negative and keep the sample's total
    adj = ab.adjusted_counts(np.array([[0.0, 10.0, 0.0]]), rates)
    assert (adj >= 0).all() and adj.sum() == pytest.approx(10)


def test_abundance_table_and_errors_per_class():
    rng = np.random.default_rng(1)
    classes = ["common", "rare", "other"]
    rates = np.array([[0.85, 0.15, 0.0], [0.05, 0.95, 0.0], [0.0, 0.0, 1.0]])
    samples, truth, pred = [], [], []
    for s in range(30):
        counts = [rng.integers(60, 100), rng.integers(0, 6), rng.integers(5, 20)]
        for c, n in enumerate(counts):
            for _ in range(n):
                samples.append(f"st{s:02d}")
                truth.append(c)
                pred.append(int(rng.choice(3, p=rates[c])))
    truth, pred = np.array(truth), np.array(pred)
    measured = ab.confusion_rates(truth, pred, 3)
    assert np.allclose(measured, rates, atol=0.03)
    table = ab.abundance_table(np.array(samples), truth, pred, np.zeros(len(truth), dtype=bool), measured, classes)
    assert len(table) == 30 * 3 and table.groupby("sample")["true"].sum().sum() == len(truth)
    assert (table.groupby("sample")["predicted"].sum() == table.groupby("sample")["true"].sum()).all()
    mae = ab.mae_per_class(table, classes)
    rare = mae.set_index("class_name").loc["rare"]
    # the common class spills ~12 objects per sample into the rare one: adjusted counts remove most of that
    assert rare["mae_predicted"] > 8 and rare["mae_adjusted"] < rare["mae_predicted"] / 2
    assert mae["class_name"].iloc[-1] == "all classes"


def test_confusion_rates_of_an_absent_class_is_identity():
    r = ab.confusion_rates(np.array([0, 0, 1]), np.array([0, 1, 1]), 3)
    assert r[2].tolist() == [0, 0, 1] and r[0].tolist() == [0.5, 0.5, 0]


def test_abundance_figure(tmp_path):
    table = pd.DataFrame({"sample": ["a", "a", "b", "b"], "class_name": ["x", "y", "x", "y"], "true": [3, 1, 0, 5],
                          "predicted": [2, 2, 1, 4], "adjusted": [3.0, 1.0, 0.4, 4.6], "trusted": [1, 0, 0, 3]})
    mae = ab.mae_per_class(table, ["x", "y"])
    ab.plot_abundance(table, mae, tmp_path / "a.svg", title="t")
    text = (tmp_path / "a.svg").read_text()
    assert text.lstrip().startswith("<?xml") and "<svg" in text
