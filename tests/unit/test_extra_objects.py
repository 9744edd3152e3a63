"""The objects training never saw (capped out by the balancing, of no configured class), their images,
and rule evaluate_decisions on them: lokiml.extra_objects and lokiml.decision_report.

On the demo export (a third of its size) run through the data rules' library functions, and on the
real ZooScan export of ../shared/data/ecotaxa.
"""

import html
import json

import numpy as np
import pandas as pd
import pytest

from lokiml import decision_report as dr
from lokiml import extra_objects as xo
from lokiml.demo import DEMO_CLASSES, DEMO_CONFIG_CLASSES, make_demo_export
from lokiml.io import read_tsv, write_tsv
from lokiml.pipeline import balance_classes, read_export, split_dataset

UNMAPPED = [n for n, c in DEMO_CLASSES.items() if c.get("unmapped")]


def prepare(tmp_path, export, classes, cap, group_by=None, mapping=None):
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    read_export(export, d / "objects.tsv", d / "ledger.tsv", classes, mapping_path=mapping)
    balance_classes(d / "objects.tsv", d / "balanced.tsv", classes, cap=cap)
    split_dataset(d / "balanced.tsv", d / "objects.tsv", d / "split.tsv", group_by=group_by)
    return d


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("demo")
    export = make_demo_export(tmp / "export", seed=1, scale=0.4).parent
    d = prepare(tmp, export, DEMO_CONFIG_CLASSES, cap=20)
    xo.collect_extra_objects(export, d / "ledger.tsv", d / "objects.tsv", d / "split.tsv", d / "extra.tsv",
                             d / "counts.tsv", seed=3)
    return tmp, export, d


def test_capped_objects_and_unknowns_are_collected_and_counted(demo):
    _, export, d = demo
    objects, split, ledger = read_tsv(d / "objects.tsv"), read_tsv(d / "split.tsv"), read_tsv(d / "ledger.tsv")
    extra = read_tsv(d / "extra.tsv")
    counts = read_tsv(d / "counts.tsv").set_index("class_name")
    originals = split[split["augmented"] == "0"]
    capped = extra[extra["set"] == "capped"]
    # every usable object is either kept by the balancing (an original of the split) or capped out
    assert sorted(capped["object_id"]) == sorted(set(objects["object_id"]) - set(originals["object_id"]))
    assert not set(capped["object_id"]) & set(originals["object_id"])
    assert (capped["reason"] == "capped_by_balance").all()
    per_class = objects["class_name"].value_counts()
    assert (per_class > 20).sum() >= 2  # some classes were capped
    for c in DEMO_CONFIG_CLASSES:
        row = counts.loc[c]
        assert int(row["export_objects"]) == per_class[c]
        assert int(row["kept_originals"]) + int(row["capped_in_population"]) == per_class[c]
        assert int(row["taken"]) == (capped["class_name"] == c).sum()
    # the unknowns: every validated row of an unmapped category, with its image and lineage
    unknown = extra[extra["set"] == "unknown"]
    expected = ledger[ledger["outcome"] == "unmapped_category"]
    assert sorted(unknown["object_id"]) == sorted(expected["object_id"])
    assert set(unknown["category"]) == set(UNMAPPED)
    assert unknown["hierarchy"].str.contains(">").all() and (unknown["image_ref"] != "").all()
    assert set(unknown["half"]) == {"calibration", "test"}
    assert int(counts.loc["(no class)", "export_objects"]) == len(unknown)
    # descriptors and the sample column travel with them
    assert {"object_area", "sample_id"} <= set(extra.columns) and (extra["sample_id"] != "").all()
    assert extra["item_id"].is_unique


def test_a_holdout_keeps_only_the_held_out_cruise(tmp_path):
    """With split.holdout (or group_by) the test objects come from other samples than the training objects:
    capped-out objects and unknowns of the training samples are left out of the natural test set."""
    export = make_demo_export(tmp_path / "export", seed=1, scale=0.4).parent
    holdout = {"column": "object_cruise", "values": ["PS122"]}
    d = tmp_path / "data"
    d.mkdir()
    read_export(export, d / "objects.tsv", d / "ledger.tsv", DEMO_CONFIG_CLASSES)
    balance_classes(d / "objects.tsv", d / "balanced.tsv", DEMO_CONFIG_CLASSES, cap=20)
    split_dataset(d / "balanced.tsv", d / "objects.tsv", d / "split.tsv", holdout=holdout)
    xo.collect_extra_objects(export, d / "ledger.tsv", d / "objects.tsv", d / "split.tsv", d / "extra.tsv",
                             d / "counts.tsv", holdout=holdout)
    extra, objects = read_tsv(d / "extra.tsv"), read_tsv(d / "objects.tsv")
    capped = extra[extra["set"] == "capped"]
    assert len(capped) and set(capped["object_cruise"]) == {"PS122"}
    unknown = extra[extra["set"] == "unknown"]
    assert set(unknown["object_cruise"]) == {"PS121", "PS122"}  # all of them: half calibrate the thresholds
    assert ((unknown["in_population"] == "1") == (unknown["object_cruise"] == "PS122")).all()
    counts = read_tsv(d / "counts.tsv").set_index("class_name")
    for c in DEMO_CONFIG_CLASSES:
        assert int(counts.loc[c, "population_objects"]) == int((objects["class_name"].eq(c)
                                                               & objects["object_cruise"].eq("PS122")).sum())
    assert int(counts.loc["(no class)", "population_objects"]) == (unknown["object_cruise"] == "PS122").sum()


def test_subsamples_are_stable_and_bounded(demo, tmp_path):
    _, export, d = demo
    kw = dict(max_per_class=3, max_unknowns=4, seed=3)
    xo.collect_extra_objects(export, d / "ledger.tsv", d / "objects.tsv", d / "split.tsv", tmp_path / "a.tsv",
                             tmp_path / "ac.tsv", **kw)
    xo.collect_extra_objects(export, d / "ledger.tsv", d / "objects.tsv", d / "split.tsv", tmp_path / "b.tsv",
                             tmp_path / "bc.tsv", **kw)
    assert (tmp_path / "a.tsv").read_bytes() == (tmp_path / "b.tsv").read_bytes()
    extra = read_tsv(tmp_path / "a.tsv")
    assert (extra[extra["set"] == "capped"].groupby("class_name").size() <= 3).all()
    assert (extra["set"] == "unknown").sum() == 4
    counts = read_tsv(tmp_path / "ac.tsv").set_index("class_name")
    assert int(counts.loc["(no class)", "export_objects"]) > 4  # the weights still know how many there are


def test_extra_images_are_normalised_like_the_training_images(demo):
    tmp, export, d = demo
    index = xo.normalise_extra_images(export, d / "extra.tsv", tmp / "extra.npy", tmp / "extra_index.tsv", size=32)
    extra = read_tsv(d / "extra.tsv")
    arr = np.load(tmp / "extra.npy")
    assert arr.shape == (len(extra), 32, 32) and (index["status"] == "ok").all()
    assert sorted(index["item_id"]) == sorted(extra["item_id"])
    assert arr.mean() > 150 and arr.min() < 120  # light background, a dark object


def fake_predictions(d, classes, rng, skill=0.8):
    """Validation/test predictions with full probabilities, and predictions of the extra objects, as the
    evaluation rules write them: the true class gets a high probability with probability ``skill``."""
    split = read_tsv(d / "split.tsv")
    extra = read_tsv(d / "extra.tsv")
    idx = {c: k for k, c in enumerate(classes)}

    def probs_for(truth):
        p = rng.dirichlet(np.ones(len(classes)) * 0.6, size=len(truth))
        for i, t in enumerate(truth):
            if t >= 0 and rng.uniform() < skill:
                p[i] = p[i] * 0.25
                p[i, t] += 0.75
        return p.astype(np.float32)

    out = {}
    for s in ("valid", "test"):
        rows = split[(split["split"] == s) & (split["augmented"] == "0")].sort_values("item_id")
        truth = rows["class_name"].map(idx).to_numpy()
        p = probs_for(truth)
        pred = np.asarray(classes)[p.argmax(axis=1)]
        table = pd.DataFrame({"item_id": rows["item_id"], "object_id": rows["object_id"],
                              "true_class": rows["class_name"], "predicted_class": pred,
                              "probability": p.max(axis=1), "correct": (pred == rows["class_name"]).astype(int)})
        write_tsv(d / f"{s}_predictions.tsv", table)
        np.save(d / f"{s}_probabilities.npy", p)
        out[s] = (table, p)
    truth = np.array([idx.get(c, -1) for c in extra["class_name"]])
    p = probs_for(truth)
    status = np.array(["ok"] * len(extra), dtype=object)
    if len(extra):
        status[0] = "unreadable image"  # one that could not be predicted
    xo.write_extra_predictions(extra, status, p[status == "ok"], classes, d / "extra_predictions.tsv",
                               d / "extra_probabilities.npy")
    return out


def decision_outputs(root):
    return {k: root / name for k, name in dr.OUTPUTS.items()}


def run_decisions(d, tmp, classes, **kw):
    outs = decision_outputs(tmp / "decisions")
    res = dr.evaluate_decisions(
        d / "classes.txt", d / "valid_predictions.tsv", d / "valid_probabilities.npy", d / "test_predictions.tsv",
        d / "test_probabilities.npy", d / "extra_predictions.tsv", d / "extra_probabilities.npy", d / "extra.tsv",
        d / "counts.tsv", d / "objects.tsv", outs, experiment="fake", **kw)
    return res, outs


def test_evaluate_decisions_end_to_end(demo):
    tmp, export, d = demo
    classes = DEMO_CONFIG_CLASSES
    (d / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    fake_predictions(d, classes, np.random.default_rng(5), skill=0.85)
    res, outs = run_decisions(d, tmp, classes, target_precision=0.9)
    for key, path in outs.items():
        assert path.exists() and path.stat().st_size > 0, key
    table = read_tsv(outs["thresholds"])
    assert table["class_name"].tolist() == classes
    reach = table["reachable"] == "1"
    assert reach.any()
    assert (table.loc[reach, "valid_precision"].astype(float) >= 0.9 - 1e-9).all()
    assert table.loc[~reach, "threshold"].eq("").all()
    rule = json.loads(outs["rule"].read_text())
    assert rule["classes"] == classes and set(rule["thresholds"]) == set(classes)
    # the natural test set: test originals and capped-out objects; weighted to the population
    nat = json.loads(outs["natural_metrics"].read_text())
    extra = read_tsv(d / "extra.tsv")
    n_capped_ok = (extra["set"] == "capped").sum() - (1 if extra["set"].iloc[0] == "capped" else 0)
    split = read_tsv(d / "split.tsv")
    n_test = ((split["split"] == "test") & (split["augmented"] == "0")).sum()
    assert nat["natural"]["objects_per_origin"] == {"test": int(n_test), "capped": int(n_capped_ok)}
    assert nat["balanced_test"]["n_objects"] == n_test
    cm = read_tsv(outs["natural_confusion"]).set_index("true\\predicted").astype(float)
    counts = read_tsv(d / "counts.tsv").set_index("class_name")
    np.testing.assert_allclose(cm.sum(axis=1).to_numpy(),
                               counts.loc[classes, "population_objects"].astype(float).to_numpy(), atol=0.05)
    # the trust figures: trusted share in [0, 1], trusted precision computed
    assert 0 <= res["trust"]["trusted_share"] <= 1
    # abundances: one row per (sample, class), true counts = objects of the natural test set per sample
    abund = read_tsv(outs["abundance"])
    assert set(abund["class_name"]) == set(classes)
    assert abund["true"].astype(int).sum() == n_test + n_capped_ok
    errors = read_tsv(outs["abundance_errors"])
    assert errors["class_name"].tolist() == classes + ["all classes"]
    # the unknowns' test half, per category
    open_set = read_tsv(outs["open_set"])
    assert set(open_set["category"]) <= set(UNMAPPED) and open_set["objects"].astype(int).sum() == res["open_set"][
        "objects"]
    assert 0 <= res["open_set"]["auc"] <= 1
    page = outs["page"].read_text()
    for needle in ["Trust thresholds", "need no human look", "Natural frequencies", "Abundances per sample_id",
                   "open set", "Lineage nodes", "<svg"]:
        assert needle in page, needle
    assert "Copepoda" in read_tsv(outs["thresholds"]).to_string() or "Copepoda" in page  # the demo's lineage


def test_decisions_are_rewritten_byte_identical(demo, tmp_path):
    tmp, export, d = demo
    classes = DEMO_CONFIG_CLASSES
    (d / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    fake_predictions(d, classes, np.random.default_rng(7))
    _, a = run_decisions(d, tmp_path / "a", classes)
    _, b = run_decisions(d, tmp_path / "b", classes)
    for key in a:
        assert a[key].read_bytes() == b[key].read_bytes(), key


def test_a_useless_model_trusts_nothing_and_a_missing_sample_column_is_said(demo, tmp_path):
    tmp, export, d = demo
    classes = DEMO_CONFIG_CLASSES
    (d / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    fake_predictions(d, classes, np.random.default_rng(9), skill=0.0)
    res, outs = run_decisions(d, tmp_path, classes, target_precision=0.95, abundance_by="no_such_column")
    table = read_tsv(outs["thresholds"])
    assert (table["reachable"] == "0").sum() >= len(classes) - 1
    assert res["trust"]["trusted_share"] < 0.1
    assert "no column 'no_such_column'" in html.unescape(outs["page"].read_text())
    assert read_tsv(outs["abundance"]).empty


def test_real_zooscan_export(shared_data, tmp_path):
    """The real ZooScan export: fibres, artefacts and badfocus as classes; its Euchaetidae (validated, no
    configured class) are the unknowns; every image of the capped-out and unknown objects normalises."""
    export = shared_data / "zooscan_export_13539" / "export_13539_20240728_0803.zip"
    classes = ["artefact", "badfocus", "fiber"]
    d = prepare(tmp_path, export, classes, cap=40)
    xo.collect_extra_objects(export, d / "ledger.tsv", d / "objects.tsv", d / "split.tsv", d / "extra.tsv",
                             d / "counts.tsv")
    extra = read_tsv(d / "extra.tsv")
    unknown = extra[extra["set"] == "unknown"]
    assert set(unknown["category"]) == {"Euchaetidae"} and len(unknown) == 3
    capped = extra[extra["set"] == "capped"]
    assert capped.groupby("class_name").size().to_dict() == {"artefact": 100 - 40, "fiber": 166 - 40}
    index = xo.normalise_extra_images(export, d / "extra.tsv", tmp_path / "x.npy", tmp_path / "x.tsv", size=32,
                                      bottom_crop=0.1)
    assert (index["status"] == "ok").all() and len(index) == len(extra)
