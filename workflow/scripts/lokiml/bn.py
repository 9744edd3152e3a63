"""BatchNormalization statistics that match the weights: precise BN and momentum for few steps.

A BatchNormalization layer normalises by the batch's statistics in training and by its *moving*
statistics in inference: an exponential average, with Keras' momentum 0.99, of the batch statistics of
the last ~100-300 steps. When a network is trained from scratch with a large learning rate the weights
change fast, and those averages mix statistics of weights that are long gone: in inference mode the
network then sees activations on the wrong scale, and predicts one class for every image while its
training accuracy rises (``benchmarks/diagnose_training.py`` measures this; README, "CNNs that
learn").

:func:`precise_batchnorm` re-estimates the moving statistics of every trainable BatchNormalization layer
from the current weights ("precise BN", Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm"): a
forward pass in training mode over training batches, then each layer's moving mean and variance become
the averages of its batch means and variances. The weights do not change. Keras has no such function,
hence this one; it uses public Keras 3 APIs only (``layer.momentum``, ``ops``), so every backend runs it.

:func:`momentum_for_steps` gives a momentum whose averaging window fits the number of steps an epoch
has, so that the moving statistics at least forget the previous epoch.
"""

from __future__ import annotations

import logging
import weakref
from typing import Callable, Iterable

import numpy as np

log = logging.getLogger(__name__)


def batchnorm_layers(model, trainable_only: bool = False) -> list:
    """Every BatchNormalization layer inside ``model``, nested models included (depth first)."""
    import keras

    out = []

    def walk(m):
        for layer in getattr(m, "layers", []):
            if isinstance(layer, keras.layers.BatchNormalization):
                if not trainable_only or layer.trainable:
                    out.append(layer)
            elif hasattr(layer, "layers"):
                walk(layer)

    walk(model)
    return out


#: Moments models already built, by the model they measure (tracing one costs seconds to minutes).
_MOMENTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _cached_moments_model(model, layers):
    key = tuple(id(layer) for layer in layers)
    try:
        hit = _MOMENTS.get(model)
    except TypeError:  # not weak-referenceable
        return _moments_model(model, layers)
    if hit is None or hit[0] != key:
        hit = (key, _moments_model(model, layers))
        _MOMENTS[model] = hit
    return hit[1]


def _moments_model(model, layers):
    """A model: ``model``'s input → (batch mean, batch variance) of the input of each of ``layers``, with the
    network in training mode (so each layer sees what it sees in training). Compiled by Keras like any model
    (``predict_on_batch``): an eager pass costs as much as a training epoch. None where ``model`` is not a
    functional model holding ``layers`` directly."""
    import keras
    from keras import ops

    try:
        inner = keras.Model(model.inputs, [layer.input for layer in layers])
    except Exception:  # noqa: BLE001 - a subclassed model, or layers of a nested model: the eager way
        return None
    axes = []
    for layer in layers:
        ndim = len(layer.input.shape)
        keep = {a % ndim for a in (layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis])}
        axes.append([a for a in range(ndim) if a not in keep])

    class Moments(keras.Model):
        def __init__(self):
            super().__init__(name="batchnorm_moments")
            self.inner = inner

        def call(self, x):
            acts = self.inner(x, training=True)
            acts = acts if isinstance(acts, (list, tuple)) else [acts]
            out = []
            for a, ax in zip(acts, axes):
                mean, var = ops.moments(ops.cast(a, "float32"), ax)
                out += [ops.expand_dims(mean, 0), ops.expand_dims(var, 0)]
            return out

    return Moments()


def precise_batchnorm(model, batches: Callable[[], Iterable] | Iterable, max_images: int | None = None) -> int:
    """Set the moving statistics of ``model``'s trainable BatchNorm layers to the average of their batch
    statistics over ``batches`` (the model's inputs, e.g. training images); returns the images used.

    ``batches``: an iterable of input batches, or a callable returning one. ``max_images``: stop after
    this many images (None: all). Each batch's statistics are weighted by its size. The variance is the
    mean of the batch variances: what the layer normalised by in training. Layers that are frozen
    (``trainable`` False, as in a frozen pre-trained base) keep theirs. The network runs in training mode
    (dropout inside it too, as in training); the weights do not change.
    """
    from keras import ops

    layers = batchnorm_layers(model, trainable_only=True)
    if not layers:
        return 0
    direct = [layer for layer in layers if any(layer is m for m in model.layers)]
    moments = _cached_moments_model(model, layers) if len(direct) == len(layers) else None
    momentum = [layer.momentum for layer in layers]
    sums = [[np.zeros(layer.moving_mean.shape, np.float64), np.zeros(layer.moving_variance.shape, np.float64)]
            for layer in layers]
    saved = [(ops.convert_to_numpy(layer.moving_mean), ops.convert_to_numpy(layer.moving_variance))
             for layer in layers]
    n = 0
    try:
        for layer in layers:
            layer.momentum = 0.0  # the eager way: each training-mode call writes its batch's statistics
        for x in (batches() if callable(batches) else batches):
            if max_images is not None and n >= max_images:
                break
            k = int(ops.shape(x)[0])
            if moments is not None:
                stats = [np.asarray(ops.convert_to_numpy(t), np.float64)[0] for t in moments.predict_on_batch(x)]
                for j, s in enumerate(sums):
                    s[0] += k * stats[2 * j]
                    s[1] += k * stats[2 * j + 1]
            else:
                model(x, training=True)
                for layer, s in zip(layers, sums):
                    s[0] += k * ops.convert_to_numpy(layer.moving_mean)
                    s[1] += k * ops.convert_to_numpy(layer.moving_variance)
            n += k
    finally:
        for layer, m in zip(layers, momentum):
            layer.momentum = m
    if n == 0:
        for layer, (mean, var) in zip(layers, saved):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(var)
        return 0
    for layer, (s_mean, s_var) in zip(layers, sums):
        layer.moving_mean.assign((s_mean / n).astype(np.float32))
        layer.moving_variance.assign((s_var / n).astype(np.float32))
    return n


def momentum_for_steps(steps_per_epoch: int, default: float = 0.99) -> float:
    """A BatchNorm momentum whose averaging window (about 1 / (1 - momentum) steps) is at most a third of
    an epoch, so the moving statistics at the end of an epoch come from that epoch's weights; never above
    ``default``, never below 0.5."""
    steps = max(1, int(steps_per_epoch))
    return float(min(default, max(0.5, 1.0 - 3.0 / steps)))
