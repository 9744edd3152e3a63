"""lokiml.base_features: a frozen base's features computed once, and the same results where they are read.

On the tiny synthetic store of test_train.py (3 classes of shapes, 32 px, one item that failed to
normalise) with a seeded ResNet50 base: the features equal the base's output; training the head,
evaluating and extracting deep features from them give what the code that runs the base itself
gives; and no image goes through the base again.
"""

import logging

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

from lokiml import base_features as bf  # noqa: E402
from lokiml import deep_features, evaluate, models, train  # noqa: E402
from lokiml.errors import InputError  # noqa: E402
from lokiml.store import Store  # noqa: E402
from test_train import BACKBONE, SIZE, history, make_store, outputs  # noqa: E402


def forward_passes(caplog) -> int:
    return sum(int(r.getMessage().split(": ")[1].split()[0]) for r in caplog.records
               if r.getMessage().startswith(bf.FORWARD_PASSES))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("base_features")
    d = make_store(root)
    d["weights"] = str(models.save_seeded_base_weights(BACKBONE, root / "base.weights.h5", seed=7))
    d["features"] = (str(root / "features" / "base.npy"), str(root / "features" / "base.tsv"))
    d["index"] = bf.compute_base_features(BACKBONE, d["weights"], SIZE, d["store_npys"], d["store_indexes"],
                                          *d["features"], batch_size=4)
    return d


def test_features_of_every_normalised_image_equal_the_base_output(data):
    index = pd.read_csv(data["features"][1], sep="\t", keep_default_na=False)
    store = Store(data["store_npys"], data["store_indexes"])
    assert sorted(index["item_id"]) == list(index["item_id"]) == sorted(store.index.index)
    bad = index[index["status"] != "ok"]
    assert list(bad["item_id"]) == ["circle_train_0"] and list(bad["row"]) == [-1]
    ok = index[index["status"] == "ok"]
    feats = np.load(data["features"][0])
    assert feats.dtype == np.float32 and feats.shape[0] == len(ok) == ok["row"].max() + 1
    model, _ = models.build_model(BACKBONE, 3, SIZE, data["weights"])
    want = models.feature_model(model).predict(store.gather(ok["item_id"])[..., None], verbose=0)
    np.testing.assert_allclose(feats[ok["row"]], want, rtol=1e-4, atol=1e-5)
    assert np.abs(feats).max() > 0


def test_the_head_trains_on_them_as_on_features_it_computes_itself(data, tmp_path, caplog):
    args = {k: data[k] for k in ("split_path", "store_npys", "store_indexes", "classes")}
    params = {"image_size": SIZE, "batch_size": 4, "epochs": 3, "model": BACKBONE, "optimizer": "adam",
              "early_stopping": None, "cache_features": True}
    own = train.train_experiment(**args, **outputs(tmp_path / "own"), params=params, weights_path=data["weights"],
                                 threads=2)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lokiml"):
        read = train.train_experiment(**args, **outputs(tmp_path / "read"), params=params,
                                      weights_path=data["weights"], threads=2, base_features=data["features"])
    assert forward_passes(caplog) == 0, "no image may go through the base again"
    assert own["cached_features"] is read["cached_features"] is True
    h_own, h_read = history(tmp_path / "own"), history(tmp_path / "read")
    for col in ("loss", "val_loss", "accuracy", "val_accuracy"):
        np.testing.assert_allclose(h_read[col], h_own[col], rtol=1e-4, atol=1e-5)


def test_evaluation_and_deep_features_read_them_with_the_full_models_results(data, tmp_path, caplog):
    model, _ = models.build_model(BACKBONE, 3, SIZE, data["weights"], seed=3)
    store = Store(data["store_npys"], data["store_indexes"])
    split = pd.read_csv(data["split_path"], sep="\t", keep_default_na=False)
    features = bf.BaseFeatures(*data["features"])
    with caplog.at_level(logging.INFO, logger="lokiml"):
        full = evaluate.evaluate_split(model, store, split, "valid", data["classes"], batch_size=4)
        assert forward_passes(caplog) == len(full.predictions)
        caplog.clear()
        head = evaluate.evaluate_split(model, store, split, "valid", data["classes"], batch_size=4,
                                       base_features=features)
        assert forward_passes(caplog) == 0
    cols = [c for c in full.predictions.columns if c.endswith("_prob")]
    np.testing.assert_allclose(head.predictions[cols].to_numpy(float), full.predictions[cols].to_numpy(float),
                               rtol=1e-4, atol=1e-5)
    assert (head.predictions["predicted_class"] == full.predictions["predicted_class"]).all()

    paths = {k: tmp_path / k / f"penultimate.{ext}" for k, ext in (("model", "npy"), ("read", "npy"))}
    idx_model = deep_features.extract_deep_features("m.keras", data["split_path"], data["store_npys"],
                                                    data["store_indexes"], paths["model"],
                                                    tmp_path / "model" / "penultimate.tsv", 4, model=model)
    idx_read = deep_features.extract_deep_features("m.keras", data["split_path"], data["store_npys"],
                                                   data["store_indexes"], paths["read"],
                                                   tmp_path / "read" / "penultimate.tsv", 4,
                                                   base_features=data["features"])
    pd.testing.assert_frame_equal(idx_read, idx_model)
    np.testing.assert_allclose(np.load(paths["read"]), np.load(paths["model"]), rtol=1e-4, atol=1e-5)


def test_bad_features_files_are_clear_errors(data, tmp_path):
    features = bf.BaseFeatures(*data["features"])
    with pytest.raises(InputError, match="no features.*nobody"):
        features.take(["square_test_0", "nobody"])
    with pytest.raises(InputError, match="could not be normalised.*circle_train_0"):
        features.take(["circle_train_0"])
    short = tmp_path / "short.npy"
    np.save(short, np.load(data["features"][0])[:-1])
    with pytest.raises(InputError, match=r"short\.npy.*rerun rule compute_base_features"):
        bf.BaseFeatures(short, data["features"][1])
