"""deep_features experiments: the penultimate layer, column choice, no test leakage, predictions per object, config."""

import copy
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from lokiml import deep_features as df
from lokiml import evaluate as ev
from lokiml.config import validate_config
from lokiml.errors import ConfigError
from lokiml.io import save_npy, write_tsv
from test_descriptors import _outputs  # the evaluation files, the same for both kinds

CLASSES = ["a", "b", "c"]
FAST_RF = {"kind": "deep_features", "cnn": "cnn", "classifier": "random_forest",
           "param_grid": {"n_estimators": [20], "min_samples_leaf": [1, 5]}, "pca": 4}
N_FEATURES = 16


def synthetic(n=240, seed=0, bad=("obj_00007",)):
    """Objects with descriptors, a split with augmented copies, and CNN features of the originals.

    Feature 0 and the descriptor object_area carry the class; ``bad`` objects have no usable image.
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % len(CLASSES)
    ids = [f"obj_{i:05d}" for i in range(n)]
    objects = pd.DataFrame({
        "object_id": ids,
        "class_name": [CLASSES[k] for k in y],
        "object_area": (100 + 50 * y + rng.normal(0, 40, n)).round(1).astype(str),
        "object_noise": rng.normal(0, 1, n).round(3).astype(str),
        "object_lat": (79 + y * 0.1).astype(str),  # a coordinate: never a feature
        "object_flat": ["1.5"] * n,
    })
    split = pd.DataFrame({"item_id": ids, "object_id": ids, "class_name": objects["class_name"], "augmented": "0",
                          "split": np.array(["train", "train", "train", "valid", "test"] * (n // 5 + 1))[
                              rng.permutation(n)]})
    aug = split.iloc[:30].copy()
    aug["item_id"] = aug["item_id"] + "#aug0001"
    aug["augmented"] = "1"
    split = pd.concat([split, aug], ignore_index=True)
    feats = rng.normal(0, 1, (n, N_FEATURES)).astype(np.float32)
    feats[:, 0] += 2.0 * y
    status = np.where(np.isin(ids, list(bad)), "unreadable_image: broken", "ok")
    ok = status == "ok"
    row = np.full(n, -1)
    row[ok] = np.arange(ok.sum())
    index = pd.DataFrame({"item_id": ids, "object_id": ids, "row": row, "status": status})
    return objects, split, feats[ok], index


def indexed(index):
    return index.set_index("item_id")


def fit(objects, split, feats, index, params=FAST_RF):
    # (pipeline, columns table, chosen, grid, facts); the valid rows and probabilities are tested elsewhere
    return df.fit_deep_features(feats, indexed(index), objects, split, CLASSES, df.experiment_settings(params))[:5]


# ---- the penultimate layer of a real (tiny) CNN ---------------------------------------------------


class ListStore:
    """The part of lokiml.store.Store that extraction uses, over an in-memory array."""

    def __init__(self, ids, images):
        self.pos = {i: k for k, i in enumerate(ids)}
        self.images = images

    def gather(self, item_ids):
        return self.images[[self.pos[i] for i in item_ids]]


@pytest.fixture(scope="module")
def tiny_cnn():
    from lokiml.models import build_model

    model, _ = build_model("mobilenetv2", len(CLASSES), 32, seed=3)  # random weights, 32 px
    return model


def test_features_are_the_pooled_layer_that_feeds_the_head(tiny_cnn):
    rng = np.random.default_rng(0)
    ids = [f"i{k}" for k in range(7)]
    images = rng.integers(0, 256, (7, 32, 32), dtype=np.uint8)
    fmodel = df.penultimate_model(tiny_cnn)
    feats = df.extract_features(fmodel, ListStore(ids, images), ids[::-1], batch_size=3)
    width = tiny_cnn.get_layer("predictions").input.shape[-1]
    assert feats.shape == (7, width) == (7, 1280) and feats.dtype == np.float32  # MobileNetV2's pooled width
    # in the order asked for, whatever the batches
    one = df.extract_features(fmodel, ListStore(ids, images), ["i2"], batch_size=3)
    np.testing.assert_allclose(one[0], feats[4], rtol=1e-5, atol=1e-6)
    # the head (dropout is off at inference) turns exactly these features into the model's probabilities
    head = np.asarray(tiny_cnn.get_layer("predictions")(feats))
    probs = np.asarray(tiny_cnn.predict_on_batch(images[::-1][..., None]))
    np.testing.assert_allclose(head, probs, rtol=1e-4, atol=1e-6)


def write_store(root, ids, images, statuses):
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "shard0.npy", images)
    pd.DataFrame({"item_id": ids, "row": np.arange(len(ids)), "status": statuses}).to_csv(
        root / "shard0.tsv", sep="\t", index=False)
    return [root / "shard0.npy"], [root / "shard0.tsv"]


def test_extraction_takes_originals_only_and_records_images_left_out(tiny_cnn, tmp_path):
    rng = np.random.default_rng(1)
    split = pd.DataFrame({
        "item_id": ["o3", "o1", "o2", "o1#aug0001", "o4", "o5"],
        "object_id": ["o3", "o1", "o2", "o1", "o4", "o5"],
        "class_name": ["a", "b", "c", "b", "a", "b"],
        "augmented": ["0", "0", "0", "1", "0", "0"],
        "split": ["train", "train", "valid", "train", "test", "test"],
    })
    write_tsv(tmp_path / "split.tsv", split)
    store_ids = ["o1", "o1#aug0001", "o2", "o3", "o4", "o5"]
    images = rng.integers(0, 256, (6, 32, 32), dtype=np.uint8)
    statuses = ["ok", "ok", "ok", "ok", "unreadable_image: x", "ok"]
    npys, idxs = write_store(tmp_path / "store", store_ids, images, statuses)
    index = df.extract_deep_features(None, tmp_path / "split.tsv", npys, idxs, tmp_path / "f.npy", tmp_path / "f.tsv",
                                     batch_size=2, model=tiny_cnn)
    assert index["item_id"].tolist() == ["o1", "o2", "o3", "o4", "o5"]  # no augmented copy, sorted
    assert index["row"].tolist() == [0, 1, 2, -1, 3] and index.loc[3, "status"].startswith("unreadable_image")
    feats, back = df.load_features(tmp_path / "f.npy", tmp_path / "f.tsv")
    assert feats.shape == (4, 1280)
    fmodel = df.penultimate_model(tiny_cnn)
    for item in ("o1", "o3", "o5"):
        own = np.asarray(fmodel.predict_on_batch(images[[store_ids.index(item)]][..., None]))[0]
        np.testing.assert_allclose(feats[back.loc[item, "row"]], own, rtol=1e-4, atol=1e-5)
    # a features file that does not match its index is refused
    save_npy(tmp_path / "f.npy", np.zeros((3, 1280), np.float32))
    with pytest.raises(Exception, match="rerun rule extract_deep_features"):
        df.load_features(tmp_path / "f.npy", tmp_path / "f.tsv")


# ---- training and evaluation on given features ----------------------------------------------------


def test_feature_columns_descriptors_and_pca():
    objects, split, feats, index = synthetic()
    pipe, table, chosen, grid, facts = fit(objects, split, feats, index)
    t = table.set_index("column")
    assert t.index[t["used"] == 1].tolist() == ["object_area", "object_noise"]
    assert t.loc["object_lat", "reason"] == "position" and t.loc["object_flat", "reason"] == "constant"
    assert facts["cnn_features"] == N_FEATURES and facts["pca_components"] == 4 and facts["n_features"] == 4 + 2
    assert 0 < facts["pca_explained_variance"] < 1
    assert pipe.named_steps["classifier"].n_features_in_ == 6
    # the model takes the CNN features, then the descriptors, in the order of columns.tsv
    rows, _ = df.rows_with_features(split, "test", indexed(index))
    x = df.design_matrix(feats, indexed(index), objects, rows, ["object_area", "object_noise"])
    assert x.shape == (len(rows), N_FEATURES + 2)
    area = objects.set_index("object_id").loc[rows["object_id"], "object_area"].astype(float)
    np.testing.assert_allclose(x[:, -2], area, rtol=1e-6)
    # descriptors off: every column unused, CNN features only
    _, table2, _, _, facts2 = fit(objects, split, feats, index, {**FAST_RF, "descriptors": False})
    assert (table2["used"] == 0).all() and set(table2["reason"]) == {"descriptors_off"}
    assert facts2["n_features"] == 4
    # no PCA: every CNN feature as it is; exclude_columns applies to the descriptors
    pipe3, table3, _, _, facts3 = fit(objects, split, feats, index,
                                      {**FAST_RF, "pca": None, "exclude_columns": ["object_noise"]})
    assert facts3["pca_components"] is None and facts3["n_features"] == N_FEATURES + 1
    assert pipe3.named_steps["features"] == "passthrough"
    assert table3.set_index("column").loc["object_noise", "reason"] == "excluded_by_config"


def test_test_split_never_influences_training():
    objects, split, feats, index = synthetic(seed=1)
    pipe, table, chosen, grid, facts = fit(objects, split, feats, index)
    rng = np.random.default_rng(5)
    test = (split["split"] == "test") & (split["augmented"] == "0")
    test_ids = split.loc[test, "item_id"]
    # other labels, other descriptors and other CNN features for every test object
    split2 = split.copy()
    split2.loc[test, "class_name"] = rng.permutation(split.loc[test, "class_name"].to_numpy())
    objects2 = objects.copy()
    t = objects["object_id"].isin(test_ids)
    objects2.loc[t, "object_area"] = rng.normal(0, 1000, t.sum()).round(1).astype(str)
    feats2 = feats.copy()
    rows = indexed(index).loc[test_ids, "row"]
    feats2[rows[rows >= 0].to_numpy()] = rng.normal(50, 10, (int((rows >= 0).sum()), N_FEATURES))
    pipe2, table2, chosen2, grid2, facts2 = fit(objects2, split2, feats2, index)
    assert chosen2 == chosen and facts2 == facts
    pd.testing.assert_frame_equal(grid.drop(columns="seconds"), grid2.drop(columns="seconds"))
    pd.testing.assert_frame_equal(table, table2)
    pca, pca2 = (p.named_steps["features"].named_transformers_["cnn"] for p in (pipe, pipe2))
    np.testing.assert_array_equal(pca.mean_, pca2.mean_)  # PCA fitted on the training objects only
    np.testing.assert_array_equal(pca.components_, pca2.components_)
    # and with no test row at all
    _, _, chosen3, grid3, _ = fit(objects, split[split["split"] != "test"], feats, index)
    assert chosen3 == chosen
    np.testing.assert_allclose(grid3["valid_macro_f1"], grid["valid_macro_f1"])
    # while the valid split does decide
    split4 = split.copy()
    valid = split["split"] == "valid"
    split4.loc[valid, "class_name"] = rng.permutation(split.loc[valid, "class_name"].to_numpy())
    _, _, _, grid4, _ = fit(objects, split4, feats, index)
    assert not np.allclose(grid4["valid_macro_f1"], grid["valid_macro_f1"])


def test_predictions_follow_object_ids_not_row_order():
    objects, split, feats, index = synthetic(seed=3)
    pipe, table, _, _, _ = fit(objects, split, feats, index)
    desc = table.loc[table["used"] == 1, "column"].tolist()
    rows, y, probs, excl = df.predict_split(pipe, feats, indexed(index), objects, split, "test", desc, CLASSES)
    # shuffle the objects table, the split, and the rows of the features file (its index follows)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(feats))
    index2 = index.copy()
    ok = index2["row"] >= 0
    index2.loc[ok, "row"] = np.argsort(perm)[index2.loc[ok, "row"].to_numpy()]
    index2 = index2.iloc[rng.permutation(len(index2))]
    objects2, split2 = objects.iloc[rng.permutation(len(objects))], split.iloc[rng.permutation(len(split))]
    rows2, y2, probs2, _ = df.predict_split(pipe, feats[perm], indexed(index2), objects2, split2, "test", desc, CLASSES)
    a = pd.DataFrame(probs, index=rows["object_id"]).sort_index()
    b = pd.DataFrame(probs2, index=rows2["object_id"]).sort_index()
    pd.testing.assert_frame_equal(a, b)
    assert rows["object_id"].is_unique and (rows["augmented"] == "0").all()
    truth = split.drop_duplicates("object_id").set_index("object_id").loc[rows["object_id"], "class_name"]
    assert [CLASSES[k] for k in y] == truth.tolist()
    # each probability row comes from the object's own features and descriptors
    own = np.hstack([feats[indexed(index).loc[rows["item_id"], "row"].to_numpy()],
                     objects.set_index("object_id").loc[rows["object_id"], desc].astype(float).to_numpy()])
    np.testing.assert_allclose(pipe.predict_proba(own.astype(np.float32)), probs)
    # a broken test mistake would show: another object's features give other probabilities
    assert not np.allclose(pipe.predict_proba(own[::-1].astype(np.float32)), probs)


def test_augmented_copies_and_objects_without_image_are_left_out():
    objects, split, feats, index = synthetic(seed=4, bad=("obj_00000", "obj_00001", "obj_00002", "obj_00003"))
    _, _, _, _, facts = fit(objects, split, feats, index)
    originals = split[split["augmented"] == "0"]
    bad = {"obj_00000", "obj_00001", "obj_00002", "obj_00003"}
    for s in ("train", "valid"):
        sel = originals[originals["split"] == s]
        assert facts["items"][s] == int((~sel["item_id"].isin(bad)).sum())
        assert facts["excluded_no_image"][s] == int(sel["item_id"].isin(bad).sum())
    assert sum(facts["excluded_no_image"].values()) + int(((originals["split"] == "test")
                                                           & originals["item_id"].isin(bad)).sum()) == 4
    # an item of the split that the features index does not know is an error, not a silent drop
    missing = originals.loc[(originals["split"] == "train") & ~originals["item_id"].isin(bad), "item_id"].iloc[0]
    with pytest.raises(Exception, match="no entry in the features index"):
        fit(objects, split, feats, index[index["item_id"] != missing])


@pytest.mark.parametrize("classifier", ["random_forest", "hist_gradient_boosting"])
def test_end_to_end(tmp_path, classifier):
    objects, split, feats, index = synthetic(seed=6)
    write_tsv(tmp_path / "objects.tsv", objects)
    write_tsv(tmp_path / "split.tsv", split)
    save_npy(tmp_path / "penultimate.npy", feats)
    write_tsv(tmp_path / "penultimate.tsv", index)
    grid = ({"n_estimators": [20], "min_samples_leaf": [1, 3]} if classifier == "random_forest"
            else {"max_iter": [30], "learning_rate": [0.1]})
    params = {**FAST_RF, "classifier": classifier, "param_grid": grid, "seed": 1}
    exp = tmp_path / "exp"
    info = df.train_deep_features(tmp_path / "penultimate.npy", tmp_path / "penultimate.tsv", tmp_path / "objects.tsv",
                                  tmp_path / "split.tsv", CLASSES, params, exp / "model.pkl", exp / "classes.txt",
                                  exp / "columns.tsv", exp / "grid.tsv", exp / "train_info.json")
    assert info["kind"] == "deep_features" and info["cnn"] == "cnn" and info["cnn_features"] == N_FEATURES
    assert info["columns"] == ["object_area", "object_noise"] and info["n_features"] == 6
    outputs = _outputs(tmp_path / "eval")
    cnn = {"model": "mobilenetv2", "weights": "imagenet", "image_size": 32, "fine_tune": None}
    results = df.evaluate_deep_features(exp / "model.pkl", exp / "classes.txt", exp / "columns.tsv", exp / "grid.tsv",
                                        exp / "train_info.json", tmp_path / "penultimate.npy",
                                        tmp_path / "penultimate.tsv", tmp_path / "objects.tsv", tmp_path / "split.tsv",
                                        CLASSES, {k: str(v) for k, v in outputs.items()}, experiment="deep", cnn=cnn)
    for key, path in outputs.items():
        assert path.stat().st_size > 0, key
    pred = pd.read_csv(outputs["test_predictions"], sep="\t", dtype=str, keep_default_na=False)
    expected = split[(split["split"] == "test") & (split["augmented"] == "0") & (split["item_id"] != "obj_00007")]
    assert sorted(pred["object_id"]) == sorted(expected["object_id"])
    truth = expected.set_index("object_id").loc[pred["object_id"], "class_name"].to_numpy()
    assert (pred["true_class"].to_numpy() == truth).all()
    metrics = json.loads(outputs["test_metrics"].read_text())
    assert metrics["n_objects"] == len(pred) and metrics["macro_f1"] > 0.6
    excluded = int(split.loc[split["item_id"] == "obj_00007", "split"].iloc[0] in ("valid", "test"))
    assert sum(results[s].metrics["n_excluded_no_image"] for s in ev.SPLITS) == excluded
    text = outputs["summary"].read_text()
    for needle in ["penultimate-layer", "CNN experiment cnn", "PCA", "object_area", "mobilenetv2 at 32 px",
                   "Chosen parameters"]:
        assert needle in text, needle
    # the leaderboard reads it like any other experiment
    board = ev.leaderboard(["deep"], [outputs["test_metrics"]], [outputs["valid_metrics"]], [exp / "train_info.json"],
                           {"deep": {"model": classifier, "weights": "features of cnn and descriptors",
                                     "image_size": 32}}, tmp_path / "board.tsv")
    assert board["experiment"].tolist() == ["deep"] and board["image_size"].iloc[0] == 32
    # a model and features that do not belong together are refused
    save_npy(tmp_path / "penultimate.npy", np.zeros((len(feats), N_FEATURES + 1), np.float32))
    with pytest.raises(Exception, match="retrain"):
        df.evaluate_deep_features(exp / "model.pkl", exp / "classes.txt", exp / "columns.tsv", exp / "grid.tsv",
                                  exp / "train_info.json", tmp_path / "penultimate.npy", tmp_path / "penultimate.tsv",
                                  tmp_path / "objects.tsv", tmp_path / "split.tsv", CLASSES,
                                  {k: str(v) for k, v in outputs.items()}, experiment="deep")


def test_leaderboard_shows_no_minus_one_for_experiments_without_image_size_or_epochs(tmp_path):
    paths = {}
    for name, f1 in (("cnn", 0.6), ("desc", 0.8)):
        for s in ("test", "valid"):
            p = tmp_path / f"{name}_{s}.json"
            p.write_text(json.dumps({"macro_f1": f1, "accuracy": f1, "balanced_accuracy": f1, "top3_accuracy": 1.0,
                                     "log_loss": 0.5, "ece": 0.1, "n_objects": 10}))
            paths[name, s] = p
    (tmp_path / "cnn_i.json").write_text(json.dumps({"epochs_run": 12, "best_epoch": 9, "seconds_total": 60.0}))
    (tmp_path / "desc_i.json").write_text(json.dumps({"kind": "descriptors", "seconds_total": 1.5}))
    settings = {"cnn": {"model": "inceptionv3", "weights": "imagenet", "image_size": 96},
                "desc": {"model": "random_forest", "weights": "descriptors"}}
    table = ev.leaderboard(["cnn", "desc"], [paths["cnn", "test"], paths["desc", "test"]],
                           [paths["cnn", "valid"], paths["desc", "valid"]],
                           [tmp_path / "cnn_i.json", tmp_path / "desc_i.json"], settings, tmp_path / "lb.tsv",
                           tmp_path / "lb.html")
    back = pd.read_csv(tmp_path / "lb.tsv", sep="\t", dtype=str, keep_default_na=False).set_index("experiment")
    assert back.loc["desc", ["image_size", "epochs_run", "best_epoch"]].tolist() == ["", "", ""]
    assert back.loc["cnn", ["image_size", "epochs_run", "best_epoch"]].tolist() == ["96", "12", "9"]  # still integers
    assert "-1" not in (tmp_path / "lb.tsv").read_text()
    page = (tmp_path / "lb.html").read_text()
    assert ">-1<" not in page and '<td class="num">–</td>' in page and ">96<" in page
    assert table.set_index("experiment").loc["cnn", "image_size"] == 96


# ---- configuration --------------------------------------------------------------------------------


BASE = {"classes": ["a", "b"], "experiments": {"net": {"model": "mobilenetv2"}, "rf": {"kind": "descriptors"}}}


def with_experiment(**exp):
    cfg = copy.deepcopy(BASE)
    cfg["experiments"]["deep"] = {"kind": "deep_features", **exp}
    return cfg


def test_config_defaults_and_keys():
    cfg = validate_config(with_experiment(cnn="net"))
    deep, net = cfg["experiments"]["deep"], cfg["experiments"]["net"]
    assert {k: deep[k] for k in ("cnn", "classifier", "param_grid", "max_missing", "exclude_columns", "descriptors",
                                 "pca")} == {"cnn": "net", "classifier": "random_forest", "param_grid": None,
                                             "max_missing": 0.5, "exclude_columns": [], "descriptors": True, "pca": 50}
    assert not {"cnn", "descriptors", "pca", "classifier"} & set(net)  # a CNN experiment's params stay as they were
    off = validate_config(with_experiment(cnn="net", pca=None, descriptors=False))["experiments"]["deep"]
    assert off["pca"] is None and off["descriptors"] is False
    assert df.experiment_settings({"cnn": "net", "pca": None})["pca"] is None
    assert df.experiment_settings({"cnn": "net"})["pca"] == 50


@pytest.mark.parametrize("exp,needle", [
    ({}, "experiments.deep: 'cnn' is a required property"),
    ({"cnn": "nope"}, "experiments.deep.cnn: 'nope' is not an experiment"),
    ({"cnn": "rf"}, "experiments.deep.cnn: 'rf' is a descriptors experiment, not a CNN one"),
    ({"cnn": "deep"}, "experiments.deep.cnn: 'deep' is a deep_features experiment"),
    ({"cnn": "net", "pca": 0}, "experiments.deep.pca"),
    ({"cnn": "net", "descriptors": "yes"}, "experiments.deep.descriptors"),
    ({"cnn": "net", "classifer": "x"}, "classifer"),
])
def test_config_errors_name_the_key(exp, needle):
    with pytest.raises(ConfigError) as err:
        validate_config(with_experiment(**exp))
    assert needle in str(err.value)


def test_a_switched_off_cnn_is_an_error_naming_the_key():
    cfg = with_experiment(cnn="net")
    cfg["experiments"]["net"] = None
    with pytest.raises(ConfigError, match="experiments.deep.cnn: 'net' is not an experiment"):
        validate_config(cfg)


def test_shipped_configs_have_a_deep_features_experiment_on_a_cnn(project_root):
    from snakemake.utils import update_config

    base = yaml.safe_load((project_root / "config" / "config.yaml").read_text())
    for extra in ("demo.yaml", None):
        cfg = copy.deepcopy(base)
        if extra:
            update_config(cfg, yaml.safe_load((project_root / "config" / extra).read_text()))
        cfg = validate_config(cfg)
        deep = {n: e for n, e in cfg["experiments"].items() if e["kind"] == "deep_features"}
        assert deep, extra
        for e in deep.values():
            assert cfg["experiments"][e["cnn"]]["kind"] == "cnn"
    # the tiny workflow-test config switches it off with its CNN
    tiny = copy.deepcopy(base)
    update_config(tiny, yaml.safe_load((project_root / "tests" / "workflow" / "tiny.yaml").read_text()))
    assert not any(e["kind"] == "deep_features" for e in validate_config(tiny)["experiments"].values())


def test_refit_valid_probabilities_and_estimate_test_only_objects_the_cnn_did_not_see(tmp_path):
    objects, split, feats, index = synthetic(seed=13)
    settings = df.experiment_settings(FAST_RF)
    pipe, table, chosen, grid, facts, valid_rows, valid_probs = df.fit_deep_features(
        feats, indexed(index), objects, split, CLASSES, settings)
    # refit: PCA and classifier fitted on train + valid; the valid probabilities are the train-only pipeline's
    assert pipe.named_steps["features"].named_transformers_["cnn"].n_samples_ == facts["items"]["train"] + \
        facts["items"]["valid"]
    only_train, *_ = df.fit_deep_features(feats, indexed(index), objects, split, CLASSES, {**settings, "refit": False})
    desc = table.loc[table["used"] == 1, "column"].tolist()
    x_va = df.design_matrix(feats, indexed(index), objects, valid_rows, desc)
    np.testing.assert_allclose(valid_probs, only_train.predict_proba(x_va))
    # the estimate: objects of the CNN's train split are never tested
    for name, frame in (("objects.tsv", objects), ("split.tsv", split), ("penultimate.tsv", index),
                        ("columns.tsv", table)):
        write_tsv(tmp_path / name, frame)
    save_npy(tmp_path / "penultimate.npy", feats)
    params = {**FAST_RF, "estimate": {"folds": 3, "repeats": 1}}
    summary = df.estimate_deep_features(tmp_path / "penultimate.npy", tmp_path / "penultimate.tsv",
                                        tmp_path / "objects.tsv", tmp_path / "split.tsv", tmp_path / "columns.tsv",
                                        CLASSES, params, tmp_path / "estimate.tsv", tmp_path / "estimate.json")
    unseen = split[(split["augmented"] == "0") & (split["split"] != "train") & (split["item_id"] != "obj_00007")]
    assert summary["kfold"]["n_objects"] == len(unseen) and summary["kfold"]["folds"] == 3
    assert summary["kfold"]["macro_f1_mean"] > 0.6 and "did not train on" in summary["note"]
    folds = pd.read_csv(tmp_path / "estimate.tsv", sep="\t")
    n_all = int(((split["augmented"] == "0") & (split["item_id"] != "obj_00007")).sum())
    assert (folds["n_train"] + folds["n_test"] == n_all).all()  # every other object trains the fold
