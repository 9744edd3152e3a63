"""Evaluation: metrics on hand-computed cases, the predictions table, figures, stable bytes, leaderboard.

Most tests use a stand-in model (``FakeModel``) whose prediction is written into
the image itself, so that every number can be checked by hand; one test saves
and reloads a real (tiny) Keras model with the contract of the training stage.
"""

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from lokiml import evaluate as ev
from lokiml.errors import InputError
from lokiml.io import write_tsv

# --------------------------------------------------------------------------------------------
# A hand-computed case: 3 classes, 4 objects
# --------------------------------------------------------------------------------------------

Y = np.array([0, 0, 1, 2])
P = np.array([
    [0.70, 0.20, 0.10],   # true 0, predicted 0 (confidence 0.70)
    [0.10, 0.62, 0.28],   # true 0, predicted 1: wrong (0.62); 0 is only third
    [0.20, 0.50, 0.30],   # true 1, predicted 1 (0.50)
    [0.25, 0.25, 0.50],   # true 2, predicted 2 (0.50); tie of 0 and 1 broken by class index
], dtype=np.float32)
CLASSES3 = ["Appendicularia", "Calanoida", "detritus"]


def test_metrics_match_hand_computed_values():
    m = ev.compute_metrics(Y, P, CLASSES3)
    assert m["n_objects"] == 4
    assert m["accuracy"] == pytest.approx(0.75)
    # recall: class 0 1/2, class 1 1/1, class 2 1/1
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)
    # F1: class 0: P=1, R=.5 -> 2/3; class 1: P=.5, R=1 -> 2/3; class 2: 1
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert m["top3_accuracy"] == 1.0
    assert m["log_loss"] == pytest.approx(-(math.log(0.7) + math.log(0.1) + math.log(0.5) + math.log(0.5)) / 4, rel=1e-6)
    # bins: 0.70 alone (right, gap .30), 0.62 alone (wrong, gap .62), two at 0.50 (both right, gap .50)
    assert m["ece"] == pytest.approx(0.25 * 0.30 + 0.25 * 0.62 + 0.5 * 0.50, abs=1e-6)
    assert m["classes_absent"] == []


def test_top_k_accuracy_and_tie_order():
    assert ev.top_k_accuracy(Y, P, 1) == pytest.approx(0.75)
    assert ev.top_k_accuracy(Y, P, 2) == pytest.approx(0.75)  # row 1: true class 0 is third
    assert ev.top_k_accuracy(Y, P, 3) == 1.0
    top = ev.top_k_classes(P, 3)
    assert top[3].tolist() == [2, 0, 1]  # tie 0.25/0.25: lower class index first
    assert ev.top_k_classes(P[:, :2], 3).shape == (4, 2)  # k is capped at the number of classes


def test_ece_perfectly_calibrated_and_overconfident():
    # 10 objects at confidence 0.8, 8 of them right: calibrated
    probs = np.tile([0.8, 0.2], (10, 1))
    y = np.array([0] * 8 + [1] * 2)
    assert ev.expected_calibration_error(y, probs, 15) == pytest.approx(0.0, abs=1e-12)
    # all wrong at 0.9: ECE = 0.9
    probs = np.tile([0.9, 0.1], (5, 1))
    assert ev.expected_calibration_error(np.ones(5, int), probs, 15) == pytest.approx(0.9)
    bins = ev.calibration_bins(np.ones(5, int), probs, 15)
    assert len(bins) == 15 and bins["n"].sum() == 5
    assert bins.loc[bins["n"] > 0, "upper"].item() == pytest.approx(14 / 15)  # 0.9 lies in (13/15, 14/15]
    # confidence 1.0 lands in the last bin, 0 in the first
    b = ev.calibration_bins(np.array([0, 0]), np.array([[1.0, 0.0], [0.0, 0.0]]), 15)
    assert b["n"].iloc[-1] == 1 and b["n"].iloc[0] == 1


def test_classification_table_lists_absent_classes_in_class_order():
    classes = ["b_class", "a_class", "absent"]
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 1, 1])
    t = ev.classification_table(y, pred, classes)
    assert t["class_name"].tolist() == ["b_class", "a_class", "absent", "macro avg", "weighted avg"]
    absent = t.set_index("class_name").loc["absent"]
    assert absent["support"] == 0 and absent["f1"] == 0 and absent["precision"] == 0
    f1 = t.set_index("class_name")["f1"]
    assert f1["macro avg"] == pytest.approx((f1["b_class"] + f1["a_class"] + 0) / 3)
    m = ev.compute_metrics(y, np.eye(3)[pred] * 0.9 + 0.1 / 3, classes)
    assert m["classes_absent"] == ["absent"]
    assert m["macro_f1"] == pytest.approx(f1["macro avg"])
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1) / 2)  # absent class left out of the mean recall
    assert np.isfinite(m["log_loss"])


def test_confusion_and_row_normalisation():
    cm = ev.confusion_counts(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    n = ev.normalise_rows(cm)
    assert n[0].tolist() == [0.5, 0.5, 0, 0]
    assert np.isnan(n[3]).all()  # a class without objects has no row percentages


def test_predictions_table_columns():
    t = ev.predictions_table(["o1", "o2", "o3", "o4"], ["o1", "o2", "o3", "o4"], Y, P, CLASSES3)
    assert list(t.columns) == ["item_id", "object_id", "true_class", "predicted_class", "probability", "correct",
                               "top1_class", "top1_prob", "top2_class", "top2_prob", "top3_class", "top3_prob"]
    assert t["predicted_class"].tolist() == ["Appendicularia", "Calanoida", "Calanoida", "detritus"]
    assert t["correct"].tolist() == [1, 0, 1, 1]
    assert t.loc[1, "top3_class"] == "Appendicularia" and t.loc[1, "top3_prob"] == pytest.approx(0.1)
    assert (t["probability"] == t["top1_prob"]).all()


# --------------------------------------------------------------------------------------------
# A fake experiment: store, split, training records, and a model that reads its answer in the image
# --------------------------------------------------------------------------------------------

class FakeModel:
    """Predicts the class whose index is written in pixel (0, 0) of the image, with probability 0.8."""

    def __init__(self, n_classes):
        self.n = n_classes
        self.calls = 0

    def predict_on_batch(self, x):
        self.calls += 1
        code = x[:, 0, 0, 0].astype(int) % self.n
        p = np.full((len(x), self.n), 0.2 / (self.n - 1), dtype=np.float32)
        p[np.arange(len(x)), code] = 0.8
        return p


def make_experiment(tmp_path, classes, per_split=(("train", 6), ("valid", 3), ("test", 4)), copies=2, size=8,
                    wrong_every=3, shards=2):
    """Write split.tsv, a 2-shard image store, classes.txt, history.tsv and train_info.json under tmp_path."""
    rows = []
    for ci, cls in enumerate(classes):
        for split, n in per_split:
            for i in range(n):
                oid = f"{cls[:3]}_{split}_{i:03d}"
                rows.append({"item_id": oid, "object_id": oid, "class_name": cls, "image_ref": f"{oid}.png",
                             "augmented": 0, "flip": 0, "angle": 0.0, "dx": 0.0, "dy": 0.0, "split": split})
                for c in range(copies):
                    rows.append({"item_id": f"{oid}#aug{c + 1:04d}", "object_id": oid, "class_name": cls,
                                 "image_ref": f"{oid}.png", "augmented": 1, "flip": 1, "angle": 30.0, "dx": 0.0,
                                 "dy": 0.0, "split": split})
    split = pd.DataFrame(rows).sort_values(["class_name", "item_id"]).reset_index(drop=True)
    write_tsv(tmp_path / "split.tsv", split, float_format="%.4f")
    index = {c: i for i, c in enumerate(classes)}
    npys, idxs = [], []
    for k in range(shards):
        mine = split.iloc[k::shards].reset_index(drop=True)
        arr = np.zeros((len(mine), size, size), dtype=np.uint8)
        for r, row in mine.iterrows():
            code = index[row["class_name"]]
            if int(row["object_id"][-3:]) % wrong_every == 0 and row["split"] != "train":
                code = (code + 1) % len(classes)  # a mistake the fake model will make
            arr[r, 0, 0] = code
            arr[r, 1:, 1:] = 100 + code
        np.save(tmp_path / f"shard{k}.npy", arr)
        write_tsv(tmp_path / f"shard{k}.tsv", pd.DataFrame({"item_id": mine["item_id"], "row": range(len(mine)),
                                                             "status": "ok"}))
        npys.append(str(tmp_path / f"shard{k}.npy"))
        idxs.append(str(tmp_path / f"shard{k}.tsv"))
    (tmp_path / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    hist = pd.DataFrame({
        "phase": ["head"] * 4 + ["fine_tune"] * 2, "epoch": range(1, 7),
        "loss": [1.5, 1.1, 0.9, 0.8, 0.6, 0.55], "accuracy": [0.4, 0.55, 0.65, 0.7, 0.8, 0.82],
        "val_loss": [1.4, 1.0, 0.95, 0.97, 0.7, 0.72], "val_accuracy": [0.45, 0.6, 0.62, 0.61, 0.75, 0.74],
        "seconds": [10.0] * 6, "learning_rate": [1e-3] * 4 + [1e-4] * 2,
    })
    write_tsv(tmp_path / "history.tsv", hist)
    (tmp_path / "train_info.json").write_text(json.dumps({"epochs_run": 6, "stopped_early_at": None,
                                                          "best_epoch": 5, "seconds_total": 60.0}))
    return split, npys, idxs


def outputs_for(root):
    out = {"summary": root / "summary.txt", "summary_html": root / "summary.html", "curves": root / "curves.svg"}
    names = {"predictions": "predictions.tsv", "metrics": "metrics.json", "report": "classification_report.tsv",
             "report_html": "classification_report.html", "confusion_counts": "confusion_counts.tsv",
             "confusion_normalised": "confusion_normalised.tsv", "confusion_counts_fig": "confusion_counts.svg",
             "confusion_normalised_fig": "confusion_normalised.svg", "reliability": "reliability.svg",
             "mistakes": "mistakes.jpg", "probabilities": "probabilities.npy"}
    assert set(names) == set(ev.SPLIT_OUTPUTS)
    for s in ev.SPLITS:
        for key, name in names.items():
            out[f"{s}_{key}"] = root / s / name
    return out


PARAMS = {"model": "mobilenetv2", "weights": "none", "image_size": 8, "batch_size": 5, "epochs": 10,
          "optimizer": "rmsprop", "learning_rate": 0.001, "dropout": 0.4,
          "early_stopping": {"monitor": "val_loss", "patience": 20, "min_delta": 0.01}}


def run_fake(tmp_path, classes, out_dir="out", **kw):
    split, npys, idxs = make_experiment(tmp_path, classes, **{k: v for k, v in kw.items() if k in ("per_split",)})
    outs = outputs_for(tmp_path / out_dir)
    model = FakeModel(len(classes))
    res = ev.evaluate_experiment(
        model_path=tmp_path / "best.keras", classes_path=tmp_path / "classes.txt",
        history_path=tmp_path / "history.tsv", info_path=tmp_path / "train_info.json",
        split_path=tmp_path / "split.tsv", store_npys=npys, store_indexes=idxs, classes=classes, outputs=outs,
        experiment="fake", params=PARAMS, batch_size=5, model=model,
    )
    return split, outs, res, model


def read(path):
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def assert_predictions_match_split(pred: pd.DataFrame, split: pd.DataFrame, which: str):
    """The predictions of a split are those of its own objects, each with its own true class."""
    expected = split[(split["split"] == which) & (split["augmented"].astype(int) == 0)]
    assert sorted(pred["object_id"]) == sorted(expected["object_id"]), f"{which} predictions are not the {which} objects"
    truth = expected.set_index("object_id")["class_name"]
    assert (pred["true_class"].to_numpy() == truth.loc[pred["object_id"]].to_numpy()).all(), "true class mismatch"


def test_test_predictions_carry_the_test_ids_not_the_validation_ids(tmp_path):
    """The seed wrote the test predictions under the validation ids: this must fail loudly."""
    classes = ["Appendicularia", "Calanoida", "Chaetognatha"]
    split, outs, _, _ = run_fake(tmp_path, classes)
    test = read(outs["test_predictions"])
    valid = read(outs["valid_predictions"])
    assert_predictions_match_split(test, split, "test")
    assert_predictions_match_split(valid, split, "valid")
    assert not set(test["object_id"]) & set(valid["object_id"])
    assert len(test) == 3 * 4 and len(valid) == 3 * 3  # originals only, no augmented copies
    assert not test["item_id"].str.contains("#aug").any()
    # the seed's defect (test rows labelled with the validation ids) is caught by the same check
    seed_like = test.copy()
    seed_like["object_id"] = list(valid["object_id"]) + list(valid["object_id"][: len(test) - len(valid)])
    with pytest.raises(AssertionError):
        assert_predictions_match_split(seed_like, split, "test")


def test_evaluate_experiment_numbers(tmp_path):
    classes = ["Appendicularia", "Calanoida", "Chaetognatha"]
    split, outs, res, model = run_fake(tmp_path, classes)
    test = read(outs["test_predictions"])
    # objects 000 and 003 of each class are made to be mistaken for the next class: 2 of 4 wrong
    assert test["correct"].astype(int).sum() == 3 * 2
    m = json.loads(outs["test_metrics"].read_text())
    assert m["accuracy"] == pytest.approx(0.5) and m["n_objects"] == 12 and m["include_augmented"] is False
    assert m["top3_accuracy"] == 1.0 and m["ece"] == pytest.approx(0.3)  # all at 0.8 confidence, half right
    assert m["log_loss"] == pytest.approx(-(math.log(0.8) + math.log(0.1)) / 2, rel=1e-5)
    assert len(m["calibration_bins"]) == 15
    # every class's probability, row for row with the predictions (lokiml.decision_report reads them)
    probs = np.load(outs["test_probabilities"])
    assert probs.shape == (12, 3) and np.allclose(probs.sum(axis=1), 1.0)
    assert (np.asarray(classes)[probs.argmax(axis=1)] == test["predicted_class"].to_numpy()).all()
    rep = read(outs["test_report"])
    assert rep["class_name"].tolist() == classes + ["macro avg", "weighted avg"]
    cm = read(outs["test_confusion_counts"])
    assert cm.columns.tolist() == ["true\\predicted"] + classes and cm.iloc[:, 0].tolist() == classes
    assert cm.iloc[:, 1:].astype(int).to_numpy().trace() == 6
    norm = read(outs["test_confusion_normalised"])
    assert np.allclose(norm.iloc[:, 1:].astype(float).sum(axis=1), 1.0)
    # batches of 5 over 12 test and 9 validation objects
    assert model.calls == 3 + 2
    text = outs["summary"].read_text()
    for needle in ["Test accuracy:", "0.5000", "Test loss:", "mobilenetv2", "not pre-trained", "Epochs run:",
                   "6 of 10 planned", "head: 4, fine_tune: 2", "did not stop early", "Best epoch:", "5",
                   "60.0 s in total, 10.0 s per epoch", "originals only", "Train:", "18 objects + 36 augmented",
                   "best.keras"]:
        assert needle in text, needle
    html = outs["summary_html"].read_text()
    assert "<table>" in html and "log loss" in html and "balanced accuracy" in html and "mobilenetv2" in html
    assert "Calanoida" in outs["test_report_html"].read_text()
    mistakes = res["test"].mistakes
    assert len(mistakes) == 6 and (mistakes["correct"] == 0).all() and res["test"].mistake_images.shape == (6, 8, 8)
    assert mistakes["item_id"].tolist() == sorted(mistakes["item_id"])  # all at 0.8: ties by item id
    assert outs["test_mistakes"].read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG: photos of objects


def test_rewrite_is_byte_identical(tmp_path):
    classes = ["Appendicularia", "Calanoida", "Chaetognatha"]
    _, outs_a, _, _ = run_fake(tmp_path, classes, out_dir="a")
    first = {k: p.read_bytes() for k, p in outs_a.items()}
    _, outs_b, _, _ = run_fake(tmp_path, classes, out_dir="a")  # the same paths again
    for k, p in outs_b.items():
        assert p.read_bytes() == first[k], f"{k} changed on rewrite"
    _, outs_c, _, _ = run_fake(tmp_path, classes, out_dir="c")  # other paths: same bytes too
    for k, p in outs_c.items():
        assert p.read_bytes() == first[k], f"{k} depends on where it is written"
    assert not list((tmp_path / "a").rglob(".*"))  # no temporary files left behind


def test_confusion_figure_readable_at_25_classes(tmp_path):
    classes = [f"Species_{i:02d}_{'longname' * (i % 3)}" for i in range(25)]
    rng = np.random.default_rng(0)
    y = rng.integers(0, 25, 400)
    pred = np.where(rng.random(400) < 0.7, y, rng.integers(0, 25, 400))
    cm = ev.confusion_counts(y, pred, 25)
    for normalised, values in ((False, cm), (True, ev.normalise_rows(cm))):
        path = tmp_path / f"cm_{normalised}.svg"
        ev.plot_confusion(values, classes, path, normalised=normalised, title="25 classes")
        svg = path.read_text()
        root = ET.fromstring(svg)  # well-formed
        width = float(root.get("width").replace("pt", ""))
        assert width > 700  # the figure grows with the classes (about 13 in at 25 classes)
        for c in classes:  # names on both axes
            assert svg.count(f"<!-- {c} -->") == 2, c
        cells = sum(1 for v in values.ravel() if np.isfinite(v) and v > 0)
        assert svg.count("<!-- ") >= 2 * 25 + cells  # a value in every non-empty cell
    ticks, cells = ev._font_sizes(25)
    assert 7 <= cells < ticks <= 12
    assert ev._font_sizes(60)[1] == 6.0 and ev._font_sizes(5) == (12.0, 11.0)
    png = tmp_path / "cm.png"
    ev.plot_confusion(cm, classes, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_non_probability_outputs_are_refused(tmp_path):
    classes = ["a", "b", "c"]
    split, npys, idxs = make_experiment(tmp_path, classes)

    class Logits(FakeModel):
        def predict_on_batch(self, x):
            return np.log(super().predict_on_batch(x)) * 3

    from lokiml.store import Store
    with pytest.raises(InputError, match="softmax"):
        ev.evaluate_split(Logits(3), Store(npys, idxs), split, "test", classes)
    with pytest.raises(InputError, match="per image"):
        ev.evaluate_split(FakeModel(4), Store(npys, idxs), split, "test", classes)


def test_classes_of_model_and_config_must_agree(tmp_path):
    classes = ["a", "b", "c"]
    _, npys, idxs = make_experiment(tmp_path, classes)
    with pytest.raises(InputError, match="trained on classes"):
        ev.evaluate_experiment(tmp_path / "best.keras", tmp_path / "classes.txt", tmp_path / "history.tsv",
                               tmp_path / "train_info.json", tmp_path / "split.tsv", npys, idxs, ["a", "c", "b"],
                               outputs_for(tmp_path / "o"), model=FakeModel(3))


def test_items_without_image_are_left_out_and_counted(tmp_path):
    classes = ["a", "b", "c"]
    split, npys, idxs = make_experiment(tmp_path, classes)
    idx = pd.read_csv(idxs[0], sep="\t", dtype=str, keep_default_na=False)
    victim = split[(split["split"] == "test") & (split["augmented"] == 0)]["item_id"].iloc[0]
    assert victim in set(idx["item_id"]) or victim in set(pd.read_csv(idxs[1], sep="\t")["item_id"])
    for p in idxs:
        t = pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)
        t.loc[t["item_id"] == victim, "status"] = "unreadable_image: truncated"
        write_tsv(p, t)
    from lokiml.store import Store
    r = ev.evaluate_split(FakeModel(3), Store(npys, idxs), split, "test", classes)
    assert r.n_excluded == 1 and victim not in set(r.predictions["item_id"])
    assert r.metrics["n_excluded_no_image"] == 1 and r.metrics["n_objects"] == 11


def test_include_augmented_evaluates_the_copies_too(tmp_path):
    classes = ["a", "b", "c"]
    split, npys, idxs = make_experiment(tmp_path, classes)
    from lokiml.store import Store
    r = ev.evaluate_split(FakeModel(3), Store(npys, idxs), split, "test", classes, include_augmented=True)
    assert r.metrics["n_objects"] == 3 * 4 * 3 and r.metrics["include_augmented"] is True


def test_training_curves_from_history_with_restarting_epochs(tmp_path):
    hist = pd.DataFrame({"phase": ["head"] * 3 + ["fine_tune"] * 2, "epoch": [0, 1, 2, 0, 1],
                         "loss": [1, .8, .7, .6, .5], "accuracy": [.5, .6, .7, .75, .8],
                         "val_loss": [1, .9, .8, .7, .75], "val_accuracy": [.5, .55, .6, .7, .68]})
    assert ev._epoch_axis(hist).tolist() == [1, 2, 3, 4, 5]
    ev.plot_training_curves(hist, tmp_path / "c.svg", title="t", best_epoch=4)
    svg = (tmp_path / "c.svg").read_text()
    assert "fine_tune" in svg and "best epoch" in svg and "validation" in svg


def test_training_facts_fall_back_to_history():
    hist = pd.DataFrame({"phase": ["head"] * 3, "epoch": [1, 2, 3], "seconds": [2.0, 3.0, 4.0]})
    f = ev.training_facts({}, hist)
    assert f["epochs_run"] == 3 and f["seconds_total"] == 9.0 and f["seconds_per_epoch"] == 3.0
    f = ev.training_facts({"epochs_run": 7, "seconds": {"total": 70.0, "per_epoch": 10.0}, "best_epoch": 4,
                           "stopped_early_at": 7}, hist)
    assert (f["epochs_run"], f["seconds_total"], f["best_epoch"], f["stopped_early_at"]) == (7, 70.0, 4, 7)
    # lokiml.train's train_info.json: totals, per-phase dicts and a list of epoch times
    f = ev.training_facts({"epochs_run": 5, "epochs_per_phase": {"head": 3, "fine_tune": 2},
                           "stopped_early_at": None, "stopped_early_per_phase": {"head": None, "fine_tune": None},
                           "best_epoch": 5, "seconds_total": 20.0, "seconds_per_epoch": [1.0, 2.0, 3.0, 1.0, 3.0],
                           "feature_seconds": 4.0, "runtime": {"device": "CPU"}}, hist)
    assert f["epochs_run"] == 5 and f["phases"] == {"head": 3, "fine_tune": 2} and f["seconds_per_epoch"] == 2.0
    assert f["device"] == "CPU" and f["feature_seconds"] == 4.0 and f["stopped_early_at"] is None
    f = ev.training_facts({"device": "GPU: NVIDIA H200", "precision": "mixed_bfloat16", "backend": "jax",
                           "runtime": {"backend_version": "0.10.2"}}, hist)
    assert (f["device"], f["precision"], f["backend"], f["backend_version"]) == ("GPU: NVIDIA H200", "mixed_bfloat16",
                                                                                 "jax", "0.10.2")
    f = ev.training_facts({"epochs_run": {"head": 2, "fine_tune": 1}, "stopped_early_at": {"head": 2, "fine_tune": None}},
                          hist)
    assert f["epochs_run"] == 3 and f["stopped_early_at"] == 2 and f["phases"] == {"head": 2, "fine_tune": 1}


# --------------------------------------------------------------------------------------------
# Leaderboard and data figures
# --------------------------------------------------------------------------------------------

def write_metrics(path, macro_f1, accuracy=0.5):
    path.write_text(json.dumps({"macro_f1": macro_f1, "accuracy": accuracy, "balanced_accuracy": accuracy,
                                "top3_accuracy": 0.9, "log_loss": 1.0, "ece": 0.1, "n_objects": 20}))
    return path


def test_leaderboard_sorted_by_validation_macro_f1(tmp_path):
    """Ranked by the split a model is chosen by; the test scores (here in the opposite order) don't rank."""
    names = ["resnet", "inception", "mobile", "alpha"]
    f1 = {"resnet": 0.61, "inception": 0.83, "mobile": 0.61, "alpha": 0.42}
    tests = [write_metrics(tmp_path / f"{n}_t.json", 1.0 - f1[n], accuracy=0.9 - f1[n]) for n in names]
    valids = [write_metrics(tmp_path / f"{n}_v.json", f1[n]) for n in names]
    infos = []
    for n in names:
        p = tmp_path / f"{n}_i.json"
        p.write_text(json.dumps({"epochs_run": 12, "best_epoch": 9, "seconds_total": 1234.5}))
        infos.append(p)
    settings = {n: {"model": n, "weights": "imagenet", "image_size": 299} for n in names}
    out = tmp_path / "lb.tsv"
    t = ev.leaderboard(names, tests, valids, infos, settings, out, tmp_path / "lb.html", tmp_path / "lb.svg")
    assert t["experiment"].tolist() == ["inception", "mobile", "resnet", "alpha"]  # tie: by name
    back = pd.read_csv(out, sep="\t")
    assert back["experiment"].tolist() == t["experiment"].tolist()
    assert back["rank"].tolist() == [1, 2, 3, 4]
    for col in ["test_accuracy", "test_balanced_accuracy", "test_macro_f1", "test_top3_accuracy", "test_log_loss",
                "test_ece", "epochs_run", "training_seconds", "model", "weights"]:
        assert col in back.columns, col
    assert "0.8300" in out.read_text()  # fixed format
    assert back.columns.tolist()[:3] == ["rank", "experiment", "valid_macro_f1"]
    html = (tmp_path / "lb.html").read_text()
    assert html.index("inception") < html.index("alpha")
    before = out.read_bytes(), (tmp_path / "lb.svg").read_bytes(), (tmp_path / "lb.html").read_bytes()
    ev.leaderboard(names, tests, valids, infos, settings, out, tmp_path / "lb.html", tmp_path / "lb.svg")
    assert (out.read_bytes(), (tmp_path / "lb.svg").read_bytes(), (tmp_path / "lb.html").read_bytes()) == before


def test_data_summary_figures(tmp_path):
    classes = [f"class_{i:02d}" for i in range(22)]
    split, _, _ = make_experiment(tmp_path, classes, per_split=(("train", 3), ("valid", 1), ("test", 1)), shards=1)
    rows = []
    for i, c in enumerate(classes):
        rows.append({"class_name": c, "export_rows": 20 + i, "used": 10 + i, "dropped_status_not_selected": 8,
                     "dropped_missing_image": 2, "balanced_originals": 5, "augmented_copies": 10, "train": 9,
                     "valid": 3, "test": 3})
    rows.append({"class_name": "(no class)", "export_rows": 30, "used": 0, "dropped_status_not_selected": 0,
                 "dropped_missing_image": 0, "balanced_originals": 0, "augmented_copies": 0, "train": 0, "valid": 0,
                 "test": 0})
    summary = pd.DataFrame(rows)
    summary.loc[len(summary)] = ["TOTAL"] + summary.iloc[:, 1:].sum().tolist()
    summary.loc[summary.index[-1], "export_rows"] += 0
    write_tsv(tmp_path / "summary.tsv", summary)
    outs = {k: tmp_path / "fig" / f"{k}.svg" for k in ("objects", "dropped", "splits")}
    ev.plot_data_summary(tmp_path / "summary.tsv", tmp_path / "split.tsv", outs["objects"], outs["dropped"],
                         outs["splits"], tmp_path / "fig" / "summary.html", classes=classes, cap=15)
    for p in outs.values():
        ET.fromstring(p.read_text())
    assert "<!-- class_21 -->" in outs["objects"].read_text()
    dropped = outs["dropped"].read_text()
    assert "status_not_selected" in dropped and "missing_image" in dropped
    html = (tmp_path / "fig" / "summary.html").read_text()
    assert "TOTAL" in html and "(no class)" in html and 'title="object_annotation_status' in html


# --------------------------------------------------------------------------------------------
# The contract with the training stage: a saved Keras model, uint8 (batch, S, S, 1) in, softmax out
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keras_model_file(tmp_path_factory):
    keras = pytest.importorskip("keras")
    path = tmp_path_factory.mktemp("model") / "best.keras"
    keras.utils.set_random_seed(1)
    inp = keras.Input((8, 8, 1), dtype="uint8")
    x = keras.layers.Rescaling(1.0 / 255)(inp)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3, activation="softmax")(x)
    keras.Model(inp, out).save(path)
    return path


def test_saved_keras_model_is_loaded_and_predicts_in_batches(tmp_path, keras_model_file):
    classes = ["a", "b", "c"]
    split, npys, idxs = make_experiment(tmp_path, classes)
    outs = outputs_for(tmp_path / "out")
    res = ev.evaluate_experiment(keras_model_file, tmp_path / "classes.txt", tmp_path / "history.tsv",
                                 tmp_path / "train_info.json", tmp_path / "split.tsv", npys, idxs, classes, outs,
                                 experiment="keras", params=PARAMS, batch_size=4)
    p = read(outs["test_predictions"])
    probs = p[["top1_prob", "top2_prob", "top3_prob"]].astype(float).sum(axis=1)
    assert np.allclose(probs, 1.0, atol=1e-5)
    assert res["test"].metrics["n_objects"] == 12
