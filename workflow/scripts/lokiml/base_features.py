"""Features of a frozen pre-trained base, computed once per (model, weights, image size, store content).

A CNN experiment whose base is pre-trained and frozen, and whose images are not augmented, puts
every image of its store through the same network, with the same weights, whatever the phase: the
pooled output of the base (the ``avg_pool`` layer of :func:`lokiml.models.build_model`) is what
its head trains on, what its evaluation classifies, and what a ``deep_features`` experiment takes
as the CNN's penultimate-layer features. So rule ``compute_base_features`` computes it once, for
every image of the store (train, valid and test items, augmented copies included), and the
consumers read it:

* ``train_model`` trains the head on it (instead of computing train and valid features itself);
* ``evaluate_model`` classifies the valid and test objects with the trained head on it, when the
  base was not fine-tuned (:func:`head_probabilities`; otherwise the full model runs);
* ``extract_deep_features`` takes the original objects' rows of it, when the base was not
  fine-tuned.

Experiments that share model, weights and image size (differing in optimizer, learning rate,
epochs, ...) share one features file. The rule's inputs are the weights file and the store's
shards, so a change of either (a data update that adds images, new weights) computes the features
again; nothing else does.

Every job that puts stored images through a network logs ``forward passes: N images through ...``
(:func:`log_forward_passes`), so that a run's logs tell how often each image went through which
network (tests/workflow/test_base_features_workflow.py counts them).
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .io import read_tsv, save_npy, write_tsv

log = logging.getLogger(__name__)

INDEX_COLUMNS = ["item_id", "row", "status"]
FORWARD_PASSES = "forward passes"


def log_forward_passes(n: int, network: str) -> None:
    """Log that ``n`` stored images went through ``network`` (one forward pass each)."""
    log.info("%s: %d images through %s", FORWARD_PASSES, int(n), network)


def base_name(model: str, weights_path, image_size: int) -> str:
    """How the logs name a frozen base: backbone, a digest of its weights file, image size."""
    digest = "?"
    if weights_path and Path(weights_path).exists():
        h = hashlib.sha1()
        with open(weights_path, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
        digest = h.hexdigest()[:12]
    return f"the frozen {model} base (weights {digest}) at {int(image_size)} px"


class BaseFeatures:
    """Read access to a features file of rule ``compute_base_features``: rows by item id."""

    def __init__(self, features_path, index_path):
        self.path = str(features_path)
        self.features = np.load(features_path, mmap_mode="r")
        index = read_tsv(index_path)
        missing = [c for c in INDEX_COLUMNS if c not in index.columns]
        if missing:
            raise InputError(index_path, f"missing column(s) {', '.join(missing)}",
                             hint="rerun rule compute_base_features")
        index["row"] = index["row"].astype(np.int64)
        n_ok = int((index["status"] == "ok").sum())
        if self.features.ndim != 2 or self.features.shape[0] != n_ok:
            raise InputError(features_path, f"{self.features.shape[0]} rows of features, but {n_ok} items of "
                                            f"{index_path} have status ok", hint="rerun rule compute_base_features")
        self.index = index.set_index("item_id")

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def rows(self, item_ids) -> np.ndarray:
        """Rows of ``item_ids`` in the features array; every one must have features."""
        ids = list(item_ids)
        unknown = [i for i in ids if i not in self.index.index]
        if unknown:
            raise InputError(self.path, f"{len(unknown)} item(s) have no features: {', '.join(unknown[:5])}",
                             hint="the features were computed from another image store; rerun the workflow")
        rows = self.index.loc[ids, "row"].to_numpy()
        if (rows < 0).any():
            bad = [i for i, r in zip(ids, rows) if r < 0]
            raise InputError(self.path, f"{len(bad)} item(s) have no features (their image could not be "
                                        f"normalised): {', '.join(bad[:5])}")
        return rows

    def take(self, item_ids) -> np.ndarray:
        """float32 (n, F): the features of ``item_ids``, in that order (a copy in memory)."""
        rows = self.rows(item_ids)
        order = np.argsort(rows, kind="stable")  # read the memory map front to back
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        out[order] = self.features[rows[order]]
        return out


def compute_base_features(model: str, weights_path, image_size: int, store_npys, store_indexes, out_features,
                          out_index, batch_size: int = 32, threads: int | None = None,
                          mixed_precision="auto", gpu_request: int = 0, cpu_fallback: bool = False) -> pd.DataFrame:
    """Rule compute_base_features: the pooled base output of every normalised image of the store.

    Writes ``out_features`` (float32 .npy, one row per item of status ok, in item-id order) and
    ``out_index`` (TSV ``item_id, row, status``, every item of the store; ``row`` -1 where the
    image could not be normalised). Returns the index.
    """
    from .deep_features import extract_features
    from .models import build_model, feature_model
    from .store import Store

    t0 = time.perf_counter()
    if threads is not None:  # threads, the device check (lokiml.runtime), precision
        from .runtime import configure

        configure(threads, {"mixed_precision": mixed_precision}, gpu_request=gpu_request, cpu_fallback=cpu_fallback,
                  what="base features")
    store = Store(store_npys, store_indexes)
    if store.size != int(image_size):
        raise InputError(store_indexes[0], f"the image store holds {store.size} px images, the features are "
                                           f"for {image_size} px", hint="pass the store of that image size")
    index = store.index[["status"]].reset_index().sort_values("item_id", kind="stable").reset_index(drop=True)
    ok = (index["status"] == "ok").to_numpy()
    index["row"] = -1
    index.loc[ok, "row"] = np.arange(int(ok.sum()))
    # The head is never used: two classes make the smallest one. Seeds do not matter: the base's
    # weights come from the file, and nothing random runs in inference.
    full, _ = build_model(model, 2, int(image_size), weights_path)
    fmodel = feature_model(full)
    feats = extract_features(fmodel, store, index.loc[ok, "item_id"], batch_size)
    log_forward_passes(len(feats), base_name(model, weights_path, image_size))
    save_npy(out_features, feats)
    write_tsv(out_index, index[INDEX_COLUMNS])
    log.info("%d items, %d features each (%d could not be normalised and have none), in %.1f s",
             len(feats), feats.shape[1], int((~ok).sum()), time.perf_counter() - t0)
    return index[INDEX_COLUMNS]


def head_probabilities(model, features: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities of ``model`` (built by lokiml.models) from its base's pooled features.

    Runs only the model's own Dropout (inactive in inference) and Dense layers (:func:`lokiml.models.head_model`):
    the same result as the full model on the images, without the base.
    """
    from .models import head_model

    head = head_model(model)
    out = [np.asarray(head.predict_on_batch(features[b:b + batch_size]), dtype=np.float32)
           for b in range(0, len(features), batch_size)]
    return np.concatenate(out) if out else np.empty((0, int(model.output.shape[-1])), dtype=np.float32)
