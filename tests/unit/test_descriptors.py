"""The descriptor baseline: column choice, no test leakage, predictions per object, end to end, config."""

import json

import numpy as np
import pandas as pd
import pytest

from lokiml import descriptors as d
from lokiml import evaluate as ev
from lokiml.config import validate_config
from lokiml.io import write_tsv

CLASSES = ["a", "b", "c"]
FAST_RF = {"classifier": "random_forest", "param_grid": {"n_estimators": [20], "min_samples_leaf": [1, 5]}}


def synthetic(n=240, seed=0, classes=CLASSES):
    """Objects with two informative descriptors, noise, identifiers, a constant and a mostly missing column."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(classes)
    ids = [f"obj_{i:05d}" for i in range(n)]
    objects = pd.DataFrame({
        "object_id": ids,
        "class_name": [classes[k] for k in y],
        "img_file_name": [f"{i}.jpg" for i in ids],
        "object_area": (100 + 50 * y + rng.normal(0, 10, n)).round(1).astype(str),
        "object_mean": (80 + 20 * (y == 1) + rng.normal(0, 5, n)).round(2).astype(str),
        "object_noise": rng.normal(0, 1, n).round(3).astype(str),
        "object_lat": (79 + y * 0.1).astype(str),  # informative, but a coordinate: must be left out
        "object_index": np.arange(n).astype(str),
        "object_depth_min": (y * 10.0).astype(str),
        "object_date": ["20200101"] * n,
        "object_flat": ["1.5"] * n,
        "object_sparse": [str(v) if i % 5 == 0 else ("nan" if i % 2 else "") for i, v in enumerate(y)],
        "object_cruise": ["PS121"] * n,
        "object_annotation_category": [classes[k] for k in y],
    })
    split = pd.DataFrame({"item_id": ids, "object_id": ids, "class_name": objects["class_name"], "augmented": "0",
                          "split": np.array(["train", "train", "train", "valid", "test"] * (n // 5 + 1))[
                              rng.permutation(n)]})
    # augmented copies: no features of their own, never used
    aug = split.iloc[:30].copy()
    aug["item_id"] = aug["item_id"] + "#aug0001"
    aug["augmented"] = "1"
    return objects, pd.concat([split, aug], ignore_index=True)


def test_column_selection_and_reasons():
    objects, _ = synthetic()
    table = d.select_columns(objects, max_missing=0.5, exclude_columns=["object_noise"]).set_index("column")
    assert sorted(table.index[table["used"] == 1]) == ["object_area", "object_mean"]
    reasons = table["reason"].to_dict()
    assert reasons["object_noise"] == "excluded_by_config"
    for c in ("object_id", "object_lat", "object_index", "object_depth_min", "object_date",
              "object_annotation_category"):
        assert reasons[c] == "identifier_or_coordinate", c
    assert reasons["object_flat"] == "constant"
    assert reasons["object_sparse"] == "mostly_missing"  # 'nan' and '' both count as missing
    assert table.loc["object_sparse", "missing_share"] == pytest.approx(0.8)
    assert reasons["object_cruise"] == "non_numeric"
    assert reasons["img_file_name"] == reasons["class_name"] == "not_an_object_column"
    assert set(table["reason"]) <= set(d.REASONS)
    # every column is accounted for
    assert list(table.index) == list(objects.columns)
    # a looser max_missing keeps the sparse column
    loose = d.select_columns(objects, max_missing=0.9).set_index("column")
    assert loose.loc["object_sparse", "used"] == 1 and loose.loc["object_noise", "used"] == 1


@pytest.mark.parametrize("name,expected", [
    ("object_id", True), ("object_x", True), ("object_posy", True), ("object_milliseconds", True),
    ("object_timestamp", True), ("object_depth_max", True), ("object_sample_id", True), ("object_bx", True),
    ("object_area", False), ("object_perim.", False), ("object_circ.", False), ("object_xm_mean", False),
    ("object_elongation", False), ("object_latitude", True), ("object_time_ms", True),
])
def test_identifier_rule(name, expected):
    assert d.is_identifier(name) is expected


def test_missing_values_are_nan_and_bad_values_fail():
    nums, bad = d.to_numbers(pd.Series(["1.5", "", "nan", "NA", "inf", "x"]))
    assert nums[0] == 1.5 and np.isnan(nums[1:]).all()
    assert bad.tolist() == [False] * 5 + [True]


def test_test_labels_never_influence_the_choice():
    objects, split = synthetic(seed=1)
    settings = d.experiment_settings(FAST_RF)
    _, table, chosen, grid = d.fit_descriptors(objects, split, CLASSES, settings)
    # shuffle the test labels (in the split and the objects table) and the test descriptors
    rng = np.random.default_rng(5)
    test = split["split"] == "test"
    shuffled_split = split.copy()
    shuffled_split.loc[test, "class_name"] = rng.permutation(split.loc[test, "class_name"].to_numpy())
    shuffled_obj = objects.copy()
    tid = set(split.loc[test, "object_id"])
    t = objects["object_id"].isin(tid)
    for c in ("object_area", "object_mean", "class_name"):
        shuffled_obj.loc[t, c] = rng.permutation(objects.loc[t, c].to_numpy())
    _, table2, chosen2, grid2 = d.fit_descriptors(shuffled_obj, shuffled_split, CLASSES, settings)
    assert chosen2 == chosen
    pd.testing.assert_frame_equal(grid.drop(columns="seconds"), grid2.drop(columns="seconds"))
    pd.testing.assert_frame_equal(table, table2)
    # and without any test row at all, the same choice
    _, _, chosen3, grid3 = d.fit_descriptors(objects, split[~test], CLASSES, settings)
    assert chosen3 == chosen
    np.testing.assert_allclose(grid3["valid_macro_f1"], grid["valid_macro_f1"])


def test_choice_is_by_validation_score():
    objects, split = synthetic(seed=2)
    settings = d.experiment_settings({"classifier": "random_forest",
                                      "param_grid": {"n_estimators": [20], "max_depth": [1, None]}})
    _, _, chosen, grid = d.fit_descriptors(objects, split, CLASSES, settings)
    best = grid.sort_values(["valid_macro_f1", "valid_log_loss"], ascending=[False, True]).iloc[0]
    assert json.loads(best["params"]) == chosen and best["chosen"] == 1 and grid["chosen"].sum() == 1


def test_predictions_follow_object_ids_not_row_order():
    objects, split = synthetic(seed=3)
    settings = d.experiment_settings(FAST_RF)
    model, table, _, _ = d.fit_descriptors(objects, split, CLASSES, settings)
    columns = table.loc[table["used"] == 1, "column"].tolist()
    rows, y, probs = d.predict_split(model, objects, split, "test", columns, CLASSES)
    rng = np.random.default_rng(0)
    rows2, y2, probs2 = d.predict_split(model, objects.iloc[rng.permutation(len(objects))],
                                        split.iloc[rng.permutation(len(split))], "test", columns, CLASSES)
    a = pd.DataFrame(probs, index=rows["object_id"]).sort_index()
    b = pd.DataFrame(probs2, index=rows2["object_id"]).sort_index()
    pd.testing.assert_frame_equal(a, b)
    assert (rows["augmented"] == "0").all() and rows["object_id"].is_unique
    # the probabilities belong to the object's own descriptors
    x = d.feature_matrix(objects.set_index("object_id").loc[rows["object_id"]].reset_index(), columns)
    np.testing.assert_allclose(model.predict_proba(x), probs)


def test_a_class_absent_from_training_gets_probability_zero():
    objects, split = synthetic(seed=4)
    settings = d.experiment_settings(FAST_RF)
    model, table, _, _ = d.fit_descriptors(objects, split, CLASSES + ["z"], settings)
    columns = table.loc[table["used"] == 1, "column"].tolist()
    rows, y, probs = d.predict_split(model, objects, split, "valid", columns, CLASSES + ["z"])
    assert probs.shape == (len(rows), 4) and (probs[:, 3] == 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def _outputs(root):
    ext = {"predictions": "tsv", "metrics": "json", "report": "tsv", "report_html": "html",
           "confusion_counts": "tsv", "confusion_normalised": "tsv", "confusion_counts_fig": "svg",
           "confusion_normalised_fig": "svg", "reliability": "svg", "mistakes": "jpg", "probabilities": "npy"}
    out = {"summary": root / "summary.txt", "summary_html": root / "summary.html",
           "curves": root / "training_curves.svg"}
    for s in ev.SPLITS:
        for k in ev.SPLIT_OUTPUTS:
            out[f"{s}_{k}"] = root / s / f"{k}.{ext[k]}"
    return out


@pytest.mark.parametrize("classifier", ["random_forest", "hist_gradient_boosting"])
def test_end_to_end(tmp_path, classifier):
    objects, split = synthetic(seed=6)
    write_tsv(tmp_path / "objects.tsv", objects)
    write_tsv(tmp_path / "split.tsv", split)
    exp = tmp_path / "exp"
    grid = ({"n_estimators": [20], "min_samples_leaf": [1, 3]} if classifier == "random_forest"
            else {"max_iter": [30], "learning_rate": [0.1]})
    params = {"kind": "descriptors", "classifier": classifier, "param_grid": grid, "seed": 1}
    info = d.train_descriptors(tmp_path / "objects.tsv", tmp_path / "split.tsv", CLASSES, params, exp / "model.pkl",
                               exp / "classes.txt", exp / "columns.tsv", exp / "grid.tsv", exp / "train_info.json")
    assert info["columns"] == ["object_area", "object_mean", "object_noise"]
    assert info["items"] == {"train": int(((split["split"] == "train") & (split["augmented"] == "0")).sum()),
                             "valid": int(((split["split"] == "valid") & (split["augmented"] == "0")).sum())}
    outputs = _outputs(tmp_path / "eval")
    results = d.evaluate_descriptors(exp / "model.pkl", exp / "classes.txt", exp / "columns.tsv", exp / "grid.tsv",
                                     exp / "train_info.json", tmp_path / "objects.tsv", tmp_path / "split.tsv",
                                     CLASSES, {k: str(v) for k, v in outputs.items()}, experiment="desc")
    for key, path in outputs.items():
        assert path.stat().st_size > 0, key
    pred = pd.read_csv(outputs["test_predictions"], sep="\t", dtype=str, keep_default_na=False)
    expected = split[(split["split"] == "test") & (split["augmented"] == "0")]
    assert sorted(pred["object_id"]) == sorted(expected["object_id"])
    truth = expected.set_index("object_id").loc[pred["object_id"], "class_name"].to_numpy()
    assert (pred["true_class"].to_numpy() == truth).all()
    metrics = json.loads(outputs["test_metrics"].read_text())
    assert metrics["n_objects"] == len(pred) and metrics["macro_f1"] > 0.8  # area separates the classes
    assert results["test"].metrics["accuracy"] == pytest.approx(pred["correct"].astype(int).mean())
    assert "Chosen parameters" in outputs["summary"].read_text()
    # the leaderboard reads it like a CNN experiment
    board = ev.leaderboard(["desc"], [outputs["test_metrics"]], [outputs["valid_metrics"]],
                           [exp / "train_info.json"], {"desc": {"model": classifier, "weights": "descriptors"}},
                           tmp_path / "board.tsv")
    assert board["experiment"].tolist() == ["desc"] and board["training_seconds"].iloc[0] >= 0


def test_config_descriptors_experiment_validates_with_defaults():
    cfg = validate_config({"classes": ["a", "b"], "experiments": {
        "rf": {"kind": "descriptors"}, "cnn": {"model": "mobilenetv2"}}})
    rf, cnn = cfg["experiments"]["rf"], cfg["experiments"]["cnn"]
    assert (rf["classifier"], rf["param_grid"], rf["max_missing"], rf["exclude_columns"]) == (
        "random_forest", None, 0.5, [])
    assert "classifier" not in cnn and "max_missing" not in cnn  # a CNN experiment's params stay as they were
    with pytest.raises(Exception, match="classifer"):
        validate_config({"classes": ["a", "b"], "experiments": {"rf": {"kind": "descriptors", "classifer": "x"}}})
    with pytest.raises(Exception, match="boosting"):
        validate_config({"classes": ["a", "b"], "experiments": {"rf": {"kind": "descriptors", "classifier": "boosting"}}})


def test_shipped_config_has_both_baselines(project_root):
    import yaml

    cfg = validate_config(yaml.safe_load((project_root / "config" / "config.yaml").read_text()))
    kinds = {n: (e["kind"], e.get("classifier")) for n, e in cfg["experiments"].items() if e["kind"] == "descriptors"}
    assert kinds == {"descriptors_random_forest": ("descriptors", "random_forest"),
                     "descriptors_gradient_boosting": ("descriptors", "hist_gradient_boosting")}
