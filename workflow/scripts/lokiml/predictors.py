"""What classifies new objects, for every kind of experiment: CNN, descriptors, deep features.

:mod:`lokiml.predict` reads the objects (an EcoTaxa table or a folder of images) and writes the import
bundle; a *predictor* turns a chunk of objects into class probabilities:

* :class:`CnnPredictor`: the experiment's best checkpoint on the images, normalised as its training
  images were (the normalisation record).
* :class:`DescriptorPredictor`: the fitted scikit-learn classifier on the object's descriptor columns
  (``object_area``, ...: the columns marked ``used`` in the experiment's ``columns.tsv``), read from the
  input table. The images are only checked (EcoTaxa must be able to read them), not classified: a
  folder of images without a table, or a table without those columns, is refused with their names.
* :class:`DeepFeaturesPredictor`: the CNN the experiment was built on gives the penultimate-layer
  features of the normalised image (at the CNN's image size), followed by the descriptors, through
  the fitted pipeline (PCA, classifier).

:func:`run_predictor` reads and prepares the images a chunk at a time on a pool of threads while the
previous chunk is classified, so memory is bounded by the chunk, not by the number of objects. A row
whose image cannot be read, or whose descriptor is not a number, gets an error and no probabilities.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from . import images
from .errors import InputError
from .store import NormParams, normalise_item

log = logging.getLogger(__name__)

EXTRA = "extra:"  # prefix of the input's own columns in lokiml.predict.Input.items


def used_columns(columns_path) -> list[str]:
    """The descriptor columns a descriptors or deep_features experiment reads (``used`` in its columns.tsv)."""
    from .io import read_tsv

    table = read_tsv(columns_path)
    return table.loc[table["used"].astype(str).str.strip() == "1", "column"].tolist()


class CnnPredictor:
    """A Keras classifier on normalised images."""

    kind = "cnn"
    needs_pixels = True

    def __init__(self, model, params: NormParams, n_classes: int, batch_size: int = 64):
        self.model, self.params, self.n_classes, self.batch_size = model, params, int(n_classes), int(batch_size)

    def check_input(self, items: pd.DataFrame, source, input_kind: str = "export") -> None:
        return None

    def row_errors(self, items: pd.DataFrame) -> list:
        return [None] * len(items)

    def load(self, data: bytes, ref: str):
        return normalise_item(data, ref, self.params)

    def _batches(self, model, x: np.ndarray, width: int) -> np.ndarray:
        out = np.empty((len(x), width), dtype=np.float32)
        for b in range(0, len(x), self.batch_size):
            p = np.asarray(model.predict_on_batch(x[b:b + self.batch_size]), dtype=np.float32)
            p = p.reshape(len(p), -1)
            if p.shape[1] != width:
                raise InputError("model", f"returns shape {p.shape[1:]} per image, expected ({width},)",
                                 hint="the model and its normalisation.json do not belong together")
            out[b:b + len(p)] = p
        return out

    def classify(self, loaded: list, positions: np.ndarray, items: pd.DataFrame) -> np.ndarray:
        x = np.stack(loaded)[..., None]
        return self._batches(self.model, x, self.n_classes)


def descriptor_values(items: pd.DataFrame, columns) -> tuple[np.ndarray, list]:
    """``(x, errors)``: the descriptor ``columns`` of the input rows as floats (missing: NaN) and, per row,
    None or why it cannot be classified (a value that is not a number)."""
    from .descriptors import to_numbers

    x = np.full((len(items), len(columns)), np.nan, dtype=np.float64)
    errors: list = [None] * len(items)
    for j, c in enumerate(columns):
        if EXTRA + c not in items.columns:  # measured from the image (MorphoColumns), not read from the table
            continue
        x[:, j], bad = to_numbers(items[EXTRA + c])
        for i in np.flatnonzero(bad):
            if errors[i] is None:
                errors[i] = f"non_numeric_descriptor: {c} = {items[EXTRA + c].iloc[i]!r} is not a number"
    return x, errors


def _check_columns(items: pd.DataFrame, columns, source, experiment_kind: str, input_kind: str) -> None:
    if input_kind == "images":
        raise InputError(source, f"a folder of images has no descriptors, and this {experiment_kind} experiment "
                                 f"classifies by them ({', '.join(columns[:6])}{', ...' if len(columns) > 6 else ''})",
                         hint="predict from the EcoTaxa export or import table of these images, with its "
                              "object_* columns, or use a CNN experiment")
    missing = [c for c in columns if EXTRA + c not in items.columns]
    if missing:
        raise InputError(source, f"the input table lacks the descriptor column(s) {', '.join(missing)} that this "
                                 f"{experiment_kind} experiment was trained on",
                         hint="export the objects with their descriptors (the same instrument and processing as "
                              "the training export), or use a CNN experiment")


class MorphoColumns:
    """The ``morpho_*`` columns among an experiment's descriptor columns: measured on each object's image
    by :mod:`lokiml.morphometrics`, as rule compute_morphometrics measured the training images (issue 17:
    no input table has them), with the normalisation settings of the record (threshold, polarity,
    bottom_crop, max_pixels)."""

    def __init__(self, columns, morpho=None):
        from .morphometrics import NAMES, PREFIX

        self.index = [j for j, c in enumerate(columns) if c.startswith(PREFIX)] if morpho is not None else []
        self.names = [NAMES.index(columns[j][len(PREFIX):]) for j in self.index]
        self.table_columns = [c for j, c in enumerate(columns) if j not in set(self.index)]
        self.params = morpho

    def __bool__(self) -> bool:
        return bool(self.index)

    def measure(self, data: bytes, ref: str) -> np.ndarray:
        from .morphometrics import measure_bytes

        values, _status = measure_bytes(data, ref, self.params)  # no object: NaN, as in training
        return np.asarray(values, dtype=np.float64)[self.names]

    def fill(self, x: np.ndarray, positions: np.ndarray, measured: list) -> None:
        x[np.ix_(np.asarray(positions), self.index)] = np.stack(measured)


class DescriptorPredictor:
    """A scikit-learn classifier on the input table's descriptor columns; images only checked."""

    kind = "descriptors"
    needs_pixels = False

    def __init__(self, model, columns, n_classes: int, max_pixels: int = 100_000_000, morpho=None):
        self.model, self.columns, self.n_classes, self.max_pixels = model, list(columns), int(n_classes), max_pixels
        self.morpho = MorphoColumns(self.columns, morpho)  # morpho: lokiml.morphometrics.MorphoParams
        self._x = None

    def check_input(self, items: pd.DataFrame, source, input_kind: str = "export") -> None:
        if self.morpho.table_columns or not self.morpho:
            _check_columns(items, self.morpho.table_columns, source, "descriptors", input_kind)

    def row_errors(self, items: pd.DataFrame) -> list:
        self._x, errors = descriptor_values(items, self.columns)
        return errors

    def load(self, data: bytes, ref: str):
        if self.morpho:
            return self.morpho.measure(data, ref)
        # the check of read_export (lokiml.objects.verify_image): decoded at a reduced scale, same pixel limit
        images.decode_grey(data, ref, max_pixels=self.max_pixels, min_size=1)
        return True

    def classify(self, loaded: list, positions: np.ndarray, items: pd.DataFrame) -> np.ndarray:
        from .descriptors import full_probabilities

        if self.morpho:
            self.morpho.fill(self._x, positions, loaded)
        return full_probabilities(self.model, self._x[positions], self.n_classes).astype(np.float32)


class DeepFeaturesPredictor(CnnPredictor):
    """A CNN's penultimate-layer features of the image, then the descriptors, through the fitted pipeline."""

    kind = "deep_features"

    def __init__(self, cnn_model, pipeline, columns, params: NormParams, n_classes: int, batch_size: int = 64,
                 morpho=None):
        from .deep_features import penultimate_model

        super().__init__(cnn_model, params, n_classes, batch_size)
        self.fmodel = penultimate_model(cnn_model)
        self.pipeline, self.columns = pipeline, list(columns)
        self.morpho = MorphoColumns(self.columns, morpho)
        self._x = None

    def check_input(self, items: pd.DataFrame, source, input_kind: str = "export") -> None:
        if self.morpho.table_columns:
            _check_columns(items, self.morpho.table_columns, source, "deep_features", input_kind)

    def load(self, data: bytes, ref: str):
        image = super().load(data, ref)
        return (image, self.morpho.measure(data, ref)) if self.morpho else image

    def row_errors(self, items: pd.DataFrame) -> list:
        if not self.columns:
            self._x = np.zeros((len(items), 0))
            return [None] * len(items)
        self._x, errors = descriptor_values(items, self.columns)
        return errors

    def classify(self, loaded: list, positions: np.ndarray, items: pd.DataFrame) -> np.ndarray:
        from .descriptors import full_probabilities

        if self.morpho:
            self.morpho.fill(self._x, positions, [m for _, m in loaded])
            loaded = [image for image, _ in loaded]
        x = np.stack(loaded)[..., None]
        feats = self._batches(self.fmodel, x, int(self.fmodel.output.shape[-1]))
        design = np.hstack([feats, self._x[positions].astype(np.float32)])
        return full_probabilities(self.pipeline, design, self.n_classes).astype(np.float32)


def run_predictor(predictor, items: pd.DataFrame, read_bytes, chunk: int = 1024, threads: int = 2, progress=None):
    """Class probabilities of ``items`` (``img_file_name`` names each image): ``(probs float32 (n, C), errors)``.

    Rows with an error (unreadable image, a descriptor that is not a number) are NaN. Images are read and
    prepared ``chunk`` at a time by ``threads`` threads while the previous chunk is classified.
    """
    items = items.reset_index(drop=True)
    n = len(items)
    refs = items["img_file_name"].tolist()
    probs = np.full((n, predictor.n_classes), np.nan, dtype=np.float32)
    errors = list(predictor.row_errors(items))

    def load(i):
        if errors[i] is not None:
            return None, errors[i]
        try:
            return predictor.load(read_bytes(refs[i]), refs[i]), None
        except images.ImageError as e:
            return None, f"{e.reason}: {e}"
        except (InputError, OSError) as e:
            return None, f"missing image: {e}"

    def load_chunk(start):
        return list(pool.map(load, range(start, min(start + chunk, n))))

    starts = list(range(0, n, chunk))
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool, ThreadPoolExecutor(max_workers=1) as ahead:
        future = ahead.submit(load_chunk, starts[0]) if starts else None
        for j, start in enumerate(starts):
            loaded = future.result()
            if j + 1 < len(starts):
                future = ahead.submit(load_chunk, starts[j + 1])
            ok = [i for i, (arr, err) in enumerate(loaded) if err is None]
            for i, (arr, err) in enumerate(loaded):
                if err:
                    if errors[start + i] is None:
                        errors[start + i] = err
                    log.warning("not classified: %s", err)
            if ok:
                positions = start + np.asarray(ok)
                probs[positions] = predictor.classify([loaded[i][0] for i in ok], positions, items)
            del loaded
            if progress is not None:
                progress.update(min(chunk, n - start))
    return probs, errors
