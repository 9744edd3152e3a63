"""Training of one experiment: the seed's classifier on the normalised image store.

:func:`train_experiment` is what rule ``train_model`` runs. In short:

* Train and validation items come from the split table; items the image store
  could not normalise are skipped and counted (by reason) in the log and in
  ``train_info.json``. Labels are positions in the configured class list.
* Everything backend-specific (device, precision, XLA, determinism, distribution) is chosen
  by :mod:`lokiml.runtime`; model and loop use Keras APIs only, so training runs with
  ``KERAS_BACKEND`` tensorflow, jax or torch.
* Batches come from the memory-mapped store as NumPy arrays (:mod:`lokiml.datasets`: a
  ``keras.utils.PyDataset`` read one batch ahead, or tf.data on TensorFlow, faster there).
  On-the-fly augmentation (training only) is a block of Keras random layers in front of the
  model that is fitted, so it runs on the training device; validation data is never augmented.
* With a frozen pre-trained base and no augmentation, the base's pooled features
  are computed once and kept in ``state_dir``; the head (the very same Dropout
  and Dense layers) is trained on them. The saved model is always the full one,
  taking grey uint8 images.
* Our own epoch loop (one ``fit(epochs=1)`` per epoch) keeps the history, early
  stopping, the best checkpoint by ``val_loss`` and, after every epoch, a resume
  state in ``state_dir``: a killed job continues where it stopped, with exactly
  the result of an uninterrupted run (the training order and every random
  generator are re-seeded from ``(seed, epoch)`` at the start of each epoch).
* An optional second phase (``fine_tune``) unfreezes the top layers of the base,
  BatchNormalization layers excepted.

The resume state is keyed by a fingerprint of the experiment's parameters, the
class list, the split table, the store's index files (and the arrays' size and
modification time) and the weights file; a different fingerprint starts over.
Note that Snakemake's code-change trigger sees only the rule's script, not this
module: a change here does not rerun finished experiments by itself.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import runtime
from .config import load_schema, params_hash
from .datasets import (FeatureSource, ImageSource, augmented_model, batch_count, make_augmenter, make_batches,
                       predict_padded)
from .errors import ConfigError, InputError
from .io import atomic_path, read_tsv, write_json, write_text, write_tsv

log = logging.getLogger(__name__)

STATE_VERSION = 1
STATE_FILE = "state.json"
HISTORY_COLUMNS = ["phase", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds", "learning_rate"]
#: Test hook: after the resume state of this (global, 1-based) epoch is written, the
#: process kills itself with SIGKILL, like a job killed by the scheduler.
CRASH_ENV = "LOKIML_TEST_KILL_AFTER_EPOCH"


# --------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------


def experiment_params(params: dict) -> dict:
    """A copy of ``params`` validated against the schema's experiment definition, defaults filled."""
    from . import config

    schema = load_schema()
    exp_schema = {**schema["definitions"]["experiment"], "definitions": schema["definitions"]}
    validator = config._Validator(exp_schema)
    out = copy.deepcopy(dict(params))
    for _ in range(2):
        errors = sorted(validator.iter_errors(out), key=lambda e: list(e.absolute_path))
        if errors:
            lines = [f"  experiment key {'.'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}"
                     for e in errors[:10]]
            raise ConfigError("invalid experiment parameters:\n" + "\n".join(lines))
    return out


# --------------------------------------------------------------------------------------
# Random generators
# --------------------------------------------------------------------------------------


def _epoch_seed(seed: int, epoch: int, *more: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(epoch), *more]).generate_state(1)[0] & 0x7FFFFFFF)


def reseed(seed: int, epoch: int, layer_owners) -> None:
    """Re-seed every random generator for ``epoch``, so that a resumed run repeats it exactly.

    Python's and NumPy's generators get a seed derived from (seed, epoch); the seed generator
    of every Keras layer that has one (Dropout, the random augmentation layers), found through
    the public ``Layer.variables`` (which holds the ``SeedGenerator`` states), is reset to a state
    derived from (seed, epoch, layer name). Keras' global generator and the backend's own seed are
    left alone on purpose: nothing in training draws from them (every random layer has its seed), and
    changing TensorFlow's global seed makes every compiled function trace again (seconds per epoch).
    """
    import random

    s = _epoch_seed(seed, epoch)
    random.seed(s)
    np.random.seed(s)
    seen: set[int] = set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        sublayers = getattr(layer, "layers", None)
        if sublayers is not None:  # a model: its layers hold the generators
            for sub in sublayers:
                visit(sub)
            return
        states = [v for v in layer.variables if v.name == "seed_generator_state"]
        for k, v in enumerate(states):
            value = _epoch_seed(seed, epoch, zlib.crc32(f"{layer.name}/{k}".encode()))
            v.assign(np.array([value, 0], dtype=v.dtype))

    for owner in layer_owners:
        visit(owner)


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


@dataclass
class Part:
    """The usable items of one split part, with integer labels and their place in the store."""

    name: str
    item_ids: np.ndarray
    labels: np.ndarray
    skipped: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.item_ids)


def load_parts(split_path, store, classes: list[str]) -> dict[str, Part]:
    """Train and valid items of the split table that the store holds as 'ok', labels by class position."""
    split = read_tsv(split_path)
    missing = [c for c in ("item_id", "class_name", "split") if c not in split.columns]
    if missing:
        raise InputError(split_path, f"missing column(s) {', '.join(missing)}", hint="rerun rule split_dataset")
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(split["class_name"]) - set(index))
    if unknown:
        raise InputError(
            split_path, f"class(es) not in the configured class list: {', '.join(unknown[:10])}",
            hint="the split table is out of date with config `classes`; rerun the workflow",
        )
    parts = {}
    for name in ("train", "valid"):
        rows = split[split["split"] == name].sort_values("item_id", kind="stable")
        ids = rows["item_id"].to_numpy()
        status = store.index["status"].reindex(ids).fillna("missing_from_store").to_numpy()
        ok = status == "ok"
        skipped: dict[str, int] = {}
        for st in status[~ok]:
            reason = str(st).split(":", 1)[0] or "unknown"
            skipped[reason] = skipped.get(reason, 0) + 1
        part = Part(name, ids[ok], rows["class_name"].map(index).to_numpy()[ok].astype(np.int32), skipped)
        n_skip = int((~ok).sum())
        if n_skip:
            log.warning("%s: %d of %d items skipped (not normalised): %s", name, n_skip, len(ids),
                        ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())))
        log.info("%s: %d items, %d classes present", name, len(part), len(np.unique(part.labels)))
        if len(part) == 0:
            raise InputError(split_path, f"no usable {name} items", hint="check the split and the normalisation log")
        parts[name] = part
    return parts


# --------------------------------------------------------------------------------------
# Fingerprints and state
# --------------------------------------------------------------------------------------


def _sha1_file(path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def data_fingerprint(split_path, store_npys, store_indexes, weights_path) -> dict:
    """Hashes of everything training reads, except the (large) image arrays, of which size and mtime are taken."""
    return {
        "split": _sha1_file(split_path),
        "indexes": [_sha1_file(p) for p in store_indexes],
        "arrays": [[os.path.getsize(p), os.stat(p).st_mtime_ns] for p in store_npys],
        "weights": _sha1_file(weights_path) if weights_path else None,
    }


class State:
    """The resume state in ``state_dir``: state.json plus the model files it names.

    Files are written under new names (with the epoch number) before the JSON that
    points at them, and old ones removed only afterwards, so a kill at any moment
    leaves a consistent state.
    """

    def __init__(self, state_dir, fingerprint: str):
        self.dir = Path(state_dir)
        self.fingerprint = fingerprint
        self.data: dict = {}

    @property
    def path(self) -> Path:
        return self.dir / STATE_FILE

    def load(self) -> bool:
        """Load a matching state; start over (clearing the folder) when there is none or it does not match."""
        if not self.path.exists():
            if self.dir.exists():
                self._clear(keep_features=True)
            return False
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("unreadable resume state %s (%s): starting over", self.path, exc)
            self._clear(keep_features=True)
            return False
        if data.get("version") != STATE_VERSION or data.get("fingerprint") != self.fingerprint:
            log.info("resume state in %s is for other inputs or parameters (fingerprint %s, now %s): starting over",
                     self.dir, data.get("fingerprint"), self.fingerprint)
            self._clear(keep_features=True)
            return False
        for key in ("model_file", "best_file"):
            if data.get(key) and not (self.dir / data[key]).exists():
                log.warning("resume state names %s, which is missing: starting over", data[key])
                self._clear(keep_features=True)
                return False
        self.data = data
        return True

    def _clear(self, keep_features: bool) -> None:
        for p in self.dir.iterdir() if self.dir.exists() else []:
            if keep_features and p.name.startswith("features_"):
                continue
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()

    def file(self, name: str) -> Path:
        return self.dir / name

    def save(self, data: dict) -> None:
        data = {**data, "version": STATE_VERSION, "fingerprint": self.fingerprint}
        write_json(self.path, data)
        self.data = data
        keep = {STATE_FILE, data.get("model_file"), data.get("best_file")}
        for p in self.dir.glob("*.keras"):
            if p.name not in keep and not p.name.startswith("."):
                p.unlink(missing_ok=True)


def save_model(model, path) -> None:
    """Save a Keras model (with its optimizer state) atomically."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(str(tmp))


def save_for_inference(model, path, tta: str | None = None) -> None:
    """Save ``model`` atomically without optimizer or compile settings (the same layers, uncompiled), with
    test-time augmentation ``tta`` (lokiml.models.inference_model) built in.

    Such a file loads without warnings whatever the optimizer or dtype policy was in training;
    compile it again to train it further.
    """
    from .models import inference_model

    save_model(inference_model(model, tta), path)


def load_weights_from(path, target) -> None:
    """Load the weights (not the optimizer state) of a model saved at ``path`` into ``target``, a model
    of the same architecture."""
    import warnings

    with warnings.catch_warnings():
        # A compiled target whose optimizer is not built yet skips the saved optimizer state: as wanted.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        target.load_weights(str(path))


def link_or_copy(src, dest) -> None:
    """Give the file ``src`` a second name ``dest`` (hard link, or an atomic copy where links fail)."""
    dest = Path(dest)
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)


# --------------------------------------------------------------------------------------
# Cached features
# --------------------------------------------------------------------------------------


def compute_features(fmodel, source: ImageSource, batch_size: int, dest: Path) -> np.ndarray:
    """Features (``fmodel``'s output: the pooled base output) of every item of ``source``, in order,
    written to ``dest`` (.npy) and returned memory-mapped."""
    from .logs import Progress

    n = len(source)
    dim = int(fmodel.output.shape[-1])
    progress = Progress(n, f"base features, {dest.stem.rsplit('_', 1)[-1]} split", log, unit="images")
    with atomic_path(dest, suffix=".npy") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
        for start, f in predict_padded(fmodel, source, batch_size):
            out[start:start + len(f)] = f.reshape(len(f), dim)
            progress.update(len(f))
        out.flush()
        del out
    from .base_features import log_forward_passes

    log_forward_passes(n, f"the frozen base of {fmodel.name}")
    return np.load(dest, mmap_mode="r")


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None or not np.isfinite(best):
        return bool(np.isfinite(value))
    if mode == "min":
        return value < best - min_delta
    return value > best + min_delta


def _summary_text(model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda s, **kw: lines.append(s), show_trainable=True)
    text = "\n".join(lines)
    return text if text.endswith("\n") else text + "\n"


@dataclass
class TrainProgress:
    """Where training stands after the last finished epoch; this is what state.json holds."""

    epoch: int = 0  # epochs finished, all phases together (history's `epoch` runs 1, 2, ... across phases)
    phase: str | None = None  # phase of the last finished epoch
    phase_done: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    epochs_per_phase: dict = field(default_factory=dict)
    stopped_early_at: dict = field(default_factory=dict)  # phase -> epoch, or None
    es_best: float | None = None  # early stopping of the current phase
    es_wait: int = 0
    best_val_loss: float | None = None
    best_epoch: int | None = None
    best_file: str | None = None  # in state_dir: the trained model at best_epoch
    best_kind: str | None = None  # 'head' (head model on features) or 'full'
    model_file: str | None = None  # in state_dir: the trained model, with optimizer state, after `epoch`
    model_kind: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "TrainProgress":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class _Run:
    """One experiment's training: models, data, resume state, and the epoch loop."""

    def __init__(self, split_path, store_npys, store_indexes, classes, state_dir, params, weights_path, threads,
                 base_features=None, on_epoch=None, gpu_request=0, cpu_fallback=False):
        self.t_start = time.monotonic()
        self.base_features = base_features
        self.on_epoch = on_epoch
        self.params = params = experiment_params(params)
        self.classes = [str(c) for c in classes]
        if params["kind"] != "cnn":
            raise ValueError(f"experiment kind {params['kind']!r} is not trained by lokiml.train")
        self.threads = threads
        self.weights_path = weights_path
        self.rt = runtime.configure(threads, params, gpu_request=gpu_request, cpu_fallback=cpu_fallback,
                                    what="training")

        from .store import Store

        self.seed = int(params["seed"])
        self.batch_size = int(params["batch_size"])
        frozen = bool(weights_path)
        self.fine_tune = params["fine_tune"]
        if self.fine_tune and not frozen:
            log.warning("fine_tune is ignored: the base is trained from scratch (weights: none), "
                        "so it is trainable already")
            self.fine_tune = None
        cache = params["cache_features"]
        possible = frozen and not params["augment"]
        if cache is True and not possible:
            why = ("the base is trained from scratch (weights: none)" if not frozen
                   else "augment is on (the images change every epoch)")
            raise ValueError(f"cache_features: true needs a frozen pre-trained base and augment: null, but {why}; "
                             "set cache_features to auto or false")
        self.use_cache = possible and cache in (True, "auto")
        log.info("cached features: %s", "yes (frozen base, no augmentation)" if self.use_cache
                 else "no (the full network runs every epoch)")

        store = Store(store_npys, store_indexes)
        if store.size != int(params["image_size"]):
            raise InputError(store_indexes[0], f"the image store holds {store.size} px images, the experiment "
                             f"wants {params['image_size']} px", hint="pass the store of the experiment's image_size")
        self.parts = load_parts(split_path, store, self.classes)
        self.train_src = ImageSource(store, self.parts["train"].item_ids, self.parts["train"].labels)
        self.valid_src = ImageSource(store, self.parts["valid"].item_ids, self.parts["valid"].labels)

        self.data_fp = data_fingerprint(split_path, store_npys, store_indexes, weights_path)
        self.fingerprint = params_hash({"v": STATE_VERSION, "params": params, "classes": self.classes,
                                        "data": self.data_fp, "precision": self.rt.precision,
                                        "backend": self.rt.backend})
        self.state = State(state_dir, self.fingerprint)
        self.resumed_from = None
        if self.state.load():
            self.progress = TrainProgress.from_dict(self.state.data)
            self.resumed_from = self.progress.epoch
            log.info("resuming from epoch %d (phase %s) with the state in %s",
                     self.progress.epoch, self.progress.phase, self.state.dir)
        else:
            self.progress = TrainProgress()
            log.info("starting from epoch 0 (fingerprint %s)", self.fingerprint)

        self.phases = [("head", int(params["epochs"]), float(params["learning_rate"]))]
        if self.fine_tune:
            self.phases.append(("fine_tune", int(self.fine_tune["epochs"]), float(self.fine_tune["learning_rate"])))
        self.feature_seconds = None
        self.aug_layers = make_augmenter(params["augment"], self.seed)
        self._build()

    # ---- models ----

    def _new_model(self):
        from . import models

        return models.build_model(self.params["model"], len(self.classes), self.params["image_size"],
                                  self.weights_path, self.params["dropout"], self.seed)

    def _build(self) -> None:
        from . import models

        p = self.progress
        with self.rt.scope():
            self.model, self.base = self._new_model()
            self._set_bn_momentum()
            # Trained on cached features: the same Dropout and Dense layers as the full model's.
            self.head = models.head_model(self.model) if self.use_cache else None
            # What trains on images: the model itself, or with augmentation the random layers and then it.
            self.full = augmented_model(self.model, self.aug_layers)
            if p.model_file:
                # The weights as of the last finished epoch (the optimizer state is restored when its
                # phase goes on, see _run_phase).
                load_weights_from(self.state.file(p.model_file), self.head if p.model_kind == "head" else self.full)

    def _set_bn_momentum(self) -> None:
        """batchnorm.momentum: Keras' 0.99 (null), a number, or one suited to the steps of an epoch (auto)."""
        from . import bn

        m = self.params["batchnorm"]["momentum"]
        if m is None:
            return
        if m == "auto":
            m = bn.momentum_for_steps(batch_count(len(self.train_src), self.batch_size, drop_remainder=True))
        layers = bn.batchnorm_layers(self.base)
        for layer in layers:
            layer.momentum = float(m)
        log.info("BatchNormalization momentum %.3f in %d layers", float(m), len(layers))

    def _precise_bn(self, epoch: int) -> int:
        """Precise BN (lokiml.bn): the moving statistics of the trainable BatchNorm layers re-estimated with
        the current weights on up to batchnorm.precise_images training images (not augmented, the same
        images for the same epoch), so that validation and the saved model use statistics of these weights."""
        from . import bn

        cfg = self.params["batchnorm"]
        if cfg["precise"] is False or not bn.batchnorm_layers(self.base, trainable_only=True):
            return 0
        n = min(len(self.train_src), int(cfg["precise_images"]))
        pos = np.sort(np.random.default_rng([self.seed, epoch, 7]).permutation(len(self.train_src))[:n])
        # The training batch size: the statistics each layer normalised by in training.
        size = self.batch_size

        preprocess = self.model.get_layer("preprocess")

        def batches():  # the base's input: grey uint8 images through the model's own preprocessing layer
            for i in range(0, n, size):
                x, _ = self.train_src.fetch(pos[i:i + size])
                yield preprocess(x)

        t0 = time.monotonic()
        used = bn.precise_batchnorm(self.base, batches)
        log.info("precise BN: moving statistics of %d BatchNorm layers re-estimated on %d training images "
                 "in %.1f s", len(bn.batchnorm_layers(self.base, trainable_only=True)), used, time.monotonic() - t0)
        return used

    def _class_weight(self, labels) -> dict | None:
        if self.params["class_weight"] != "balanced":
            return None
        counts = np.bincount(np.asarray(labels), minlength=len(self.classes))
        present = counts > 0
        w = np.where(present, len(labels) / (present.sum() * np.maximum(counts, 1)), 0.0)
        return {i: float(w[i]) for i in range(len(self.classes))}

    def _features(self) -> tuple[FeatureSource, FeatureSource]:
        """Cached base features of the train and valid items: read from the features of rule
        compute_base_features where given, else computed once and kept in state_dir."""
        from .models import feature_model

        t0 = time.monotonic()
        if self.base_features:
            from .base_features import BaseFeatures

            base = BaseFeatures(*self.base_features)
            log.info("features of the frozen base, computed once for every image: %s", base.path)
            return tuple(FeatureSource(base.take(self.parts[name].item_ids), src.labels)
                         for name, src in (("train", self.train_src), ("valid", self.valid_src)))
        key = params_hash({"model": self.params["model"], "size": self.params["image_size"], "data": self.data_fp,
                           "precision": self.rt.precision, "backend": self.rt.backend})
        feats, fmodel = {}, None
        for name, src in (("train", self.train_src), ("valid", self.valid_src)):
            path = self.state.dir / f"features_{key}_{name}.npy"
            if path.exists():
                feats[name] = np.load(path, mmap_mode="r")
                log.info("reusing the cached %s features %s", name, path.name)
            else:
                fmodel = fmodel or feature_model(self.model)
                feats[name] = compute_features(fmodel, src, self.batch_size, path)
        for path in self.state.dir.glob("features_*.npy"):
            if key not in path.name:
                path.unlink(missing_ok=True)
        self.feature_seconds = time.monotonic() - t0
        log.info("features: %d train and %d valid items, %d values each, ready in %.1f s",
                 len(self.train_src), len(self.valid_src), feats["train"].shape[1], self.feature_seconds)
        return (FeatureSource(feats["train"], self.train_src.labels),
                FeatureSource(feats["valid"], self.valid_src.labels))

    # ---- the epoch loop ----

    def run(self) -> None:
        for phase, n_epochs, lr in self.phases:
            if not self.progress.phase_done.get(phase):
                self._run_phase(phase, n_epochs, lr)

    def _run_phase(self, phase: str, n_epochs: int, lr: float) -> None:
        from . import models
        from .fit_progress import EpochProgress

        p = self.progress
        continuing = p.phase == phase  # resumed in the middle of this phase
        if not continuing:
            p.es_best, p.es_wait = None, 0
        cached = self.use_cache and phase == "head"
        with self.rt.scope():
            if phase == "fine_tune":
                n_layers, n_bn = models.set_fine_tune_trainable(self.base, self.fine_tune["layers"])
                log.info("fine-tuning: the top %d layers of the base are trainable (%d of them with weights); "
                         "%d BatchNormalization layers stay frozen", self.fine_tune["layers"], n_layers, n_bn)
            train_model = self.head if cached else self.full
            # Steps per epoch: full batches only (make_batches(drop_remainder=True) in the loop below).
            steps = batch_count(len(self.train_src), self.batch_size, drop_remainder=True)
            schedule = models.make_schedule(self.params["schedule"], lr, steps, n_epochs,
                                            self.params["warmup_epochs"])
            models.compile_model(train_model, self.params["optimizer"], schedule, jit_compile=self.rt.xla,
                                 weight_decay=self.params["weight_decay"],
                                 label_smoothing=self.params["label_smoothing"])
            if self.rt.xla and not train_model.jit_compile:
                log.warning("XLA is off for this training: Keras cannot compile a layer of it on the %s backend "
                            "(TensorFlow's XLA has no kernel for the random rotation/zoom/translation layers)",
                            self.rt.backend)
            if continuing:
                train_model.optimizer.build(train_model.trainable_variables)
                train_model.load_weights(str(self.state.file(p.model_file)))
                log.info("restored the model and optimizer state of epoch %d", p.epoch)
        kind = "head" if cached else "full"
        if cached:
            fit_train, fit_valid = self._features()
        else:
            fit_train, fit_valid = self.train_src, self.valid_src
        valid_ds = make_batches(fit_valid, np.arange(len(fit_valid)), self.batch_size, threads=self.threads)
        es = self.params["early_stopping"]
        class_weight = self._class_weight(fit_train.labels)

        for e in range(int(p.epochs_per_phase.get(phase, 0)) if continuing else 0, n_epochs):
            epoch = p.epoch + 1
            reseed(self.seed, epoch, [train_model, self.model])
            order = np.random.default_rng([self.seed, epoch]).permutation(len(fit_train))
            # Full batches only: the few items of the rest differ every epoch (make_batches says why).
            train_ds = make_batches(fit_train, order, self.batch_size, threads=self.threads, drop_remainder=True)
            t0 = time.monotonic()
            progress = EpochProgress(phase, e + 1, n_epochs, [r["seconds"] for r in p.history if r["phase"] == phase])
            logs = train_model.fit(train_ds, epochs=1, verbose=0, shuffle=False, class_weight=class_weight,
                                   callbacks=[progress]).history
            # Validation in inference mode, after precise BN where BatchNorm layers are trained: with the moving
            # statistics of Keras (momentum 0.99) a network trained from scratch is judged, and its best epoch
            # chosen, with statistics of long-gone weights (README: "CNNs that learn").
            self._precise_bn(epoch)
            val = train_model.evaluate(valid_ds, verbose=0, return_dict=True)
            seconds = time.monotonic() - t0
            row = {"phase": phase, "epoch": epoch,
                   **{k: float(logs[k][-1]) for k in ("loss", "accuracy")},
                   "val_loss": float(val["loss"]), "val_accuracy": float(val["accuracy"]),
                   "seconds": seconds, "learning_rate": float(np.asarray(train_model.optimizer.learning_rate))}
            p.history.append(row)
            if self.on_epoch is not None:
                self.on_epoch(self.model, dict(row))  # benchmarks: the full model (it shares the head's layers)
            p.epoch, p.phase = epoch, phase
            p.epochs_per_phase[phase] = e + 1
            log.info("%s epoch %d/%d (epoch %d): loss %.4f, accuracy %.4f, val_loss %.4f, val_accuracy %.4f, %.1f s",
                     phase, e + 1, n_epochs, epoch, row["loss"], row["accuracy"], row["val_loss"],
                     row["val_accuracy"], seconds)

            p.model_file, p.model_kind = f"model_e{epoch:04d}.keras", kind
            save_model(train_model, self.state.file(p.model_file))
            if _improved(row["val_loss"], p.best_val_loss, "min", 0.0):
                p.best_val_loss, p.best_epoch = row["val_loss"], epoch
                p.best_file, p.best_kind = f"best_e{epoch:04d}.keras", kind
                link_or_copy(self.state.file(p.model_file), self.state.file(p.best_file))
                log.info("best val_loss so far: %.4f (epoch %d)", p.best_val_loss, epoch)

            stop = False
            if es:
                mode = "max" if "accuracy" in es["monitor"] else "min"
                if _improved(row[es["monitor"]], p.es_best, mode, float(es["min_delta"])):
                    p.es_best, p.es_wait = row[es["monitor"]], 0
                else:
                    p.es_wait += 1
                    stop = p.es_wait >= int(es["patience"])
                    if stop:
                        p.stopped_early_at[phase] = epoch
                        log.info("early stopping: %s has not improved by more than %g for %d epoch(s); "
                                 "%s stops at epoch %d", es["monitor"], es["min_delta"], p.es_wait, phase, epoch)
            if stop or e + 1 == n_epochs:
                p.phase_done[phase] = True
            self.state.save(p.to_dict())
            _test_kill_hook(epoch)
            if stop:
                break

    # ---- outputs ----

    def _save_best(self, out_best) -> None:
        """The full model with the weights of the best epoch's checkpoint. That holds either the full
        model or the head; a head goes with the base as it was in the head phase."""
        from . import models

        p = self.progress
        if p.best_file is None:
            log.warning("val_loss was never a finite number: best.keras is the final model")
            save_for_inference(self.model, out_best, self.params["tta"])
            self.best_valid_pred = self._valid_predictions(self.model)
            return
        if p.best_kind == "full":
            target, holder = self.model, self.full
        elif p.epochs_per_phase.get("fine_tune"):  # the base has changed since: a fresh full model
            with self.rt.scope():
                target, _ = self._new_model()
            holder = models.head_model(target)
        else:
            target, holder = self.model, self.head
        current = holder.get_weights()
        load_weights_from(self.state.file(p.best_file), holder)
        save_for_inference(target, out_best, self.params["tta"])
        self.best_valid_pred = self._valid_predictions(target)
        holder.set_weights(current)

    def _valid_predictions(self, model) -> np.ndarray:
        """Predicted class of every validation image by ``model`` (a full model, inference mode)."""
        ds = make_batches(self.valid_src, np.arange(len(self.valid_src)), self.batch_size, threads=self.threads)
        return np.asarray(model.predict(ds, verbose=0)).argmax(axis=1)

    def warnings(self) -> list[str]:
        """The diagnostics of lokiml.diagnostics for this run (after _save_best)."""
        from . import diagnostics

        labels = self.valid_src.labels
        out = diagnostics.training_warnings(self.progress.history, labels, len(self.classes),
                                            self.progress.best_epoch)
        pred = getattr(self, "best_valid_pred", None)
        if pred is not None:
            out += diagnostics.prediction_warnings(pred, labels, self.classes, "validation (best.keras)")
        return out

    def write_outputs(self, out_model, out_best, out_classes, out_history, out_summary, out_info) -> dict:
        p = self.progress
        save_for_inference(self.model, out_model, self.params["tta"])
        self._save_best(out_best)
        write_text(out_classes, "".join(f"{c}\n" for c in self.classes))
        write_tsv(out_history, pd.DataFrame(p.history, columns=HISTORY_COLUMNS))
        write_text(out_summary, _summary_text(self.model))
        warnings = self.warnings()
        for w in warnings:
            log.warning("diagnostics: %s", w)
        stops = [e for e in p.stopped_early_at.values() if e is not None]
        desc = self.rt.describe()
        info = {
            "experiment": self.params,
            "classes": self.classes,
            "weights": str(self.weights_path) if self.weights_path else None,
            "epochs_run": p.epoch,
            "epochs_per_phase": p.epochs_per_phase,
            "stopped_early_at": max(stops) if stops else None,
            "stopped_early_per_phase": {ph: p.stopped_early_at.get(ph) for ph, _, _ in self.phases},
            "best_epoch": p.best_epoch,
            "best_val_loss": p.best_val_loss,
            "warnings": warnings,
            "seconds_total": time.monotonic() - self.t_start,
            "seconds_per_epoch": [row["seconds"] for row in p.history],
            "feature_seconds": self.feature_seconds,
            "cached_features": bool(self.use_cache),
            "items": {"train": len(self.train_src), "valid": len(self.valid_src)},
            "skipped": {name: part.skipped for name, part in self.parts.items()},
            "resumed_from_epoch": self.resumed_from,
            "fingerprint": self.fingerprint,
            "device": self.rt.device,
            "precision": self.rt.precision,
            "backend": self.rt.backend,
            "runtime": desc,
            "versions": self.rt.versions(),
        }
        write_json(out_info, info)
        return info


def _test_kill_hook(epoch: int) -> None:
    """Tests only: with LOKIML_TEST_KILL_AFTER_EPOCH=N, die by SIGKILL once epoch N's state is on disk."""
    if os.environ.get(CRASH_ENV) and int(os.environ[CRASH_ENV]) == epoch:
        log.warning("%s=%d: killing this process (test hook)", CRASH_ENV, epoch)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def train_experiment(split_path, store_npys, store_indexes, classes, out_model, out_best, out_classes, out_history,
                     out_summary, out_info, state_dir, params: dict, weights_path=None, threads: int = 1,
                     base_features=None, on_epoch=None, gpu_request: int = 0, cpu_fallback: bool = False) -> dict:
    """Train one experiment and write its outputs; returns what was written to ``out_info``.

    ``params``: the experiment's configuration (see the schema's ``experiment``; missing
    keys get their defaults). ``classes``: the configured class list; a label is a
    position in it. ``weights_path``: a weights file of the base, which is then frozen
    for the first phase, or None to train the whole network from scratch.
    ``state_dir``: resume state and cached features, removed after success.
    ``threads``: the backend's intra-op threads (set once per process). ``gpu_request``: GPUs the job
    asked for (its ``gpu`` resource): with none visible, training stops at once with a
    :class:`lokiml.runtime.DeviceError` saying why, unless ``cpu_fallback`` (lokiml/runtime.py).
    ``base_features``: (features, index) of rule compute_base_features (the frozen base's pooled
    output for every image of the store): the head trains on their rows instead of features
    computed here. Used only where features are cached (a frozen base, no augmentation).
    ``on_epoch(model, row)``: called after each epoch's validation with the full model and the history row
    (benchmarks measure with it; an exception it raises stops training, and nothing is written).

    Outputs, all written atomically:

    * ``out_model``: the final full model (.keras; input 'image', uint8 (S, S, 1) grey images,
      output class probabilities); ``out_best``: the same model at the epoch of lowest val_loss;
    * ``out_classes``: the class names, one a line, in label order;
    * ``out_history``: TSV with phase, epoch, loss, accuracy, val_loss, val_accuracy, seconds,
      learning_rate (one row per epoch; epochs numbered 1, 2, ... across phases);
    * ``out_summary``: ``model.summary()`` text;
    * ``out_info``: JSON (parameters, epochs per phase, early stop, best epoch, times, cached
      features, item counts, skipped items by reason, device, precision, backend, the runtime's
      choices (lokiml.runtime.Runtime.describe), versions).
    """
    run = _Run(split_path, store_npys, store_indexes, classes, state_dir, params, weights_path, threads,
               base_features, on_epoch, gpu_request, cpu_fallback)
    run.run()
    info = run.write_outputs(out_model, out_best, out_classes, out_history, out_summary, out_info)
    shutil.rmtree(run.state.dir, ignore_errors=True)
    p = run.progress
    log.info("training finished: %d epoch(s), best val_loss %s at epoch %s, %.1f s in this run",
             p.epoch, p.best_val_loss, p.best_epoch, info["seconds_total"])
    return info
