"""Deep features: a scikit-learn classifier on a trained CNN's penultimate-layer features plus the descriptors.

EcoTaxa's way of using a CNN: the network is a feature extractor, and a random forest is trained on its
features (reduced with PCA) together with the instrument's own descriptors. Three rules, one call each:

* :func:`extract_deep_features` (rule ``extract_deep_features``, once per CNN experiment that a
  ``deep_features`` experiment names): the output of the ``avg_pool`` layer (the pooled base features
  that feed the Dropout + Dense head) of the CNN's best checkpoint, for every **original** object of
  the split, read from the same normalised image store the CNN was trained and evaluated on
  (``results/data/images/{image_size}px/``). Augmented copies are left out: they are altered images
  of objects already in the split and have no descriptors of their own. Objects whose image could
  not be normalised get no features (status in the index) and are left out, as in ``evaluate_model``.
* :func:`train_deep_features` (rule ``train_deep_features``): the descriptor columns are chosen on the
  training objects exactly as in a ``descriptors`` experiment (:func:`lokiml.columns.select_columns`);
  PCA (``pca`` components) is fitted on the training objects' CNN features only; every candidate of the
  grid is fitted on **train** and the best **validation** macro F1 is kept
  (:func:`lokiml.descriptors.choose_params`); with ``refit: true`` (the default) PCA and classifier are
  then fitted again on train + valid. The test split is never read.
* :func:`estimate_deep_features` (rule ``estimate_deep_features``): the same procedure over repeated
  k-fold splits (and groups), testing only objects the CNN did not train on (:mod:`lokiml.estimates`).
* :func:`evaluate_deep_features` (rule ``evaluate_deep_features``): the same evaluation files as every
  other experiment (through :mod:`lokiml.evaluate`), so it appears in the leaderboard and the report.

The saved model (``model.pkl``) is a scikit-learn ``Pipeline`` that takes one row per object: the
``F`` CNN features followed by the descriptor columns listed as ``used`` in ``columns.tsv``; its
``features`` step is the fitted PCA of the CNN part (a ``ColumnTransformer``; ``passthrough`` without
PCA), its ``classifier`` step the chosen classifier.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import columns as cols
from . import descriptors as d
from .errors import InputError
from .io import read_tsv, save_npy, write_json, write_text, write_tsv
from .logs import Progress
from .store import batches_ahead

log = logging.getLogger(__name__)

LAYER = "avg_pool"  # lokiml.models names the pooling layer before the head so
DEFAULTS = {**d.DEFAULTS, "descriptors": True, "pca": 50}
INDEX_COLUMNS = ["item_id", "object_id", "row", "status"]


def experiment_settings(params: dict) -> dict:
    """The keys of a deep_features experiment, with the defaults filled in (``pca: null`` stays None)."""
    out = d.experiment_settings(params)
    out["cnn"] = params.get("cnn")
    out["descriptors"] = True if params.get("descriptors") is None else bool(params["descriptors"])
    out["pca"] = int(params["pca"]) if params.get("pca") is not None else (None if "pca" in params else 50)
    return out


# --------------------------------------------------------------------------------------------
# Extraction (rule extract_deep_features)
# --------------------------------------------------------------------------------------------

def penultimate_model(model):
    """grey image -> the ``avg_pool`` output of a model built by :func:`lokiml.models.build_model`."""
    from .models import feature_model

    return feature_model(model)


def extract_features(fmodel, store, item_ids, batch_size: int = 32) -> np.ndarray:
    """``fmodel``'s output (float32, one row per item, in the order of ``item_ids``), ``batch_size`` at a time.

    The next batch is read from the store while the model computes the current one.
    """
    item_ids = list(item_ids)
    n = len(item_ids)
    dim = int(fmodel.output.shape[-1])
    out = np.empty((n, dim), dtype=np.float32)
    progress = Progress(n, "features", log)
    for start, x in batches_ahead(store, item_ids, batch_size):
        f = np.asarray(fmodel.predict_on_batch(x[..., None]), dtype=np.float32)
        out[start:start + len(f)] = f.reshape(len(f), dim)
        progress.update(len(f))
    return out


def extract_deep_features(model_path, split_path, store_npys, store_indexes, out_features, out_index,
                          batch_size: int = 32, threads: int | None = None, model=None,
                          base_features=None, gpu_request: int = 0, cpu_fallback: bool = False) -> pd.DataFrame:
    """Rule extract_deep_features: penultimate-layer features of every original object of the split.

    Writes ``out_features`` (float32 .npy, one row per object with a usable image) and ``out_index``
    (TSV: ``item_id, object_id, row, status``; ``row`` is -1 where ``status`` is not ``ok``).
    ``threads``: the backend's threads (set once per process, with the device check of
    :func:`lokiml.runtime.configure` for ``gpu_request`` and ``cpu_fallback``; None leaves the backend as it is).
    ``model`` may be given instead of loading ``model_path`` (tests). ``base_features``: (features,
    index) of rule compute_base_features, for a CNN whose frozen base was not fine-tuned: its
    ``avg_pool`` output is the base's pooled output, so the rows are taken from there and no model is
    loaded. Returns the index.
    """
    from .base_features import BaseFeatures, log_forward_passes
    from .store import Store

    t0 = time.perf_counter()
    base = BaseFeatures(*base_features) if base_features else None
    if base is None:
        if threads is not None:
            from .runtime import configure

            configure(threads, {"mixed_precision": False}, gpu_request=gpu_request, cpu_fallback=cpu_fallback,
                      what="feature extraction")
        if model is None:
            from .evaluate import load_classifier

            model = load_classifier(model_path)
        fmodel = penultimate_model(model)
    split_table = read_tsv(split_path)
    rows = split_table[split_table["augmented"].astype(int) == 0]
    rows = rows.sort_values("item_id", kind="stable").reset_index(drop=True)
    store = Store(store_npys, store_indexes)
    status = store.index["status"].reindex(rows["item_id"]).fillna("not_in_store").to_numpy(dtype=object)
    ok = status == "ok"
    if (~ok).any():
        bad = rows.loc[~ok, "item_id"].tolist()
        log.warning("%d object(s) have no usable image and get no features: %s", len(bad),
                    ", ".join(bad[:10]) + (" ..." if len(bad) > 10 else ""))
    if base is not None:
        feats = base.take(rows.loc[ok, "item_id"])
        log.info("the frozen base's features, computed once: %s", base.path)
    else:
        feats = extract_features(fmodel, store, rows.loc[ok, "item_id"], batch_size)
        log_forward_passes(len(feats), f"the model {model_path}")
    row = np.full(len(rows), -1, dtype=np.int64)
    row[ok] = np.arange(int(ok.sum()))
    index = pd.DataFrame({"item_id": rows["item_id"], "object_id": rows["object_id"], "row": row, "status": status})
    save_npy(out_features, feats)
    write_tsv(out_index, index)
    log.info("%d objects (augmented copies left out), %d features each from layer %s, in %.1f s",
             len(feats), feats.shape[1], LAYER, time.perf_counter() - t0)
    return index


# --------------------------------------------------------------------------------------------
# Training (rule train_deep_features)
# --------------------------------------------------------------------------------------------

def load_features(features_path, index_path) -> tuple[np.ndarray, pd.DataFrame]:
    """(features, memory-mapped; index by item id with integer ``row``), checked against each other."""
    features = np.load(features_path, mmap_mode="r")
    index = read_tsv(index_path)
    index["row"] = index["row"].astype(int)
    n_ok = int((index["status"] == "ok").sum())
    if features.ndim != 2 or features.shape[0] != n_ok:
        raise InputError(features_path, f"{features.shape[0]} rows of features, but {n_ok} items of {index_path} "
                                        "have status ok", hint="rerun rule extract_deep_features")
    return features, index.set_index("item_id")


def rows_with_features(split_table: pd.DataFrame, split: str, index: pd.DataFrame,
                       source: str = "split.tsv") -> tuple[pd.DataFrame, list]:
    """(the split's originals that have features, sorted by item id; item ids of those that have none)."""
    rows = d.originals(split_table, split)
    unknown = sorted(set(rows["item_id"]) - set(index.index))
    if unknown:
        raise InputError(source, f"{len(unknown)} object(s) of the {split} split have no entry in the features "
                                 f"index: {', '.join(unknown[:5])}", hint="rerun rule extract_deep_features")
    ok = (index.loc[rows["item_id"], "status"] == "ok").to_numpy()
    excluded = rows.loc[~ok, "item_id"].tolist()
    if excluded:
        log.warning("%s: %d object(s) left out, their image could not be normalised: %s", split, len(excluded),
                    ", ".join(excluded[:10]) + (" ..." if len(excluded) > 10 else ""))
    return rows[ok].reset_index(drop=True), excluded


def design_matrix(features, index: pd.DataFrame, objects: pd.DataFrame, rows: pd.DataFrame, desc_columns,
                  source: str = "objects.tsv") -> np.ndarray:
    """float32 (n, F + D): the CNN features of ``rows`` (by item id), then their descriptor columns (by object id)."""
    x = np.asarray(features[index.loc[rows["item_id"], "row"].to_numpy()], dtype=np.float32)
    if len(desc_columns):
        desc = cols.feature_matrix(d.objects_of(objects, rows, source), list(desc_columns), source)
        x = np.hstack([x, desc.astype(np.float32)])
    return x


def make_reducer(n_cnn: int, n_desc: int, pca, n_train: int, seed: int = 1):
    """A ColumnTransformer: PCA of the first ``n_cnn`` columns, the ``n_desc`` descriptors as they are.

    ``passthrough`` when ``pca`` is None or would not reduce anything. PCA needs at most as many
    components as training objects: ``pca`` is capped there.
    """
    if pca is None:
        return "passthrough"
    k = min(int(pca), n_train)
    if k >= n_cnn:
        log.info("pca: %d components would not reduce %d CNN features: kept as they are", k, n_cnn)
        return "passthrough"
    if k < int(pca):
        log.warning("pca: %d components asked for, but only %d training objects: %d components", pca, n_train, k)
    from sklearn.compose import ColumnTransformer
    from sklearn.decomposition import PCA

    parts = [("cnn", PCA(n_components=k, random_state=seed), slice(0, n_cnn))]
    if n_desc:
        parts.append(("descriptors", "passthrough", slice(n_cnn, n_cnn + n_desc)))
    return ColumnTransformer(parts, remainder="drop")


def descriptors_off_table(objects: pd.DataFrame) -> pd.DataFrame:
    """The columns table of an experiment with ``descriptors: false``: every column unused."""
    return pd.DataFrame({"column": list(objects.columns), "used": 0, "reason": "descriptors_off",
                         "missing_share": float("nan"), "text_cells": 0, "distinct_values": -1})


def fit_reducer(x_raw: np.ndarray, n_cnn: int, n_desc: int, pca, seed: int = 1):
    """(the reducer of :func:`make_reducer` fitted on ``x_raw``, ``x_raw`` transformed, its facts)."""
    reducer = make_reducer(n_cnn, n_desc, pca, len(x_raw), seed)
    facts = {"pca_components": None, "pca_explained_variance": None}
    if isinstance(reducer, str):  # "passthrough"
        return reducer, x_raw, facts
    x = reducer.fit_transform(x_raw)
    fitted = reducer.named_transformers_["cnn"]
    facts["pca_components"] = int(fitted.n_components_)
    facts["pca_explained_variance"] = float(fitted.explained_variance_ratio_.sum())
    return reducer, x, facts


def choose_and_refit(x_tr, y_tr, x_va, y_va, x_pool, y_pool, n_cnn: int, n_desc: int, settings: dict,
                     n_classes: int, n_jobs: int = 1):
    """PCA and grid search on (train, valid); with ``refit``, PCA and the chosen classifier fitted again on the pool.

    Returns (pipeline, chosen params, grid table, validation probabilities of the train-only pipeline,
    facts of the final PCA). ``x_*`` are raw rows: CNN features then descriptors (:func:`design_matrix`).
    """
    from sklearn.pipeline import Pipeline

    t0 = time.perf_counter()
    reducer, xr_tr, facts = fit_reducer(x_tr, n_cnn, n_desc, settings["pca"], settings["seed"])
    xr_va = x_va if isinstance(reducer, str) else reducer.transform(x_va)
    if facts["pca_components"]:
        log.debug("PCA of the CNN features (fitted on %d objects): %d components, %.1f%% of the variance, %.1f s",
                  len(x_tr), facts["pca_components"], 100 * facts["pca_explained_variance"], time.perf_counter() - t0)
    grid = settings["param_grid"] or d.DEFAULT_GRIDS[settings["classifier"]]
    model, chosen, grid_table, valid_probs = d.choose_params(
        xr_tr, y_tr, xr_va, y_va, settings["classifier"], grid, n_classes, settings["seed"], n_jobs,
        settings["early_stopping_rounds"])
    if settings["refit"]:
        reducer, xr_pool, facts = fit_reducer(x_pool, n_cnn, n_desc, settings["pca"], settings["seed"])
        model = d.fit_classifier(settings["classifier"], chosen, xr_pool, y_pool, settings["seed"], n_jobs,
                                 settings["early_stopping_rounds"])
    return Pipeline([("features", reducer), ("classifier", model)]), chosen, grid_table, valid_probs, facts


def fit_deep_features(features, index: pd.DataFrame, objects: pd.DataFrame, split_table: pd.DataFrame, classes,
                      settings: dict, n_jobs: int = 1, source: str = "split.tsv"):
    """Descriptor columns, PCA and grid search on train/valid, the chosen model refitted on train + valid.

    No test row is read. Returns (pipeline, columns table, chosen params, grid table, facts: a dict for
    train_info.json, the valid rows and their probabilities by the train-only pipeline).
    """
    classes = list(classes)
    train_rows, train_excl = rows_with_features(split_table, "train", index, source)
    valid_rows, valid_excl = rows_with_features(split_table, "valid", index, source)
    if train_rows.empty or valid_rows.empty:
        raise InputError(source, "no original objects with features in the train or the valid split")
    n_cnn = int(features.shape[1])
    if settings["descriptors"]:
        table = cols.select_columns(d.objects_of(objects, train_rows, source), settings["max_missing"],
                                    settings["exclude_columns"], settings["include_columns"], ("export",))
        desc = cols.used_columns(table)
        if not desc:
            log.warning("no usable descriptor column (%s): the CNN features only", cols.explain_unused(table))
    else:
        table, desc = descriptors_off_table(objects), []
    log.info("%d CNN features (%s) + %d descriptor columns: %s", n_cnn, LAYER, len(desc), ", ".join(desc) or "none")
    x_tr = design_matrix(features, index, objects, train_rows, desc)
    x_va = design_matrix(features, index, objects, valid_rows, desc)
    y_tr, y_va = d.labels_of(train_rows, classes, source), d.labels_of(valid_rows, classes, source)
    pipeline, chosen, grid_table, valid_probs, facts = choose_and_refit(
        x_tr, y_tr, x_va, y_va, np.vstack([x_tr, x_va]), np.concatenate([y_tr, y_va]), n_cnn, len(desc), settings,
        len(classes), n_jobs)
    d.log_grid(grid_table)
    if facts["pca_components"]:
        log.info("PCA of the CNN features (fitted on %s): %d components, %.1f%% of the variance",
                 "train + valid" if settings["refit"] else "train", facts["pca_components"],
                 100 * facts["pca_explained_variance"])
    facts.update(cnn_features=n_cnn, n_features=int(facts["pca_components"] or n_cnn) + len(desc),
                 excluded_no_image={"train": len(train_excl), "valid": len(valid_excl)},
                 items={"train": len(train_rows), "valid": len(valid_rows)})
    return pipeline, table, chosen, grid_table, facts, valid_rows, valid_probs


def train_deep_features(features_path, index_path, objects_path, split_path, classes, params: dict, out_model,
                        out_classes, out_columns, out_grid, out_info, out_valid=None, threads: int = 1) -> dict:
    """Rule train_deep_features: fit, choose on validation, refit, save model, classes, columns, grid and info."""
    import sklearn

    t0 = time.perf_counter()
    settings = experiment_settings(params)
    features, index = load_features(features_path, index_path)
    objects, split_table = read_tsv(objects_path), read_tsv(split_path)
    pipeline, table, chosen, grid_table, facts, valid_rows, valid_probs = fit_deep_features(
        features, index, objects, split_table, classes, settings, threads, source=str(split_path))
    seconds = time.perf_counter() - t0
    d.save_model(out_model, pipeline)
    write_text(out_classes, "".join(f"{c}\n" for c in classes))
    write_tsv(out_columns, table, float_format="%.4f")
    write_tsv(out_grid, grid_table.drop(columns=["seconds"]), float_format="%.6f")
    if out_valid:
        d.write_valid_probabilities(out_valid, valid_rows, valid_probs)
    best = grid_table[grid_table["chosen"] == 1].iloc[0]
    items = facts["items"]
    info = {
        "kind": "deep_features", "classifier": settings["classifier"], "experiment": dict(params),
        "cnn": settings["cnn"], "cnn_layer": LAYER, "descriptors": settings["descriptors"], "pca": settings["pca"],
        **facts,
        "chosen_params": chosen, "chosen_by": "validation macro F1 (ties: validation log loss)",
        "valid_macro_f1": float(best["valid_macro_f1"]), "candidates": int(len(grid_table)),
        "refit": bool(settings["refit"]), "early_stopping_rounds": settings["early_stopping_rounds"],
        "fitted_on": items["train"] + items["valid"] if settings["refit"] else items["train"],
        "columns": cols.used_columns(table), "classes": list(classes),
        "seconds_total": round(seconds, 1), "threads": int(threads), "device": "CPU",
        "sklearn": sklearn.__version__,
    }
    write_json(out_info, info)
    log.info("chose %s (validation macro F1 %.4f) in %.1f s", chosen, info["valid_macro_f1"], seconds)
    return info


# --------------------------------------------------------------------------------------------
# Estimates (rule estimate_deep_features)
# --------------------------------------------------------------------------------------------

def estimate_deep_features(features_path, index_path, objects_path, split_path, columns_path, classes, params: dict,
                           out_table, out_json, split: dict | None = None, threads: int = 1) -> dict:
    """Rule estimate_deep_features: repeated k-fold (and leave-one-group-out) estimate of the experiment.

    The CNN was trained on the train split: its features of those objects are better separated than
    those of objects it never saw, so only valid and test objects are ever *tested* (the train split's
    objects are training objects in every fold, and the inner validation objects are drawn from the
    unseen ones too, as in the experiment itself). The CNN is not retrained per fold.
    """
    from .estimates import fold_plan, group_column, groups_of, run_estimate

    t0 = time.perf_counter()
    settings = experiment_settings(params)
    est = settings["estimate"] or d.experiment_settings({})["estimate"]
    split = dict(split or {})
    features, index = load_features(features_path, index_path)
    objects, split_table = read_tsv(objects_path), read_tsv(split_path)
    desc = cols.used_columns(read_tsv(columns_path))
    parts = [rows_with_features(split_table, s, index, str(split_path))[0] for s in ("train", "valid", "test")]
    rows = pd.concat(parts, ignore_index=True)
    x = design_matrix(features, index, objects, rows, desc)
    y = d.labels_of(rows, classes, str(split_path))
    unseen = (rows["split"] != "train").to_numpy()
    group_by = group_column(est, split)
    groups = groups_of(d.objects_of(objects, rows, str(split_path)), group_by, str(objects_path)) if group_by else None
    plan = fold_plan(y, est["folds"], est["repeats"], settings["seed"], groups, unseen, est["max_group_folds"])
    n_cnn = int(features.shape[1])

    def learn(train, valid, pool):
        pipeline, chosen, _, _, _ = choose_and_refit(x[train], y[train], x[valid], y[valid], x[pool], y[pool], n_cnn,
                                                     len(desc), settings, len(classes), threads)
        return (lambda test: d.full_probabilities(pipeline, x[test], len(classes))), chosen

    log.info("estimate: %d objects with features, %d of them not seen by the CNN (tested); %d folds", len(y),
             int(unseen.sum()), len(plan))
    result = run_estimate(y, len(classes), plan, learn, d.valid_share_of(split), settings["seed"], validatable=unseen)
    # no wall time in it: an unchanged estimate is byte-identical
    summary = {**result.summary, "settings": est, "refit": bool(settings["refit"]),
               "valid_share": d.valid_share_of(split), "group_by": group_by, "n_objects": int(len(y)),
               "note": (f"the {int(unseen.sum())} valid and test objects, which the CNN {settings['cnn']} did not "
                        f"train on, are tested in turn; the {int((~unseen).sum())} train objects train every fold")}
    write_tsv(out_table, result.table, float_format="%.6f")
    write_json(out_json, summary)
    log.info("estimate done in %.1f s", time.perf_counter() - t0)
    return summary


# --------------------------------------------------------------------------------------------
# Evaluation (rule evaluate_deep_features)
# --------------------------------------------------------------------------------------------

def predict_split(model, features, index: pd.DataFrame, objects: pd.DataFrame, split_table: pd.DataFrame,
                  split: str, desc_columns, classes, source: str = "split.tsv"):
    """(rows of the split's originals with features, integer labels, probabilities, item ids left out)."""
    rows, excluded = rows_with_features(split_table, split, index, source)
    if rows.empty:
        raise InputError(source, f"no {split} objects with features to evaluate")
    x = design_matrix(features, index, objects, rows, desc_columns)
    return rows, d.labels_of(rows, classes, source), d.full_probabilities(model, x, len(classes)), excluded


def summary_lines(experiment: str, info: dict, results: dict, classes, counts: dict, model_file: str,
                  cnn: dict | None = None, estimate: dict | None = None):
    """Sections of (label, value) pairs for summary.txt and summary.html."""
    from .evaluate import _duration, describe_weights, result_lines

    test, valid = results["test"].metrics, results["valid"].metrics
    used = info.get("columns", [])
    cnn = cnn or {}
    fitted = "train + valid" if info.get("refit") else "train"
    pca = (f", reduced by PCA (fitted on {fitted}) to {info['pca_components']} components "
           f"({100 * info['pca_explained_variance']:.1f}% of their variance)" if info.get("pca_components") else
           ", all of them (no PCA)")
    what = (f"{info.get('classifier', '?')} (scikit-learn) on the {info.get('cnn_features', '?')} penultimate-layer "
            f"features ({info.get('cnn_layer', LAYER)}) of CNN experiment {info.get('cnn', '?')}{pca}")
    what += (f", and {len(used)} image descriptors of the export: {', '.join(used)}" if used else
             (", and no descriptor (none usable; see columns.tsv)" if info.get("descriptors") else
              ", without descriptors (descriptors: false)"))
    model = [
        ("Model", what + f"; {info.get('n_features', '?')} features in all"),
        ("CNN", f"{info.get('cnn', '?')}: {cnn.get('model', '?')} at {cnn.get('image_size', '?')} px, "
                f"{describe_weights(cnn.get('weights'), cnn.get('fine_tune'))}; its best checkpoint (best.keras) "
                "gives the features"),
        d.chosen_line(info),
        d.refit_line(info),
        ("Evaluated model", model_file),
    ]
    res = result_lines(test, valid, len(classes))
    training = [("Training time", f"{_duration(info.get('seconds_total'))} (PCA and grid search; the CNN's own "
                                  f"training and the feature extraction not included), "
                                  f"{info.get('threads', '?')} thread(s)")]
    data = d.data_lines(classes, counts, valid, test, "features")
    excl = valid["n_excluded_no_image"] + test["n_excluded_no_image"]
    if excl:
        data.append(("Left out", f"{excl} objects whose image could not be normalised (see the normalise logs)"))
    sections = [("Model", model), ("Results", res)]
    if estimate is not None:
        from .estimates import summary_lines as estimate_lines

        sections.append(("Estimates", estimate_lines(estimate)))
    return sections + [("Training", training), ("Data", data)]


def evaluate_deep_features(model_path, classes_path, columns_path, grid_path, info_path, features_path, index_path,
                           objects_path, split_path, classes, outputs: dict, experiment: str = "",
                           ece_bins: int = 15, store_npys=None, store_indexes=None, cnn: dict | None = None,
                           valid_path=None, estimate_path=None) -> dict:
    """Rule evaluate_deep_features: the same outputs as evaluate_model (keys of ``outputs`` alike).

    With ``store_npys``/``store_indexes`` (the CNN's image store) the most confident mistakes are shown
    with their images. ``cnn``: the CNN experiment's settings, for the summary. ``valid_path``: the
    validation probabilities of the train-only pipeline (train rule); ``estimate_path``: ``estimate.json``.
    """
    from . import evaluate as ev

    trained = [c.strip() for c in Path(classes_path).read_text(encoding="utf-8").splitlines() if c.strip()]
    if classes is not None and list(classes) != trained:
        raise InputError(classes_path, f"the model was trained on classes {trained}, the configuration lists "
                                       f"{list(classes)}",
                         hint="retrain the experiment (snakemake -R train_deep_features)")
    classes = trained
    info = json.loads(Path(info_path).read_text(encoding="utf-8"))
    desc = cols.used_columns(read_tsv(columns_path))
    features, index = load_features(features_path, index_path)
    if info.get("cnn_features") is not None and int(info["cnn_features"]) != features.shape[1]:
        raise InputError(features_path, f"{features.shape[1]} features per object, the model was trained on "
                                        f"{info['cnn_features']}",
                         hint="retrain the experiment (snakemake -R train_deep_features)")
    objects, split_table = read_tsv(objects_path), read_tsv(split_path)
    gather = None
    if store_npys:
        from .store import Store

        gather = Store(store_npys, store_indexes).gather
    model = d.load_model(model_path)
    results = {}
    for s in ev.SPLITS:
        rows, y, probs, excluded = predict_split(model, features, index, objects, split_table, s, desc, classes,
                                                 source=str(split_path))
        if s == "valid" and valid_path:
            vrows, vprobs = d.read_valid_probabilities(valid_path, split_table, len(classes))
            probs = pd.DataFrame(vprobs, index=vrows["item_id"]).loc[rows["item_id"]].to_numpy()
        results[s] = ev.split_result(rows, y, probs, classes, s, include_augmented=False, bins=ece_bins,
                                     excluded=excluded, gather=gather)
        ev.write_split_outputs(results[s], classes, ev.split_paths(outputs, s),
                               experiment)
        m = results[s].metrics
        log.info("%s: accuracy %.4f, macro F1 %.4f (n = %d)", s, m["accuracy"], m["macro_f1"], m["n_objects"])
    d.plot_grid(read_tsv(grid_path), outputs["curves"],
                title=f"{experiment}: hyper-parameter search (fitted on train, scored on valid)")
    estimate = json.loads(Path(estimate_path).read_text(encoding="utf-8")) if estimate_path else None
    sections = summary_lines(experiment, info, results, classes, ev.split_counts(split_table), Path(model_path).name,
                             cnn, estimate)
    write_text(outputs["summary"], ev.summary_text(experiment, sections))
    write_text(outputs["summary_html"], ev.summary_html(experiment, sections, results))
    return results
