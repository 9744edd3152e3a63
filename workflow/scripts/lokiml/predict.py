"""Prediction: classify new images with a trained experiment and write an EcoTaxa import bundle.

Two steps:

* :func:`record_normalisation` (rule ``record_normalisation``) writes
  ``results/experiments/{exp}/normalisation.json`` next to the model: how the
  training images were normalised (image size, threshold, polarity,
  bottom_crop, max_pixels, img_rank), the classes in label order with the
  EcoTaxa name each one is written back as, and the SHA-1 of the model file it
  belongs to. Prediction reads only that file and the model, never the current
  config's normalisation keys, so a model stays usable after the config changed.
* :func:`predict_job` (rule ``predict_images``) reads an EcoTaxa export /
  import table (.tsv/.txt, folder, .zip) or a plain folder of images,
  normalises every image exactly as training did (:func:`lokiml.store.normalise_item`),
  predicts in batches while the next chunk is decoded by a thread pool (memory
  is bounded by the chunk size, not the number of images), and writes:

  - ``ecotaxa_{name}.tsv``: an EcoTaxa import table (header, ``[t]``/``[f]``
    type row): img_file_name, object_id, object_annotation_category,
    object_annotation_status (``predicted``; objects whose status is in
    ``statuses_to_keep`` keep their category and status; objects below the
    threshold are left without category and status), object_score (the top
    probability) and one ``object_prob_<class>`` column per class;
  - ``ecotaxa_{name}.zip``: that table and its images, ready to upload;
  - ``top3.csv``: object_id with the three most probable classes;
  - ``summary.json``: every object accounted for (predicted, below threshold,
    kept, unreadable, missing image, missing object_id, other image rank,
    duplicate), the input columns not carried over and why, and the accuracy on
    objects that already carry a validated label.

The table is written so that EcoTaxa accepts it: UTF-8 with a BOM (without one,
EcoTaxa reads Latin-1), input columns EcoTaxa would refuse left out (named in the
summary), images EcoTaxa cannot read (not PNG, JPEG or GIF) converted to PNG in the
bundle. The bundle is then checked against EcoTaxa's import rules
(:mod:`lokiml.ecotaxa_import`); a remaining problem (a bad date in the input, say)
stops the job with an :class:`InputError` naming the row.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import posixpath
import shutil
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import images
from .config import class_slug
from .ecotaxa import FALLBACK_PATTERNS, TABLE_PATTERNS, _is_junk, _matches, open_export
from .ecotaxa_import import (FREE_COLUMNS, SUPPORTED_IMAGE_FORMATS, check_import_table, custom_table, header_problem,
                             is_ecotaxa_float)
from .errors import InputError
from .io import atomic_path, write_json
from .logs import Progress
from .objects import ClassMatcher
from .store import NormParams, normalise_item

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif")
RECORD_VERSION = 1
TOP_K = 3
CHUNK_BYTES = 256 * 2**20  # at most this many bytes of normalised images per chunk


# --------------------------------------------------------------------------------------------
# The normalisation record
# --------------------------------------------------------------------------------------------

def sha1_file(path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def ecotaxa_names(classes, objects: pd.DataFrame | None) -> dict[str, str]:
    """The EcoTaxa category each training class is written back as.

    A class named like a node of its objects' lineage keeps that name; where the
    category carries its parents EcoTaxa-style (``fiber<detritus``) the node is
    written with its parents (``Noctiluca<Noctilucaceae``), as EcoTaxa shows it.
    Otherwise (a node of ``object_annotation_hierarchy``, or a name given by a class
    mapping) the class name itself.
    """
    names = {}
    for c in classes:
        name = c
        if objects is not None and len(objects):
            cats = objects.loc[objects["class_name"] == c, "category"].astype(str)
            counts = Counter()
            direct = False
            for cat, n in cats.value_counts().items():
                parts = [p.strip() for p in cat.split("<")]
                if cat.strip() == c:
                    direct = True
                if c in parts:
                    counts["<".join(parts[parts.index(c):])] += n
            if not direct and counts:
                name = counts.most_common(1)[0][0]
        names[c] = name
    return names


def record_normalisation(model_path, classes_path, objects_path, out, experiment: str, image_size: int,
                         threshold: int, polarity: str, bottom_crop: float, max_pixels: int,
                         img_rank: int = 0, canvas: int | None = None) -> dict:
    """Write the normalisation record of a trained experiment (see the module docstring)."""
    classes = [c for c in Path(classes_path).read_text(encoding="utf-8").splitlines() if c]
    objects = None
    if objects_path:
        objects = pd.read_csv(objects_path, sep="\t", dtype=str, keep_default_na=False)
    names = ecotaxa_names(classes, objects)
    rec = {
        "version": RECORD_VERSION,
        "experiment": experiment,
        "model": os.path.basename(str(model_path)),
        "model_sha1": sha1_file(model_path),
        "image_size": int(image_size),
        "threshold": int(threshold),
        "polarity": str(polarity),
        "bottom_crop": float(bottom_crop),
        "max_pixels": int(max_pixels),
        "img_rank": int(img_rank),
        "canvas": int(canvas) if canvas else None,
        "classes": [{"name": c, "ecotaxa_name": names[c]} for c in classes],
    }
    write_json(out, rec)
    log.info("normalisation of %s recorded: %d px, threshold %d, polarity %s, bottom_crop %g, %d classes",
             experiment, rec["image_size"], rec["threshold"], rec["polarity"], rec["bottom_crop"], len(classes))
    return rec


@dataclass(frozen=True)
class Record:
    params: NormParams
    classes: list[str]
    ecotaxa_names: list[str]
    img_rank: int
    model_sha1: str | None


def load_record(path) -> Record:
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(path, f"cannot read the normalisation record ({e})",
                         hint="run the workflow's rule record_normalisation for this experiment") from None
    missing = [k for k in ("image_size", "threshold", "polarity", "bottom_crop", "max_pixels", "classes") if k not in d]
    if missing:
        raise InputError(path, f"normalisation record lacks {missing}", hint="make it again (rule record_normalisation)")
    params = NormParams(size=int(d["image_size"]), threshold=int(d["threshold"]), polarity=str(d["polarity"]),
                        bottom_crop=float(d["bottom_crop"]), max_pixels=int(d["max_pixels"]),
                        canvas=int(d["canvas"]) if d.get("canvas") else None)
    classes = [c["name"] for c in d["classes"]]
    names = [c.get("ecotaxa_name") or c["name"] for c in d["classes"]]
    return Record(params, classes, names, int(d.get("img_rank", 0)), d.get("model_sha1"))


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

EXTRA = "extra:"  # prefix of the carried-over input columns in Input.items
ITEM_COLUMNS = ["object_id", "img_file_name", "status", "category", "hierarchy", "source", "line"]


class Input:
    """The objects to classify and a reader of their images.

    ``items``: one row per object (``object_id``, ``img_file_name`` relative to the
    input's root, the status / category / hierarchy it already carries); ``outcome``
    is ``todo``, or why the row is not classified (other_image_rank, duplicate_object_id,
    missing_image, missing_object_id).
    """

    def __init__(self, path, img_rank: int = 0):
        self.path = Path(path)
        self.export = None
        self.extra_types: dict[str, str] = {}  # input columns carried over -> their type code
        self.kind = "images" if self._is_image_folder(self.path) else "export"
        if self.kind == "images":
            self.items = self._list_images()
        else:
            self.export = open_export(self.path)
            self.items = self._read_tables(img_rank)

    @staticmethod
    def _is_image_folder(path: Path) -> bool:
        if not path.is_dir():
            return False
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = [d for d in dirnames if not _is_junk([d])]
            if any(_matches(f, TABLE_PATTERNS + FALLBACK_PATTERNS) for f in filenames if not _is_junk([f])):
                return False
        return True

    def _list_images(self) -> pd.DataFrame:
        rows = []
        for dirpath, dirnames, filenames in os.walk(self.path):
            dirnames[:] = sorted(d for d in dirnames if not _is_junk([d]))
            rel_dir = Path(dirpath).relative_to(self.path).as_posix()
            for f in sorted(filenames):
                if _is_junk([f]) or not f.lower().endswith(IMAGE_SUFFIXES):
                    continue
                rel = f if rel_dir == "." else f"{rel_dir}/{f}"
                rows.append({"object_id": Path(f).stem, "img_file_name": rel, "status": "", "category": "",
                             "hierarchy": "", "source": str(self.path), "line": 0})
        if not rows:
            raise InputError(self.path, "holds neither an EcoTaxa table nor images (" + ", ".join(IMAGE_SUFFIXES) + ")")
        items = pd.DataFrame(rows, columns=ITEM_COLUMNS)
        items["outcome"] = "todo"
        dup = items["object_id"].duplicated()
        items.loc[dup, "outcome"] = "duplicate_object_id"
        log.info("%s: a folder of %d images", self.path, len(items))
        return items

    def _read_tables(self, img_rank: int) -> pd.DataFrame:
        frames = []
        for table in self.export.tables:
            df = table.df
            for col in ("object_id", "img_file_name"):
                if col not in df.columns:
                    raise InputError(table.source, f"missing column {col}", row=table.header_line,
                                     hint="an EcoTaxa table names each object's object_id and img_file_name")

            def col(name):
                return df[name].astype(str).str.strip() if name in df.columns else pd.Series("", index=df.index)

            rank = pd.to_numeric(col("img_rank").replace({"": "0", "nan": "0", "NaN": "0"}), errors="coerce")
            refs, outcome = [], []
            for name, r in zip(df["img_file_name"].astype(str), rank):
                o = "todo" if r == img_rank else "other_image_rank"
                ref = ""
                if o == "todo":
                    try:
                        ref = self.export.image_ref(table, name.strip())
                        if not self.export.image_exists(table, name.strip()):
                            o = "missing_image"
                    except InputError:
                        o = "missing_image"
                refs.append(ref)
                outcome.append(o)
            frame = pd.DataFrame({
                "object_id": col("object_id").to_numpy(), "img_file_name": refs,
                "status": col("object_annotation_status").replace({"nan": ""}).to_numpy(),
                "category": col("object_annotation_category").replace({"nan": ""}).to_numpy(),
                "hierarchy": col("object_annotation_hierarchy").replace({"nan": ""}).to_numpy(),
                "source": table.source, "line": table.lines, "outcome": outcome,
            })
            # EcoTaxa refuses a row without object_id: such a row is not classified
            frame.loc[(frame["outcome"] == "todo") & (frame["object_id"] == ""), "outcome"] = "missing_object_id"
            # Every other column of the input (sample, acquisition, process, object metadata) is carried
            # over to the import table, so that EcoTaxa keeps them; not the annotation columns.
            for c in df.columns:
                if c in ("object_id", "img_file_name", "img_rank") or c.startswith("object_annotation_") \
                        or c == "object_score" or c.startswith("object_prob_"):
                    continue
                frame[EXTRA + c] = df[c].to_numpy()
                if c not in self.extra_types:
                    self.extra_types[c] = (table.types or {}).get(c) or ""
            frames.append(frame)
        items = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ITEM_COLUMNS + ["outcome"])
        extra = [c for c in items.columns if c.startswith(EXTRA)]
        if extra:
            items[extra] = items[extra].fillna("")
        todo = items["outcome"] == "todo"
        dup = todo & items["object_id"].where(todo).duplicated() & todo
        items.loc[dup, "outcome"] = "duplicate_object_id"
        return items

    def read(self, ref: str) -> bytes:
        if self.export is not None:
            return self.export.read_image_by_ref(ref)
        with open(self.path / ref, "rb") as f:
            return f.read()

    def close(self) -> None:
        if self.export is not None:
            self.export.close()


# --------------------------------------------------------------------------------------------
# Batched prediction
# --------------------------------------------------------------------------------------------

def predict_images(model, refs, read_bytes, params: NormParams, n_classes: int, batch_size: int = 64,
                   chunk: int = 1024, threads: int = 2, progress: Progress | None = None):
    """Class probabilities of the images ``refs``: ``(probs float32 (n, C), errors list[str|None])``.

    Images are read and normalised ``chunk`` at a time by a pool of ``threads``
    threads while the model predicts the previous chunk. Rows of unreadable
    images are NaN and their error is given.
    """
    refs = list(refs)
    n = len(refs)
    probs = np.full((n, n_classes), np.nan, dtype=np.float32)
    errors: list[str | None] = [None] * n

    def load(ref):
        try:
            return normalise_item(read_bytes(ref), ref, params), None
        except images.ImageError as e:
            return None, f"{e.reason}: {e}"
        except (InputError, OSError) as e:
            return None, f"missing image: {e}"

    def load_chunk(start):
        return list(pool.map(load, refs[start:start + chunk]))

    starts = list(range(0, n, chunk))
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool, ThreadPoolExecutor(max_workers=1) as ahead:
        future = ahead.submit(load_chunk, starts[0]) if starts else None
        for j, start in enumerate(starts):
            loaded = future.result()
            if j + 1 < len(starts):
                future = ahead.submit(load_chunk, starts[j + 1])
            ok = [i for i, (arr, err) in enumerate(loaded) if arr is not None]
            for i, (arr, err) in enumerate(loaded):
                if err:
                    errors[start + i] = err
                    log.warning("not classified: %s", err)
            if ok:
                x = np.stack([loaded[i][0] for i in ok])[..., None]
                del loaded
                out = np.empty((len(ok), n_classes), dtype=np.float32)
                for b in range(0, len(ok), batch_size):
                    p = np.asarray(model.predict_on_batch(x[b:b + batch_size]), dtype=np.float32)
                    if p.ndim != 2 or p.shape[1] != n_classes:
                        raise InputError("model", f"returns shape {p.shape[1:]} per image, expected ({n_classes},)",
                                         hint="the model and its normalisation.json do not belong together")
                    out[b:b + len(p)] = p
                probs[start + np.asarray(ok)] = out
            if progress is not None:
                progress.update(min(chunk, n - start))
    return probs, errors


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------

def import_table_bytes(df: pd.DataFrame, types: dict[str, str]) -> bytes:
    """An EcoTaxa import table: header, ``[t]``/``[f]`` type row, tab-separated, LF, UTF-8 with a BOM.

    The BOM matters: EcoTaxa reads a table that does not start with one as Latin-1, which would
    turn every non-ASCII character (``é``, ``µ``) into two.
    """
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", quotechar='"', lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    w.writerow(list(df.columns))
    w.writerow([types[c] for c in df.columns])
    for row in df.itertuples(index=False):
        w.writerow(["" if (isinstance(v, float) and np.isnan(v)) else v for v in row])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def write_import_table(path, df: pd.DataFrame, types: dict[str, str]) -> None:
    """Write :func:`import_table_bytes` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(import_table_bytes(df, types))


def _fmt(x: float) -> str:
    return "" if np.isnan(x) else f"{x:.6f}"


def _numeric(values) -> bool:
    """True when ``values`` hold at least one number and EcoTaxa reads every value as a number or empty."""
    v = [str(x).strip() for x in values]
    return any(x and x.lower() not in ("nan", "na") for x in v) and all(is_ecotaxa_float(x) for x in v)


#: Columns the prediction writes itself; an input column of that name (in any case) is not carried.
_OWN_COLUMNS = ("img_file_name", "img_rank", "object_id", "object_score")
_OWN_PREFIXES = ("object_annotation_", "object_prob_")


def _carried_values(items: pd.DataFrame, name: str, ok: np.ndarray) -> np.ndarray:
    """The values of input column ``name`` for the rows ``ok``, as the import table writes them."""
    values = items[EXTRA + name].fillna("").astype(str).to_numpy()[ok]
    if name.strip(" \t").lower() in ("object_date", "object_time"):  # EcoTaxa reads 'nan' there as a bad date or time
        values = np.array(["" if v.strip().lower() == "nan" else v for v in values], dtype=object)
    return values


def _carried_columns(items: pd.DataFrame, ok: np.ndarray, extra_types: dict[str, str] | None, own_numbers: int):
    """The input columns to carry into the import table: ``({name: (values, type code)}, {name: why not})``.

    A column is left out (and named, with the reason) when EcoTaxa would refuse it: a name that is
    not ``<table>_<field>`` with a table EcoTaxa knows, a ``sample_``/``acq_``/``process_`` column
    without the ``<prefix>_id`` column EcoTaxa then requires, or more custom columns than EcoTaxa
    has room for (the score and probability columns come first). The type code is ``[f]`` when
    EcoTaxa reads every value as a number (and the input did not say ``[t]``), else ``[t]``: an
    ``[n]``, a blank code or a ``[f]`` column holding text would be refused.
    """
    out: dict[str, tuple[np.ndarray, str]] = {}
    dropped: dict[str, str] = {}
    for c in [c for c in items.columns if c.startswith(EXTRA)]:
        name = c[len(EXTRA):]
        clean = name.strip(" \t").lower()
        why = header_problem(name)
        if why is None and (clean in _OWN_COLUMNS or clean.startswith(_OWN_PREFIXES)):
            why = "the prediction writes a column of that name"
        if why:
            dropped[name] = why
            continue
        values = _carried_values(items, name, ok)
        given = ((extra_types or {}).get(name) or "").strip().lower()
        numeric = _numeric(values)
        if given in ("[f]", "[n]") and not numeric and any(str(v).strip() for v in values):
            log.warning("column %s: typed %s in the input but not every value is a number: written as text [t]",
                        name, given)
        out[name] = (values, "[f]" if numeric and given != "[t]" else "[t]")
    for prefix in ("sample", "acq", "process"):
        group = [n for n in out if n.strip(" \t").lower().startswith(prefix + "_")]
        if group and f"{prefix}_id" not in {n.strip(" \t").lower() for n in group}:
            for n in group:
                dropped[n] = f"EcoTaxa requires a {prefix}_id column next to {prefix}_ columns, and the input has none"
                del out[n]
    counts = {("object", "n"): own_numbers}
    for n in list(out):
        table = custom_table(n)
        if table is None:
            continue
        kind = "n" if table == "object" and out[n][1] == "[f]" else "t"
        counts[(table, kind)] = counts.get((table, kind), 0) + 1
        if counts[(table, kind)] > FREE_COLUMNS[(table, kind)]:
            dropped[n] = f"EcoTaxa stores at most {FREE_COLUMNS[(table, kind)]} custom {table} " \
                         f"{'number' if kind == 'n' else 'text'} columns per project"
            del out[n]
    for n, why in dropped.items():
        log.warning("input column %s is not carried over to the import table: %s", n, why)
    return out, dropped


def build_outputs(items: pd.DataFrame, probs: np.ndarray, errors, record: Record, threshold: float,
                  statuses_to_keep, extra_types: dict[str, str] | None = None, carried=None):
    """``(import table, its type codes, top-3 table, counts)`` from the predictions of ``items``.

    The input's other columns (``extra:<name>`` in ``items``) follow the annotation columns, those
    EcoTaxa would refuse left out (:func:`_carried_columns`; ``extra_types`` are their input type
    codes). Objects with a status of ``statuses_to_keep`` keep it with their category, if they have one.

    ``items`` are the rows with outcome ``todo`` (in order), ``probs`` / ``errors`` their predictions.
    ``carried``: ``({column: type code}, {column: why not carried})`` decided beforehand over all the
    objects (:func:`write_outputs` builds the outputs block by block), else decided on ``items``.
    """
    items = items.reset_index(drop=True)
    keep = set(statuses_to_keep)
    err = np.array([e is not None for e in errors], dtype=bool)
    n_cls = len(record.classes)
    safe = np.nan_to_num(probs, nan=-1.0)
    top = np.argsort(-safe, axis=1, kind="stable")[:, :min(TOP_K, n_cls)]
    best = top[:, 0] if len(items) else np.zeros(0, dtype=int)
    score = np.where(err, np.nan, safe[np.arange(len(items)), best]) if len(items) else np.zeros(0)
    # a kept status needs its category: EcoTaxa refuses a status without one
    kept = items["status"].isin(keep).to_numpy() & (items["category"].str.strip() != "").to_numpy() & ~err
    above = (score >= threshold) & ~err
    names = np.asarray(record.ecotaxa_names, dtype=object)

    category = np.where(kept, items["category"].to_numpy(), np.where(above, names[best] if len(items) else [], ""))
    status = np.where(kept, items["status"].to_numpy(), np.where(above, "predicted", ""))
    ok = ~err
    table = pd.DataFrame({
        "img_file_name": items["img_file_name"].to_numpy()[ok],
        "object_id": items["object_id"].to_numpy()[ok],
        "object_annotation_category": category[ok],
        "object_annotation_status": status[ok],
        "object_score": [_fmt(v) for v in score[ok]],
    })
    types = {"img_file_name": "[t]", "object_id": "[t]", "object_annotation_category": "[t]",
             "object_annotation_status": "[t]", "object_score": "[f]"}
    if carried is None:
        columns, dropped = _carried_columns(items, ok, extra_types, own_numbers=1 + n_cls)
    else:
        codes, dropped = carried
        columns = {name: (_carried_values(items, name, ok), code) for name, code in codes.items()}
    for name, (values, code) in columns.items():
        table[name] = values
        types[name] = code
    for k, c in enumerate(record.classes):
        col = f"object_prob_{class_slug(c)}"
        table[col] = [_fmt(v) for v in probs[ok, k]]
        types[col] = "[f]"

    top3 = pd.DataFrame({"object_id": items["object_id"].to_numpy()[ok]})
    for j in range(top.shape[1]):
        top3[f"top{j + 1}_class"] = np.asarray(record.classes, dtype=object)[top[ok, j]] if ok.any() else []
        top3[f"top{j + 1}_prob"] = [_fmt(v) for v in probs[np.flatnonzero(ok), top[ok, j]]] if ok.any() else []

    # Accuracy on objects that already carry a validated label of one of the classes.
    matcher = ClassMatcher(record.classes)
    labelled = (items["status"] == "validated").to_numpy() & ok & (items["category"] != "").to_numpy()
    truth = [matcher.match(c, h) for c, h in zip(items["category"][labelled], items["hierarchy"][labelled])]
    idx = {c: k for k, c in enumerate(record.classes)}
    known = [(t, b) for t, b in zip(truth, best[labelled]) if isinstance(t, str) and t in idx]
    accuracy = {
        "validated_objects": int(labelled.sum()),
        "validated_in_classes": len(known),
        "correct": int(sum(idx[t] == b for t, b in known)),
        "accuracy": (sum(idx[t] == b for t, b in known) / len(known)) if known else None,
    }
    counts = {
        "predicted": int((ok & ~kept & above).sum()),
        "below_threshold": int((ok & ~kept & ~above).sum()),
        "kept": int(kept.sum()),
        "unreadable": int(err.sum()),
    }
    return table, types, top3, {"counts": counts, "validated": accuracy, "dropped_columns": dropped,
                                "unreadable_objects": items["object_id"][err].tolist()[:1000]}


_PNG_MODES = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")


def _as_png(data: bytes, name: str) -> bytes | None:
    """None when EcoTaxa reads the image as it is (PNG, JPEG, GIF); else the image converted to PNG."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format in SUPPORTED_IMAGE_FORMATS:
                return None
            im.load()
            if im.mode not in _PNG_MODES:
                im = im.convert("I" if im.mode.startswith("I;16") or im.mode in ("F", "I") else
                                "RGBA" if "A" in im.mode else "RGB")
            buf = io.BytesIO()
            im.save(buf, "PNG")
            return buf.getvalue()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(name, f"cannot convert the image to PNG for EcoTaxa ({e})") from None


#: Objects per block of the output tables: the tables of one block are built, written and let go.
BLOCK = 8192


def write_outputs(todo: pd.DataFrame, probs: np.ndarray, errors, record: Record, threshold: float,
                  statuses_to_keep, extra_types, out_table, out_zip, out_top3, read_bytes,
                  block: int = BLOCK) -> dict:
    """Write the import table, the zip bundle (the table at its root and its images) and the top-3 CSV.

    Block by block, so that memory does not grow with the tables (only the object list and the
    probabilities, a few hundred bytes per object, are held). Images keep the names the table gives
    them, except those EcoTaxa cannot read (it takes PNG, JPEG and GIF; not BMP or TIFF): they are
    converted to PNG and named ``<name>.png``, in the zip and in both tables. Returns the merged
    counts of :func:`build_outputs`.
    """
    ok_all = np.array([e is None for e in errors], dtype=bool)
    codes, dropped = _carried_columns(todo, ok_all, extra_types, own_numbers=1 + len(record.classes))
    carried = ({name: code for name, (_, code) in codes.items()}, dropped)
    del codes
    counts: Counter = Counter()
    validated = Counter()
    unreadable: list[str] = []
    taken: set[str] = set(todo["img_file_name"])
    written: dict[str, str] = {}  # image name in the input -> name in the bundle
    stamp = (1980, 1, 1, 0, 0, 0)
    table_name = Path(out_table).name
    def add_images(z, names):
        for name in names:
            if name in written:
                continue
            data = read_bytes(name)
            png = _as_png(data, name)
            new = name
            if png is not None:
                new, k = f"{name}.png", 1
                while new in taken:
                    new, k = f"{name}.{k}.png", k + 1
                taken.add(new)
                data = png
            written[name] = new
            z.writestr(zipfile.ZipInfo(posixpath.normpath(new), date_time=stamp), data, compress_type=zipfile.ZIP_STORED)

    with atomic_path(out_table) as tmp_table, atomic_path(out_zip, suffix=".zip") as tmp_zip, \
            atomic_path(out_top3) as tmp_top3, zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with open(tmp_table, "w", encoding="utf-8", newline="") as ft, open(tmp_top3, "w", newline="") as f3:
            # The BOM matters: EcoTaxa reads a table that does not start with one as Latin-1.
            ft.write("\ufeff")
            w = csv.writer(ft, delimiter="\t", quotechar='"', lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
            for start in range(0, max(len(todo), 1), block):
                end = start + block
                table, types, top3, result = build_outputs(todo.iloc[start:end], probs[start:end], errors[start:end],
                                                           record, threshold, statuses_to_keep, extra_types,
                                                           carried=carried)
                names = table["img_file_name"].tolist()
                add_images(z, names)
                table["img_file_name"] = [written[n] for n in names]
                if start == 0:
                    w.writerow(list(table.columns))
                    w.writerow([types[c] for c in table.columns])
                for row in table.itertuples(index=False):
                    w.writerow(["" if (isinstance(v, float) and np.isnan(v)) else v for v in row])
                top3.to_csv(f3, header=start == 0, index=False, lineterminator="\n")
                counts.update(result["counts"])
                validated.update({k: v for k, v in result["validated"].items() if k != "accuracy"})
                unreadable += result["unreadable_objects"][:1000 - len(unreadable)]
                del table, top3
        info = zipfile.ZipInfo(table_name, date_time=stamp)
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(tmp_table, "rb") as src, z.open(info, "w") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    renamed = sum(n != o for o, n in written.items())
    if renamed:
        log.info("%d image(s) converted to PNG for EcoTaxa (not PNG, JPEG or GIF)", renamed)
    n_val = validated["validated_in_classes"]
    accuracy = {"validated_objects": validated["validated_objects"], "validated_in_classes": n_val,
                "correct": validated["correct"], "accuracy": validated["correct"] / n_val if n_val else None}
    return {"counts": {k: int(counts[k]) for k in ("predicted", "below_threshold", "kept", "unreadable")},
            "validated": accuracy, "dropped_columns": dropped, "unreadable_objects": unreadable}


def predict_job(input_path, model_path, record_path, name: str, out_table, out_zip, out_top3, out_summary,
                threshold: float = 0.5, statuses_to_keep=("validated",), batch_size: int = 64,
                threads: int = 2, chunk: int = 1024, model=None) -> dict:
    """Classify the images of ``input_path`` with ``model_path``; write the outputs (module docstring)."""
    record = load_record(record_path)
    if record.model_sha1 and model is None and sha1_file(model_path) != record.model_sha1:
        raise InputError(record_path, f"was recorded for another version of {model_path}",
                         hint="make it again: snakemake --forcerun record_normalisation")
    if model is None:
        from .evaluate import load_classifier

        model = load_classifier(model_path)
    src = Input(input_path, img_rank=record.img_rank)
    try:
        items = src.items
        todo = items[items["outcome"] == "todo"].reset_index(drop=True)
        log.info("%s: %d rows, %d objects to classify with %s (%d px, %d classes)", input_path, len(items),
                 len(todo), model_path, record.params.size, len(record.classes))
        # Two chunks of normalised images are in memory at a time (one predicted, one decoded): bound them.
        chunk = max(1, min(chunk, max(batch_size, CHUNK_BYTES // (record.params.size ** 2))))
        progress = Progress(len(todo), f"predict {name}", log)
        probs, errors = predict_images(model, todo["img_file_name"], src.read, record.params, len(record.classes),
                                       batch_size=batch_size, chunk=chunk, threads=threads, progress=progress)
        result = write_outputs(todo, probs, errors, record, threshold, statuses_to_keep, src.extra_types,
                               out_table, out_zip, out_top3, src.read, block=BLOCK)
        del probs, errors
    finally:
        src.close()
    _check_bundle(out_zip, todo, (out_table, out_zip, out_top3), threads)
    dropped = items.loc[items["outcome"] != "todo", "outcome"].value_counts().to_dict()
    counts = {"rows": len(items), **result["counts"],
              **{k: int(dropped.get(k, 0)) for k in DROPPED_OUTCOMES}}
    summary = {"name": name, "input": str(input_path), "model": str(model_path), "threshold": threshold,
               "statuses_to_keep": list(statuses_to_keep), "classes": record.classes, "counts": counts,
               "validated": result["validated"], "columns_not_carried": result["dropped_columns"],
               "unreadable_objects": result["unreadable_objects"]}
    write_json(out_summary, summary)
    acc = result["validated"]["accuracy"]
    log.info("%s: %d predicted, %d below threshold %.2f (left unclassified), %d kept (%s), %d unreadable, "
             "%d missing image, %d missing object_id, %d other image rank, %d duplicate object_id%s", name,
             counts["predicted"], counts["below_threshold"], threshold, counts["kept"],
             "/".join(statuses_to_keep) or "-", counts["unreadable"], counts["missing_image"],
             counts["missing_object_id"], counts["other_image_rank"], counts["duplicate_object_id"],
             f"; accuracy on {result['validated']['validated_in_classes']} validated objects: {acc:.3f}"
             if acc is not None else "")
    return summary


#: Outcomes of input rows that are not classified (besides unreadable images), counted in the summary.
DROPPED_OUTCOMES = ("missing_image", "missing_object_id", "other_image_rank", "duplicate_object_id")


def _check_bundle(out_zip, items: pd.DataFrame, outputs, threads: int) -> None:
    """Check the bundle against EcoTaxa's import rules; on a problem remove ``outputs`` and raise.

    A bundle without any object (every image unreadable, say) is not an error here: the summary
    says why; it is only not worth uploading.
    """
    problems = check_import_table(out_zip, threads=threads)
    if any(p.rule == "empty" for p in problems):
        log.warning("%s holds no object: nothing to upload to EcoTaxa", out_zip)
    problems = [p for p in problems if p.rule != "empty"]
    if not problems:
        log.info("%s passes EcoTaxa's import checks", out_zip)
        return
    for p in problems:
        log.error("EcoTaxa would refuse the import: %s", p)
    for path in outputs:
        Path(path).unlink(missing_ok=True)
    p = problems[0]
    origin = ""
    if p.object_id:
        hit = items.loc[items["object_id"] == p.object_id]
        if len(hit):
            src, line = hit["source"].iloc[0], int(hit["line"].iloc[0])
            origin = f" (object {p.object_id!r}, from {src}" + (f", row {line})" if line else ")")
    more = f"; {len(problems) - 1} more problem(s) in the log" if len(problems) > 1 else ""
    raise InputError(p.file, "EcoTaxa would refuse this import table: " + (f"{p.field}: " if p.field else "")
                     + p.message + origin + more, row=p.row,
                     hint="correct the value in the input table (or remove the column there) and run the "
                          "prediction again")
