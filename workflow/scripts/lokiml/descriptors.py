"""The descriptor baseline: scikit-learn classifiers on the export's ``object_*`` descriptors and the morphometrics.

One call per rule:

* :func:`train_descriptors` (rule ``train_descriptors``): picks the feature columns
  (:func:`lokiml.columns.select_columns`: the export's ``object_*`` descriptors and/or the ``morpho_*``
  descriptors measured on the images by :mod:`lokiml.morphometrics`, as ``features`` says; metadata
  left out), fits a small grid of classifiers on the **train** split, chooses the one with the best
  **validation** macro F1 (:func:`choose_params`), then (``refit: true``, the default) fits the chosen
  parameters again on train + valid, and saves that model. The test split is never read here, so test
  labels cannot influence the choice. (The seed's notebook chose on the test score, which makes its test
  score optimistic.) The validation probabilities of the chosen candidate *fitted on train only* are saved
  too (``valid_probabilities.tsv``): the refitted model has seen the valid objects, its score there would
  be a training score.
* :func:`estimate_descriptors` (rule ``estimate_descriptors``): the same procedure repeated over
  stratified k-fold splits and, with ``split.group_by``, over groups (:mod:`lokiml.estimates`).
* :func:`evaluate_descriptors` (rule ``evaluate_descriptors``): predicts the test split with the final
  model and writes the same files as ``evaluate_model`` (through :mod:`lokiml.evaluate`), so the
  experiment appears in the leaderboard and the report like a CNN experiment.

The objects are the same as the CNNs': the originals (``augmented == 0``) of ``results/data/split.tsv``.
Augmented copies are altered images, they have no descriptors of their own, so they are left out of
training and evaluation.

For prediction on new objects (lokiml.predict): :func:`load_trained` and :func:`predict_objects`.
"""

from __future__ import annotations

import itertools
import json
import logging
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import columns as cols
from .errors import ConfigError, InputError
from .io import atomic_path, read_tsv, write_json, write_text, write_tsv

log = logging.getLogger(__name__)

CLASSIFIERS = ("random_forest", "hist_gradient_boosting")
# The grids searched when `param_grid` is null: small, so that a search takes seconds.
DEFAULT_GRIDS = {
    "random_forest": {"max_features": ["sqrt", 0.5], "min_samples_leaf": [1, 3]},
    "hist_gradient_boosting": {"learning_rate": [0.05, 0.1], "max_leaf_nodes": [15, 31]},
}
# Fixed settings (a `param_grid` entry overrides them). Gradient boosting runs all its rounds unless
# the experiment's early_stopping_rounds says otherwise (see make_classifier).
BASE_PARAMS = {
    "random_forest": {"n_estimators": 200, "class_weight": "balanced"},
    "hist_gradient_boosting": {"max_iter": 200, "class_weight": "balanced", "early_stopping": False},
}
SMALL_FOR_OPENMP = 2_000_000  # training values (objects x columns) below which boosting runs on one thread
FEATURE_SOURCES = ("auto", "export", "morphometrics", "both")
DEFAULTS = {"classifier": "random_forest", "param_grid": None, "max_missing": 0.5, "exclude_columns": [],
            "include_columns": [], "features": "auto", "refit": True, "early_stopping_rounds": None,
            "estimate": {"folds": 5, "repeats": 2, "max_group_folds": 20, "group_by": None}}
# Kept for callers of the earlier API: the column rule lives in lokiml.columns.
REASONS = cols.REASONS
select_columns = cols.select_columns
feature_matrix = cols.feature_matrix
to_numbers = cols.to_numbers


def experiment_settings(params: dict) -> dict:
    """The descriptor keys of an experiment, with the defaults filled in (``estimate: null`` stays None)."""
    from .estimates import settings_of

    out = {k: (v if params.get(k) is None else params[k]) for k, v in DEFAULTS.items()}
    out["estimate"] = settings_of(params["estimate"]) if "estimate" in params else settings_of(DEFAULTS["estimate"])
    out["seed"] = int(params.get("seed", 1))
    if out["features"] not in FEATURE_SOURCES:
        raise ConfigError(f"features: {out['features']!r} is none of {', '.join(FEATURE_SOURCES)}")
    return out


def needs_morphometrics(features: str) -> bool:
    """Whether an experiment with this ``features`` setting reads the morphometrics of the images."""
    return features in ("auto", "morphometrics", "both")


def feature_sources(features: str) -> tuple[str, ...]:
    """The descriptor sources (:data:`lokiml.columns.DESCRIPTOR_PREFIXES`) of a ``features`` setting."""
    return {"export": ("export",), "morphometrics": ("morphometrics",)}.get(features, ("export", "morphometrics"))


# --------------------------------------------------------------------------------------------
# Classifiers and the grid search
# --------------------------------------------------------------------------------------------

def make_classifier(classifier: str, params: dict | None = None, seed: int = 1, n_jobs: int = 1,
                    early_stopping_rounds: int | None = None):
    """An unfitted classifier: ``BASE_PARAMS`` updated by ``params``.

    ``early_stopping_rounds`` (gradient boosting only): stop when the loss on an internal 10 % of the
    training objects has not improved for that many rounds (scikit-learn's ``early_stopping=True,
    n_iter_no_change``). None (the default): every one of ``max_iter`` rounds is run; on a few hundred
    objects the internal 10 % is too small to stop on (it stopped after 64 of 200 rounds on 194 LOKI
    objects, and scored 0.04 below scikit-learn's defaults).
    """
    kw = dict(BASE_PARAMS[classifier]) if classifier in BASE_PARAMS else {}
    if early_stopping_rounds is not None and classifier == "hist_gradient_boosting":
        kw.update(early_stopping=True, n_iter_no_change=int(early_stopping_rounds), validation_fraction=0.1)
    kw.update(params or {})
    if classifier == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(random_state=seed, n_jobs=n_jobs, **kw)
    if classifier == "hist_gradient_boosting":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(random_state=seed, **kw)
    raise ConfigError(f"unknown classifier {classifier!r} (known: {', '.join(CLASSIFIERS)})")


def openmp_threads(classifier: str, shape, n_jobs: int) -> int:
    """OpenMP threads of a fit: 1 for gradient boosting on small tables.

    Measured on 2 shared cores with 6 000 x 12 training values: 6 s with one thread, 67 s with two
    (each of its many small trees is a parallel region; waiting threads cost more than they bring).
    """
    if classifier == "hist_gradient_boosting" and shape[0] * max(shape[1], 1) < SMALL_FOR_OPENMP:
        return 1
    return n_jobs


def grid_candidates(grid: dict) -> list[dict]:
    """Every combination of the grid, in a stable order (keys sorted, values as listed)."""
    keys = sorted(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def full_probabilities(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """``predict_proba`` with one column per configured class (classes absent from training get 0)."""
    p = model.predict_proba(x)
    out = np.zeros((len(x), n_classes), dtype=np.float64)
    out[:, np.asarray(model.classes_, dtype=int)] = p
    return out


def fit_classifier(classifier: str, params: dict, x, y, seed: int = 1, n_jobs: int = 1,
                   early_stopping_rounds: int | None = None):
    """A classifier with ``params`` fitted on (x, y), with the thread limits of :func:`openmp_threads`."""
    from threadpoolctl import threadpool_limits

    try:
        model = make_classifier(classifier, params, seed, n_jobs, early_stopping_rounds)
    except TypeError as exc:
        raise ConfigError(f"param_grid of {classifier}: {exc}") from None
    with threadpool_limits(limits=openmp_threads(classifier, x.shape, n_jobs)):
        try:
            model.fit(x, y)
        except (TypeError, ValueError) as exc:
            if "param" in str(exc).lower() or "parameter" in str(exc).lower():
                raise ConfigError(f"param_grid of {classifier}: {exc}") from None
            raise
    return model


def choose_params(x_train, y_train, x_valid, y_valid, classifier: str, grid: dict, n_classes: int, seed: int = 1,
                  n_jobs: int = 1, early_stopping_rounds: int | None = None):
    """Fit every grid candidate on the training data and score it on the validation data.

    Takes no test data: the choice cannot depend on the test split. The best candidate has the highest
    validation macro F1 (ties: lower validation log loss, then grid order). Returns (fitted best model,
    its params, a table of every candidate's scores, the best model's validation probabilities).
    """
    from sklearn.metrics import f1_score, log_loss
    from threadpoolctl import threadpool_limits

    labels = list(range(n_classes))
    rows, best, best_key = [], None, None
    for i, cand in enumerate(grid_candidates(grid)):
        t0 = time.perf_counter()
        model = fit_classifier(classifier, cand, x_train, y_train, seed, n_jobs, early_stopping_rounds)
        with threadpool_limits(limits=openmp_threads(classifier, x_train.shape, n_jobs)):
            p = full_probabilities(model, x_valid, n_classes)
        f1 = float(f1_score(y_valid, p.argmax(axis=1), labels=labels, average="macro", zero_division=0))
        pc = np.clip(p, 1e-15, 1)
        ll = float(log_loss(y_valid, pc / pc.sum(axis=1, keepdims=True), labels=labels))
        seconds = time.perf_counter() - t0
        rows.append({"candidate": i, "params": json.dumps(cand, sort_keys=True), "valid_macro_f1": f1,
                     "valid_log_loss": ll, "seconds": seconds})
        log.debug("candidate %d %s: validation macro F1 %.4f, log loss %.4f (%.1f s)", i, cand, f1, ll, seconds)
        key = (-f1, ll, i)
        if best_key is None or key < best_key:
            best, best_key = (model, cand, p), key
    table = pd.DataFrame(rows)
    table["chosen"] = (table["candidate"] == best_key[2]).astype(int)
    return best[0], best[1], table, best[2]


def log_grid(grid_table: pd.DataFrame) -> None:
    for r in grid_table.itertuples():
        log.info("candidate %d %s: validation macro F1 %.4f, log loss %.4f (%.1f s)%s", r.candidate, r.params,
                 r.valid_macro_f1, r.valid_log_loss, r.seconds, "  <- chosen" if r.chosen else "")


# --------------------------------------------------------------------------------------------
# Objects of the split
# --------------------------------------------------------------------------------------------

def originals(split_table: pd.DataFrame, split: str | None) -> pd.DataFrame:
    """The original objects (``augmented == 0``) of one split (None: every split), sorted by item id."""
    rows = split_table[split_table["augmented"].astype(int) == 0]
    if split is not None:
        rows = rows[rows["split"] == split]
    return rows.sort_values("item_id", kind="stable").reset_index(drop=True)


def objects_of(objects: pd.DataFrame, rows: pd.DataFrame, source: str) -> pd.DataFrame:
    """The rows of ``objects`` for the object ids of ``rows``, in that order."""
    idx = objects.drop_duplicates("object_id").set_index("object_id")
    unknown = sorted(set(rows["object_id"]) - set(idx.index))
    if unknown:
        raise InputError(source, f"{len(unknown)} object(s) of the split are not in the objects table: "
                                 f"{', '.join(unknown[:5])}", hint="rerun the workflow from read_export")
    return idx.loc[rows["object_id"]].reset_index()


def labels_of(rows: pd.DataFrame, classes, source: str) -> np.ndarray:
    """Integer labels (index in ``classes``) of ``rows``."""
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(rows["class_name"]) - set(index))
    if unknown:
        raise InputError(source, f"objects of classes that are not configured: {unknown}",
                         hint="the split and the configuration differ; rerun the workflow")
    return rows["class_name"].map(index).to_numpy(dtype=int)


# the earlier private names, used by lokiml.deep_features before they were public
_originals, _objects_of, _labels = originals, objects_of, labels_of


def with_morphometrics(objects: pd.DataFrame, morpho: pd.DataFrame | None) -> pd.DataFrame:
    """``objects`` with the ``morpho_*`` columns of ``morpho`` joined by object id (missing where not measured)."""
    if morpho is None:
        return objects
    from .morphometrics import FEATURES

    extra = morpho.drop_duplicates("object_id").set_index("object_id")
    extra = extra[[c for c in ["morpho_status", *FEATURES] if c in extra.columns]]
    base = objects.drop(columns=[c for c in extra.columns if c in objects.columns])
    joined = base.join(extra, on="object_id")
    joined["morpho_status"] = joined["morpho_status"].fillna("not_measured")
    return joined.fillna({c: "" for c in FEATURES if c in joined.columns})


def morphometrics_note(objects: pd.DataFrame) -> str:
    """How many objects were measured on their image, and why the others were not (for logs and summaries)."""
    if "morpho_status" not in objects.columns:
        return ""
    counts = objects["morpho_status"].astype(str).map(lambda s: s.split(":")[0]).value_counts()
    return ", ".join(f"{k} {v}" for k, v in counts.items())


# --------------------------------------------------------------------------------------------
# Training (rule train_descriptors)
# --------------------------------------------------------------------------------------------

@dataclass
class Fitted:
    """What :func:`fit_descriptors` returns."""

    model: object  # the final model (refitted on train + valid with refit: true)
    table: pd.DataFrame  # columns.tsv
    chosen: dict
    grid: pd.DataFrame
    valid_rows: pd.DataFrame
    valid_probs: np.ndarray  # of the chosen candidate fitted on train only
    refit: bool
    items: dict

    # the earlier API returned (model, table, chosen, grid)
    def __iter__(self):
        return iter((self.model, self.table, self.chosen, self.grid))


def choose_columns(train_obj: pd.DataFrame, settings: dict, source: str) -> tuple[pd.DataFrame, list[str]]:
    """The columns table (on the training objects) and the used columns; a clear error when none is usable."""
    table = cols.select_columns(train_obj, settings["max_missing"], settings["exclude_columns"],
                                settings["include_columns"], feature_sources(settings["features"]))
    used = cols.used_columns(table)
    if not used:
        measured = morphometrics_note(train_obj)
        raise InputError(source, f"no usable descriptor column (features: {settings['features']}): "
                                 + cols.explain_unused(table)
                                 + (f"; morphometrics of the training objects: {measured}" if measured else ""),
                         hint="use features: auto or both for an export with images, include_columns for columns "
                              "left out on purpose, raise max_missing, or use a CNN experiment")
    return table, used


def fit_descriptors(objects: pd.DataFrame, split_table: pd.DataFrame, classes, settings: dict, n_jobs: int = 1,
                    source: str = "split.tsv") -> Fitted:
    """Column choice, grid search on train/valid, refit on train + valid. No test row is read.

    ``objects`` holds the export's columns and, for ``features`` other than ``export``, the ``morpho_*``
    columns (:func:`with_morphometrics`).
    """
    classes = list(classes)
    train_rows, valid_rows = originals(split_table, "train"), originals(split_table, "valid")
    if train_rows.empty or valid_rows.empty:
        raise InputError(source, "no original objects in the train or the valid split")
    train_obj = objects_of(objects, train_rows, source)
    valid_obj = objects_of(objects, valid_rows, source)
    if "morpho_status" in train_obj.columns:
        log.info("morphometrics of the training objects: %s", morphometrics_note(train_obj))
    table, used = choose_columns(train_obj, settings, source)
    log.info("%d descriptor columns: %s", len(used), ", ".join(used))
    x_tr, x_va = cols.feature_matrix(train_obj, used), cols.feature_matrix(valid_obj, used)
    y_tr, y_va = labels_of(train_rows, classes, source), labels_of(valid_rows, classes, source)
    grid = settings["param_grid"] or DEFAULT_GRIDS[settings["classifier"]]
    model, chosen, grid_table, valid_probs = choose_params(
        x_tr, y_tr, x_va, y_va, settings["classifier"], grid, len(classes), settings["seed"], n_jobs,
        settings["early_stopping_rounds"])
    log_grid(grid_table)
    if settings["refit"]:
        t0 = time.perf_counter()
        model = fit_classifier(settings["classifier"], chosen, np.vstack([x_tr, x_va]), np.concatenate([y_tr, y_va]),
                               settings["seed"], n_jobs, settings["early_stopping_rounds"])
        log.info("refitted %s on train + valid (%d objects) in %.1f s", chosen, len(y_tr) + len(y_va),
                 time.perf_counter() - t0)
    return Fitted(model, table, chosen, grid_table, valid_rows, valid_probs, bool(settings["refit"]),
                  {"train": len(train_rows), "valid": len(valid_rows)})


def save_model(path, model) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(model, fh, protocol=5)


def load_model(path):
    """A model saved by a train rule (a pickle: load it only from a source you trust)."""
    with open(path, "rb") as fh:
        return pickle.load(fh)


def write_valid_probabilities(path, rows: pd.DataFrame, probs: np.ndarray) -> None:
    """``item_id, object_id, prob_0 ... prob_{k-1}`` (classes in the order of classes.txt)."""
    table = pd.DataFrame(probs, columns=[f"prob_{i}" for i in range(probs.shape[1])])
    table.insert(0, "object_id", rows["object_id"].to_numpy())
    table.insert(0, "item_id", rows["item_id"].to_numpy())
    write_tsv(path, table, float_format="%.8g")


def read_valid_probabilities(path, split_table: pd.DataFrame, n_classes: int) -> tuple[pd.DataFrame, np.ndarray]:
    """(the valid split's rows, their probabilities) from :func:`write_valid_probabilities`, checked."""
    table = read_tsv(path)
    rows = originals(split_table, "valid")
    if sorted(table["item_id"]) != sorted(rows["item_id"]):
        raise InputError(path, "its objects are not the valid split's", hint="rerun the train rule")
    table = table.set_index("item_id").loc[rows["item_id"]]
    probs = table[[f"prob_{i}" for i in range(n_classes)]].astype(float).to_numpy()
    return rows, probs


def load_morphometrics(paths, objects: pd.DataFrame) -> pd.DataFrame:
    """``objects`` with the measured ``morpho_*`` columns of the shards of rule compute_morphometrics."""
    from .morphometrics import read_morphometrics

    return with_morphometrics(objects, read_morphometrics(list(paths)))


def train_descriptors(objects_path, split_path, classes, params: dict, out_model, out_classes, out_columns,
                      out_grid, out_info, out_valid=None, threads: int = 1, morphometrics=(),
                      morpho_params: dict | None = None) -> dict:
    """Rule train_descriptors: fit, choose on validation, refit, save model, classes, columns, grid and info.

    ``morphometrics``: the shard tables of rule compute_morphometrics (empty with ``features: export``);
    ``morpho_params``: how they were measured (recorded in ``train_info.json`` for prediction).
    """
    import sklearn

    t0 = time.perf_counter()
    settings = experiment_settings(params)
    objects = read_tsv(objects_path)
    if morphometrics:
        objects = load_morphometrics(morphometrics, objects)
    split_table = read_tsv(split_path)
    fitted = fit_descriptors(objects, split_table, classes, settings, threads, source=str(split_path))
    seconds = time.perf_counter() - t0
    save_model(out_model, fitted.model)
    write_text(out_classes, "".join(f"{c}\n" for c in classes))
    write_tsv(out_columns, fitted.table, float_format="%.4f")
    write_tsv(out_grid, fitted.grid.drop(columns=["seconds"]), float_format="%.6f")
    if out_valid:
        write_valid_probabilities(out_valid, fitted.valid_rows, fitted.valid_probs)
    used = cols.used_columns(fitted.table)
    best = fitted.grid[fitted.grid["chosen"] == 1].iloc[0]
    info = {
        "kind": "descriptors", "classifier": settings["classifier"], "experiment": dict(params),
        "features": settings["features"], "chosen_params": fitted.chosen,
        "chosen_by": "validation macro F1 (ties: validation log loss)",
        "valid_macro_f1": float(best["valid_macro_f1"]), "candidates": int(len(fitted.grid)),
        "refit": fitted.refit, "early_stopping_rounds": settings["early_stopping_rounds"],
        "fitted_on": (fitted.items["train"] + fitted.items["valid"]) if fitted.refit else fitted.items["train"],
        "columns": used, "classes": list(classes), "items": fitted.items,
        "morphometrics": ({**dict(morpho_params or {}), "columns": [c for c in used if c.startswith("morpho_")],
                           "measured": morphometrics_note(objects)} if morphometrics else None),
        "seconds_total": round(seconds, 1), "threads": int(threads), "device": "CPU",
        "sklearn": sklearn.__version__,
    }
    write_json(out_info, info)
    log.info("chose %s (validation macro F1 %.4f) in %.1f s", fitted.chosen, info["valid_macro_f1"], seconds)
    return info


# --------------------------------------------------------------------------------------------
# Estimates (rule estimate_descriptors)
# --------------------------------------------------------------------------------------------

def descriptor_learner(x: np.ndarray, y: np.ndarray, settings: dict, n_classes: int, n_jobs: int = 1):
    """The experiment's procedure as a learner for :func:`lokiml.estimates.run_estimate` (on rows of ``x``)."""
    grid = settings["param_grid"] or DEFAULT_GRIDS[settings["classifier"]]

    def learn(train, valid, pool):
        model, chosen, _, _ = choose_params(x[train], y[train], x[valid], y[valid], settings["classifier"], grid,
                                            n_classes, settings["seed"], n_jobs, settings["early_stopping_rounds"])
        if settings["refit"]:
            model = fit_classifier(settings["classifier"], chosen, x[pool], y[pool], settings["seed"], n_jobs,
                                   settings["early_stopping_rounds"])
        return (lambda test: full_probabilities(model, x[test], n_classes)), chosen

    return learn


def valid_share_of(split: dict | None) -> float:
    """The share of a fold's training objects that validates the grid: the split's valid / (train + valid)."""
    split = split or {}
    train, valid = float(split.get("train", 0.6)), float(split.get("valid", 0.2))
    return valid / (train + valid)


def estimate_descriptors(objects_path, split_path, columns_path, classes, params: dict, out_table, out_json,
                         split: dict | None = None, threads: int = 1, morphometrics=()) -> dict:
    """Rule estimate_descriptors: repeated k-fold (and leave-one-group-out) estimate of the experiment.

    Over every original object of the split (train, valid and test), on the columns the experiment uses
    (chosen on its training objects from label-free statistics: missing share and distinct values).
    """
    from .estimates import fold_plan, group_column, groups_of, run_estimate

    t0 = time.perf_counter()
    settings = experiment_settings(params)
    est = settings["estimate"] or experiment_settings({})["estimate"]
    split = dict(split or {})
    objects = read_tsv(objects_path)
    if morphometrics:
        objects = load_morphometrics(morphometrics, objects)
    split_table = read_tsv(split_path)
    used = cols.used_columns(read_tsv(columns_path))
    rows = originals(split_table, None)
    obj = objects_of(objects, rows, str(split_path))
    x = cols.feature_matrix(obj, used)
    y = labels_of(rows, classes, str(split_path))
    group_by = group_column(est, split)
    groups = groups_of(obj, group_by, str(objects_path))
    plan = fold_plan(y, est["folds"], est["repeats"], settings["seed"], groups, None, est["max_group_folds"])
    valid_share = valid_share_of(split)
    log.info("estimate over %d objects, %d columns: %d folds (%s)", len(y), len(used), len(plan),
             ", ".join(f"{s} {sum(f.scheme == s for f in plan)}" for s in ("kfold", "logo")))
    result = run_estimate(y, len(classes), plan, descriptor_learner(x, y, settings, len(classes), threads),
                          valid_share, settings["seed"])
    # no wall time in it: an unchanged estimate is byte-identical
    summary = {**result.summary, "settings": est, "refit": bool(settings["refit"]), "valid_share": valid_share,
               "group_by": group_by, "n_objects": int(len(y)), "columns": len(used),
               "note": f"every original object of the split ({len(y)}), on the experiment's {len(used)} columns"}
    write_tsv(out_table, result.table, float_format="%.6f")
    write_json(out_json, summary)
    log.info("estimate done in %.1f s: %s", time.perf_counter() - t0,
             json.dumps({k: summary[k] and {m: summary[k][m] for m in ("macro_f1_mean", "macro_f1_sd")}
                         for k in ("kfold", "logo")}))
    return summary


# --------------------------------------------------------------------------------------------
# Evaluation (rule evaluate_descriptors)
# --------------------------------------------------------------------------------------------

def predict_split(model, objects: pd.DataFrame, split_table: pd.DataFrame, split: str, columns, classes,
                  source: str = "split.tsv"):
    """(rows of the split's originals, integer labels, probabilities), rows sorted by item id."""
    rows = originals(split_table, split)
    if rows.empty:
        raise InputError(source, f"no {split} objects to evaluate")
    x = cols.feature_matrix(objects_of(objects, rows, source), columns)
    return rows, labels_of(rows, classes, source), full_probabilities(model, x, len(classes))


def plot_grid(grid_table: pd.DataFrame, path, title: str = "") -> None:
    """Validation macro F1 of every grid candidate, the chosen one highlighted."""
    from .evaluate import _RC, _pyplot, save_figure

    plt = _pyplot()
    n = len(grid_table)
    with plt.rc_context(_RC):
        fig, ax = plt.subplots(figsize=(9.0, max(2.5, 0.45 * n + 1.2)))
        y = np.arange(n)[::-1]
        vals = grid_table["valid_macro_f1"].astype(float).to_numpy()
        colours = ["#55a868" if c else "#4c72b0" for c in grid_table["chosen"].astype(int)]
        ax.barh(y, vals, color=colours, height=0.6)
        for yi, v in zip(y, vals):
            ax.text(v + 0.005, yi, f"{v:.3f}", va="center", fontsize=9)
        ax.set_yticks(y)
        ax.set_yticklabels(grid_table["params"].tolist(), fontsize=9)
        ax.set_xlim(0, 1.08)
        ax.set_xlabel("validation macro F1 (green: chosen)")
        if title:
            ax.set_title(title)
        save_figure(fig, path)


def describe_columns(used) -> str:
    """``12 of the export (object_area, ...) and 49 measured on the images (morpho_*)``."""
    export = [c for c in used if not c.startswith("morpho_")]
    morpho = [c for c in used if c.startswith("morpho_")]
    parts = []
    if export:
        parts.append(f"{len(export)} descriptors of the export: {', '.join(export)}")
    if morpho:
        parts.append(f"{len(morpho)} morphometric descriptors measured on the images (morpho_*: shape, grey levels, "
                     "Hu moments)")
    return " and ".join(parts) or "no column"


def summary_lines(experiment: str, info: dict, results: dict, classes, counts: dict, model_file: str,
                  estimate: dict | None = None):
    """Sections of (label, value) pairs for summary.txt and summary.html."""
    from .estimates import summary_lines as estimate_lines
    from .evaluate import _duration, result_lines

    test, valid = results["test"].metrics, results["valid"].metrics
    used = info.get("columns", [])
    model = [
        ("Model", f"{info.get('classifier', '?')} (scikit-learn) on {describe_columns(used)}"),
        ("Weights", "none: descriptors only, no image network"),
        chosen_line(info),
        refit_line(info),
        ("Evaluated model", model_file),
    ]
    if info.get("morphometrics"):
        m = info["morphometrics"]
        model.insert(2, ("Morphometrics", f"measured on the original images (threshold {m.get('threshold')}, "
                                          f"polarity {m.get('polarity')}, bottom_crop {m.get('bottom_crop')}): "
                                          f"{m.get('measured') or '?'}"))
    res = result_lines(test, valid, len(classes))
    training = [("Training time", f"{_duration(info.get('seconds_total'))} in total (grid search and refit "
                                  f"included), {info.get('threads', '?')} thread(s)")]
    data = data_lines(classes, counts, valid, test, "descriptors")
    sections = [("Model", model), ("Results", res)]
    if estimate is not None:
        sections.append(("Estimates", estimate_lines(estimate)))
    return sections + [("Training", training), ("Data", data)]


def chosen_line(info: dict) -> tuple[str, str]:
    """The summary line of the parameters chosen by :func:`choose_params` (``train_info.json``)."""
    return ("Chosen parameters", f"{json.dumps(info.get('chosen_params', {}), sort_keys=True)} of "
                                 f"{info.get('candidates', '?')} candidates, by validation macro F1 (fitted on "
                                 "train; the test split was not used for the choice)")


def refit_line(info: dict) -> tuple[str, str]:
    """The summary line saying which objects the evaluated model was fitted on."""
    if info.get("refit"):
        return ("Refit", f"the chosen parameters fitted again on train + valid ({info.get('fitted_on', '?')} "
                         "objects): the test scores are this model's; the validation scores are those of the chosen "
                         "candidate fitted on train only")
    return ("Refit", "none (refit: false): the model fitted on train is evaluated")


def data_lines(classes, counts: dict, valid: dict, test: dict, what: str) -> list[tuple[str, str]]:
    """The "Data" section of a summary of a model that sees the original objects only (no augmented copies)."""
    data = [("Classes", f"{len(classes)}: {', '.join(classes)}")]
    for s, label in (("train", "Train"), ("valid", "Validation"), ("test", "Test")):
        data.append((label, f"{counts[s]['originals']} objects (augmented copies have no {what} of their own)"))
    data.append(("Evaluated on", f"originals only; valid {valid['n_objects']} and test {test['n_objects']} objects"))
    return data


def evaluate_descriptors(model_path, classes_path, columns_path, grid_path, info_path, objects_path, split_path,
                         classes, outputs: dict, experiment: str = "", ece_bins: int = 15, valid_path=None,
                         estimate_path=None, morphometrics=()) -> dict:
    """Rule evaluate_descriptors: the same outputs as evaluate_model (keys of ``outputs`` alike).

    The test split is predicted by the final model; the valid split's probabilities are read from
    ``valid_path`` (the chosen candidate fitted on train only; without it, the final model predicts it).
    """
    from . import evaluate as ev

    trained = [c.strip() for c in Path(classes_path).read_text(encoding="utf-8").splitlines() if c.strip()]
    if classes is not None and list(classes) != trained:
        raise InputError(classes_path, f"the model was trained on classes {trained}, the configuration lists "
                                       f"{list(classes)}", hint="retrain the experiment (snakemake -R train_descriptors)")
    classes = trained
    used = cols.used_columns(read_tsv(columns_path))
    objects, split_table = read_tsv(objects_path), read_tsv(split_path)
    if morphometrics:
        objects = load_morphometrics(morphometrics, objects)
    model = load_model(model_path)
    results = {}
    for s in ev.SPLITS:
        if s == "valid" and valid_path:
            rows, probs = read_valid_probabilities(valid_path, split_table, len(classes))
            y = labels_of(rows, classes, str(split_path))
        else:
            rows, y, probs = predict_split(model, objects, split_table, s, used, classes, source=str(split_path))
        results[s] = ev.split_result(rows, y, probs, classes, s, include_augmented=False, bins=ece_bins)
        ev.write_split_outputs(results[s], classes, {key: outputs[f"{s}_{key}"] for key in ev.SPLIT_OUTPUTS},
                               experiment)
        m = results[s].metrics
        log.info("%s: accuracy %.4f, macro F1 %.4f (n = %d)", s, m["accuracy"], m["macro_f1"], m["n_objects"])
    info = json.loads(Path(info_path).read_text(encoding="utf-8"))
    estimate = json.loads(Path(estimate_path).read_text(encoding="utf-8")) if estimate_path else None
    plot_grid(read_tsv(grid_path), outputs["curves"],
              title=f"{experiment}: hyper-parameter search (fitted on train, scored on valid)")
    sections = summary_lines(experiment, info, results, classes, ev.split_counts(split_table), Path(model_path).name,
                             estimate)
    write_text(outputs["summary"], ev.summary_text(experiment, sections))
    write_text(outputs["summary_html"], ev.summary_html(experiment, sections, results))
    return results


# --------------------------------------------------------------------------------------------
# Prediction on new objects (public API for lokiml.predict)
# --------------------------------------------------------------------------------------------

@dataclass
class Trained:
    """A trained descriptors experiment, as :func:`load_trained` reads it from its folder."""

    model: object
    classes: list
    columns: list  # the model's input columns, in order
    info: dict

    @property
    def morpho_params(self):
        """The :class:`lokiml.morphometrics.MorphoParams` of the model's ``morpho_*`` columns, or None (it has none)."""
        from .morphometrics import MorphoParams

        m = self.info.get("morphometrics")
        if not m or not any(c.startswith("morpho_") for c in self.columns):
            return None
        return MorphoParams(threshold=int(m["threshold"]), polarity=m["polarity"], bottom_crop=float(m["bottom_crop"]),
                            max_pixels=int(m.get("max_pixels", 100_000_000)))

    @property
    def needs_images(self) -> bool:
        return self.morpho_params is not None


def load_trained(exp_dir) -> Trained:
    """The model, classes, input columns and train_info of ``results/experiments/{experiment}/`` (descriptors)."""
    exp_dir = Path(exp_dir)
    classes = [c.strip() for c in (exp_dir / "classes.txt").read_text(encoding="utf-8").splitlines() if c.strip()]
    used = cols.used_columns(read_tsv(exp_dir / "columns.tsv"))
    info = json.loads((exp_dir / "train_info.json").read_text(encoding="utf-8"))
    return Trained(load_model(exp_dir / "model.pkl"), classes, used, info)


def features_of(trained: Trained, objects: pd.DataFrame, read_bytes=None, threads: int = 1, cache_dir=None,
                source: str = "objects") -> np.ndarray:
    """The model's input matrix for ``objects`` (an EcoTaxa table: ``object_id`` and its ``object_*`` columns).

    When the model uses morphometrics, they are measured on the images, exactly as in training
    (``trained.morpho_params``): ``objects`` needs ``image_ref`` and ``read_bytes(image_ref) -> bytes``.
    Objects whose image cannot be measured get missing values (the classifiers take them). A column of
    the export that the model uses but ``objects`` lacks is an error naming it.
    """
    from .morphometrics import measure_items

    table = objects
    p = trained.morpho_params
    if p is not None:
        if read_bytes is None or "image_ref" not in objects.columns:
            raise InputError(source, "the model uses morphometrics measured on the images, but no image is given",
                             hint="give the objects' images (image_ref and a reader)")
        morpho = measure_items(objects[["object_id", "image_ref"]], read_bytes, p, threads, cache_dir)
        table = with_morphometrics(objects, morpho)
    return cols.feature_matrix(table, trained.columns, source)


def predict_objects(trained: Trained, objects: pd.DataFrame, read_bytes=None, threads: int = 1,
                    cache_dir=None) -> np.ndarray:
    """Probabilities ``(len(objects), len(trained.classes))`` of the objects (see :func:`features_of`)."""
    x = features_of(trained, objects, read_bytes, threads, cache_dir)
    return full_probabilities(trained.model, x, len(trained.classes))
