"""Stand-in 'pre-trained' weights for the offline demo.

ImageNet weights cannot be downloaded without internet, so the demo's
pre-trained experiments load a frozen base that was initialised with a fixed
seed and whose BatchNormalization statistics were then calibrated on the
demo's *training* images (one forward pass in training mode with momentum 0,
a data-dependent initialisation). Without that calibration a deep random
network's pooled features are nearly constant (InceptionV3: standard
deviation across images about 1e-4) and the head learns nothing; with it, the
random features carry the shapes' information, so the demo's frozen-base
experiments learn something, honestly labelled as not ImageNet.
Only training-split originals are used, so no validation or test image
influences the weights.
"""

from __future__ import annotations

import logging

import numpy as np

from .io import read_tsv

log = logging.getLogger(__name__)


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


def make_demo_weights(model: str, dest, images: np.ndarray, seed: int = 1) -> None:
    """A seeded base of ``model`` whose BatchNorm statistics are those of ``images`` (N, S, S); saved to ``dest``."""
    import keras

    from .models import _atomic_save_weights, build_model, get_base

    size = images.shape[1]
    images = images[..., None]
    full, base = build_model(model, 2, size, weights_path=None, seed=seed)
    bns = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in bns:
        layer.momentum = 0.0
    preprocess = full.get_layer("preprocess")
    x = preprocess(keras.ops.convert_to_tensor(images))
    before = keras.ops.convert_to_numpy(keras.ops.mean(base(x, training=False), axis=(1, 2)))
    base(x, training=True)  # momentum 0: each moving mean/variance becomes this batch's statistics
    after = keras.ops.convert_to_numpy(keras.ops.mean(base(x, training=False), axis=(1, 2)))
    log.info("%s: calibrated %d BatchNormalization layers on %d training images at %d px; "
             "feature std across images %.3g before, %.3g after",
             model, len(bns), len(images), size, float(before.std(0).mean()), float(after.std(0).mean()))
    for layer in bns:
        layer.momentum = 0.99
    _atomic_save_weights(get_base(full), dest)
    log.info("demo weights written to %s", dest)
