"""Prediction with every kind of experiment (CNN, descriptors, deep features), and with decisions: each
object trusted or to check, the lists, and the order for the human (lokiml.predictors, lokiml.predict).

A small export whose classes can be told apart both by the image (grey level of the object) and by a
descriptor (object_area), so that every kind of experiment learns it; the bundle each job writes is
checked against EcoTaxa's import rules by the job itself.
"""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lokiml import decisions as dc
from lokiml import predict as pr
from lokiml.descriptors import save_model
from lokiml.ecotaxa import parse_table
from lokiml.errors import InputError
from lokiml.io import write_tsv

CLASSES = ["dark", "grey", "pale"]
LEVEL = {"dark": 20, "grey": 110, "pale": 190}
AREA = {"dark": 100.0, "grey": 400.0, "pale": 900.0}


def make_export(root, n=30, seed=0, columns=("object_area", "object_mean"), labelled=False):
    rng = np.random.default_rng(seed)
    (root / "imgs").mkdir(parents=True)
    lines = ["object_id\timg_file_name\tobject_annotation_status\tobject_annotation_category\tsample_id\t"
             + "\t".join(columns), "[t]\t[t]\t[t]\t[t]\t[t]\t" + "\t".join("[f]" for _ in columns)]
    truth = {}
    for i in range(n):
        c = CLASSES[i % 3]
        arr = np.full((40, 36), 255, dtype=np.uint8)
        arr[8:30, 8:28] = LEVEL[c] + int(rng.integers(-8, 8))
        Image.fromarray(arr, "L").save(root / "imgs" / f"o{i:03d}.png")
        values = {"object_area": AREA[c] * rng.uniform(0.8, 1.2), "object_mean": LEVEL[c] + rng.normal(0, 5)}
        status, cat = ("validated", c) if labelled else ("", "")
        lines.append(f"o{i:03d}\timgs/o{i:03d}.png\t{status}\t{cat}\tst{i % 2}\t"
                     + "\t".join(f"{values[k]:.3f}" for k in columns))
        truth[f"o{i:03d}"] = c
    (root / "ecotaxa_new.tsv").write_text("\n".join(lines) + "\n")
    return truth


def descriptor_model(tmp_path, columns=("object_area", "object_mean")):
    """A random forest on the descriptors, saved with its columns.tsv and classes, and its record."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 30)
    x = np.column_stack([np.array([AREA[CLASSES[k]] for k in y]) * rng.uniform(0.8, 1.2, len(y)),
                         np.array([LEVEL[CLASSES[k]] for k in y]) + rng.normal(0, 5, len(y))])[:, :len(columns)]
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(x, y)
    save_model(tmp_path / "model.pkl", model)
    write_tsv(tmp_path / "columns.tsv", pd.DataFrame({"column": list(columns) + ["object_id"], "used": [1] * len(
        columns) + [0], "reason": ["used"] * len(columns) + ["identifier_or_coordinate"]}))
    (tmp_path / "classes.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    rec = tmp_path / "normalisation.json"
    pr.record_normalisation(tmp_path / "model.pkl", tmp_path / "classes.txt", None, rec, "desc", image_size=None,
                            threshold=245, polarity="dark", bottom_crop=0.0, max_pixels=10**7, kind="descriptors",
                            columns_path=tmp_path / "columns.tsv")
    return tmp_path / "model.pkl", rec


def rule_file(tmp_path, thresholds, nodes=()):
    rule = dc.DecisionRule(CLASSES, thresholds, [0.95] * 3, list(nodes), class_share=[0.6, 0.3, 0.1])
    path = tmp_path / "decisions.json"
    path.write_text(json.dumps(rule.to_json()))
    return path


def outputs(root):
    return {"out_table": root / "ecotaxa_t.tsv", "out_zip": root / "ecotaxa_t.zip", "out_top3": root / "top3.csv",
            "out_summary": root / "summary.json", "out_trusted": root / "trusted.tsv",
            "out_to_check": root / "to_check.tsv"}


def table_of(path):
    t = parse_table(path.read_bytes(), str(path))
    return t, t.df


def test_descriptors_experiment_predicts_from_the_table(tmp_path):
    truth = make_export(tmp_path / "new")
    model, rec = descriptor_model(tmp_path)
    record = json.loads(rec.read_text())
    assert record["kind"] == "descriptors" and record["columns"] == ["object_area", "object_mean"]
    assert record["image_size"] is None
    out = outputs(tmp_path / "out")
    summary = pr.predict_job(tmp_path / "new", model, rec, "t", **out, decisions_path=rule_file(tmp_path, [0.8] * 3))
    assert summary["kind"] == "descriptors" and summary["counts"]["predicted"] == 30
    t, df = table_of(out["out_table"])
    pred = dict(zip(df["object_id"], df["object_annotation_category"]))
    assert np.mean([pred[o] == c for o, c in truth.items()]) > 0.9  # it learnt the classes from the descriptors
    assert set(df["object_lokiml_decision"]) <= {"trusted", "to_check"}
    assert summary["counts"]["trusted"] + summary["counts"]["to_check"] == 30


def test_descriptors_experiment_refuses_a_folder_of_images_and_a_table_without_its_columns(tmp_path):
    make_export(tmp_path / "new", columns=("object_area",))
    model, rec = descriptor_model(tmp_path)
    out = outputs(tmp_path / "out")
    with pytest.raises(InputError, match="lacks the descriptor column.*object_mean"):
        pr.predict_job(tmp_path / "new", model, rec, "t", **out)
    with pytest.raises(InputError, match="folder of images has no descriptors"):
        pr.predict_job(tmp_path / "new" / "imgs", model, rec, "t", **out)


def test_a_descriptor_that_is_not_a_number_leaves_its_object_out_and_says_why(tmp_path):
    make_export(tmp_path / "new")
    table = tmp_path / "new" / "ecotaxa_new.tsv"
    lines = table.read_text().splitlines()
    cells = lines[5].split("\t")
    cells[-2] = "n/d?"
    lines[5] = "\t".join(cells)
    table.write_text("\n".join(lines) + "\n")
    model, rec = descriptor_model(tmp_path)
    out = outputs(tmp_path / "out")
    summary = pr.predict_job(tmp_path / "new", model, rec, "t", **out)
    assert summary["counts"]["unreadable"] == 1 and summary["counts"]["predicted"] == 29
    assert summary["unreadable_objects"] == ["o003"]


def test_decisions_lists_and_the_order_for_the_human(tmp_path):
    make_export(tmp_path / "new", labelled=False)
    model, rec = descriptor_model(tmp_path)
    # dark and grey trusted from 0.9, pale never; a node over dark+grey
    path = rule_file(tmp_path, [0.9, 0.9, None], nodes=[dc.Node("Blackish", [0, 1], 1, 0.9)])
    out = outputs(tmp_path / "out")
    summary = pr.predict_job(tmp_path / "new", model, rec, "t", **out, decisions_path=path)
    t, df = table_of(out["out_table"])
    trusted = pd.read_csv(out["out_trusted"], sep="\t")
    to_check = pd.read_csv(out["out_to_check"], sep="\t", keep_default_na=False)
    c = summary["counts"]
    assert len(trusted) == c["trusted"] and len(to_check) == c["to_check"] and c["trusted"] + c["to_check"] == 30
    assert (trusted["probability"] >= trusted["threshold"]).all() and set(trusted["class_name"]) <= {"dark", "grey"}
    assert "pale" not in set(trusted["class_name"]) and (to_check["class_name"] == "pale").sum() == 10
    # the import table is in review order: the objects to check first, the least likely right first
    assert df["object_lokiml_review_rank"].astype(int).tolist() == list(range(1, 31))
    decisions = df["object_lokiml_decision"].tolist()
    assert decisions == sorted(decisions, key=lambda d: d != "to_check")
    assert to_check["review_rank"].tolist() == list(range(1, len(to_check) + 1))
    p = to_check["p_correct"].to_numpy()
    assert np.all(np.diff(p) >= -1e-9)
    assert (to_check["lineage_node"].isin(["", "Blackish"])).all()
    # the trusted list names objects of the bundle, with their EcoTaxa category: ready to filter and validate
    assert set(trusted["object_id"]) == set(df.loc[df["object_lokiml_decision"] == "trusted", "object_id"])
    assert summary["decisions"]["per_class"]["pale"]["trusted"] == 0


def test_kept_objects_are_neither_trusted_nor_ranked(tmp_path):
    make_export(tmp_path / "new", labelled=True)
    model, rec = descriptor_model(tmp_path)
    out = outputs(tmp_path / "out")
    summary = pr.predict_job(tmp_path / "new", model, rec, "t", **out, decisions_path=rule_file(tmp_path, [0.5] * 3))
    assert summary["counts"]["kept"] == 30 and summary["counts"]["trusted"] == 0
    _, df = table_of(out["out_table"])
    assert set(df["object_lokiml_decision"]) == {"kept"} and set(df["object_lokiml_review_rank"]) == {""}
    assert summary["validated"]["accuracy"] > 0.9


def test_decisions_of_other_classes_are_refused(tmp_path):
    make_export(tmp_path / "new")
    model, rec = descriptor_model(tmp_path)
    rule = dc.DecisionRule(["a", "b", "c"], [0.5] * 3, [0.9] * 3)
    (tmp_path / "other.json").write_text(json.dumps(rule.to_json()))
    with pytest.raises(InputError, match="was made for the classes"):
        pr.predict_job(tmp_path / "new", model, rec, "t", **outputs(tmp_path / "out"),
                       decisions_path=tmp_path / "other.json")


def test_deep_features_experiment_uses_its_cnn_and_the_descriptors(tmp_path):
    import keras
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    from lokiml.deep_features import penultimate_model
    from lokiml.store import NormParams, normalise_item

    truth = make_export(tmp_path / "new", columns=("object_area",))
    keras.utils.set_random_seed(0)
    inp = keras.Input(shape=(16, 16, 1), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inp)
    x = keras.layers.Conv2D(6, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    cnn = keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="predictions")(x))
    cnn.save(tmp_path / "best.keras")
    # the pipeline is fitted on the CNN's features of training images + object_area, like train_deep_features
    params = NormParams(size=16, threshold=245)
    rng = np.random.default_rng(3)
    feats, ys, areas = [], [], []
    fmodel = penultimate_model(cnn)
    for k, c in enumerate(CLASSES * 10):
        arr = np.full((40, 36), 255, dtype=np.uint8)
        arr[8:30, 8:28] = LEVEL[c] + int(rng.integers(-8, 8))
        Image.fromarray(arr, "L").save(tmp_path / "train.png")
        img = normalise_item((tmp_path / "train.png").read_bytes(), "train.png", params)
        feats.append(np.asarray(fmodel.predict_on_batch(img[None, ..., None]))[0])
        ys.append(CLASSES.index(c))
        areas.append(AREA[c] * rng.uniform(0.8, 1.2))
    design = np.hstack([np.array(feats), np.array(areas)[:, None]])
    reducer = ColumnTransformer([("cnn", PCA(n_components=3, random_state=0), slice(0, 6)),
                                 ("descriptors", "passthrough", slice(6, 7))])
    pipe = Pipeline([("features", reducer), ("classifier", RandomForestClassifier(20, random_state=0))])
    pipe.fit(design, np.array(ys))
    save_model(tmp_path / "model.pkl", pipe)
    write_tsv(tmp_path / "columns.tsv", pd.DataFrame({"column": ["object_area"], "used": [1], "reason": ["used"]}))
    (tmp_path / "classes.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    rec = tmp_path / "normalisation.json"
    pr.record_normalisation(tmp_path / "model.pkl", tmp_path / "classes.txt", None, rec, "deep", image_size=16,
                            threshold=245, polarity="dark", bottom_crop=0.0, max_pixels=10**7, kind="deep_features",
                            columns_path=tmp_path / "columns.tsv", cnn_model_path=tmp_path / "best.keras")
    record = json.loads(rec.read_text())
    assert record["kind"] == "deep_features" and record["cnn_model_sha1"] and record["columns"] == ["object_area"]
    out = outputs(tmp_path / "out")
    summary = pr.predict_job(tmp_path / "new", tmp_path / "model.pkl", rec, "t", **out,
                             cnn_model_path=tmp_path / "best.keras")
    assert summary["kind"] == "deep_features" and summary["counts"]["predicted"] == 30
    _, df = table_of(out["out_table"])
    pred = dict(zip(df["object_id"], df["object_annotation_category"]))
    assert np.mean([pred[o] == c for o, c in truth.items()]) > 0.9
    # without its CNN the job cannot run; a CNN that changed since the record is refused
    with pytest.raises(InputError, match="no CNN model"):
        pr.predict_job(tmp_path / "new", tmp_path / "model.pkl", rec, "t", **out)
    cnn.layers[-1].set_weights([w + 1 for w in cnn.layers[-1].get_weights()])
    cnn.save(tmp_path / "best.keras")
    with pytest.raises(InputError, match="another version of the CNN"):
        pr.predict_job(tmp_path / "new", tmp_path / "model.pkl", rec, "t", **out,
                       cnn_model_path=tmp_path / "best.keras")


def test_a_descriptors_experiment_on_morphometrics_measures_the_new_images(tmp_path):
    """Issue 17's descriptors experiments read morpho_* columns that rule compute_morphometrics measured on the
    training images; no input table has them. Prediction measures them on each object's image, with the same
    function and settings (the record's threshold and polarity), and learns the classes from them."""
    from sklearn.ensemble import RandomForestClassifier

    from lokiml.morphometrics import FEATURES, MorphoParams, measure_bytes

    truth = make_export(tmp_path / "new", n=30, columns=("object_area",))
    columns = ["morpho_contrast_mean", "object_area"]  # the grey level of the object, measured; and one of the table
    params = MorphoParams(threshold=245, polarity="dark")
    x, y = [], []
    for i, (oid, c) in enumerate(truth.items()):  # training rows: the same kind of images, measured as in training
        values, _ = measure_bytes((tmp_path / "new" / "imgs" / f"{oid}.png").read_bytes(), oid, params)
        x.append([values[FEATURES.index(columns[0])], AREA[c]])
        y.append(CLASSES.index(c))
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(np.array(x), np.array(y))
    save_model(tmp_path / "model.pkl", model)
    write_tsv(tmp_path / "columns.tsv", pd.DataFrame({"column": columns, "used": [1, 1], "reason": ["used"] * 2}))
    (tmp_path / "classes.txt").write_text("".join(f"{c}\n" for c in CLASSES))
    rec = tmp_path / "normalisation.json"
    pr.record_normalisation(tmp_path / "model.pkl", tmp_path / "classes.txt", None, rec, "desc", image_size=None,
                            threshold=245, polarity="dark", bottom_crop=0.0, max_pixels=10**7, kind="descriptors",
                            columns_path=tmp_path / "columns.tsv")
    out = outputs(tmp_path / "out")
    summary = pr.predict_job(tmp_path / "new", tmp_path / "model.pkl", rec, "t", **out)
    assert summary["counts"]["predicted"] == 30
    _, df = table_of(out["out_table"])
    pred = dict(zip(df["object_id"], df["object_annotation_category"]))
    assert np.mean([pred[o] == c for o, c in truth.items()]) > 0.9
    # the table's own columns are still required; a folder of images has no object_area
    with pytest.raises(InputError, match="folder of images has no descriptors"):
        pr.predict_job(tmp_path / "new" / "imgs", tmp_path / "model.pkl", rec, "t", **outputs(tmp_path / "out2"))
