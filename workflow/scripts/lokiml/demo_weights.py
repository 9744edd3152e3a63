"""Stand-in 'pre-trained' weights for the offline demo: a base pre-trained briefly on a pretext task.

ImageNet weights cannot be downloaded without internet. A seeded *random* base is a poor stand-in: its
pooled features barely differ between images (InceptionV3: standard deviation across images about 1e-4
before its BatchNorm statistics are calibrated), and even calibrated a linear head on them reached only
test macro F1 0.3-0.8 on the demo. So, like ImageNet pre-training in miniature, the base is first trained
on a *different* task: telling apart geometric primitives (ellipse, rectangle, triangle, ring, cross,
star) drawn at random sizes, elongations, angles, grey levels and blurs (:func:`pretext_images`, nothing
of the demo's plankton shapes or of its images), for a few epochs, from scratch. Then, as a data-dependent
initialisation without labels, its BatchNorm statistics are re-estimated on the demo's *training* images
(precise BN, lokiml.bn), so that the frozen base normalises the demo's images by their own statistics.
Only the training split's originals are used, and none of their labels; no validation or test image
influences the weights. The demo's frozen-base experiments then run the real cached-features code path
on features that generalise, honestly labelled as not ImageNet.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .io import read_tsv

log = logging.getLogger(__name__)

PRETEXT_SHAPES = ("ellipse", "rectangle", "triangle", "ring", "cross", "star")


def _polygon(kind: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-size outline of a primitive, centred on 0 (x along the major axis)."""
    if kind == "ellipse" or kind == "ring":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        return np.c_[np.cos(t), np.sin(t)]
    if kind == "rectangle":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
    if kind == "triangle":
        return np.array([[-1, -1], [1, 0], [-1, 1]], float)
    if kind == "cross":
        a = rng.uniform(0.2, 0.35)
        return np.array([[-1, -a], [-a, -a], [-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1],
                         [-a, 1], [-a, a], [-1, a]], float)
    if kind == "star":
        n = 5
        t = np.linspace(0, 2 * np.pi, 2 * n, endpoint=False)
        r = np.where(np.arange(2 * n) % 2 == 0, 1.0, rng.uniform(0.35, 0.5))
        return np.c_[r * np.cos(t), r * np.sin(t)]
    raise ValueError(kind)


def pretext_image(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One grey uint8 (size, size) image of primitive ``PRETEXT_SHAPES[kind]``: dark on a light, noisy
    background, as the normalised demo images are (object centred, filling much of the frame)."""
    name = PRETEXT_SHAPES[kind]
    scale = 4  # drawn larger, then reduced: smooth edges
    big = size * scale
    bg = rng.uniform(232, 252)
    img = Image.new("L", (big, big), int(bg))
    draw = ImageDraw.Draw(img)
    half = big / 2 * rng.uniform(0.45, 0.95)
    aspect = rng.uniform(0.25, 1.0)
    angle = rng.uniform(0, 2 * np.pi)
    pts = _polygon(name, rng) * np.array([half, half * aspect])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = pts @ rot.T + big / 2 + rng.uniform(-0.05, 0.05, 2) * big
    grey = int(rng.uniform(20, 200))
    draw.polygon([tuple(p) for p in pts], fill=grey)
    if name == "ring":
        inner = _polygon("ellipse", rng) * np.array([half, half * aspect]) * rng.uniform(0.45, 0.7)
        inner = inner @ rot.T + pts.mean(axis=0)
        draw.polygon([tuple(p) for p in inner], fill=int(bg))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.5) * scale))
    img = img.resize((size, size), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, rng.uniform(0.5, 4.0), (size, size))
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def pretext_images(n_per_class: int, size: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (n, size, size, 1), labels) of the pretext task, ``n_per_class`` of each primitive."""
    rng = np.random.default_rng([seed, size])
    labels = np.repeat(np.arange(len(PRETEXT_SHAPES)), n_per_class)
    rng.shuffle(labels)
    images = np.stack([pretext_image(int(k), size, rng) for k in labels])[..., None]
    return images, labels.astype(np.int32)


def calibration_images(balanced_path, objects_path, export_path, split: dict, norm: dict, seed: int = 1,
                       n_images: int = 96) -> np.ndarray:
    """Up to ``n_images`` normalised training-split originals, ``uint8 (N, S, S)``, read from the export.

    The training split is computed here with the rule split_dataset's own function and parameters, and
    the images normalised here as normalise_images does, instead of reading split.tsv and the image
    store: so this rule sits beside them in the DAG, not after them, and the training jobs of
    pre-trained and self-trained experiments sit at the same depth (one node per rule in the report's
    rule graph). The same objects as split.tsv's train originals, the same pixels as the store's.
    """
    from .ecotaxa import open_export
    from .images import ImageError
    from .split import split_items
    from .store import NormParams, normalise_item

    balanced, objects = read_tsv(balanced_path), read_tsv(objects_path)
    table = split_items(balanced, objects, **{**split, "holdout": dict(split["holdout"]) if split.get("holdout")
                                               else None}, source=str(balanced_path))
    train = table[(table["split"] == "train") & (table["augmented"].astype(int) == 0)]
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(train), size=min(n_images, len(train)), replace=False))
    params = NormParams(**norm)
    out = []
    with open_export(export_path) as export:
        for ref in train.iloc[pick]["image_ref"]:
            try:
                out.append(normalise_item(export.read_image_by_ref(ref), ref, params))
            except (ImageError, OSError, ValueError) as exc:
                log.warning("%s: left out of the calibration (%s)", ref, exc)
    if not out:
        raise ValueError("no training image to calibrate the demo weights on")
    return np.stack(out)


def make_demo_weights(model: str, dest, images: np.ndarray, seed: int = 1, n_per_class: int = 40, epochs: int = 3,
                      batch_size: int = 32, learning_rate: float = 2e-3, pretext_size: int | None = None,
                      on_epoch=None, optimizer: str = "adam", schedule: str = "cosine") -> dict:
    """Pre-train ``model``'s base on the pretext task, calibrate its BatchNorm statistics on ``images``
    (normalised training originals, ``uint8 (N, S, S)``, :func:`calibration_images`), and save the base's
    weights, built for ``S`` px, to ``dest``. Returns what was measured (pretext accuracy, seconds).

    Each epoch draws ``n_per_class`` *new* images of each primitive (an endless supply: no image is seen
    twice, so the base cannot overfit the pretext), at ``pretext_size`` px (default: the store's size; the
    weights of a convolutional base fit any size). ``optimizer`` (default Adam) with ``schedule``: "cosine", a one-epoch
    warm-up and a cosine decay, or "constant".
    ``on_epoch(full_model, epoch)``: called after each epoch (exploration and benchmarks).
    """
    import keras

    from . import bn
    from .models import GreyToBackboneInput, build_model, compile_model, get_backbone, make_schedule, save_base_weights

    t0 = time.monotonic()
    demo_images = np.asarray(images)[..., None]
    store_size = int(demo_images.shape[1])
    size = int(pretext_size or store_size)
    xv, yv = pretext_images(max(8, n_per_class // 2), size, seed + 1000)
    full, base = build_model(model, len(PRETEXT_SHAPES), size, weights_path=None, dropout=0.2, seed=seed)
    steps = math.ceil(n_per_class * len(PRETEXT_SHAPES) / batch_size)
    compile_model(full, optimizer, make_schedule(schedule, learning_rate, steps, epochs,
                                                 warmup_epochs=1 if schedule == "cosine" else 0))
    keras.utils.set_random_seed(seed)
    preprocess = full.get_layer("preprocess")

    def base_batches(images):  # the base's input: the model's own preprocessing of grey uint8 images
        return (preprocess(images[i:i + batch_size]) for i in range(0, len(images), batch_size))

    x = None
    for epoch in range(epochs):
        x, y = pretext_images(n_per_class, size, seed + epoch)
        hist = full.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=True).history
        log.info("%s: pretext epoch %d/%d: loss %.3f, training accuracy %.3f (batch statistics), %.0f s so far",
                 model, epoch + 1, epochs, hist["loss"][-1], hist["accuracy"][-1], time.monotonic() - t0)
        if on_epoch is not None:
            on_epoch(full, epoch + 1)
    bn.precise_batchnorm(base, base_batches(x))
    pretext_acc = float((full.predict(xv, batch_size=64, verbose=0).argmax(1) == yv).mean())
    log.info("%s: pre-trained on the pretext task (%d new images of %d primitives per epoch at %d px, %d epochs, "
             "batch %d): held-out pretext accuracy %.3f (chance %.3f)", model, n_per_class * len(PRETEXT_SHAPES),
             len(PRETEXT_SHAPES), size, epochs, batch_size, pretext_acc, 1 / len(PRETEXT_SHAPES))
    if size != store_size:  # the same weights in a base built for the store's size
        _, target = build_model(model, len(PRETEXT_SHAPES), store_size, weights_path=None, dropout=0.2, seed=seed)
        target.set_weights(base.get_weights())
        base = target
    prep = GreyToBackboneInput(get_backbone(model).mode)  # weightless: the same arithmetic as the model's own

    def store_batches(images):
        return (prep(images[i:i + batch_size]) for i in range(0, len(images), batch_size))

    # Data-dependent, label-free: BatchNorm statistics of the demo's training images.
    n = bn.precise_batchnorm(base, store_batches(demo_images))
    feats = keras.ops.convert_to_numpy(keras.ops.mean(base(prep(demo_images), training=False), axis=(1, 2)))
    log.info("%s: BatchNorm statistics calibrated on %d training images at %d px; feature std across images %.3g",
             model, n, store_size, float(feats.std(0).mean()))
    save_base_weights(base, dest)
    seconds = time.monotonic() - t0
    log.info("demo weights written to %s in %.1f s", dest, seconds)
    return {"pretext_accuracy": pretext_acc, "seconds": seconds, "calibration_images": n}
