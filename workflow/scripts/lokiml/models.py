"""Backbones, the grey-image input layer, and the seed's classifier.

The model that training writes takes *raw grey images*: uint8 (or float) arrays
of shape (batch, S, S, 1) with values 0..255, exactly as they lie in the image
store. Its first layer, :class:`GreyToBackboneInput`, repeats the grey channel
to three identical channels and applies the backbone's own ``preprocess_input``
arithmetic, so a saved ``.keras`` file needs nothing but ``import lokiml.models``
(which registers the layer) to predict.

The classifier is the seed repository's: a ``keras.applications`` base without
its top, GlobalAveragePooling2D, Dropout and a softmax Dense layer. The softmax
output goes with a cross-entropy loss on probabilities (``from_logits=False``):
the two must agree, and :func:`compile_model` is the one place where they meet.

Layer names of the head (``avg_pool``, ``dropout``, ``predictions``) are fixed, so
that :func:`head_model` and :func:`feature_model` can find them in a model that
was built here or loaded from a file.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

import keras
from keras import ops

from .errors import InputError
from .io import atomic_path

log = logging.getLogger(__name__)

#: Preprocessing modes of ``keras.applications.imagenet_utils.preprocess_input``;
#: 'none' is for backbones that rescale inside the network (EfficientNet, ConvNeXt, ...).
MODES = ("tf", "caffe", "torch", "none")

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)

# What each keras.applications module's preprocess_input does, and its smallest input size
# (the min_size it passes to obtain_input_shape). A module missing here is probed numerically.
_MODULE_MODES = {
    "convnext": "none",
    "densenet": "torch",
    "efficientnet": "none",
    "efficientnet_v2": "none",
    "inception_resnet_v2": "tf",
    "inception_v3": "tf",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "mobilenet_v3": "none",
    "nasnet": "tf",
    "resnet": "caffe",
    "resnet_v2": "tf",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "xception": "tf",
}
_MODULE_MIN_SIZE = {"inception_v3": 75, "inception_resnet_v2": 75, "xception": 71}

HEAD_LAYERS = ("avg_pool", "dropout", "predictions")


# --------------------------------------------------------------------------------------
# Backbone registry
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backbone:
    """One ``keras.applications`` backbone.

    ``name`` is the registry key (lower case, e.g. ``inceptionv3``), ``function_name``
    the constructor's name (``InceptionV3``), ``module`` the keras module that holds
    it and its ``preprocess_input``, ``mode`` the preprocessing mode (one of
    :data:`MODES`) and ``min_size`` the smallest image side it accepts.
    """

    name: str
    function_name: str
    constructor: Callable
    module: str
    mode: str
    min_size: int

    @property
    def module_short(self) -> str:
        return self.module.rsplit(".", 1)[-1]

    def preprocess_input(self):
        """The keras module's own ``preprocess_input`` (for checks and tests)."""
        return importlib.import_module(self.module).preprocess_input


def _probe_mode(module_name: str) -> str:
    """Tell a module's preprocessing mode by applying its preprocess_input to a probe."""
    module = importlib.import_module(module_name)
    probe = np.array([[[[10.0, 128.0, 250.0]]]], dtype=np.float32)
    got = np.asarray(module.preprocess_input(probe.copy()), dtype=np.float64)
    for mode in MODES:
        want = _preprocess_numpy(probe.astype(np.float64), mode)
        if got.shape == want.shape and np.allclose(got, want, atol=1e-4):
            return mode
    raise ValueError(f"cannot tell the preprocessing of {module_name}.preprocess_input")


def _preprocess_numpy(x: np.ndarray, mode: str) -> np.ndarray:
    """Reference arithmetic of each mode on an RGB array (channels last)."""
    x = np.asarray(x, dtype=np.float64)
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "caffe":
        return x[..., ::-1] - np.array(_CAFFE_MEAN_BGR)
    if mode == "torch":
        return (x / 255.0 - np.array(_TORCH_MEAN)) / np.array(_TORCH_STD)
    return x


@functools.cache
def _registry() -> dict[str, Backbone]:
    import keras.applications as apps

    out = {}
    for attr in dir(apps):
        fn = getattr(apps, attr)
        if not attr[:1].isupper() or not callable(fn):
            continue
        module = getattr(fn, "__module__", "") or ""
        short = module.rsplit(".", 1)[-1]
        mode = _MODULE_MODES.get(short)
        if mode is None:
            try:
                mode = _probe_mode(module)
            except Exception:  # noqa: BLE001 - not a backbone we can use
                continue
        out[attr.lower()] = Backbone(
            name=attr.lower(),
            function_name=attr,
            constructor=fn,
            module=module,
            mode=mode,
            min_size=_MODULE_MIN_SIZE.get(short, 32),
        )
    return out


def known_backbones() -> list[str]:
    """Registry keys of every usable backbone, sorted."""
    return sorted(_registry())


def get_backbone(name: str) -> Backbone:
    """Look a backbone up by name, case-insensitively ('InceptionV3', 'resnet101', 'ResNet-101')."""
    key = str(name).strip().lower().replace("-", "").replace("_", "")
    reg = _registry()
    if key not in reg:
        raise ValueError(
            f"unknown model {name!r}: use one of the keras.applications backbones: "
            + ", ".join(known_backbones())
        )
    return reg[key]


# --------------------------------------------------------------------------------------
# The grey-image input layer
# --------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="lokiml")
class GreyToBackboneInput(keras.layers.Layer):
    """Grey images (batch, S, S, 1) or (batch, S, S), uint8 or float in 0..255 →
    the backbone's 3-channel input.

    The grey channel is cast to float32, repeated to three identical channels and
    passed through the arithmetic of ``keras.applications.<module>.preprocess_input``:
    'tf' scales to [-1, 1]; 'caffe' flips RGB to BGR and subtracts the ImageNet mean
    per channel; 'torch' scales to [0, 1] and standardises per channel; 'none' leaves
    0..255 for backbones that rescale inside the network (EfficientNet, ConvNeXt, ...).
    It computes in float32 whatever the global dtype policy.
    """

    def __init__(self, mode: str = "tf", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"unknown preprocessing mode {mode!r}: one of {', '.join(MODES)}")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        if len(x.shape) == 3:
            x = ops.expand_dims(x, -1)
        x = ops.concatenate([x, x, x], axis=-1)
        if self.mode == "tf":
            x = x / 127.5 - 1.0
        elif self.mode == "caffe":
            x = x[..., ::-1] - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype="float32")
        elif self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, dtype="float32")
            std = ops.convert_to_tensor(_TORCH_STD, dtype="float32")
            x = (x / 255.0 - mean) / std
        return x

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) == 3:
            return shape + (3,)
        return shape[:-1] + (3,)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


# --------------------------------------------------------------------------------------
# Weights of the base
# --------------------------------------------------------------------------------------


def load_base_weights(base: keras.Model, weights_path, model_name: str = "") -> None:
    """Load a weights file into ``base`` (a backbone built with include_top=False).

    Accepts Keras 3 ``.weights.h5`` files (as written by :func:`resolve_imagenet_weights`,
    :func:`save_seeded_base_weights` or ``base.save_weights``), ``.keras`` files of the
    base, and legacy Keras 2 ``.h5`` weights files (such as the ``*_notop.h5`` files
    keras.applications downloads). Anything else fails with an :class:`InputError`
    naming the file.
    """
    path = Path(weights_path)
    what = f"the {model_name} base (include_top=False)" if model_name else "the base"
    hint = (
        f"give a weights file of {what}: rule resolve_weights writes the ImageNet ones to "
        "resources/weights/; or set the experiment's weights: to imagenet or none"
    )
    if not path.is_file():
        raise InputError(path, "weights file not found", hint=hint)
    if not (path.name.endswith(".h5") or path.name.endswith(".keras")):
        raise InputError(path, "not a weights file (expected .weights.h5, .h5 or .keras)", hint=hint)
    try:
        with warnings.catch_warnings():
            # A wrong file makes Keras warn once per layer before it raises; the error says it all.
            warnings.simplefilter("ignore", UserWarning)
            base.load_weights(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure means: this file does not fit
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, f"cannot load it into {what}: {first}", hint=hint) from exc
    log.info("loaded base weights from %s", path)


def _atomic_save_weights(base: keras.Model, dest) -> None:
    dest = Path(dest)
    if not dest.name.endswith(".weights.h5"):
        raise ValueError(f"{dest}: a weights file name must end in .weights.h5")
    with atomic_path(dest, suffix=".weights.h5") as tmp:
        base.save_weights(str(tmp))


@contextlib.contextmanager
def _recording_downloads(calls: list):
    """Record the (fname, origin) of every keras.utils.get_file call made inside the block."""
    from keras.src.utils import file_utils

    real = file_utils.get_file

    def recording(fname=None, origin=None, *args, **kwargs):
        calls.append({"fname": fname, "origin": origin, "cache_subdir": kwargs.get("cache_subdir", "datasets"),
                      "cache_dir": kwargs.get("cache_dir")})
        return real(fname, origin, *args, **kwargs)

    file_utils.get_file = recording
    try:
        yield
    finally:
        file_utils.get_file = real


def resolve_imagenet_weights(model: str, dest) -> Path:
    """Write the ImageNet weights of ``model``'s base (include_top=False) to ``dest``.

    Builds the keras.applications backbone with ``weights='imagenet'``, which takes
    the file from Keras' cache (``$KERAS_HOME/models`` or ``~/.keras/models``) or
    downloads it where there is internet, and saves the base's weights atomically
    as a Keras 3 ``.weights.h5`` file. Without the file and without internet, raises
    a RuntimeError that names the file Keras looks for, its URL and where to put it.
    """
    from keras.src.backend.config import keras_home

    bb = get_backbone(model)
    calls: list[dict] = []
    try:
        with _recording_downloads(calls):
            base = bb.constructor(include_top=False, weights="imagenet")
    except Exception as exc:  # noqa: BLE001
        home = Path(keras_home()).expanduser()
        msg = f"could not get the ImageNet weights of {bb.function_name} ({type(exc).__name__}: {exc})."
        if calls:
            c = calls[-1]
            fname = c["fname"] or Path(str(c["origin"])).name
            folder = Path(c["cache_dir"]).expanduser() if c["cache_dir"] else home
            target = folder / c["cache_subdir"] / fname
            msg += (
                f"\nKeras looks for the file {fname} in {target.parent}/ and downloads it from {c['origin']} "
                f"when it is missing.\nWithout internet: download that URL on a machine that has internet and "
                f"put the file at {target} (or ~/.keras/models/{fname} of the user who runs the workflow), then rerun."
            )
        msg += (
            f"\nOr set the experiment's `weights:` to the path of a weights file of the {bb.function_name} "
            "base (include_top=False, .weights.h5 or .h5), or to `none` to train from scratch."
        )
        raise RuntimeError(msg) from exc
    _atomic_save_weights(base, dest)
    log.info("ImageNet weights of %s written to %s", bb.function_name, dest)
    return Path(dest)


def save_seeded_base_weights(model: str, dest, seed: int = 1) -> Path:
    """Save the weights of a freshly, reproducibly initialised base (include_top=False).

    A stand-in for pre-trained weights where none can be downloaded (the offline
    demo, tests, benchmarks): the same ``seed`` gives the same file content.
    """
    bb = get_backbone(model)
    keras.utils.set_random_seed(seed)
    base = bb.constructor(include_top=False, weights=None, input_shape=(bb.min_size, bb.min_size, 3))
    _atomic_save_weights(base, dest)
    log.info("seeded random weights of %s (seed %d) written to %s", bb.function_name, seed, dest)
    return Path(dest)


# --------------------------------------------------------------------------------------
# The classifier
# --------------------------------------------------------------------------------------


def build_model(model: str, n_classes: int, image_size: int, weights_path=None, dropout: float = 0.4,
                seed: int = 1) -> tuple[keras.Model, keras.Model]:
    """The seed's classifier on grey images; returns ``(model, base)``.

    ``model``: backbone name (see :func:`known_backbones`). The base is built with
    ``include_top=False, weights=None`` for (image_size, image_size, 3) inputs; with
    ``weights_path`` its weights are loaded from that file and it is frozen
    (``base.trainable = False``). Then GlobalAveragePooling2D ('avg_pool'), Dropout
    ('dropout', seeded) and Dense(n_classes, softmax, float32) ('predictions').
    The model's input is 'image': (image_size, image_size, 1) uint8.

    Seeds Python, NumPy and TensorFlow with ``seed`` first, so that the same seed
    gives the same initial weights.
    """
    bb = get_backbone(model)
    image_size = int(image_size)
    if image_size < bb.min_size:
        raise ValueError(
            f"image_size {image_size} is too small for {bb.function_name}: it needs at least {bb.min_size} px"
        )
    if int(n_classes) < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
    keras.utils.set_random_seed(int(seed))
    inputs = keras.Input(shape=(image_size, image_size, 1), dtype="uint8", name="image")
    x = GreyToBackboneInput(bb.mode, name="preprocess")(inputs)
    base = bb.constructor(include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    if weights_path:
        load_base_weights(base, weights_path, bb.function_name)
        base.trainable = False
    x = base(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(float(dropout), seed=int(seed), name="dropout")(x)
    outputs = keras.layers.Dense(int(n_classes), activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"lokiml_{bb.name}"), base


def get_base(model: keras.Model) -> keras.Model:
    """The backbone inside a model built by :func:`build_model` (or loaded from its file)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise ValueError(f"model {model.name} has no nested base model")


def feature_model(model: keras.Model) -> keras.Model:
    """grey image → pooled base features: the part of ``model`` that is frozen with pre-trained weights."""
    return keras.Model(model.inputs, model.get_layer("avg_pool").output, name=f"{model.name}_features")


def head_model(model: keras.Model) -> keras.Model:
    """pooled features → class probabilities, sharing ``model``'s own Dropout and Dense layers.

    Training it trains ``model``'s head: the layers (and so the weights) are the same objects.
    """
    n_features = int(model.get_layer("avg_pool").output.shape[-1])
    inputs = keras.Input(shape=(n_features,), dtype="float32", name="features")
    x = model.get_layer("dropout")(inputs)
    outputs = model.get_layer("predictions")(x)
    return keras.Model(inputs, outputs, name=f"{model.name}_head")


OPTIMIZERS = ("rmsprop", "adam", "adamw", "sgd")


def make_schedule(kind: str, learning_rate: float, steps_per_epoch: int, epochs: int, warmup_epochs: int = 0):
    """The learning rate of one training phase: a float (``constant``, no warm-up) or a Keras schedule.

    ``warmup_epochs``: the rate rises linearly from a hundredth of ``learning_rate`` to it over that many
    epochs (steps, in fact); ``cosine``: then it falls along a half cosine to zero at the end of the phase.
    ``constant`` with warm-up stays at ``learning_rate`` after the warm-up.
    """
    lr = float(learning_rate)
    steps = max(1, int(steps_per_epoch))
    warm = max(0, min(int(warmup_epochs), int(epochs) - 1)) * steps
    total = max(1, int(epochs)) * steps
    if kind == "constant" and warm == 0:
        return lr
    if kind == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=lr / 100.0 if warm else lr, decay_steps=max(1, total - warm),
            warmup_target=lr if warm else None, warmup_steps=warm)
    if kind == "constant":
        # Warm-up, then constant: a piecewise schedule (linear steps are close enough over a few epochs).
        bounds = [int(round(warm * k / 10)) for k in range(1, 10)] + [warm]
        values = [lr * max(0.01, k / 10) for k in range(0, 10)] + [lr]
        return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, values)
    raise ValueError(f"unknown schedule {kind!r}: constant or cosine")


def make_optimizer(name: str, learning_rate, weight_decay: float | None = None) -> keras.optimizers.Optimizer:
    """rmsprop, adam, adamw or sgd (Keras defaults otherwise) at ``learning_rate`` (a float or a schedule).

    ``weight_decay``: decoupled weight decay (Keras' ``weight_decay`` argument); None keeps the optimizer's
    default (none, except AdamW's 0.004).
    """
    name = str(name).lower()
    lr = learning_rate if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule) \
        else float(learning_rate)
    kw = {} if weight_decay is None else {"weight_decay": float(weight_decay)}
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=lr, **kw)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr, **kw)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, **kw)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, **kw)
    raise ValueError(f"unknown optimizer {name!r}: {', '.join(OPTIMIZERS)}")


@keras.saving.register_keras_serializable(package="lokiml")
class SparseCrossentropyWithSmoothing(keras.losses.Loss):
    """Cross-entropy of integer labels against softmax probabilities, with label smoothing.

    Keras' SparseCategoricalCrossentropy has no label smoothing; this one turns the labels into one-hot
    vectors (``keras.ops.one_hot``) and calls ``keras.losses.categorical_crossentropy`` with it.
    """

    def __init__(self, label_smoothing: float = 0.0, name: str = "sparse_crossentropy_smoothed", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        n = int(y_pred.shape[-1])
        y = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), n, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(y, y_pred, from_logits=False,
                                                     label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def make_loss(label_smoothing: float = 0.0) -> keras.losses.Loss:
    """Sparse categorical cross-entropy on probabilities (the model ends in a softmax), optionally with
    label smoothing."""
    if label_smoothing:
        return SparseCrossentropyWithSmoothing(label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=False)


def compile_model(model: keras.Model, optimizer: str, learning_rate, jit_compile=False, weight_decay=None,
                  label_smoothing: float = 0.0) -> keras.Model:
    """Compile with :func:`make_optimizer`, :func:`make_loss` (integer labels) and metric 'accuracy'."""
    model.compile(
        optimizer=make_optimizer(optimizer, learning_rate, weight_decay),
        loss=make_loss(label_smoothing),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )
    return model


def set_fine_tune_trainable(base: keras.Model, layers: int) -> tuple[int, int]:
    """Unfreeze the top ``layers`` layers of ``base``; everything below and every
    BatchNormalization layer stays frozen (its statistics keep their pre-trained values).

    Returns (number of trainable layers, number of BatchNormalization layers kept frozen).
    """
    base.trainable = True
    all_layers = base.layers
    cut = max(0, len(all_layers) - int(layers))
    for i, layer in enumerate(all_layers):
        layer.trainable = i >= cut
    n_bn = 0
    for layer in _all_layers(base):  # nested ones too
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            n_bn += 1
    n_trainable = sum(1 for layer in all_layers if layer.trainable and layer.weights)
    return n_trainable, n_bn


def _all_layers(model: keras.Model) -> list:
    """Every layer inside ``model``, nested models' layers included (depth first)."""
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out.extend(_all_layers(layer))
    return out
