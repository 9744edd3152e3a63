"""lokiml.models: backbone registry, the grey-image input layer, weights, the seed's classifier."""

import importlib

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from lokiml import models  # noqa: E402
from lokiml.errors import InputError  # noqa: E402

# (backbone, smallest image size) used for the model tests: the seed's two backbones.
SEED_BACKBONES = [("inceptionv3", 75), ("resnet101", 32)]


@pytest.fixture(scope="module")
def weights_files(tmp_path_factory):
    """For each seed backbone: a .weights.h5 file of a base with distinct random weights, and those weights."""
    folder = tmp_path_factory.mktemp("weights")
    out = {}
    for name, size in SEED_BACKBONES:
        keras.utils.set_random_seed(1234)
        base = models.get_backbone(name).constructor(include_top=False, weights=None, input_shape=(size, size, 3))
        path = folder / f"{name}.weights.h5"
        base.save_weights(str(path))
        out[name] = (path, [w.copy() for w in base.get_weights()], base)
    return out


# ---- registry ----------------------------------------------------------------------------


@pytest.mark.parametrize("given, function_name", [
    ("inceptionv3", "InceptionV3"), ("InceptionV3", "InceptionV3"), ("ResNet101", "ResNet101"),
    ("resnet101", "ResNet101"), ("resnet50", "ResNet50"), ("ResNet152", "ResNet152"),
    ("mobilenetv2", "MobileNetV2"), ("EfficientNetB0", "EfficientNetB0"), ("densenet121", "DenseNet121"),
    ("xception", "Xception"), ("VGG16", "VGG16"), ("efficientnet_b0", "EfficientNetB0"),
])
def test_backbones_are_found_by_name_case_insensitively(given, function_name):
    bb = models.get_backbone(given)
    assert bb.function_name == function_name
    assert bb.constructor is getattr(keras.applications, function_name)


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ValueError) as err:
        models.get_backbone("inceptionv9")
    msg = str(err.value)
    assert "inceptionv9" in msg and "inceptionv3" in msg and "resnet101" in msg and "efficientnetb0" in msg


def test_registry_modes_and_sizes_agree_with_keras():
    """Every backbone's preprocessing mode is what its keras module's preprocess_input really does."""
    names = models.known_backbones()
    assert len(names) >= 30
    for name in names:
        bb = models.get_backbone(name)
        if bb.module == models.__name__:  # lokiml's own (smallcnn): its mode is the model's own layer's
            continue
        assert models._probe_mode(bb.module) == bb.mode, name
    assert models.get_backbone("inceptionv3").min_size == 75
    assert models.get_backbone("xception").min_size == 71
    assert models.get_backbone("resnet101").min_size == 32
    assert {models.get_backbone(n).mode for n in ("inceptionv3", "resnet101", "densenet121", "efficientnetb0")} == \
        {"tf", "caffe", "torch", "none"}


# ---- the preprocessing layer --------------------------------------------------------------


@pytest.mark.parametrize("name", ["inceptionv3", "resnet101", "densenet121", "efficientnetb0", "vgg16", "xception"])
def test_grey_layer_matches_keras_preprocess_input(name):
    bb = models.get_backbone(name)
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (3, 9, 9, 1), dtype=np.uint8)
    grey[0, 0, 0, 0], grey[0, 0, 1, 0] = 0, 255
    layer = models.GreyToBackboneInput(bb.mode)
    got = np.asarray(layer(grey))
    module = importlib.import_module(bb.module)
    want = module.preprocess_input(np.repeat(grey.astype(np.float32), 3, axis=-1))
    assert got.shape == (3, 9, 9, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.asarray(want), rtol=1e-6, atol=1e-4)
    # float input and (batch, S, S) input give the same
    np.testing.assert_allclose(np.asarray(layer(grey.astype(np.float32))), got, atol=1e-6)
    np.testing.assert_allclose(np.asarray(layer(grey[..., 0])), got, atol=1e-6)


def test_grey_layer_rejects_unknown_modes_and_serialises():
    with pytest.raises(ValueError, match="mode"):
        models.GreyToBackboneInput("bgr")
    layer = models.GreyToBackboneInput("caffe", name="pp")
    again = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(again, models.GreyToBackboneInput) and again.mode == "caffe"


# ---- build_model ------------------------------------------------------------------------


@pytest.mark.parametrize("name, size", SEED_BACKBONES)
def test_build_model_without_weights(name, size):
    model, base = models.build_model(name, 4, size, dropout=0.3, seed=2)
    assert tuple(model.input.shape) == (None, size, size, 1) and model.input.dtype == "uint8"
    assert tuple(model.output.shape) == (None, 4)
    assert base.trainable and base.name in [layer.name for layer in model.layers]
    assert models.get_base(model) is base
    assert model.get_layer("preprocess").mode == models.get_backbone(name).mode
    assert model.get_layer("dropout").rate == pytest.approx(0.3)
    dense = model.get_layer("predictions")
    assert dense.activation is keras.activations.softmax and dense.dtype_policy.compute_dtype == "float32"
    x = np.random.default_rng(0).integers(0, 256, (2, size, size, 1), dtype=np.uint8)
    p = model.predict(x, verbose=0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    # the loss goes with the softmax output: probabilities, not logits
    models.compile_model(model, "rmsprop", 1e-3)
    assert isinstance(model.loss, keras.losses.SparseCategoricalCrossentropy)
    assert model.loss.get_config()["from_logits"] is False


def test_the_same_seed_gives_the_same_initial_weights():
    a, _ = models.build_model("inceptionv3", 3, 75, seed=2)
    b, _ = models.build_model("inceptionv3", 3, 75, seed=2)
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name, size", SEED_BACKBONES)
def test_build_model_loads_a_weights_file_and_freezes_the_base(name, size, weights_files):
    path, want, _ = weights_files[name]
    model, base = models.build_model(name, 3, size, weights_path=path, seed=5)
    got = base.get_weights()
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    fresh, _ = models.build_model(name, 3, size, seed=5)
    assert not all(np.array_equal(a, b) for a, b in zip(models.get_base(fresh).get_weights(), want))
    assert base.trainable is False
    assert [v.path for v in model.trainable_weights] == [v.path for v in model.get_layer("predictions").weights]


def test_legacy_h5_weights_are_accepted(weights_files, tmp_path):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    _, want, base = weights_files["inceptionv3"]
    legacy = tmp_path / "inception_v3_notop.h5"
    with h5py.File(legacy, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, base)
    _, loaded = models.build_model("inceptionv3", 3, 75, weights_path=legacy)
    for a, b in zip(loaded.get_weights(), want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name, size", SEED_BACKBONES)
def test_a_wrong_weights_file_is_a_clear_error(name, size, weights_files, tmp_path):
    other = "resnet101" if name == "inceptionv3" else "inceptionv3"
    wrong = weights_files[other][0]
    with pytest.raises(InputError) as err:
        models.build_model(name, 3, size, weights_path=wrong)
    assert str(wrong) in str(err.value) and models.get_backbone(name).function_name in str(err.value)
    base = weights_files[name][2]
    junk = tmp_path / "junk.weights.h5"
    junk.write_text("not hdf5")
    with pytest.raises(InputError, match="junk.weights.h5"):
        models.load_base_weights(base, junk, name)
    with pytest.raises(InputError, match="not found"):
        models.load_base_weights(base, tmp_path / "missing.weights.h5", name)
    text = tmp_path / "weights.txt"
    text.write_text("x")
    with pytest.raises(InputError, match="not a weights file"):
        models.load_base_weights(base, text, name)


def test_too_small_images_are_refused():
    with pytest.raises(ValueError, match="at least 75"):
        models.build_model("inceptionv3", 3, 64)


# ---- ImageNet weights ---------------------------------------------------------------------


def _offline(monkeypatch):
    """Make every Keras download fail at once, as on a compute node without internet."""
    from keras.src.utils import file_utils

    def no_network(fname=None, origin=None, *args, **kwargs):
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", no_network)


@pytest.mark.parametrize("name, fname, url", [
    ("inceptionv3", "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
     "keras.src.applications.inception_v3.WEIGHTS_PATH_NO_TOP"),
    ("ResNet101", "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5",
     "keras.src.applications.resnet.BASE_WEIGHTS_PATH"),
])
def test_imagenet_weights_offline_name_the_file_and_where_to_put_it(name, fname, url, monkeypatch, tmp_path):
    _offline(monkeypatch)
    module, attr = url.rsplit(".", 1)
    origin = getattr(importlib.import_module(module), attr)
    if not origin.endswith(".h5"):
        origin += fname
    dest = tmp_path / "w" / f"{name.lower()}_imagenet_notop.weights.h5"
    with pytest.raises(RuntimeError) as err:
        models.resolve_imagenet_weights(name, dest)
    msg = str(err.value)
    assert fname in msg and origin in msg
    assert f"~/.keras/models/{fname}" in msg and "weights:" in msg
    assert not dest.exists()
    assert not dest.parent.exists() or not list(dest.parent.iterdir())


def test_imagenet_weights_from_keras_cache_are_written(monkeypatch, tmp_path, weights_files):
    """With the file in Keras' cache (faked here with known weights), the base's weights land in dest."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format
    from keras.src.utils import file_utils

    _, want, base = weights_files["inceptionv3"]
    cached = tmp_path / "cache" / "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cached.parent.mkdir()
    with h5py.File(cached, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, base)
    seen = []

    def from_cache(fname=None, origin=None, *args, **kwargs):
        seen.append((fname, kwargs.get("cache_subdir")))
        return str(cached)

    monkeypatch.setattr(file_utils, "get_file", from_cache)
    dest = tmp_path / "resources" / "inceptionv3_imagenet_notop.weights.h5"
    models.resolve_imagenet_weights("inceptionv3", dest)
    assert seen == [("inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", "models")]
    assert dest.is_file() and [p.name for p in dest.parent.iterdir()] == [dest.name]
    _, loaded = models.build_model("inceptionv3", 3, 75, weights_path=dest)
    for a, b in zip(loaded.get_weights(), want):
        np.testing.assert_array_equal(a, b)


def test_seeded_base_weights_are_reproducible(tmp_path):
    a, b = tmp_path / "a.weights.h5", tmp_path / "b.weights.h5"
    models.save_seeded_base_weights("vgg16", a, seed=3)
    models.save_seeded_base_weights("vgg16", b, seed=3)
    _, base_a = models.build_model("vgg16", 2, 32, weights_path=a)
    _, base_b = models.build_model("vgg16", 2, 32, weights_path=b)
    for x, y in zip(base_a.get_weights(), base_b.get_weights()):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match=".weights.h5"):
        models.save_seeded_base_weights("vgg16", tmp_path / "c.h5")


# ---- head, features, fine-tuning ------------------------------------------------------------


def test_head_model_shares_the_full_models_layers():
    model, _ = models.build_model("vgg16", 3, 32, dropout=0.0)
    head = models.head_model(model)
    feats = models.feature_model(model)
    x = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 1), dtype=np.uint8)
    np.testing.assert_allclose(head.predict(feats.predict(x, verbose=0), verbose=0), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    assert head.get_layer("predictions") is model.get_layer("predictions")


def test_fine_tune_unfreezes_the_top_layers_and_keeps_batchnorm_frozen():
    _, base = models.build_model("resnet50", 3, 32)
    base.trainable = False
    n_trainable, n_bn = models.set_fine_tune_trainable(base, 12)
    layers = base.layers
    bns = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert n_bn == len(bns) > 0 and not any(layer.trainable for layer in bns)
    assert not any(layer.trainable for layer in layers[:-12])
    top = [layer for layer in layers[-12:] if not isinstance(layer, keras.layers.BatchNormalization)]
    assert top and all(layer.trainable for layer in top)
    assert n_trainable == sum(1 for layer in top if layer.weights)
    assert all(not v.trainable for bn in bns for v in bn.weights)
