"""The objects of the export that training never saw, for evaluation at natural frequencies and as unknowns.

Two kinds of rows of the export were never trained on, and :mod:`lokiml.decision_report` tests on them:

* ``capped``: usable objects of large classes that the balancing cap left out (``capped_by_balance`` in
  ``results/data/accounting.tsv``). With the test split's originals they form a test set in the export's
  own class proportions.
* ``unknown``: rows whose category maps to no configured class (``unmapped_category``, or a mapping that
  says ``drop``: ``dropped_by_mapping`` in the ledger), with a usable status and an image. They are the
  open-set test: what the classifier does with taxa it was never taught. A seeded hash of the object id
  puts each in one half: ``calibration`` (scored with the validation split when thresholds are chosen)
  or ``test`` (scored with the test objects).

Rules and functions (one call each):

* :func:`collect_extra_objects` (rule ``collect_extra_objects``): writes ``results/data/extra_objects.tsv``
  (one row per such object, with every column of its row in the export, so that descriptors and the
  sample column are there) and ``results/data/natural_counts.tsv`` (per class: objects in the export,
  in the test population, capped, taken), from which the natural weights are computed. With
  ``split.group_by`` or ``split.holdout``, only capped objects and unknowns of the test groups are test
  objects (``in_population``): the others share samples with training objects. At most
  ``max_per_class`` capped objects per class and ``max_unknowns`` unknowns are taken (a seeded hash
  decides; the natural weights make up for it), so a huge export does not make evaluation slow.
* :func:`normalise_extra_images` (rule ``normalise_extra_images``, per image size): their images,
  normalised exactly as the training images (same function, same cache).
* :func:`predict_extra_objects` (from the evaluation rules of every kind of experiment, which already
  hold the model): their class probabilities, ``{evaluation}/extra/predictions.tsv`` and
  ``probabilities.npy``.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .decisions import half_of, stable_priority
from .ecotaxa import open_export
from .errors import InputError
from .io import read_tsv, save_npy, write_tsv

log = logging.getLogger(__name__)

UNKNOWN_OUTCOMES = ("unmapped_category", "dropped_by_mapping")
NO_CLASS = "(no class)"
FIXED = ["item_id", "object_id", "set", "class_name", "category", "hierarchy", "reason", "half", "in_population",
         "image_ref", "source", "line"]
COUNT_COLUMNS = ["class_name", "export_objects", "population_objects", "kept_originals", "test_originals",
                 "capped_in_population", "taken", "taken_calibration", "taken_test"]
PREDICTION_COLUMNS = ["item_id", "object_id", "set", "class_name", "half", "in_population", "status", "row",
                      "predicted_class", "probability"]


def test_groups(objects: pd.DataFrame, split_table: pd.DataFrame, group_by=None, holdout=None):
    """``(column, values)`` that make an object part of the test population, or None (every object is).

    With ``holdout``, its column and values; with ``group_by``, that column and the groups of the test
    split's originals.
    """
    if holdout:
        return holdout["column"], {str(v) for v in holdout["values"]}
    if group_by:
        if group_by not in objects.columns:
            return group_by, set()
        obj = objects.drop_duplicates("object_id").set_index("object_id")
        test = split_table[(split_table["split"] == "test") & (split_table["augmented"].astype(int) == 0)]
        return group_by, set(obj.loc[obj.index.intersection(test["object_id"]), group_by].astype(str))
    return None


def in_population(frame: pd.DataFrame, groups) -> np.ndarray:
    """Which rows of ``frame`` belong to the test population ``groups`` (from :func:`test_groups`)."""
    if groups is None:
        return np.ones(len(frame), dtype=bool)
    column, values = groups
    if column not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    return frame[column].astype(str).isin(values).to_numpy()


def _take(ids, limit: int, seed: int, salt: str) -> np.ndarray:
    """A stable subsample: the ``limit`` ids with the smallest seeded hash (all of them when fewer)."""
    ids = np.asarray(ids, dtype=object)
    if limit is None or len(ids) <= limit:
        return np.ones(len(ids), dtype=bool)
    prio = stable_priority(ids, seed, salt)
    keep = np.zeros(len(ids), dtype=bool)
    keep[np.argsort(prio, kind="stable")[:limit]] = True
    return keep


def _unknown_rows(export_path, ledger: pd.DataFrame, known_ids: set) -> tuple[pd.DataFrame, dict]:
    """The export rows of the ledger's unknowns, with their image reference; and counts of those left out."""
    wanted = ledger[ledger["outcome"].isin(UNKNOWN_OUTCOMES)]
    skipped = {"no_image_name": 0, "missing_image": 0, "unsafe_image_path": 0, "duplicate_object_id": 0,
               "no_object_id": 0}
    if wanted.empty:
        return pd.DataFrame(columns=FIXED), skipped
    keys = {(s, int(line)): reason for s, line, reason in zip(wanted["source"], wanted["line"], wanted["outcome"])}
    frames = []
    seen = set(known_ids)
    with open_export(export_path) as export:
        for table in export.tables:
            lines = np.asarray(table.lines, dtype=int)
            hit = np.array([(table.source, int(line)) in keys for line in lines], dtype=bool)
            if not hit.any():
                continue
            df = table.df.loc[hit].copy()
            refs, keep = [], []
            # A table without images (issue 17: descriptor experiments only): its unknowns are kept without
            # an image reference; their descriptors are all a classifier of such an export reads.
            has_images = "img_file_name" in df.columns
            names = df["img_file_name"].astype(str) if has_images else [""] * len(df)
            for name, oid in zip(names, df["object_id"].astype(str).str.strip()):
                ref, why = "", None
                if not oid or oid.lower() == "nan":
                    why = "no_object_id"
                elif oid in seen:
                    why = "duplicate_object_id"
                elif not has_images:
                    pass
                elif not name.strip() or name.strip().lower() == "nan":
                    why = "no_image_name"
                else:
                    try:
                        if export.image_exists(table, name.strip()):
                            ref = export.image_ref(table, name.strip())
                        else:
                            why = "missing_image"
                    except InputError:
                        why = "unsafe_image_path"
                if why:
                    skipped[why] += 1
                else:
                    seen.add(oid)
                refs.append(ref)
                keep.append(why is None)
            df["image_ref"] = refs
            df["source"] = table.source
            df["line"] = lines[hit]
            df["reason"] = [keys[(table.source, int(line))] for line in lines[hit]]
            frames.append(df[np.asarray(keep, dtype=bool)])
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=FIXED)
    found = len(rows) + sum(skipped.values())
    if found < len(wanted):  # the export is not the one the ledger was made from
        skipped["not_in_export"] = len(wanted) - found
        log.warning("%d row(s) of the ledger are not in %s any more: rerun read_export", len(wanted) - found,
                    export_path)
    rows["object_id"] = rows["object_id"].astype(str).str.strip()
    rows["category"] = rows.get("object_annotation_category", pd.Series("", index=rows.index)).astype(str)
    rows["hierarchy"] = rows.get("object_annotation_hierarchy", pd.Series("", index=rows.index)).astype(str) \
        .replace({"nan": ""})
    return rows, skipped


def collect_extra_objects(export_path, ledger_path, objects_path, split_path, out_objects, out_counts,
                          max_per_class: int = 2000, max_unknowns: int = 5000, seed: int = 1, group_by=None,
                          holdout=None) -> pd.DataFrame:
    """Rule collect_extra_objects: the capped-out objects and the unknowns (module docstring)."""
    objects, split_table, ledger = read_tsv(objects_path), read_tsv(split_path), read_tsv(ledger_path)
    originals = split_table[split_table["augmented"].astype(int) == 0]
    kept = set(originals["object_id"])
    test_ids = set(originals.loc[originals["split"] == "test", "object_id"])
    groups = test_groups(objects, split_table, group_by, holdout)
    in_pop = in_population(objects, groups)
    classes = list(dict.fromkeys(split_table["class_name"]))

    capped = objects[~objects["object_id"].isin(kept)].copy()
    capped["in_population"] = in_pop[~objects["object_id"].isin(kept).to_numpy()].astype(int)
    capped = capped[capped["in_population"] == 1]
    taken = np.zeros(len(capped), dtype=bool)
    for c in classes:
        sel = (capped["class_name"] == c).to_numpy()
        taken[np.flatnonzero(sel)[_take(capped["object_id"][sel], max_per_class, seed, f"capped:{c}")]] = True
    capped_in_pop = capped["class_name"].value_counts()
    capped = capped[taken].copy()
    capped["set"] = "capped"
    capped["reason"] = "capped_by_balance"
    capped["half"] = ""
    capped["hierarchy"] = capped.get("object_annotation_hierarchy", pd.Series("", index=capped.index))

    unknown, skipped = _unknown_rows(export_path, ledger, set(objects["object_id"]))
    if len(unknown):
        unknown["class_name"] = ""
        unknown["set"] = "unknown"
        unknown["half"] = [half_of(o, seed) for o in unknown["object_id"]]
        unknown["in_population"] = in_population(unknown, groups).astype(int)
    n_unknown_all = len(unknown)
    n_unknown_pop = int(unknown["in_population"].astype(int).sum()) if len(unknown) else 0
    if len(unknown):
        unknown = unknown[_take(unknown["object_id"], max_unknowns, seed, "unknown")].copy()
    for why, n in skipped.items():
        if n:
            log.warning("%d row(s) of no configured class left out of the open-set test: %s", n, why)

    extra = pd.concat([capped, unknown], ignore_index=True).fillna("")
    if extra.empty:
        extra = pd.DataFrame(columns=FIXED)
    extra["item_id"] = [f"{s}:{o}" for s, o in zip(extra["set"], extra["object_id"])]
    extra = extra[FIXED + sorted(set(extra.columns) - set(FIXED))]
    extra = extra.sort_values(["set", "class_name", "object_id"], kind="stable").reset_index(drop=True)
    write_tsv(out_objects, extra)

    rows = []
    for c in classes:
        sel = objects["class_name"] == c
        ex = extra[(extra["set"] == "capped") & (extra["class_name"] == c)]
        rows.append({"class_name": c, "export_objects": int(sel.sum()),
                     "population_objects": int((sel.to_numpy() & in_pop).sum()),
                     "kept_originals": int((originals["class_name"] == c).sum()),
                     "test_originals": int(((originals["class_name"] == c) & originals["object_id"].isin(test_ids))
                                           .sum()),
                     "capped_in_population": int(capped_in_pop.get(c, 0)), "taken": int(len(ex)),
                     "taken_calibration": 0, "taken_test": 0})
    unk = extra[extra["set"] == "unknown"]
    rows.append({"class_name": NO_CLASS, "export_objects": n_unknown_all, "population_objects": n_unknown_pop,
                 "kept_originals": 0, "test_originals": 0, "capped_in_population": 0, "taken": int(len(unk)),
                 "taken_calibration": int((unk["half"] == "calibration").sum()),
                 "taken_test": int(((unk["half"] == "test") & (unk["in_population"].astype(int) == 1)).sum())})
    counts = pd.DataFrame(rows, columns=COUNT_COLUMNS)
    write_tsv(out_counts, counts)
    log.info("extra objects: %d capped-out objects of %d classes (population: %s), %d of %d unknowns "
             "(%d for calibration, %d for test)", int((extra["set"] == "capped").sum()), len(classes),
             "test groups only" if (group_by or holdout) else "the whole export", len(unk), n_unknown_all,
             rows[-1]["taken_calibration"], rows[-1]["taken_test"])
    return extra


def normalise_extra_images(export_path, extra_path, out_npy, out_index, size: int, threshold: int = 245,
                           polarity: str = "dark", bottom_crop: float = 0.0, max_pixels: int = 100_000_000,
                           threads: int = 1, cache_dir=None, max_bytes: int = 100_000_000, mem_mb=None,
                           canvas=None) -> pd.DataFrame:
    """Rule normalise_extra_images: the extra objects' images at one size, in one store shard, normalised
    exactly as the training images (the same parameters as rule normalise_images, canvas included)."""
    import functools

    from . import memory
    from .store import NormParams, normalise_shard

    memory.set_budget(mem_mb)
    extra = read_tsv(extra_path)
    items = pd.DataFrame({"item_id": extra["item_id"], "image_ref": extra["image_ref"], "flip": 0, "angle": 0.0,
                          "dx": 0.0, "dy": 0.0})
    params = NormParams(size=int(size), threshold=threshold, polarity=polarity, bottom_crop=bottom_crop,
                        max_pixels=max_pixels, canvas=int(canvas) if canvas else None)
    with open_export(export_path) as export:
        return normalise_shard(items, functools.partial(export.read_image_by_ref, max_bytes=max_bytes), params,
                               out_npy, out_index, threads=threads, cache_dir=cache_dir)


# --------------------------------------------------------------------------------------------
# Their predictions
# --------------------------------------------------------------------------------------------

def write_extra_predictions(extra: pd.DataFrame, status: np.ndarray, probs: np.ndarray, classes, out_predictions,
                            out_probabilities) -> pd.DataFrame:
    """``predictions.tsv`` (one row per extra object, ``status`` ok or why not predicted, ``row`` into the
    probabilities) and ``probabilities.npy`` (float32, one row per object with status ok, in order)."""
    status = np.asarray(status, dtype=object)
    ok = status == "ok"
    probs = np.asarray(probs, dtype=np.float32).reshape(int(ok.sum()), len(classes))
    row = np.full(len(extra), -1, dtype=np.int64)
    row[ok] = np.arange(int(ok.sum()))
    names = np.asarray(list(classes), dtype=object)
    pred = np.full(len(extra), "", dtype=object)
    prob = np.full(len(extra), np.nan)
    if ok.any():
        pred[ok] = names[probs.argmax(axis=1)]
        prob[ok] = probs.max(axis=1)
    table = pd.DataFrame({"item_id": extra["item_id"].to_numpy(), "object_id": extra["object_id"].to_numpy(),
                          "set": extra["set"].to_numpy(), "class_name": extra["class_name"].to_numpy(),
                          "half": extra["half"].to_numpy(), "in_population": extra["in_population"].to_numpy(),
                          "status": status, "row": row, "predicted_class": pred, "probability": prob},
                         columns=PREDICTION_COLUMNS)
    write_tsv(out_predictions, table, float_format="%.6f")
    save_npy(out_probabilities, probs)
    n_bad = int((~ok).sum())
    log.info("extra objects: %d predicted%s", int(ok.sum()), f", {n_bad} not (see status)" if n_bad else "")
    return table


def predict_extra_cnn(model, extra_path, store_npy, store_index, classes, out_predictions, out_probabilities,
                      batch_size: int = 32) -> pd.DataFrame:
    """A CNN's probabilities for the extra objects, from their normalised images."""
    from .evaluate import predict_probabilities
    from .store import Store

    extra = read_tsv(extra_path)
    n_cls = len(list(classes))
    status = np.full(len(extra), "not_in_store", dtype=object)
    probs = np.zeros((0, n_cls), dtype=np.float32)
    if len(extra):
        index = read_tsv(store_index).set_index("item_id")
        st = index["status"].reindex(extra["item_id"]).fillna("not_in_store").to_numpy(dtype=object)
        status = np.where(st == "ok", "ok", st)
        ok = status == "ok"
        if ok.any():
            store = Store([store_npy], [store_index])
            probs = predict_probabilities(model, store, extra.loc[ok, "item_id"], batch_size, n_cls,
                                          source=str(store_npy))
    return write_extra_predictions(extra, status, probs, classes, out_predictions, out_probabilities)


def descriptor_rows(table: pd.DataFrame, columns) -> tuple[np.ndarray, np.ndarray]:
    """``(x, bad)``: the descriptor ``columns`` of ``table`` as floats (missing: NaN), and the rows holding
    a value that is not a number (they are not classified; training would have refused them)."""
    from .descriptors import to_numbers

    x = np.full((len(table), len(columns)), np.nan, dtype=np.float64)
    bad = np.zeros(len(table), dtype=bool)
    for j, c in enumerate(columns):
        if c not in table.columns:
            continue
        x[:, j], b = to_numbers(table[c])
        bad |= b
    return x, bad


def predict_extra_descriptors(model, columns, extra_path, classes, out_predictions, out_probabilities):
    """A descriptors experiment's probabilities for the extra objects, from their rows of the export."""
    from .descriptors import full_probabilities

    extra = read_tsv(extra_path)
    n_cls = len(list(classes))
    missing = [c for c in columns if c not in extra.columns]
    status = np.full(len(extra), "ok", dtype=object)
    probs = np.zeros((0, n_cls))
    if missing and len(extra):
        status[:] = f"missing_descriptor_column: {', '.join(missing)}"
    elif len(extra):
        x, bad = descriptor_rows(extra, columns)
        status[bad] = "non_numeric_descriptor"
        if (~bad).any():
            probs = full_probabilities(model, x[~bad], n_cls)
    return write_extra_predictions(extra, status, probs, classes, out_predictions, out_probabilities)


def extract_extra_features(fmodel, extra_path, store_npy, store_index, out_features, out_index,
                           batch_size: int = 32) -> pd.DataFrame:
    """A CNN's penultimate-layer features of the extra objects (for its deep_features experiments): the
    same files as :func:`lokiml.deep_features.extract_deep_features`, ``item_id, object_id, row, status``."""
    from .deep_features import extract_features
    from .store import Store

    extra = read_tsv(extra_path)
    dim = int(fmodel.output.shape[-1])
    status = np.full(len(extra), "not_in_store", dtype=object)
    feats = np.zeros((0, dim), dtype=np.float32)
    if len(extra):
        index = read_tsv(store_index).set_index("item_id")
        status = index["status"].reindex(extra["item_id"]).fillna("not_in_store").to_numpy(dtype=object)
        ok = status == "ok"
        if ok.any():
            feats = extract_features(fmodel, Store([store_npy], [store_index]), extra.loc[ok, "item_id"],
                                     batch_size)
            from .base_features import log_forward_passes

            log_forward_passes(len(feats), f"the model's penultimate layer ({store_npy})")
    ok = status == "ok"
    row = np.full(len(extra), -1, dtype=np.int64)
    row[ok] = np.arange(int(ok.sum()))
    save_npy(out_features, feats)
    write_tsv(out_index, pd.DataFrame({"item_id": extra["item_id"], "object_id": extra["object_id"], "row": row,
                                       "status": status}))
    return extra


def predict_extra_deep_features(model, features_path, index_path, extra_path, desc_columns, classes,
                                out_predictions, out_probabilities):
    """A deep_features experiment's probabilities for the extra objects: their CNN features (from
    :func:`extract_extra_features`) followed by their descriptors, through the fitted pipeline."""
    from .descriptors import full_probabilities

    extra = read_tsv(extra_path)
    n_cls = len(list(classes))
    features = np.load(features_path)
    index = read_tsv(index_path)
    if len(index) != len(extra) or (len(extra) and (index["item_id"].to_numpy() != extra["item_id"].to_numpy()).any()):
        raise InputError(index_path, "the features index does not list the extra objects of "
                                     f"{extra_path} in order", hint="rerun rule extract_deep_features")
    status = index["status"].to_numpy(dtype=object).copy() if len(extra) else np.zeros(0, dtype=object)
    probs = np.zeros((0, n_cls))
    if len(extra):
        x_desc, bad = descriptor_rows(extra, desc_columns)
        status[(status == "ok") & bad] = "non_numeric_descriptor"
        ok = status == "ok"
        if ok.any():
            rows = index["row"].astype(int).to_numpy()[ok]
            x = np.hstack([np.asarray(features[rows], dtype=np.float32), x_desc[ok].astype(np.float32)])
            probs = full_probabilities(model, x, n_cls)
    return write_extra_predictions(extra, status, probs, classes, out_predictions, out_probabilities)
