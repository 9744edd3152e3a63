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
from .store import Store

log = logging.getLogger(__name__)


def make_demo_weights(model: str, dest, split_path, store_npys, store_indexes, seed: int = 1,
                      n_images: int = 96) -> None:
    import keras

    from .models import _atomic_save_weights, build_model, get_base

    split = read_tsv(split_path)
    train = split[(split["split"] == "train") & (split["augmented"].astype(int) == 0)]["item_id"].to_numpy()
    store = Store(store_npys, store_indexes)
    train = train[store.ok(train)]
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(train), size=min(n_images, len(train)), replace=False))
    images = store.gather(train[pick])[..., None]
    full, base = build_model(model, 2, store.size, weights_path=None, seed=seed)
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
             model, len(bns), len(images), store.size, float(before.std(0).mean()), float(after.std(0).mean()))
    for layer in bns:
        layer.momentum = 0.99
    _atomic_save_weights(get_base(full), dest)
    log.info("demo weights written to %s", dest)
