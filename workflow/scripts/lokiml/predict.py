"""Prediction: classify new objects with a trained experiment of any kind and write an EcoTaxa import bundle.

Two steps:

* :func:`record_normalisation` (rule ``record_normalisation``) writes
  ``results/experiments/{exp}/normalisation.json`` next to the model: the kind
  of experiment (cnn, descriptors, deep_features), how the training images were
  normalised (image size, threshold, polarity, bottom_crop, max_pixels,
  img_rank; a deep_features experiment: its CNN's), the descriptor columns a
  descriptors or deep_features experiment reads, the classes in label order
  with the EcoTaxa name each one is written back as, and the SHA-1 of the model
  file(s) it belongs to. Prediction reads only that file and the model, never
  the current config's normalisation keys, so a model stays usable after the
  config changed.
* :func:`predict_job` (rule ``predict_images``) reads an EcoTaxa export /
  import table (.tsv/.txt, folder, .zip) or a plain folder of images, has the
  experiment's predictor (:mod:`lokiml.predictors`: images normalised exactly as
  training did, descriptor columns of the table, or both) classify them a chunk
  at a time while the next chunk is read by a thread pool (memory is bounded by
  the chunk size, not the number of objects), decides for each object whether
  its prediction is trusted or to check (:mod:`lokiml.decisions`, the
  experiment's ``decisions.json``), sorts the objects for the validation
  session (the most worth a look first), and writes:

  - ``ecotaxa_{name}.tsv``: an EcoTaxa import table (header, ``[t]``/``[f]``
    type row): img_file_name, object_id, object_annotation_category,
    object_annotation_status (``predicted``; objects whose status is in
    ``statuses_to_keep`` keep their category and status; objects below the
    threshold are left without category and status), object_score (the top
    probability), the decision columns (:data:`DECISION_COLUMNS`), the input's
    other columns and one ``object_prob_<class>`` column per class;
  - ``ecotaxa_{name}.zip``: that table and its images, ready to upload;
  - ``trusted.tsv`` and ``to_check.tsv``: the objects of each decision, in review order;
  - ``top3.csv``: object_id with the three most probable classes;
  - ``summary.json``: every object accounted for (predicted, below threshold,
    kept, unreadable, missing image, missing object_id, other image rank,
    duplicate, trusted, to check), the thresholds used, the input columns not
    carried over and why, and the accuracy on objects that already carry a
    validated label.

The table is written so that EcoTaxa accepts it: UTF-8 with a BOM (without one,
EcoTaxa reads Latin-1), input columns EcoTaxa would refuse left out (named in the
summary), images EcoTaxa cannot read (not PNG, JPEG or GIF) converted to PNG in the
bundle. The bundle is then checked against EcoTaxa's import rules
(:mod:`lokiml.ecotaxa_import`); a remaining problem (a bad date in the input, say)
stops the job with an :class:`InputError` naming the row.
"""

from __future__ import annotations

import contextlib
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .config import class_slug
from .ecotaxa import FALLBACK_PATTERNS, TABLE_PATTERNS, _is_junk, _matches, open_export
from .ecotaxa_import import (FREE_COLUMNS, SUPPORTED_IMAGE_FORMATS, check_import_table, custom_table, header_problem,
                             is_ecotaxa_float)
from .errors import InputError
from .io import atomic_path, write_json
from .logs import Progress
from .objects import ClassMatcher
from .predictors import CnnPredictor, run_predictor
from .store import NormParams

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif")
KINDS = ("cnn", "descriptors", "deep_features")
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


def record_normalisation(model_path, classes_path, objects_path, out, experiment: str, image_size: int | None,
                         threshold: int, polarity: str, bottom_crop: float, max_pixels: int,
                         img_rank: int = 0, canvas: int | None = None, kind: str = "cnn", columns_path=None,
                         cnn_model_path=None) -> dict:
    """Write the normalisation record of a trained experiment (see the module docstring).

    ``kind``: ``cnn`` (``model_path`` is its best.keras), ``descriptors`` (its model.pkl; no image is
    classified, ``image_size`` is None) or ``deep_features`` (its model.pkl, with the CNN's best.keras in
    ``cnn_model_path`` and the CNN's image size). ``columns_path``: the experiment's columns.tsv, whose
    ``used`` columns the classifier reads from the input table.
    """
    from .predictors import used_columns

    classes = [c for c in Path(classes_path).read_text(encoding="utf-8").splitlines() if c]
    objects = None
    if objects_path:
        objects = pd.read_csv(objects_path, sep="\t", dtype=str, keep_default_na=False)
    names = ecotaxa_names(classes, objects)
    rec = {
        "version": RECORD_VERSION,
        "kind": kind,
        "experiment": experiment,
        "model": os.path.basename(str(model_path)),
        "model_sha1": sha1_file(model_path),
        "image_size": None if image_size is None else int(image_size),
        "threshold": int(threshold),
        "polarity": str(polarity),
        "bottom_crop": float(bottom_crop),
        "max_pixels": int(max_pixels),
        "img_rank": int(img_rank),
        "canvas": int(canvas) if canvas else None,
        "classes": [{"name": c, "ecotaxa_name": names[c]} for c in classes],
    }
    if kind != "cnn":
        rec["columns"] = used_columns(columns_path) if columns_path else []
    if kind == "deep_features":
        if not cnn_model_path:
            raise InputError(out, "a deep_features experiment's record needs its CNN's model (cnn_model_path)")
        rec["cnn_model"] = os.path.basename(str(cnn_model_path))
        rec["cnn_model_sha1"] = sha1_file(cnn_model_path)
    write_json(out, rec)
    log.info("normalisation of %s (%s) recorded: %s px, threshold %d, polarity %s, bottom_crop %g, %d classes%s",
             experiment, kind, rec["image_size"], rec["threshold"], rec["polarity"], rec["bottom_crop"],
             len(classes), f", {len(rec['columns'])} descriptor columns" if "columns" in rec else "")
    return rec


@dataclass(frozen=True)
class Record:
    params: NormParams | None  # None: a descriptors experiment reads no image
    classes: list[str]
    ecotaxa_names: list[str]
    img_rank: int
    model_sha1: str | None
    kind: str = "cnn"
    columns: tuple = ()
    cnn_model_sha1: str | None = None
    max_pixels: int = 100_000_000
    morpho: object = None  # lokiml.morphometrics.MorphoParams: how morpho_* columns are measured on the images


def load_record(path) -> Record:
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(path, f"cannot read the normalisation record ({e})",
                         hint="run the workflow's rule record_normalisation for this experiment") from None
    kind = str(d.get("kind", "cnn"))
    if kind not in KINDS:
        raise InputError(path, f"normalisation record of an unknown kind of experiment {kind!r} (known: "
                               f"{', '.join(KINDS)})", hint="make it again (rule record_normalisation)")
    needed = ("threshold", "polarity", "bottom_crop", "max_pixels", "classes")
    needed += () if kind == "descriptors" else ("image_size",)
    needed += ("columns",) if kind != "cnn" else ()
    missing = [k for k in needed if k not in d or (k == "image_size" and d[k] is None)]
    if missing:
        raise InputError(path, f"normalisation record lacks {missing}", hint="make it again (rule record_normalisation)")
    params = None
    if kind != "descriptors":
        params = NormParams(size=int(d["image_size"]), threshold=int(d["threshold"]), polarity=str(d["polarity"]),
                            bottom_crop=float(d["bottom_crop"]), max_pixels=int(d["max_pixels"]),
                            canvas=int(d["canvas"]) if d.get("canvas") else None)
    classes = [c["name"] for c in d["classes"]]
    names = [c.get("ecotaxa_name") or c["name"] for c in d["classes"]]
    morpho = None
    if kind != "cnn":
        from .morphometrics import MorphoParams

        morpho = MorphoParams(threshold=int(d["threshold"]), polarity=str(d["polarity"]),
                              bottom_crop=float(d["bottom_crop"]), max_pixels=int(d["max_pixels"]))
    return Record(params, classes, names, int(d.get("img_rank", 0)), d.get("model_sha1"), kind,
                  tuple(d.get("columns") or ()), d.get("cnn_model_sha1"), int(d["max_pixels"]), morpho)


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
    """Class probabilities of the images ``refs`` with a CNN: ``(probs float32 (n, C), errors list[str|None])``.

    Images are read and normalised ``chunk`` at a time by a pool of ``threads``
    threads while the model predicts the previous chunk. Rows of unreadable
    images are NaN and their error is given. (Every kind of experiment:
    :func:`lokiml.predictors.run_predictor`.)
    """
    items = pd.DataFrame({"img_file_name": list(refs)})
    return run_predictor(CnnPredictor(model, params, n_classes, batch_size), items, read_bytes, chunk=chunk,
                         threads=threads, progress=progress)


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


def _carried_columns(items: pd.DataFrame, ok: np.ndarray, extra_types: dict[str, str] | None, own_numbers: int,
                     own_texts: int = 0):
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
    counts = {("object", "n"): own_numbers, ("object", "t"): own_texts}
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


#: The decision columns of the import table (lokiml.decisions): name -> EcoTaxa type code.
DECISION_COLUMNS = {"object_lokiml_decision": "[t]", "object_lokiml_node": "[t]", "object_lokiml_p_correct": "[f]",
                    "object_lokiml_review_rank": "[f]"}
#: Columns of trusted.tsv and to_check.tsv.
LIST_COLUMNS = ["review_rank", "object_id", "img_file_name", "object_annotation_category", "class_name",
                "probability", "threshold", "p_correct", "lineage_node"]


def kept_mask(items: pd.DataFrame, errors, statuses_to_keep) -> np.ndarray:
    """Objects that keep the status (and category) they carry; a kept status needs its category (EcoTaxa
    refuses a status without one), and an unreadable object keeps nothing (it is left out)."""
    err = np.array([e is not None for e in errors], dtype=bool)
    return items["status"].isin(set(statuses_to_keep)).to_numpy() & \
        (items["category"].str.strip() != "").to_numpy() & ~err


def decide(todo: pd.DataFrame, probs: np.ndarray, errors, rule, statuses_to_keep) -> pd.DataFrame:
    """Per object (row for row with ``todo``): ``decision`` (trusted, to_check, kept; empty when unreadable),
    ``class_name``, ``probability``, ``threshold`` of its class, ``p_correct``, ``lineage_node``, and
    ``review_rank`` (1 = look first; the objects to check, most likely wrong first, then the trusted ones;
    kept and unreadable objects are not ranked), by :class:`lokiml.decisions.DecisionRule` ``rule``."""
    n = len(todo)
    ok = np.array([e is None for e in errors], dtype=bool)
    kept = kept_mask(todo, errors, statuses_to_keep)
    ranked = ok & ~kept
    idx = np.flatnonzero(ranked)
    d = rule.apply(probs[idx], todo["object_id"].to_numpy()[idx])
    out = pd.DataFrame({"decision": np.where(kept, "kept", "").astype(object),
                        "class_name": np.full(n, "", dtype=object), "probability": np.full(n, np.nan),
                        "threshold": np.full(n, np.nan), "p_correct": np.full(n, np.nan),
                        "lineage_node": np.full(n, "", dtype=object), "review_rank": np.zeros(n, dtype=np.int64)})
    if len(idx):
        thr = np.array([np.nan if t is None else t for t in rule.thresholds], dtype=float)
        out.loc[idx, "decision"] = np.where(d["trusted"], "trusted", "to_check")
        out.loc[idx, "class_name"] = np.asarray(rule.classes, dtype=object)[d["pred"]]
        out.loc[idx, "probability"] = d["score"]
        out.loc[idx, "threshold"] = thr[d["pred"]]
        out.loc[idx, "p_correct"] = d["p_correct"]
        out.loc[idx, "lineage_node"] = d["node"]
        out.loc[idx, "review_rank"] = d["review_rank"]
    return out


def review_permutation(decided: pd.DataFrame) -> np.ndarray:
    """The order of the outputs: ranked objects by rank, then the kept ones, then the unreadable (input order)."""
    rank = decided["review_rank"].to_numpy()
    group = np.where(rank > 0, 0, np.where(decided["decision"].to_numpy() == "kept", 1, 2))
    return np.lexsort((np.arange(len(decided)), rank, group))


def build_outputs(items: pd.DataFrame, probs: np.ndarray, errors, record: Record, threshold: float,
                  statuses_to_keep, extra_types: dict[str, str] | None = None, carried=None,
                  decided: pd.DataFrame | None = None):
    """``(import table, its type codes, top-3 table, counts)`` from the predictions of ``items``.

    ``decided``: the decisions of :func:`decide`, row for row with ``items``; they are written to the
    :data:`DECISION_COLUMNS` (None: no decision columns).

    The input's other columns (``extra:<name>`` in ``items``) follow the annotation columns, those
    EcoTaxa would refuse left out (:func:`_carried_columns`; ``extra_types`` are their input type
    codes). Objects with a status of ``statuses_to_keep`` keep it with their category, if they have one.

    ``items`` are the rows with outcome ``todo`` (in order), ``probs`` / ``errors`` their predictions.
    ``carried``: ``({column: type code}, {column: why not carried})`` decided beforehand over all the
    objects (:func:`write_outputs` builds the outputs block by block), else decided on ``items``.
    """
    items = items.reset_index(drop=True)
    err = np.array([e is not None for e in errors], dtype=bool)
    n_cls = len(record.classes)
    safe = np.nan_to_num(probs, nan=-1.0)
    top = np.argsort(-safe, axis=1, kind="stable")[:, :min(TOP_K, n_cls)]
    best = top[:, 0] if len(items) else np.zeros(0, dtype=int)
    score = np.where(err, np.nan, safe[np.arange(len(items)), best]) if len(items) else np.zeros(0)
    kept = kept_mask(items, errors, statuses_to_keep)
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
    if decided is not None:
        decided = decided.reset_index(drop=True)
        table["object_lokiml_decision"] = decided["decision"].to_numpy()[ok]
        table["object_lokiml_node"] = decided["lineage_node"].to_numpy()[ok]
        table["object_lokiml_p_correct"] = [_fmt(v) for v in decided["p_correct"].to_numpy()[ok]]
        table["object_lokiml_review_rank"] = [str(int(v)) if v > 0 else "" for v in
                                              decided["review_rank"].to_numpy()[ok]]
        types.update(DECISION_COLUMNS)
    own = _own_columns(n_cls, decided is not None)
    if carried is None:
        columns, dropped = _carried_columns(items, ok, extra_types, *own)
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
    if decided is not None:
        counts["trusted"] = int((decided["decision"] == "trusted").sum())
        counts["to_check"] = int((decided["decision"] == "to_check").sum())
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


def _own_columns(n_classes: int, decisions: bool) -> tuple[int, int]:
    """(number, text) custom object columns the prediction writes itself: the score, the probabilities and
    the decision columns; EcoTaxa's room for custom columns is shared with the carried input columns."""
    n = 1 + n_classes + (sum(c == "[f]" for c in DECISION_COLUMNS.values()) if decisions else 0)
    t = sum(c == "[t]" for c in DECISION_COLUMNS.values()) if decisions else 0
    return n, t


def write_outputs(todo: pd.DataFrame, probs: np.ndarray, errors, record: Record, threshold: float,
                  statuses_to_keep, extra_types, out_table, out_zip, out_top3, read_bytes,
                  block: int = BLOCK, decided: pd.DataFrame | None = None, out_trusted=None,
                  out_to_check=None) -> dict:
    """Write the import table, the zip bundle (the table at its root and its images) and the top-3 CSV;
    with ``decided`` (:func:`decide`) the decision columns, and the lists of the trusted objects and of
    those to check (``out_trusted``, ``out_to_check``; :data:`LIST_COLUMNS`) in the order of the rows.

    Block by block, so that memory does not grow with the tables (only the object list and the
    probabilities, a few hundred bytes per object, are held). Images keep the names the table gives
    them, except those EcoTaxa cannot read (it takes PNG, JPEG and GIF; not BMP or TIFF): they are
    converted to PNG and named ``<name>.png``, in the zip and in both tables. Returns the merged
    counts of :func:`build_outputs`.
    """
    ok_all = np.array([e is None for e in errors], dtype=bool)
    codes, dropped = _carried_columns(todo, ok_all, extra_types, *_own_columns(len(record.classes),
                                                                                decided is not None))
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

    lists = contextlib.ExitStack()
    list_files = {}
    for key, path in (("trusted", out_trusted), ("to_check", out_to_check)):
        if path is not None and decided is not None:
            list_files[key] = lists.enter_context(open(lists.enter_context(atomic_path(path)), "w",
                                                       encoding="utf-8", newline=""))
    with lists, atomic_path(out_table) as tmp_table, atomic_path(out_zip, suffix=".zip") as tmp_zip, \
            atomic_path(out_top3) as tmp_top3, zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with open(tmp_table, "w", encoding="utf-8", newline="") as ft, open(tmp_top3, "w", newline="") as f3:
            # The BOM matters: EcoTaxa reads a table that does not start with one as Latin-1.
            ft.write("\ufeff")
            w = csv.writer(ft, delimiter="\t", quotechar='"', lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
            for start in range(0, max(len(todo), 1), block):
                end = start + block
                part = decided.iloc[start:end] if decided is not None else None
                table, types, top3, result = build_outputs(todo.iloc[start:end], probs[start:end], errors[start:end],
                                                           record, threshold, statuses_to_keep, extra_types,
                                                           carried=carried, decided=part)
                names = table["img_file_name"].tolist()
                add_images(z, names)
                table["img_file_name"] = [written[n] for n in names]
                if list_files:
                    _write_lists(list_files, table, part, start == 0)
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
    keys = ("predicted", "below_threshold", "kept", "unreadable") + (("trusted", "to_check") if decided is not None
                                                                      else ())
    return {"counts": {k: int(counts[k]) for k in keys},
            "validated": accuracy, "dropped_columns": dropped, "unreadable_objects": unreadable}


def _write_lists(files: dict, table: pd.DataFrame, decided: pd.DataFrame, header: bool) -> None:
    """Append one block's trusted objects and objects to check to their lists (tables of the same rows)."""
    decided = decided.reset_index(drop=True)
    ok = decided["decision"].to_numpy() != ""  # the table holds the readable rows only, in the same order
    d = decided[ok].reset_index(drop=True)
    rows = pd.DataFrame({
        "review_rank": d["review_rank"].to_numpy(), "object_id": table["object_id"].to_numpy(),
        "img_file_name": table["img_file_name"].to_numpy(),
        "object_annotation_category": table["object_annotation_category"].to_numpy(),
        "class_name": d["class_name"].to_numpy(), "probability": d["probability"].to_numpy(),
        "threshold": d["threshold"].to_numpy(), "p_correct": d["p_correct"].to_numpy(),
        "lineage_node": d["lineage_node"].to_numpy()}, columns=LIST_COLUMNS)
    for key, fh in files.items():
        rows[d["decision"].to_numpy() == key].to_csv(fh, sep="\t", header=header, index=False, lineterminator="\n",
                                                     float_format="%.6f")


def load_predictor(record: Record, record_path, model_path, cnn_model_path=None, model=None, cnn_model=None,
                   batch_size: int = 64):
    """The predictor of the experiment's kind (:mod:`lokiml.predictors`), its model files checked against the
    SHA-1s of the record. ``model`` / ``cnn_model`` may be given instead of loading the files (tests)."""
    from .predictors import DeepFeaturesPredictor, DescriptorPredictor

    def check(path, sha1, what):
        if sha1 and path is not None and Path(path).exists() and sha1_file(path) != sha1:
            raise InputError(record_path, f"was recorded for another version of {what} {path}",
                             hint="make it again: snakemake --forcerun record_normalisation")

    n_cls = len(record.classes)
    if model is None:
        check(model_path, record.model_sha1, "the model")
    if record.kind == "cnn":
        if model is None:
            from .evaluate import load_classifier

            model = load_classifier(model_path)
        return CnnPredictor(model, record.params, n_cls, batch_size)
    if model is None:
        from .descriptors import load_model

        model = load_model(model_path)
    if record.kind == "descriptors":
        return DescriptorPredictor(model, record.columns, n_cls, record.max_pixels, morpho=record.morpho)
    if cnn_model is None:
        if cnn_model_path is None:
            raise InputError(record_path, "a deep_features experiment classifies with its CNN, and no CNN model "
                                          "was given", hint="give cnn_model_path (the CNN's best.keras)")
        check(cnn_model_path, record.cnn_model_sha1, "the CNN")
        from .evaluate import load_classifier

        cnn_model = load_classifier(cnn_model_path)
    return DeepFeaturesPredictor(cnn_model, model, record.columns, record.params, n_cls, batch_size,
                                 morpho=record.morpho)


def predict_job(input_path, model_path, record_path, name: str, out_table, out_zip, out_top3, out_summary,
                threshold: float = 0.0, statuses_to_keep=("validated",), batch_size: int = 64,
                threads: int = 2, chunk: int = 1024, model=None, decisions_path=None, out_trusted=None,
                out_to_check=None, cnn_model_path=None, cnn_model=None) -> dict:
    """Classify the objects of ``input_path`` with the experiment of ``model_path``; write the outputs (module
    docstring). ``decisions_path``: the experiment's decisions.json (rule evaluate_decisions), whose per-class
    thresholds decide trusted / to check (None: nothing is trusted, the order is by probability alone)."""
    from .decisions import DecisionRule

    record = load_record(record_path)
    predictor = load_predictor(record, record_path, model_path, cnn_model_path, model, cnn_model, batch_size)
    if decisions_path:
        rule = DecisionRule.load(decisions_path)
        if rule.classes != record.classes:
            raise InputError(decisions_path, f"was made for the classes {rule.classes}, the model has "
                                             f"{record.classes}",
                             hint="make it again: snakemake --forcerun evaluate_decisions")
    else:
        rule = DecisionRule(record.classes, [None] * len(record.classes), [float("nan")] * len(record.classes))
    src = Input(input_path, img_rank=record.img_rank)
    try:
        items = src.items
        todo = items[items["outcome"] == "todo"].reset_index(drop=True)
        predictor.check_input(todo, input_path, src.kind)
        size = record.params.size if record.params is not None else None
        log.info("%s: %d rows, %d objects to classify with %s (%s experiment%s, %d classes)", input_path,
                 len(items), len(todo), model_path, record.kind, f", {size} px" if size else "", len(record.classes))
        if size:  # Two chunks of normalised images are in memory at a time (one predicted, one decoded): bound them.
            chunk = max(1, min(chunk, max(batch_size, CHUNK_BYTES // (size ** 2))))
        progress = Progress(len(todo), f"predict {name}", log)
        probs, errors = run_predictor(predictor, todo, src.read, chunk=chunk, threads=threads, progress=progress)
        # decisions, and the order of the outputs: the objects most worth a look first
        decided = decide(todo, probs, errors, rule, statuses_to_keep)
        order = review_permutation(decided)
        todo, probs = todo.iloc[order].reset_index(drop=True), probs[order]
        errors = [errors[i] for i in order]
        decided = decided.iloc[order].reset_index(drop=True)
        result = write_outputs(todo, probs, errors, record, threshold, statuses_to_keep, src.extra_types,
                               out_table, out_zip, out_top3, src.read, block=BLOCK, decided=decided,
                               out_trusted=out_trusted, out_to_check=out_to_check)
        del probs, errors
    finally:
        src.close()
    _check_bundle(out_zip, todo, tuple(p for p in (out_table, out_zip, out_top3, out_trusted, out_to_check) if p),
                  threads)
    dropped = items.loc[items["outcome"] != "todo", "outcome"].value_counts().to_dict()
    counts = {"rows": len(items), **result["counts"],
              **{k: int(dropped.get(k, 0)) for k in DROPPED_OUTCOMES}}
    per_class = {c: {"predicted": int(((decided["class_name"] == c) & (decided["decision"] != "kept")).sum()),
                     "trusted": int(((decided["class_name"] == c) & (decided["decision"] == "trusted")).sum())}
                 for c in record.classes}
    summary = {"name": name, "input": str(input_path), "model": str(model_path), "kind": record.kind,
               "threshold": threshold, "statuses_to_keep": list(statuses_to_keep), "classes": record.classes,
               "counts": counts, "validated": result["validated"],
               "decisions": {"source": str(decisions_path) if decisions_path else None,
                             "thresholds": dict(zip(record.classes, rule.thresholds)),
                             "target_precision": {c: (t if np.isfinite(t) else None)
                                                  for c, t in zip(record.classes, rule.targets)},
                             "per_class": per_class,
                             "trusted_share": counts["trusted"] / max(counts["trusted"] + counts["to_check"], 1)},
               "columns_not_carried": result["dropped_columns"],
               "unreadable_objects": result["unreadable_objects"]}
    write_json(out_summary, summary)
    acc = result["validated"]["accuracy"]
    log.info("%s: %d predicted, %d below threshold %.2f (left without a category), %d kept (%s), %d unreadable, "
             "%d missing image, %d missing object_id, %d other image rank, %d duplicate object_id%s", name,
             counts["predicted"], counts["below_threshold"], threshold, counts["kept"],
             "/".join(statuses_to_keep) or "-", counts["unreadable"], counts["missing_image"],
             counts["missing_object_id"], counts["other_image_rank"], counts["duplicate_object_id"],
             f"; accuracy on {result['validated']['validated_in_classes']} validated objects: {acc:.3f}"
             if acc is not None else "")
    log.info("%s: %d trusted (no human look needed), %d to check (listed most likely wrong first in %s)", name,
             counts["trusted"], counts["to_check"], out_to_check or "the import table")
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
