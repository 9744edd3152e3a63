"""lokiml.datasets: batches from the memory-mapped store, augmentation as layers of the training model."""

import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

from lokiml import datasets  # noqa: E402
from lokiml.store import Store  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Three shards of random 8 px images, rows not in item order; item -> image."""
    root = tmp_path_factory.mktemp("store")
    rng = np.random.default_rng(7)
    npys, indexes, images = [], [], {}
    for k, n in enumerate((5, 3, 6)):
        arr = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
        ids = [f"s{k}_{i}" for i in range(n)][::-1]
        np.save(root / f"shard{k}.npy", arr)
        pd.DataFrame({"item_id": ids, "row": range(n), "status": "ok"}).to_csv(root / f"shard{k}.tsv", sep="\t",
                                                                            index=False)
        npys.append(root / f"shard{k}.npy")
        indexes.append(root / f"shard{k}.tsv")
        images.update(zip(ids, arr))
    return Store(npys, indexes), images


def test_image_source_gathers_any_order_across_shards(store):
    st, images = store
    rng = np.random.default_rng(1)
    ids = np.array(sorted(images))
    rng.shuffle(ids)
    src = datasets.ImageSource(st, ids, np.arange(len(ids), dtype=np.int32))
    assert len(src) == len(ids) and src.item_shape == (8, 8, 1)
    for pos in (np.arange(len(ids)), rng.permutation(len(ids))[:7], np.array([3, 3, 0, 13, 3]), np.array([2])):
        x, y = src.fetch(pos)
        assert x.shape == (len(pos), 8, 8, 1) and x.dtype == np.uint8
        assert x.ctypes.data % 64 == 0 and x.flags.c_contiguous  # TensorFlow takes it without a copy
        np.testing.assert_array_equal(x[..., 0], np.stack([images[i] for i in ids[pos]]))
        np.testing.assert_array_equal(y, pos)


def test_batches_follow_the_order_and_end_with_the_rest(store):
    st, images = store
    ids = np.array(sorted(images))
    src = datasets.ImageSource(st, ids, np.arange(len(ids), dtype=np.int32))
    order = np.random.default_rng(3).permutation(len(ids))
    batches = datasets.make_batches(src, order, 4, pipeline="pydataset")
    assert isinstance(batches, keras.utils.PyDataset) and len(batches) == batches.num_batches == 4
    got = list(datasets.iterate(batches))
    assert [len(y) for _, y in got] == [4, 4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([y for _, y in got]), order)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in got])[..., 0], np.stack([images[i] for i in ids[order]]))
    with pytest.raises(IndexError):
        batches[4]
    for pipeline in ("pydataset", "auto"):  # auto: tf.data on TensorFlow (faster there), else the PyDataset
        full = list(datasets.iterate(datasets.make_batches(src, order, 4, pipeline=pipeline, drop_remainder=True)))
        assert [len(y) for _, y in full] == [4, 4, 4]
        np.testing.assert_array_equal(np.concatenate([y for _, y in full]), order[:12])
    assert len(datasets.make_batches(src, order[:3], 4, pipeline="pydataset", drop_remainder=True)) == 1
    assert datasets.batch_count(3, 4, drop_remainder=True) == 1  # never no batch at all
    if keras.config.backend() == "tensorflow":  # the tf.data pipeline gives the very same batches
        tf_got = list(datasets.iterate(datasets.make_batches(src, order, 4, pipeline="tf.data")))
        for (a, ya), (b, yb) in zip(got, tf_got):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(ya, yb)
    with pytest.raises(ValueError, match="pipeline"):
        datasets.make_batches(src, order, 4, pipeline="dali")


def test_a_model_fits_and_predicts_from_batches(store):
    st, images = store
    ids = np.array(sorted(images))
    labels = (np.arange(len(ids)) % 2).astype(np.int32)
    src = datasets.ImageSource(st, ids, labels)
    inputs = keras.Input((8, 8, 1), dtype="uint8")
    x = keras.layers.Flatten()(datasets.GreyLevels("float32")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    model.compile("sgd", "sparse_categorical_crossentropy")
    hist = model.fit(datasets.make_batches(src, np.arange(len(ids)), 5), epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(hist.history["loss"][0])
    out = list(datasets.predict_padded(model, src, 4))
    assert [start for start, _ in out] == [0, 4, 8, 12] and [len(p) for _, p in out] == [4, 4, 4, 2]
    np.testing.assert_allclose(np.concatenate([p for _, p in out]), model.predict(src.fetch(np.arange(len(ids)))[0],
                                                                                   verbose=0), rtol=1e-5, atol=1e-6)


def test_augmentation_runs_in_training_only_and_keeps_grey_levels(store):
    st, images = store
    x = np.stack([images[i] for i in sorted(images)])[..., None]
    layers = datasets.make_augmenter({"flip": True, "rotation": 180, "zoom": 0.1, "translation": 0.1}, seed=1)
    assert [type(layer).__name__ for layer in layers] == ["RandomFlip", "RandomRotation", "RandomZoom",
                                                          "RandomTranslation"]
    assert datasets.make_augmenter(None, 1) == [] and datasets.make_augmenter({"flip": False, "rotation": 0,
                                                                                "zoom": 0, "translation": 0}, 1) == []
    aug = np.asarray(datasets.augment_block(layers)(x))
    assert aug.dtype == np.uint8 and aug.shape == x.shape and not np.array_equal(aug, x)

    inputs = keras.Input((8, 8, 1), dtype="uint8", name="image")
    plain = keras.Model(inputs, datasets.GreyLevels("float32")(inputs))  # shows what the classifier receives
    trained = datasets.augmented_model(plain, layers)
    assert datasets.augmented_model(plain, []) is plain
    np.testing.assert_array_equal(trained.predict(x, verbose=0), x.astype(np.float32))  # inference: untouched
    seen = np.asarray(trained(x, training=True))
    assert not np.array_equal(seen, x) and np.array_equal(seen, np.round(seen)) and seen.min() >= 0 and seen.max() <= 255
