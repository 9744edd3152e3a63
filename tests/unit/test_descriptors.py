"""The descriptor baseline: column rule (metadata, text cells), no test leakage, refit, early stopping,
morphometrics, predictions per object, end to end with its estimate, the public prediction API, config."""

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lokiml import columns as cols
from lokiml import descriptors as d
from lokiml import evaluate as ev
from lokiml import morphometrics as morph
from lokiml.config import validate_config
from lokiml.errors import ConfigError, InputError
from lokiml.io import write_tsv

CLASSES = ["a", "b", "c"]
FAST_RF = {"classifier": "random_forest", "param_grid": {"n_estimators": [20], "min_samples_leaf": [1, 5]}}


def synthetic(n=240, seed=0, classes=CLASSES):
    """Objects with two informative descriptors, noise, metadata, a constant and a mostly missing column."""
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
        "object_haul": (y + 1).astype(str),  # a haul id that follows the class: must be left out
        "object_conductivity": (30 + y + rng.normal(0, 0.1, n)).round(3).astype(str),
        "object_date": ["20200101"] * n,
        "object_flat": ["1.5"] * n,
        "object_sparse": [str(v) if i % 5 == 0 else ("nan" if i % 2 else "") for i, v in enumerate(y)],
        "object_cruise": ["PS121"] * n,
        "object_annotation_category": [classes[k] for k in y],
        "sample_stationid": (y + 7).astype(str),
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
    expected = {"object_id": "identifier", "object_index": "identifier", "object_lat": "position",
                "object_depth_min": "depth", "object_date": "date_or_time", "object_haul": "sampling_event",
                "object_conductivity": "environment", "object_annotation_category": "label"}
    assert {c: reasons[c] for c in expected} == expected
    assert reasons["object_flat"] == "constant"
    assert reasons["object_sparse"] == "mostly_missing"  # 'nan' and '' both count as missing
    assert table.loc["object_sparse", "missing_share"] == pytest.approx(0.8)
    assert reasons["object_cruise"] == "sampling_event"
    assert reasons["img_file_name"] == reasons["class_name"] == reasons["sample_stationid"] == "not_a_descriptor_column"
    assert set(table["reason"]) <= set(cols.REASONS)
    # every column is accounted for
    assert list(table.index) == list(objects.columns)
    # a looser max_missing keeps the sparse column
    loose = d.select_columns(objects, max_missing=0.9).set_index("column")
    assert loose.loc["object_sparse", "used"] == 1 and loose.loc["object_noise", "used"] == 1
    # metadata and non-object columns can be included on purpose; they must still be numbers
    inc = d.select_columns(objects, include_columns=["object_haul", "sample_stationid", "object_cruise"])
    inc = inc.set_index("column")
    assert inc.loc["object_haul", "reason"] == inc.loc["sample_stationid", "reason"] == "included_by_config"
    assert inc.loc["object_haul", "used"] == 1 and inc.loc["object_cruise", "reason"] == "non_numeric"


@pytest.mark.parametrize("name,reason", [
    # LOKI (a real LOKI import table's names): the 27 descriptors are kept, the metadata are not
    ("object_length", None), ("object_area_px", None), ("object_form", None), ("object_graymean", None),
    ("object_Hu_moment_7", None), ("object_fourier_descriptor_10", None), ("object_convexity", None),
    ("object_index", "identifier"), ("object_cruise", "sampling_event"), ("object_station", "sampling_event"),
    ("object_haul", "sampling_event"), ("object_pressure", "depth"), ("object_salinity", "environment"),
    ("object_conductivity", "environment"), ("object_oxygen_concentration", "environment"),
    ("object_temperature_oxsens", "environment"), ("object_Dr._Haardt_fluorescence_channel_A", "environment"),
    ("object_manual_classification", "label"), ("object_posx", "position"), ("object_milliseconds", "date_or_time"),
    ("object_timestamp", "date_or_time"), ("object_zoomie_state", "environment"),
    ("object_vessel_name", "sampling_event"),
    # ZooProcess / EcoTaxa
    ("object_area", None), ("object_perim.", None), ("object_circ.", None), ("object_%area", None),
    ("object_xm_mean", None), ("object_elongation", None), ("object_nb1", None), ("object_mode", None),
    ("object_height", None), ("object_long_axis", None), ("object_intden", None),
    ("object_id", "identifier"), ("object_x", "position"), ("object_bx", "position"), ("object_xmg5", "position"),
    ("object_lat_end", "position"), ("object_latitude", "position"), ("object_depth_max", "depth"),
    ("object_time_ms", "date_or_time"), ("object_sample_id", "identifier"), ("object_link", "identifier"),
    ("object_annotation_status", "label"), ("object_score", "label"), ("object_prob_Calanoida", "label"),
    # FlowCam
    ("object_capture_x", "position"), ("object_volume_abd", None), ("object_sigma_intensity", None),
    # measured by lokiml: always descriptors
    ("morpho_area", None),
])
def test_metadata_rule(name, reason):
    assert cols.metadata_reason(name) == reason


def test_missing_values_and_text_cells_are_nan():
    nums, bad = d.to_numbers(pd.Series(["1.5", "", "nan", "NA", "inf", "x"]))
    assert nums[0] == 1.5 and np.isnan(nums[1:]).all()
    assert bad.tolist() == [False] * 5 + [True]


def test_a_single_text_cell_does_not_drop_a_numeric_column(caplog):
    objects, split = synthetic()
    objects.loc[3, "object_area"] = "n.d."
    objects.loc[5, "object_mean"] = "#VALUE!"
    table = d.select_columns(objects).set_index("column")
    assert table.loc["object_area", "used"] == 1 and table.loc["object_area", "text_cells"] == 1
    assert "n.d." in caplog.text
    x = d.feature_matrix(objects, ["object_area", "object_mean"])
    assert np.isnan(x[3, 0]) and np.isnan(x[5, 1]) and np.isfinite(x[[0, 1, 2, 4], :]).all()
    # training and evaluation go through (the text cell is a missing value)
    fitted = d.fit_descriptors(objects, split, CLASSES, d.experiment_settings(FAST_RF))
    assert "object_area" in cols.used_columns(fitted.table)
    # a column that is text for most objects is too sparse, one without any number is not numeric
    objects["object_mean"] = ["x"] * 200 + objects["object_mean"].tolist()[200:]
    objects["object_noise"] = "text"
    t2 = d.select_columns(objects).set_index("column")
    assert t2.loc["object_mean", "reason"] == "mostly_missing" and t2.loc["object_noise", "reason"] == "non_numeric"


def test_no_usable_column_names_the_reasons_and_no_file_that_was_not_written():
    objects, split = synthetic()
    objects = objects[["object_id", "class_name", "object_lat", "object_flat", "object_haul"]]
    with pytest.raises(InputError) as err:
        d.fit_descriptors(objects, split, CLASSES, d.experiment_settings(FAST_RF))
    text = str(err.value)
    assert "columns.tsv" not in text
    for needle in ("no usable descriptor column", "position (object_lat)", "constant (object_flat)",
                   "sampling_event (object_haul)", "identifier (object_id)", "not_a_descriptor_column (class_name)",
                   "include_columns"):
        assert needle in text, needle


def test_test_labels_never_influence_the_choice():
    objects, split = synthetic(seed=1)
    settings = d.experiment_settings(FAST_RF)
    first = d.fit_descriptors(objects, split, CLASSES, settings)
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
    second = d.fit_descriptors(shuffled_obj, shuffled_split, CLASSES, settings)
    assert second.chosen == first.chosen
    pd.testing.assert_frame_equal(first.grid.drop(columns="seconds"), second.grid.drop(columns="seconds"))
    pd.testing.assert_frame_equal(first.table, second.table)
    x = d.feature_matrix(objects, cols.used_columns(first.table))
    np.testing.assert_array_equal(first.model.predict_proba(x), second.model.predict_proba(x))
    # and without any test row at all, the same choice
    third = d.fit_descriptors(objects, split[~test], CLASSES, settings)
    assert third.chosen == first.chosen
    np.testing.assert_allclose(third.grid["valid_macro_f1"], first.grid["valid_macro_f1"])


def test_choice_is_by_validation_score():
    objects, split = synthetic(seed=2)
    settings = d.experiment_settings({"classifier": "random_forest",
                                      "param_grid": {"n_estimators": [20], "max_depth": [1, None]}})
    _, _, chosen, grid = d.fit_descriptors(objects, split, CLASSES, settings)
    best = grid.sort_values(["valid_macro_f1", "valid_log_loss"], ascending=[False, True]).iloc[0]
    assert json.loads(best["params"]) == chosen and best["chosen"] == 1 and grid["chosen"].sum() == 1


@pytest.mark.parametrize("classifier", ["random_forest", "hist_gradient_boosting"])
def test_refit_on_train_and_valid_after_the_choice(classifier):
    objects, split = synthetic(seed=7)
    grid = {"n_estimators": [20], "min_samples_leaf": [1, 5]} if classifier == "random_forest" else {
        "max_iter": [40], "learning_rate": [0.05, 0.1]}
    settings = d.experiment_settings({"classifier": classifier, "param_grid": grid})
    fitted = d.fit_descriptors(objects, split, CLASSES, settings)
    used = cols.used_columns(fitted.table)
    trval = split[(split["augmented"] == "0") & split["split"].isin(["train", "valid"])]
    trval = trval.sort_values("item_id")
    rows = pd.concat([d.originals(split, "train"), d.originals(split, "valid")])
    x = d.feature_matrix(d.objects_of(objects, rows, "t"), used)
    y = d.labels_of(rows, CLASSES, "t")
    assert fitted.refit and fitted.items == {"train": int((trval["split"] == "train").sum()),
                                             "valid": int((trval["split"] == "valid").sum())}
    # the final model is the chosen parameters fitted on train + valid, and nothing else
    again = d.fit_classifier(classifier, fitted.chosen, x, y, settings["seed"])
    x_all = d.feature_matrix(objects, used)
    np.testing.assert_allclose(fitted.model.predict_proba(x_all), again.predict_proba(x_all))
    # the validation probabilities are those of the chosen candidate fitted on train only (not a training score)
    only_train = d.fit_descriptors(objects, split, CLASSES, {**settings, "refit": False})
    x_va = d.feature_matrix(d.objects_of(objects, fitted.valid_rows, "t"), used)
    np.testing.assert_allclose(fitted.valid_probs, only_train.model.predict_proba(x_va))
    assert not np.allclose(fitted.model.predict_proba(x_va), fitted.valid_probs)


def test_gradient_boosting_runs_every_round_unless_told_to_stop_early():
    objects, split = synthetic(seed=8)
    objects["object_area"] = np.random.default_rng(0).normal(0, 1, len(objects)).round(3).astype(str)  # noise only
    base = {"classifier": "hist_gradient_boosting", "param_grid": {"max_iter": [60]}}
    full = d.fit_descriptors(objects, split, CLASSES, d.experiment_settings(base)).model
    assert full.n_iter_ == 60 and full.early_stopping is False
    early = d.fit_descriptors(objects, split, CLASSES,
                              d.experiment_settings({**base, "early_stopping_rounds": 3})).model
    assert early.early_stopping is True and early.n_iter_no_change == 3 and early.n_iter_ < 60


def morpho_table(objects, status="ok", informative=True, seed=0):
    """A morphometrics table for the objects: morpho_area carries the class."""
    rng = np.random.default_rng(seed)
    y = objects["class_name"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    t = pd.DataFrame({"object_id": objects["object_id"], "morpho_status": status})
    for f in morph.FEATURES:
        t[f] = rng.normal(0, 1, len(objects))
    if informative:
        t["morpho_area"] = 500 + 300 * y + rng.normal(0, 30, len(objects))
    if status != "ok":
        t.loc[:, list(morph.FEATURES)] = np.nan
    return t.astype({f: str for f in morph.FEATURES}).replace("nan", "")


@pytest.mark.parametrize("features,expect", [
    ("export", {"object_area", "object_mean", "object_noise"}),
    ("morphometrics", set(morph.FEATURES)),
    ("both", {"object_area", "object_mean", "object_noise"} | set(morph.FEATURES)),
    ("auto", {"object_area", "object_mean", "object_noise"} | set(morph.FEATURES)),
])
def test_features_choose_the_descriptor_sources(features, expect):
    objects, split = synthetic(seed=9)
    joined = d.with_morphometrics(objects, morpho_table(objects))
    fitted = d.fit_descriptors(joined, split, CLASSES, d.experiment_settings({**FAST_RF, "features": features}))
    t = fitted.table.set_index("column")
    assert set(cols.used_columns(fitted.table)) == expect
    if features == "morphometrics":
        assert t.loc["object_area", "reason"] == "not_selected_by_features"
    if features == "export":
        assert t.loc["morpho_area", "reason"] == "not_selected_by_features"
    assert t.loc["morpho_status", "reason"] == "not_a_descriptor_column"


def test_auto_on_an_export_without_images_uses_its_descriptors():
    objects, split = synthetic(seed=10)
    joined = d.with_morphometrics(objects, morpho_table(objects, status="no_image"))
    fitted = d.fit_descriptors(joined, split, CLASSES, d.experiment_settings(FAST_RF))
    assert set(cols.used_columns(fitted.table)) == {"object_area", "object_mean", "object_noise"}
    assert (fitted.table.set_index("column").loc[list(morph.FEATURES), "reason"] == "mostly_missing").all()
    # features: morphometrics needs images: the error says why no column is usable
    with pytest.raises(InputError, match="no_image 144"):
        d.fit_descriptors(joined, split, CLASSES, d.experiment_settings({**FAST_RF, "features": "morphometrics"}))


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
           "confusion_normalised_fig": "svg", "reliability": "svg", "mistakes": "jpg"}
    out = {"summary": root / "summary.txt", "summary_html": root / "summary.html",
           "curves": root / "training_curves.svg"}
    for s in ev.SPLITS:
        for k in ev.SPLIT_OUTPUTS:
            out[f"{s}_{k}"] = root / s / f"{k}.{ext[k]}"
    return out


def _train(tmp_path, params, objects, split, morpho=None):
    write_tsv(tmp_path / "objects.tsv", objects)
    write_tsv(tmp_path / "split.tsv", split)
    shards = []
    if morpho is not None:
        write_tsv(tmp_path / "morpho0.tsv", morpho.iloc[::2])
        write_tsv(tmp_path / "morpho1.tsv", morpho.iloc[1::2])
        shards = [tmp_path / "morpho0.tsv", tmp_path / "morpho1.tsv"]
    exp = tmp_path / "exp"
    info = d.train_descriptors(tmp_path / "objects.tsv", tmp_path / "split.tsv", CLASSES, params, exp / "model.pkl",
                               exp / "classes.txt", exp / "columns.tsv", exp / "grid.tsv", exp / "train_info.json",
                               exp / "valid_probabilities.tsv", morphometrics=shards,
                               morpho_params={"threshold": 245, "polarity": "dark", "bottom_crop": 0.0,
                                              "max_pixels": 10 ** 8} if shards else None)
    return exp, info, shards


@pytest.mark.parametrize("classifier", ["random_forest", "hist_gradient_boosting"])
def test_end_to_end(tmp_path, classifier):
    objects, split = synthetic(seed=6)
    grid = ({"n_estimators": [20], "min_samples_leaf": [1, 3]} if classifier == "random_forest"
            else {"max_iter": [30], "learning_rate": [0.1]})
    params = {"kind": "descriptors", "classifier": classifier, "param_grid": grid, "seed": 1, "features": "export",
              "estimate": {"folds": 3, "repeats": 1}}
    exp, info, _ = _train(tmp_path, params, objects, split)
    assert info["columns"] == ["object_area", "object_mean", "object_noise"]
    assert info["items"] == {"train": int(((split["split"] == "train") & (split["augmented"] == "0")).sum()),
                             "valid": int(((split["split"] == "valid") & (split["augmented"] == "0")).sum())}
    assert info["refit"] is True and info["fitted_on"] == sum(info["items"].values())
    summary = d.estimate_descriptors(tmp_path / "objects.tsv", tmp_path / "split.tsv", exp / "columns.tsv", CLASSES,
                                     params, tmp_path / "estimate.tsv", tmp_path / "estimate.json")
    assert summary["kfold"]["folds"] == 3 and summary["logo"] is None and summary["kfold"]["macro_f1_mean"] > 0.8
    outputs = _outputs(tmp_path / "eval")
    results = d.evaluate_descriptors(exp / "model.pkl", exp / "classes.txt", exp / "columns.tsv", exp / "grid.tsv",
                                     exp / "train_info.json", tmp_path / "objects.tsv", tmp_path / "split.tsv",
                                     CLASSES, {k: str(v) for k, v in outputs.items()}, experiment="desc",
                                     valid_path=exp / "valid_probabilities.tsv",
                                     estimate_path=tmp_path / "estimate.json")
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
    # the valid scores are the chosen candidate's (fitted on train), the very score it was chosen by
    grid_table = pd.read_csv(exp / "grid.tsv", sep="\t")
    valid = json.loads(outputs["valid_metrics"].read_text())
    assert valid["macro_f1"] == pytest.approx(grid_table.loc[grid_table["chosen"] == 1, "valid_macro_f1"].iloc[0],
                                              abs=1e-6)
    text = outputs["summary"].read_text()
    for needle in ("Chosen parameters", "Refit", "train + valid", "Repeated estimate", "± ", "3-fold"):
        assert needle in text, needle
    # the leaderboard reads it like a CNN experiment, with its estimate as mean ± sd
    board = ev.leaderboard(["desc"], [outputs["test_metrics"]], [outputs["valid_metrics"]],
                           [exp / "train_info.json"], {"desc": {"model": classifier, "weights": "descriptors"}},
                           tmp_path / "board.tsv", tmp_path / "board.html",
                           estimates={"desc": tmp_path / "estimate.json"})
    assert board["experiment"].tolist() == ["desc"] and board["training_seconds"].iloc[0] >= 0
    assert board["cv_macro_f1"].iloc[0] == pytest.approx(summary["kfold"]["macro_f1_mean"])
    assert board["cv_macro_f1_sd"].iloc[0] == pytest.approx(summary["kfold"]["macro_f1_sd"])
    assert "logo_macro_f1" not in board.columns  # no group_by: no such estimate, no empty column
    assert f"{summary['kfold']['macro_f1_mean']:.3f} ± {summary['kfold']['macro_f1_sd']:.3f}" in (
        tmp_path / "board.html").read_text()


def test_public_prediction_api_with_morphometrics_measured_on_images(tmp_path):
    """load_trained + predict_objects (for lokiml.predict): the morphometrics measured as in training."""
    rng = np.random.default_rng(0)
    objects, split = synthetic(n=120, seed=11)
    y = objects["class_name"].map({c: i for i, c in enumerate(CLASSES)}).to_numpy()
    pngs = {}
    for oid, k in zip(objects["object_id"], y):
        img = np.full((80, 80), 250, np.uint8)
        r = int(8 + 8 * k + rng.integers(0, 3))
        yy, xx = np.mgrid[:80, :80]
        img[(yy - 40) ** 2 + (xx - 40) ** 2 <= r * r] = 60
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        pngs[f"{oid}.png"] = buf.getvalue()
    objects["image_ref"] = objects["object_id"] + ".png"
    morpho = morph.measure_items(objects[["object_id", "image_ref"]], pngs.__getitem__, morph.MorphoParams())
    params = {"kind": "descriptors", **FAST_RF, "features": "morphometrics", "estimate": None}
    exp, info, _ = _train(tmp_path, params, objects, split, morpho)
    assert info["morphometrics"]["polarity"] == "dark" and info["morphometrics"]["columns"]
    trained = d.load_trained(exp)
    assert trained.classes == CLASSES and trained.needs_images and trained.columns == info["columns"]
    new = objects.iloc[::-1][["object_id", "image_ref"]].reset_index(drop=True)  # another table, other order
    probs = d.predict_objects(trained, new, read_bytes=pngs.__getitem__)
    assert probs.shape == (len(new), 3)
    truth = new["object_id"].map(objects.set_index("object_id")["class_name"]).map(CLASSES.index).to_numpy()
    assert (probs.argmax(axis=1) == truth).mean() > 0.9  # the radius tells the class
    with pytest.raises(InputError, match="no image is given"):
        d.predict_objects(trained, new)
    # a model of the export's descriptors needs no image, and names a missing column
    exp2, _, _ = _train(tmp_path / "two", {"kind": "descriptors", **FAST_RF, "features": "export"}, objects, split)
    t2 = d.load_trained(exp2)
    assert not t2.needs_images
    assert d.predict_objects(t2, objects).shape == (len(objects), 3)
    with pytest.raises(InputError, match="object_mean"):
        d.predict_objects(t2, objects.drop(columns=["object_mean"]))


def test_config_descriptors_experiment_validates_with_defaults():
    cfg = validate_config({"classes": ["a", "b"], "experiments": {
        "rf": {"kind": "descriptors"}, "cnn": {"model": "mobilenetv2"}}})
    rf, cnn = cfg["experiments"]["rf"], cfg["experiments"]["cnn"]
    assert {k: rf[k] for k in ("classifier", "param_grid", "max_missing", "exclude_columns", "include_columns",
                               "features", "refit", "early_stopping_rounds", "estimate")} == {
        "classifier": "random_forest", "param_grid": None, "max_missing": 0.5, "exclude_columns": [],
        "include_columns": [], "features": "auto", "refit": True, "early_stopping_rounds": None,
        "estimate": {"folds": 5, "repeats": 2, "max_group_folds": 20, "group_by": None}}
    assert not {"classifier", "max_missing", "features", "refit", "estimate"} & set(cnn)  # a CNN's params stay
    off = validate_config({"classes": ["a", "b"], "experiments": {"rf": {
        "kind": "descriptors", "estimate": None, "refit": False, "classifier": "hist_gradient_boosting",
        "early_stopping_rounds": 10}}})["experiments"]["rf"]
    assert off["estimate"] is None and off["refit"] is False and off["early_stopping_rounds"] == 10
    assert validate_config({"classes": ["a", "b"], "experiments": {"rf": {
        "kind": "descriptors", "estimate": {"folds": 10}}}})["experiments"]["rf"]["estimate"] == {
        "folds": 10, "repeats": 2, "max_group_folds": 20, "group_by": None}


@pytest.mark.parametrize("exp,needle", [
    ({"kind": "descriptors", "classifer": "x"}, "classifer"),
    ({"kind": "descriptors", "classifier": "boosting"}, "boosting"),
    ({"kind": "descriptors", "features": "images"}, "experiments.rf.features"),
    ({"kind": "descriptors", "early_stopping_rounds": 10}, "experiments.rf.early_stopping_rounds: only classifier"),
    ({"kind": "descriptors", "estimate": {"folds": 1}}, "experiments.rf.estimate.folds"),
    ({"kind": "descriptors", "estimate": {"k": 5}}, "experiments.rf.estimate"),
    ({"kind": "deep_features", "cnn": "cnn", "features": "both"}, "experiments.rf.features: only a descriptors"),
])
def test_config_errors_name_the_key(exp, needle):
    with pytest.raises(ConfigError) as err:
        validate_config({"classes": ["a", "b"], "experiments": {"rf": exp, "cnn": {"model": "mobilenetv2"}}})
    assert needle in str(err.value)


def test_shipped_config_has_both_baselines(project_root):
    import yaml

    cfg = validate_config(yaml.safe_load((project_root / "config" / "config.yaml").read_text()))
    kinds = {n: (e["kind"], e.get("classifier")) for n, e in cfg["experiments"].items() if e["kind"] == "descriptors"}
    assert kinds == {"descriptors_random_forest": ("descriptors", "random_forest"),
                     "descriptors_gradient_boosting": ("descriptors", "hist_gradient_boosting")}
