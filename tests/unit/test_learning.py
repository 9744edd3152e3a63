"""CNNs that learn: precise BatchNorm statistics, the recipe's options, diagnostics, and learning itself.

The learning tests train on small synthetic shapes and judge the saved best.keras in inference mode on
held-out images: a model that predicts one class for everything fails them.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

from lokiml import bn, diagnostics, models, train  # noqa: E402

from test_train import CLASSES, make_store, outputs  # noqa: E402


# ---- precise BN -------------------------------------------------------------------------------------


def _bn_model(momentum=0.99):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="dense")(inputs)
    x = keras.layers.BatchNormalization(momentum=momentum, name="bn")(x)
    return keras.Model(inputs, x)


def test_precise_batchnorm_gives_the_statistics_of_the_current_weights():
    model = _bn_model()
    rng = np.random.default_rng(0)
    data = (rng.normal(3.0, 2.0, (96, 4))).astype("float32")
    batches = [data[i:i + 32] for i in range(0, 96, 32)]
    layer = model.get_layer("bn")
    assert np.allclose(keras.ops.convert_to_numpy(layer.moving_mean), 0.0)  # Keras' start: far from the data
    n = bn.precise_batchnorm(model, batches)
    assert n == 96
    h = keras.ops.convert_to_numpy(model.get_layer("dense")(data))
    want_mean = h.mean(axis=0)
    want_var = np.mean([h[i:i + 32].var(axis=0) for i in range(0, 96, 32)], axis=0)
    assert np.allclose(keras.ops.convert_to_numpy(layer.moving_mean), want_mean, atol=1e-4)
    assert np.allclose(keras.ops.convert_to_numpy(layer.moving_variance), want_var, rtol=1e-4)
    assert layer.momentum == 0.99  # restored
    # In inference mode the layer now standardises these data.
    out = keras.ops.convert_to_numpy(model(data, training=False))
    assert np.allclose(out.mean(axis=0), 0.0, atol=1e-3) and np.allclose(out.std(axis=0), 1.0, atol=0.05)


def test_precise_batchnorm_leaves_frozen_layers_and_respects_max_images():
    model = _bn_model()
    data = np.random.default_rng(1).normal(5.0, 1.0, (64, 4)).astype("float32")
    model.get_layer("bn").trainable = False
    assert bn.precise_batchnorm(model, [data]) == 0
    assert np.allclose(keras.ops.convert_to_numpy(model.get_layer("bn").moving_mean), 0.0)
    model.get_layer("bn").trainable = True
    assert bn.precise_batchnorm(model, lambda: iter([data[:16], data[16:32], data[32:]]), max_images=32) == 32


def test_momentum_for_steps_fits_an_epoch():
    assert bn.momentum_for_steps(8) == pytest.approx(0.625)
    assert bn.momentum_for_steps(10_000) == 0.99
    assert bn.momentum_for_steps(1) == 0.5


# ---- recipe options ---------------------------------------------------------------------------------


def test_schedules_warm_up_and_decay():
    sched = models.make_schedule("cosine", 1e-3, steps_per_epoch=10, epochs=5, warmup_epochs=1)
    lr = [float(keras.ops.convert_to_numpy(sched(s))) for s in (0, 5, 10, 30, 50)]
    assert lr[0] == pytest.approx(1e-5) and lr[0] < lr[1] < lr[2]
    assert lr[2] == pytest.approx(1e-3, rel=1e-3) and lr[3] < lr[2] and lr[4] == pytest.approx(0.0, abs=1e-8)
    assert models.make_schedule("constant", 1e-3, 10, 5, 0) == 1e-3
    warm = models.make_schedule("constant", 1e-3, 10, 5, 1)
    assert float(keras.ops.convert_to_numpy(warm(0))) < 1e-4
    assert float(keras.ops.convert_to_numpy(warm(40))) == pytest.approx(1e-3)


def test_adamw_weight_decay_and_label_smoothing_loss():
    opt = models.make_optimizer("adamw", 1e-3, weight_decay=0.05)
    assert isinstance(opt, keras.optimizers.AdamW) and opt.weight_decay == pytest.approx(0.05)
    with pytest.raises(ValueError, match="rmsprop, adam, adamw, sgd"):
        models.make_optimizer("adagrad", 1e-3)
    probs = np.array([[0.98, 0.01, 0.01], [0.2, 0.7, 0.1]], dtype="float32")
    y = np.array([0, 1])
    plain = float(models.make_loss(0.0)(y, probs))
    want = float(np.mean([-np.log(0.98), -np.log(0.7)]))
    assert plain == pytest.approx(want, rel=1e-4)
    smooth = models.make_loss(0.1)
    assert float(smooth(y, probs)) > plain  # a confident right answer is penalised a little
    assert isinstance(keras.losses.deserialize(keras.losses.serialize(smooth)), models.SparseCrossentropyWithSmoothing)


def test_smallcnn_is_a_backbone_like_the_others():
    model, base = models.build_model("SmallCNN", 4, 40, dropout=0.2, seed=3)
    assert models.get_backbone("smallcnn").mode == "tf" and base.name == "smallcnn"
    assert 1_000_000 < base.count_params() < 1_400_000
    assert len(bn.batchnorm_layers(base)) == 9 and model.get_layer("avg_pool").output.shape[-1] == 256
    x = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 1)).astype("uint8")
    p = np.asarray(model.predict(x, verbose=0))
    assert p.shape == (3, 4) and np.allclose(p.sum(1), 1.0, atol=1e-5)
    again, _ = models.build_model("smallcnn", 4, 40, dropout=0.2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), again.get_weights()))
    with pytest.raises(ValueError, match="no pre-trained weights"):
        models.small_cnn(weights="imagenet", input_shape=(40, 40, 3))


def test_smallcnn_with_imagenet_weights_is_a_config_error():
    from lokiml import config
    from lokiml.errors import ConfigError

    cfg = {"classes": ["a", "b"], "experiments": {"mine": {"model": "smallcnn", "weights": "imagenet"}}}
    with pytest.raises(ConfigError, match="experiments.mine.weights: 'smallcnn' is lokiml's own network"):
        config.validate_config(cfg)
    cfg["experiments"]["mine"]["weights"] = "none"
    assert config.validate_config(cfg)["experiments"]["mine"]["tta"] is None


@pytest.mark.parametrize("tta, views", [("flip", 2), ("dihedral", 8)])
def test_test_time_augmentation_averages_the_features_of_every_view(tmp_path, tta, views):
    model, _ = models.build_model("smallcnn", 3, 32, dropout=0.0, seed=1)
    x = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 1)).astype("uint8")
    tmodel = models.inference_model(model, tta)
    rots = [np.rot90(x, k, axes=(1, 2)) for k in range(4 if views == 8 else 1)]
    stack = np.concatenate(rots + [r[:, :, ::-1] for r in rots])
    want = models.feature_model(model).predict(stack, verbose=0).reshape(views, 5, -1).mean(0)
    got = models.feature_model(tmodel).predict(x, verbose=0)
    assert np.allclose(got, want, atol=1e-5)
    assert not np.allclose(got, models.feature_model(model).predict(x, verbose=0), atol=1e-3)  # views matter
    p = tmodel.predict(x, verbose=0)
    # The prediction no longer depends on the view: a mirrored (and, with dihedral, rotated) image scores the same.
    assert np.allclose(tmodel.predict(x[:, :, ::-1].copy(), verbose=0), p, atol=1e-5)
    if views == 8:
        assert np.allclose(tmodel.predict(np.rot90(x, 1, axes=(1, 2)).copy(), verbose=0), p, atol=1e-5)
    path = tmp_path / "m.keras"
    tmodel.save(path)
    from lokiml.evaluate import load_classifier

    loaded = load_classifier(path)
    assert np.allclose(loaded.predict(x, verbose=0), p, atol=1e-6)
    assert models.head_model(loaded).input.shape[-1] == 256  # the head and feature paths still find their layers
    assert models.inference_model(model, None).count_params() == model.count_params()
    with pytest.raises(ValueError, match="flip, dihedral"):
        models.inference_model(model, "rot90")


# ---- diagnostics ------------------------------------------------------------------------------------


def _hist(vals):
    return [{"epoch": i + 1, "val_accuracy": v} for i, v in enumerate(vals)]


def test_diagnostics_warn_on_a_model_that_did_not_learn():
    labels = np.repeat(np.arange(4), 10)
    w = diagnostics.training_warnings(_hist([0.25, 0.2, 0.3]), labels, 4, best_epoch=1)
    assert len(w) == 2 and "first" in w[0] and "chance" in w[1]
    assert diagnostics.training_warnings(_hist([0.25, 0.6, 0.9]), labels, 4, best_epoch=3) == []
    assert diagnostics.training_warnings(_hist([0.5]), labels, 4, best_epoch=1) == []  # one epoch: no verdict
    one = diagnostics.prediction_warnings(np.r_[np.zeros(36), [1, 2, 3, 3]], labels, ["a", "b", "c", "d"], "test")
    assert len(one) == 1 and "'a'" in one[0] and "90%" in one[0]
    assert diagnostics.prediction_warnings(labels, labels, ["a", "b", "c", "d"], "test") == []
    # A class that really is 90 % of the split is no collapse.
    skewed = np.r_[np.zeros(36), [1, 2, 3, 3]].astype(int)
    assert diagnostics.prediction_warnings(skewed, skewed, ["a", "b", "c", "d"], "test") == []
    cm = np.array([[10, 0], [9, 1]])
    assert diagnostics.confusion_warnings(cm, ["a", "b"], "valid")


# ---- learning ----------------------------------------------------------------------------------------


def _evaluate(best_path, data, part="test"):
    from lokiml.evaluate import load_classifier

    split = pd.read_csv(data["split_path"], sep="\t")
    rows = split[split["split"] == part]
    x = np.stack([data["images"][i] for i in rows["item_id"]])[..., None]
    y = rows["class_name"].map({c: k for k, c in enumerate(CLASSES)}).to_numpy()
    model = load_classifier(best_path)
    pred = np.asarray(model.predict(x, verbose=0)).argmax(1)
    return pred, y


@pytest.mark.slow
def test_a_cnn_trained_from_scratch_with_the_seeds_settings_learns(tmp_path):
    """RMSprop at 1e-3 from scratch (the seed's self-trained recipe), judged in inference mode on held-out
    images: with precise BN it learns; the diagnostics stay silent. The network is smallcnn (9 BatchNorm
    layers): a ResNet50 on these 72 images at 32 px reached only 0.57 in 6 epochs (0.33 is chance), too few
    steps for CI; the seed's own InceptionV3 is measured on the demo (README, "CNNs that learn")."""
    data = make_store(tmp_path / "data", size=32, per_class=(24, 8, 10), seed=3)
    out = outputs(tmp_path / "exp")
    params = {"model": "smallcnn", "weights": "none", "image_size": 32, "batch_size": 8, "epochs": 6,
              "optimizer": "rmsprop", "learning_rate": 1e-3, "seed": 1, "early_stopping": None}
    info = train.train_experiment(data["split_path"], data["store_npys"], data["store_indexes"], CLASSES,
                                  params=params, threads=2, **out)
    pred, y = _evaluate(out["out_best"], data)
    acc = float((pred == y).mean())
    counts = np.bincount(pred, minlength=3)
    assert acc >= 0.8, f"test accuracy {acc:.2f} (predicted per class {counts})"
    assert counts.max() / len(pred) <= 0.6, f"nearly one class: {counts}"
    assert info["warnings"] == []
    history = pd.read_csv(out["out_history"], sep="\t")
    assert history["val_accuracy"].max() >= 0.8
    assert json.loads(open(out["out_info"]).read())["experiment"]["batchnorm"]["precise"] == "auto"


@pytest.mark.slow
def test_the_recipe_options_train_and_learn(tmp_path):
    """AdamW, warm-up + cosine, label smoothing, balanced class weights, BN momentum auto, augmentation."""
    data = make_store(tmp_path / "data", size=32, per_class=(24, 8, 10), seed=4)
    out = outputs(tmp_path / "exp")
    params = {"model": "smallcnn", "weights": "none", "image_size": 32, "batch_size": 8, "epochs": 6,
              "optimizer": "adamw", "learning_rate": 2e-3, "weight_decay": 1e-4, "schedule": "cosine",
              "warmup_epochs": 1, "label_smoothing": 0.1, "class_weight": "balanced",
              "batchnorm": {"momentum": "auto"}, "augment": {"flip": True, "rotation": 180, "zoom": 0.0,
                                                             "translation": 0.0},
              "seed": 2, "early_stopping": None}
    train.train_experiment(data["split_path"], data["store_npys"], data["store_indexes"], CLASSES,
                           params=params, threads=2, **out)
    history = pd.read_csv(out["out_history"], sep="\t")
    lr = history["learning_rate"].to_numpy()
    assert lr[0] > lr[-1] and lr[-1] < 2e-4  # cosine: far down by the last epoch
    pred, y = _evaluate(out["out_best"], data)
    assert float((pred == y).mean()) >= 0.7 and np.bincount(pred, minlength=3).max() / len(pred) <= 0.6


# ---- the demo's stand-in pre-trained weights ------------------------------------------------------------


def test_pretext_images_are_reproducible_and_balanced():
    from lokiml.demo_weights import PRETEXT_SHAPES, pretext_images

    x, y = pretext_images(5, 48, seed=2)
    x2, y2 = pretext_images(5, 48, seed=2)
    assert x.shape == (5 * len(PRETEXT_SHAPES), 48, 48, 1) and x.dtype == np.uint8
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert np.bincount(y).tolist() == [5] * len(PRETEXT_SHAPES)
    # Dark objects on a light background, like the demo's normalised images.
    assert np.median(x[:, 0, :, 0]) > 200 and x.min() < 200


@pytest.mark.slow
def test_demo_weights_are_pretrained_on_the_pretext_task(tmp_path):
    from lokiml.demo_weights import make_demo_weights
    from lokiml.store import Store

    data = make_store(tmp_path / "data", size=32, per_class=(4, 1, 1))
    store = Store(data["store_npys"], data["store_indexes"])
    split = pd.read_csv(data["split_path"], sep="\t")
    train = split[(split["split"] == "train") & (split["augmented"] == 0)]["item_id"].to_numpy()
    images = store.gather(train[store.ok(train)])  # the calibration images (N, 32, 32)
    dest = tmp_path / "w.weights.h5"
    got = make_demo_weights("smallcnn", dest, images, n_per_class=48, epochs=4)
    assert dest.exists() and got["calibration_images"] == len(images)
    assert got["pretext_accuracy"] > 2 / 6, got  # learned something of the pretext task (chance: 1/6)
    model, base = models.build_model("smallcnn", 3, 32, dest)
    assert not base.trainable
