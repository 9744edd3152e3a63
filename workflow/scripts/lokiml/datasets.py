"""Batches for training and inference from the memory-mapped uint8 image store, on every Keras backend.

* :class:`ImageSource` gathers uint8 images (n, S, S, 1) of a list of items from the store's
  memory-mapped shards, one copy per image; :class:`FeatureSource` does the same for cached base
  features (float32 (n, F)).
* :func:`make_batches` turns a source and an order of its items into what ``Model.fit`` takes:
  on JAX and torch a :class:`Batches` (``keras.utils.PyDataset`` of NumPy batches, the next one
  gathered by a thread while the model trains on the current one; no TensorFlow needed); on TensorFlow the same batches as a ``tf.data``
  pipeline (:func:`tf_dataset`: ``tf.numpy_function`` over the same sources, ``prefetch``), which
  ``fit`` gets through 1.4x to 3x faster there than a PyDataset, which Keras wraps in
  ``tf.data.Dataset.from_generator`` (benchmarks/bench_batches.py).
* Augmentation is a part of the *training* model, as Keras random layers between the uint8 input
  and the classifier (:func:`augmented_model`): it runs on the device that trains, on every backend,
  and only in training (``training=True``); validation, evaluation and prediction never see it.
  Augmented images are rounded back to 0..255 integers, the values a stored image can take.
* :func:`predict_padded` runs a model over a source in batches of one fixed shape (the last batch is
  padded), so that a compiling backend (XLA, JAX) compiles once, not once more for the last batch.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import keras
from keras import ops


def aligned_empty(shape, align: int = 64) -> np.ndarray:
    """An uninitialised uint8 array whose data start on an ``align``-byte boundary.

    TensorFlow takes such an array from ``tf.numpy_function`` as it is; a less aligned one (NumPy
    aligns to 16 bytes) is copied into a new tensor first (a quarter of the input pipeline's time
    at 1530 px, benchmarks/bench_input.py).
    """
    n = int(np.prod(shape))
    buf = np.empty(n + align, dtype=np.uint8)
    start = -buf.ctypes.data % align
    return buf[start:start + n].reshape(shape)


class ImageSource:
    """Images of a list of items, gathered from the store's memory-mapped shards."""

    dtype = "uint8"

    def __init__(self, store, item_ids, labels):
        self.arrays = store.arrays
        self.size = store.size
        shard, row = store.locate(item_ids)
        self.shard = shard.astype(np.int64)
        self.row = row.astype(np.int64)
        self.labels = np.asarray(labels, dtype=np.int32)

    def __len__(self) -> int:
        return len(self.row)

    @property
    def item_shape(self) -> tuple:
        return (self.size, self.size, 1)

    def fetch(self, pos: np.ndarray):
        """(uint8 images (n, S, S, 1), int32 labels (n,)) of the items at positions ``pos``."""
        pos = np.asarray(pos, dtype=np.int64)
        out = aligned_empty((len(pos), self.size, self.size, 1))
        shard, row = self.shard[pos], self.row[pos]
        # One copy per image, from the memory map straight into its place in the batch, each shard
        # read in file order. (A fancy-indexed read followed by a scattered assignment copies every
        # image twice: at 1000-1530 px that halved the rate, benchmarks/bench_input.py.)
        for j in np.lexsort((row, shard)):
            out[j, :, :, 0] = self.arrays[shard[j]][row[j]]
        return out, self.labels[pos]


class FeatureSource:
    """Cached base features (float32 (n, F), memory-mapped) of a list of items."""

    dtype = "float32"

    def __init__(self, features: np.ndarray, labels):
        self.features = features
        self.labels = np.asarray(labels, dtype=np.int32)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def item_shape(self) -> tuple:
        return (int(self.features.shape[1]),)

    def fetch(self, pos: np.ndarray):
        pos = np.asarray(pos, dtype=np.int64)
        return np.ascontiguousarray(self.features[pos], dtype=np.float32), self.labels[pos]


def batch_count(n: int, batch_size: int, drop_remainder: bool = False) -> int:
    """Batches of ``n`` items: the last one smaller, or left out with ``drop_remainder`` (unless that leaves none)."""
    if drop_remainder and n >= batch_size:
        return n // batch_size
    return int(math.ceil(n / batch_size))


class Batches(keras.utils.PyDataset):
    """``(x, y)`` NumPy batches of ``source`` in ``order``, ``batch_size`` at a time.

    The last batch is smaller, or left out with ``drop_remainder`` (see :func:`make_batches`).
    While the model trains on batch b, a thread of our own gathers batch b + 1. Keras' own workers
    (``workers`` > 1: its OrderedEnqueuer) are not used: with two of them, JAX training was not
    reproducible (the same run's first epoch gave another loss than with one worker, and a resumed run
    differed from the uninterrupted one from its first resumed epoch on, with equal weights, optimizer
    state and first batch at its start); with one worker or this read-ahead, both are equal to the bit.
    """

    def __init__(self, source, order, batch_size: int, drop_remainder: bool = False):
        super().__init__(workers=1, use_multiprocessing=False)
        self.source = source
        self.order = np.asarray(order, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.drop_remainder = bool(drop_remainder)
        self._pool = None
        self._ahead: dict = {}

    @property
    def num_batches(self) -> int:
        return batch_count(len(self.order), self.batch_size, self.drop_remainder)

    def __len__(self) -> int:
        return self.num_batches

    def _fetch(self, b: int):
        return self.source.fetch(self.order[b * self.batch_size:(b + 1) * self.batch_size])

    def __getitem__(self, b: int):
        b = int(b)
        if b < 0 or b >= self.num_batches:
            raise IndexError(f"batch {b} of {self.num_batches}")
        future = self._ahead.pop(b, None)
        batch = future.result() if future is not None else self._fetch(b)
        for stale in [k for k in self._ahead if k < b]:
            self._ahead.pop(stale).cancel()
        if b + 1 < self.num_batches and b + 1 not in self._ahead:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lokiml-batches")
            self._ahead[b + 1] = self._pool.submit(self._fetch, b + 1)
        return batch

    def on_epoch_end(self):
        self.close()

    def close(self) -> None:
        """Stop the read-ahead thread (a later batch starts it again)."""
        if self._pool is not None:
            for future in self._ahead.values():
                future.cancel()
            self._ahead.clear()
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def tf_dataset(source, order, batch_size: int, threads: int = 1, drop_remainder: bool = False):
    """The same batches as :class:`Batches` as a tf.data pipeline (TensorFlow backend only):
    batch numbers → ``tf.numpy_function`` gather from ``source`` → ``prefetch``."""
    import tensorflow as tf

    order = np.asarray(order, dtype=np.int64)
    n_batches = batch_count(len(order), batch_size, drop_remainder)
    dtype = tf.as_dtype(source.dtype)
    shape = (None, *source.item_shape)

    def fetch(b):
        b = int(b)
        return source.fetch(order[b * batch_size:(b + 1) * batch_size])

    def load(b):
        x, y = tf.numpy_function(fetch, [b], [dtype, tf.int32], stateful=False)
        x.set_shape(shape)
        y.set_shape((None,))
        return x, y

    ds = tf.data.Dataset.range(n_batches).map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.deterministic = True
    options.threading.private_threadpool_size = max(1, int(threads))
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


#: Input pipeline of training: 'auto' (tf.data on TensorFlow, else pydataset), 'pydataset' or 'tf.data'.
PIPELINE = "auto"


def make_batches(source, order, batch_size: int, threads: int = 1, pipeline: str | None = None,
                 drop_remainder: bool = False):
    """What ``Model.fit`` / ``evaluate`` take for ``source`` in ``order``: see :data:`PIPELINE`.

    ``drop_remainder`` (training): every batch holds ``batch_size`` items, and the last
    ``len(order) % batch_size`` items of the order are left out (they differ from epoch to epoch when
    the order is reshuffled). A last batch of one item would give BatchNormalization a batch variance of
    zero, and a compiling backend (XLA, JAX) would compile the whole step once more for its shape.
    """
    pipeline = pipeline or PIPELINE
    if pipeline == "auto":
        pipeline = "tf.data" if keras.config.backend() == "tensorflow" else "pydataset"
    if pipeline == "tf.data":
        if keras.config.backend() != "tensorflow":
            raise ValueError(f"the tf.data pipeline needs the TensorFlow backend, not {keras.config.backend()}")
        return tf_dataset(source, order, batch_size, threads, drop_remainder)
    if pipeline != "pydataset":
        raise ValueError(f"unknown input pipeline {pipeline!r}: auto, pydataset or tf.data")
    return Batches(source, order, batch_size, drop_remainder=drop_remainder)


def iterate(batches):
    """(x, y) NumPy batches of a :class:`Batches` or a tf.data dataset (for tests and benchmarks)."""
    if isinstance(batches, Batches):
        for b in range(batches.num_batches):
            yield batches[b]
    else:
        for x, y in batches:
            yield np.asarray(x), np.asarray(y)


# --------------------------------------------------------------------------------------
# Augmentation as layers of the training model
# --------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="lokiml")
class GreyLevels(keras.layers.Layer):
    """Cast grey images to float32 (``to='float32'``), or round them to 0..255 integers and cast them back
    to uint8 (``to='uint8'``): the ends of the augmentation block of a training model."""

    def __init__(self, to: str = "float32", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if to not in ("float32", "uint8"):
            raise ValueError(f"GreyLevels: to must be float32 or uint8, not {to!r}")
        self.to = to

    def call(self, inputs):
        if self.to == "float32":
            return ops.cast(inputs, "float32")
        return ops.cast(ops.clip(ops.round(ops.cast(inputs, "float32")), 0.0, 255.0), "uint8")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape, dtype=self.to)

    def get_config(self):
        return {**super().get_config(), "to": self.to}


def make_augmenter(cfg: dict | None, seed: int) -> list:
    """Random Keras layers for the augment config (empty when off): flip, rotation, zoom, translation.

    They compute in float32 whatever the dtype policy (a rotation's interpolation in bfloat16 would
    shift grey levels), each with its own seed derived from ``seed``.
    """
    if not cfg:
        return []
    layers = []
    if cfg.get("flip"):
        # Horizontal flips; with rotations up to 180 degrees they cover every mirror image.
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed, name="augment_flip", dtype="float32"))
    if cfg.get("rotation"):
        layers.append(keras.layers.RandomRotation(float(cfg["rotation"]) / 360.0, fill_mode="nearest",
                                                  seed=seed + 1, name="augment_rotation", dtype="float32"))
    if cfg.get("zoom"):
        z = float(cfg["zoom"])
        layers.append(keras.layers.RandomZoom((-z, z), fill_mode="nearest", seed=seed + 2, name="augment_zoom",
                                              dtype="float32"))
    if cfg.get("translation"):
        t = float(cfg["translation"])
        layers.append(keras.layers.RandomTranslation(t, t, fill_mode="nearest", seed=seed + 3,
                                                     name="augment_translation", dtype="float32"))
    if keras.config.backend() == "jax":
        # Keras marks its affine random layers as not compilable (supports_jit = False), which switches
        # XLA off for any model that holds them: TensorFlow's XLA has no ImageProjectiveTransformV3. The
        # JAX backend implements them with jax.scipy.ndimage.map_coordinates, which compiles; without
        # this, JAX would run every training step op by op (30 to 100 times slower).
        for layer in layers:
            layer.supports_jit = True
    return layers


def augment_block(layers):
    """A callable on a uint8 batch: the random ``layers`` in training mode, rounded back to uint8 (tests)."""
    to_float, to_uint8 = GreyLevels("float32"), GreyLevels("uint8")

    def apply(x):
        x = to_float(x)
        for layer in layers:
            x = layer(x, training=True)
        return to_uint8(x)

    return apply


def augmented_model(model: keras.Model, layers) -> keras.Model:
    """``model`` with the random ``layers`` in front: what training fits when augmentation is on.

    The classifier inside is ``model`` itself (same layers, same weights): training this trains it.
    Keras random layers transform only in training, so this model predicts like ``model``.
    """
    if not layers:
        return model
    inputs = keras.Input(shape=tuple(model.input.shape[1:]), dtype=model.input.dtype, name="image")
    x = GreyLevels("float32", name="augment_in")(inputs)
    for layer in layers:
        x = layer(x)
    x = GreyLevels("uint8", name="augment_out")(x)
    return keras.Model(inputs, model(x), name=f"{model.name}_augmented")


# --------------------------------------------------------------------------------------
# Inference in batches of one shape
# --------------------------------------------------------------------------------------


def predict_padded(model, source, batch_size: int, on_batch=None):
    """``model``'s outputs for every item of ``source`` in order, as float32 NumPy arrays, batch by batch.

    Yields ``(start, outputs)``. Every batch has ``batch_size`` rows (the last is padded with copies
    of its first item and the padding cut off), so a compiled predict function is traced once. The
    next batch is gathered while the model computes the current one.
    """
    n = len(source)
    starts = list(range(0, n, batch_size))

    def load(start):
        pos = np.arange(start, min(n, start + batch_size))
        if len(pos) < batch_size:
            pos = np.concatenate([pos, np.full(batch_size - len(pos), pos[0])])
        return source.fetch(pos)[0]

    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(load, starts[0]) if starts else None
        for j, start in enumerate(starts):
            x = future.result()
            if j + 1 < len(starts):
                future = pool.submit(load, starts[j + 1])
            out = np.asarray(model.predict_on_batch(x), dtype=np.float32)
            yield start, out[:min(batch_size, n - start)]
