"""The descriptor baseline: scikit-learn classifiers on the numeric ``object_*`` columns of the export.

One call per rule:

* :func:`train_descriptors` (rule ``train_descriptors``): picks the feature
  columns (:func:`select_columns`), fits a small grid of classifiers on the
  **train** split, chooses the one with the best **validation** macro F1
  (:func:`choose_params`) and saves it. The test split is never read here, so
  test labels cannot influence the choice. (The seed's notebook chose on the
  test score, which makes its test score optimistic.)
* :func:`evaluate_descriptors` (rule ``evaluate_descriptors``): predicts the
  validation and test splits and writes the same files as ``evaluate_model``
  (through :mod:`lokiml.evaluate`), so the experiment appears in the leaderboard
  and the report like a CNN experiment.

The objects are the same as the CNNs': the originals (``augmented == 0``) of
``results/data/split.tsv``. Augmented copies are altered images, they have no
descriptors of their own, so they are left out of training and evaluation.

Column rule (recorded per column, with its reason, in ``columns.tsv``). A column
is a feature when all of these hold:

1. its name starts with ``object_`` (``not_an_object_column``);
2. it is not listed in ``exclude_columns`` (``excluded_by_config``);
3. it is not an identifier, label, position, coordinate, date or time
   (``identifier_or_coordinate``): after ``object_``, the name is one of
   ``id, lat, lon, latitude, longitude, date, time, datetime, timestamp,
   milliseconds, x, y, xm, ym, bx, by, cx, cy, xstart, ystart, posx, posy,
   xmg5, ymg5``, or starts with ``annotation``, ``depth``, ``date``, ``time``,
   ``lat`` or ``lon``, or contains ``index`` or ``timestamp``, or ends in ``_id``;
4. every value that is not missing is a number (``non_numeric``);
5. at most ``max_missing`` of the training objects miss it (``mostly_missing``;
   missing: empty, ``nan``, ``na``, ``null``, ``none``, infinite);
6. it takes at least two values among the training objects (``constant``).

Statistics 5 and 6 are computed on the training objects only. Remaining missing
values are passed as NaN: both classifiers handle them natively.
"""

from __future__ import annotations

import itertools
import json
import logging
import pickle
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import ConfigError, InputError
from .io import atomic_path, read_tsv, write_json, write_text, write_tsv

log = logging.getLogger(__name__)

CLASSIFIERS = ("random_forest", "hist_gradient_boosting")
# The grids searched when `param_grid` is null: small, so that a search takes seconds.
DEFAULT_GRIDS = {
    "random_forest": {"max_features": ["sqrt", 0.5], "min_samples_leaf": [1, 3]},
    "hist_gradient_boosting": {"learning_rate": [0.05, 0.1], "max_leaf_nodes": [15, 31]},
}
# Fixed settings (a `param_grid` entry overrides them).
BASE_PARAMS = {
    "random_forest": {"n_estimators": 200, "class_weight": "balanced"},
    "hist_gradient_boosting": {"max_iter": 200, "class_weight": "balanced", "early_stopping": True,
                               "validation_fraction": 0.1, "n_iter_no_change": 10},
}
SMALL_FOR_OPENMP = 2_000_000  # training values (objects x columns) below which boosting runs on one thread
DEFAULTS = {"classifier": "random_forest", "param_grid": None, "max_missing": 0.5, "exclude_columns": []}

MISSING = {"", "nan", "na", "n/a", "null", "none"}
_ID_EXACT = {"id", "lat", "lon", "latitude", "longitude", "date", "time", "datetime", "timestamp", "milliseconds",
             "x", "y", "xm", "ym", "bx", "by", "cx", "cy", "xstart", "ystart", "posx", "posy", "xmg5", "ymg5"}
_ID_PREFIX = ("annotation", "depth", "date", "time", "lat", "lon")
_ID_CONTAINS = ("index", "timestamp")
REASONS = {
    "used": "a feature",
    "not_an_object_column": "not an object_* column",
    "excluded_by_config": "listed in exclude_columns",
    "identifier_or_coordinate": "an identifier, label, position, coordinate, date or time",
    "non_numeric": "holds values that are not numbers",
    "mostly_missing": "missing for more than max_missing of the training objects",
    "constant": "fewer than two distinct values among the training objects",
}


def experiment_settings(params: dict) -> dict:
    """The descriptor keys of an experiment, with the defaults filled in."""
    out = {k: (v if params.get(k) is None else params[k]) for k, v in DEFAULTS.items()}
    out["seed"] = int(params.get("seed", 1))
    return out


def is_identifier(column: str) -> bool:
    """True for identifiers, labels, positions, coordinates, dates and times (see the module's column rule)."""
    name = column.lower()
    rest = name[len("object_"):] if name.startswith("object_") else name
    return (rest in _ID_EXACT or rest.startswith(_ID_PREFIX) or any(s in rest for s in _ID_CONTAINS)
            or rest.endswith("_id") or name.endswith("_id"))


def to_numbers(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(floats with NaN for missing, mask of values that are present but not numbers)."""
    text = values.astype(str).str.strip()
    missing = text.str.lower().isin(MISSING)
    nums = pd.to_numeric(text.where(~missing), errors="coerce").to_numpy(dtype=np.float64, copy=True)
    bad = np.isnan(nums) & ~missing.to_numpy()
    nums[~np.isfinite(nums)] = np.nan
    return nums, bad


def select_columns(objects: pd.DataFrame, max_missing: float = 0.5, exclude_columns=()) -> pd.DataFrame:
    """One row per column of ``objects``: ``column, used, reason, missing_share, distinct_values``.

    ``objects`` should hold the training objects only (the statistics are computed on them).
    """
    exclude = set(exclude_columns)
    rows = []
    n = len(objects)
    for col in objects.columns:
        row = {"column": col, "used": 0, "reason": "", "missing_share": float("nan"), "distinct_values": -1}
        if not col.startswith("object_"):
            row["reason"] = "not_an_object_column"
        elif col in exclude:
            row["reason"] = "excluded_by_config"
        elif is_identifier(col):
            row["reason"] = "identifier_or_coordinate"
        else:
            nums, bad = to_numbers(objects[col])
            present = nums[~np.isnan(nums)]
            row["missing_share"] = float((np.isnan(nums) & ~bad).mean()) if n else 1.0
            row["distinct_values"] = int(len(np.unique(present)))
            if bad.any():
                row["reason"] = "non_numeric"
            elif row["missing_share"] > max_missing:
                row["reason"] = "mostly_missing"
            elif row["distinct_values"] < 2:
                row["reason"] = "constant"
            else:
                row["used"], row["reason"] = 1, "used"
        rows.append(row)
    return pd.DataFrame(rows, columns=["column", "used", "reason", "missing_share", "distinct_values"])


def feature_matrix(objects: pd.DataFrame, columns, source: str = "objects.tsv") -> np.ndarray:
    """The ``columns`` of ``objects`` as floats (missing: NaN)."""
    missing = [c for c in columns if c not in objects.columns]
    if missing:
        raise InputError(source, f"missing descriptor column(s) {missing}",
                         hint="the objects table and the trained model come from different exports; rerun the workflow")
    x = np.empty((len(objects), len(columns)), dtype=np.float64)
    for j, c in enumerate(columns):
        x[:, j], bad = to_numbers(objects[c])
        if bad.any():
            raise InputError(source, f"column {c}: value {objects[c][bad].iloc[0]!r} is not a number")
    return x


def make_classifier(classifier: str, params: dict | None = None, seed: int = 1, n_jobs: int = 1):
    """An unfitted classifier: ``BASE_PARAMS`` updated by ``params``."""
    kw = dict(BASE_PARAMS[classifier])
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


def choose_params(x_train, y_train, x_valid, y_valid, classifier: str, grid: dict, n_classes: int, seed: int = 1,
                  n_jobs: int = 1):
    """Fit every grid candidate on the training data and score it on the validation data.

    Takes no test data: the choice cannot depend on the test split. The best
    candidate has the highest validation macro F1 (ties: lower validation log
    loss, then grid order). Returns (fitted best model, its params, a table of
    every candidate's scores).
    """
    from sklearn.metrics import f1_score, log_loss
    from threadpoolctl import threadpool_limits

    labels = list(range(n_classes))
    rows, best, best_key = [], None, None
    for i, cand in enumerate(grid_candidates(grid)):
        t0 = time.perf_counter()
        try:
            model = make_classifier(classifier, cand, seed, n_jobs)
        except TypeError as exc:
            raise ConfigError(f"param_grid of {classifier}: {exc}") from None
        with threadpool_limits(limits=openmp_threads(classifier, x_train.shape, n_jobs)):
            model.fit(x_train, y_train)
            p = full_probabilities(model, x_valid, n_classes)
        f1 = float(f1_score(y_valid, p.argmax(axis=1), labels=labels, average="macro", zero_division=0))
        p = np.clip(p, 1e-15, 1)
        ll = float(log_loss(y_valid, p / p.sum(axis=1, keepdims=True), labels=labels))
        seconds = time.perf_counter() - t0
        rows.append({"candidate": i, "params": json.dumps(cand, sort_keys=True), "valid_macro_f1": f1,
                     "valid_log_loss": ll, "seconds": seconds})
        log.info("candidate %d %s: validation macro F1 %.4f, log loss %.4f (%.1f s)", i, cand, f1, ll, seconds)
        key = (-f1, ll, i)
        if best_key is None or key < best_key:
            best, best_key = (model, cand), key
    table = pd.DataFrame(rows)
    table["chosen"] = (table["candidate"] == best_key[2]).astype(int)
    return best[0], best[1], table


def _originals(split_table: pd.DataFrame, split: str) -> pd.DataFrame:
    rows = split_table[(split_table["split"] == split) & (split_table["augmented"].astype(int) == 0)]
    return rows.sort_values("item_id", kind="stable").reset_index(drop=True)


def _objects_of(objects: pd.DataFrame, rows: pd.DataFrame, source: str) -> pd.DataFrame:
    """The rows of ``objects`` for the object ids of ``rows``, in that order."""
    idx = objects.drop_duplicates("object_id").set_index("object_id")
    unknown = sorted(set(rows["object_id"]) - set(idx.index))
    if unknown:
        raise InputError(source, f"{len(unknown)} object(s) of the split are not in the objects table: "
                                 f"{', '.join(unknown[:5])}", hint="rerun the workflow from read_export")
    return idx.loc[rows["object_id"]].reset_index()


def _labels(rows: pd.DataFrame, classes, source: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(rows["class_name"]) - set(index))
    if unknown:
        raise InputError(source, f"objects of classes that are not configured: {unknown}",
                         hint="the split and the configuration differ; rerun the workflow")
    return rows["class_name"].map(index).to_numpy(dtype=int)


def fit_descriptors(objects: pd.DataFrame, split_table: pd.DataFrame, classes, settings: dict, n_jobs: int = 1,
                    source: str = "split.tsv"):
    """Column choice, grid search on train/valid, the chosen model. No test row is read.

    Returns (model, columns table, chosen params, grid table).
    """
    classes = list(classes)
    train_rows, valid_rows = _originals(split_table, "train"), _originals(split_table, "valid")
    if train_rows.empty or valid_rows.empty:
        raise InputError(source, "no original objects in the train or the valid split")
    train_obj = _objects_of(objects, train_rows, source)
    valid_obj = _objects_of(objects, valid_rows, source)
    table = select_columns(train_obj, settings["max_missing"], settings["exclude_columns"])
    columns = table.loc[table["used"] == 1, "column"].tolist()
    if not columns:
        raise InputError(source, "no usable descriptor column (numeric object_* columns); see columns.tsv reasons",
                         hint="lower exclude_columns or raise max_missing, or use a CNN experiment")
    log.info("%d descriptor columns: %s", len(columns), ", ".join(columns))
    x_tr, x_va = feature_matrix(train_obj, columns), feature_matrix(valid_obj, columns)
    y_tr, y_va = _labels(train_rows, classes, source), _labels(valid_rows, classes, source)
    grid = settings["param_grid"] or DEFAULT_GRIDS[settings["classifier"]]
    model, chosen, grid_table = choose_params(x_tr, y_tr, x_va, y_va, settings["classifier"], grid, len(classes),
                                              settings["seed"], n_jobs)
    return model, table, chosen, grid_table


def save_model(path, model) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(model, fh, protocol=5)


def load_model(path):
    with open(path, "rb") as fh:
        return pickle.load(fh)


def train_descriptors(objects_path, split_path, classes, params: dict, out_model, out_classes, out_columns,
                      out_grid, out_info, threads: int = 1) -> dict:
    """Rule train_descriptors: fit, choose on validation, save model, classes, columns, grid and info."""
    import sklearn

    t0 = time.perf_counter()
    settings = experiment_settings(params)
    objects = read_tsv(objects_path)
    split_table = read_tsv(split_path)
    model, table, chosen, grid_table = fit_descriptors(objects, split_table, classes, settings, threads,
                                                       source=str(split_path))
    seconds = time.perf_counter() - t0
    save_model(out_model, model)
    write_text(out_classes, "".join(f"{c}\n" for c in classes))
    write_tsv(out_columns, table, float_format="%.4f")
    write_tsv(out_grid, grid_table.drop(columns=["seconds"]), float_format="%.6f")
    best = grid_table[grid_table["chosen"] == 1].iloc[0]
    info = {
        "kind": "descriptors", "classifier": settings["classifier"], "experiment": dict(params),
        "chosen_params": chosen, "chosen_by": "validation macro F1 (ties: validation log loss)",
        "valid_macro_f1": float(best["valid_macro_f1"]), "candidates": int(len(grid_table)),
        "columns": table.loc[table["used"] == 1, "column"].tolist(), "classes": list(classes),
        "items": {s: int(len(_originals(split_table, s))) for s in ("train", "valid")},
        "seconds_total": round(seconds, 1), "threads": int(threads), "device": "CPU",
        "sklearn": sklearn.__version__,
    }
    write_json(out_info, info)
    log.info("chose %s (validation macro F1 %.4f) in %.1f s", chosen, info["valid_macro_f1"], seconds)
    return info


def predict_split(model, objects: pd.DataFrame, split_table: pd.DataFrame, split: str, columns, classes,
                  source: str = "split.tsv"):
    """(rows of the split's originals, integer labels, probabilities), rows sorted by item id."""
    rows = _originals(split_table, split)
    if rows.empty:
        raise InputError(source, f"no {split} objects to evaluate")
    x = feature_matrix(_objects_of(objects, rows, source), columns)
    return rows, _labels(rows, classes, source), full_probabilities(model, x, len(classes))


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


def summary_lines(experiment: str, info: dict, results: dict, classes, counts: dict, model_file: str):
    """Sections of (label, value) pairs for summary.txt and summary.html."""
    test, valid = results["test"].metrics, results["valid"].metrics
    cols = info.get("columns", [])
    from .evaluate import _duration, result_lines

    model = [
        ("Model", f"{info.get('classifier', '?')} (scikit-learn) on {len(cols)} image descriptors of the export: "
                  f"{', '.join(cols)}"),
        ("Weights", "none: descriptors only, no image network"),
        chosen_line(info),
        ("Evaluated model", model_file),
    ]
    res = result_lines(test, valid, len(classes))
    training = [("Training time", f"{_duration(info.get('seconds_total'))} in total (grid search included), "
                                  f"{info.get('threads', '?')} thread(s)")]
    data = data_lines(classes, counts, valid, test, "descriptors")
    return [("Model", model), ("Results", res), ("Training", training), ("Data", data)]


def chosen_line(info: dict) -> tuple[str, str]:
    """The summary line of the parameters chosen by :func:`choose_params` (``train_info.json``)."""
    return ("Chosen parameters", f"{json.dumps(info.get('chosen_params', {}), sort_keys=True)} of "
                                 f"{info.get('candidates', '?')} candidates, by validation macro F1 (fitted on "
                                 "train; the test split was not used for the choice)")


def data_lines(classes, counts: dict, valid: dict, test: dict, what: str) -> list[tuple[str, str]]:
    """The "Data" section of a summary of a model that sees the original objects only (no augmented copies)."""
    data = [("Classes", f"{len(classes)}: {', '.join(classes)}")]
    for s, label in (("train", "Train"), ("valid", "Validation"), ("test", "Test")):
        data.append((label, f"{counts[s]['originals']} objects (augmented copies have no {what} of their own)"))
    data.append(("Evaluated on", f"originals only; valid {valid['n_objects']} and test {test['n_objects']} objects"))
    return data


def evaluate_descriptors(model_path, classes_path, columns_path, grid_path, info_path, objects_path, split_path,
                         classes, outputs: dict, experiment: str = "", ece_bins: int = 15) -> dict:
    """Rule evaluate_descriptors: the same outputs as evaluate_model (keys of ``outputs`` alike)."""
    from . import evaluate as ev

    trained = [c.strip() for c in Path(classes_path).read_text(encoding="utf-8").splitlines() if c.strip()]
    if classes is not None and list(classes) != trained:
        raise InputError(classes_path, f"the model was trained on classes {trained}, the configuration lists "
                                       f"{list(classes)}", hint="retrain the experiment (snakemake -R train_descriptors)")
    classes = trained
    table = read_tsv(columns_path)
    columns = table.loc[table["used"].astype(int) == 1, "column"].tolist()
    objects, split_table = read_tsv(objects_path), read_tsv(split_path)
    model = load_model(model_path)
    results = {}
    for s in ev.SPLITS:
        rows, y, probs = predict_split(model, objects, split_table, s, columns, classes, source=str(split_path))
        results[s] = ev.split_result(rows, y, probs, classes, s, include_augmented=False, bins=ece_bins)
        ev.write_split_outputs(results[s], classes, ev.split_paths(outputs, s),
                               experiment)
        m = results[s].metrics
        log.info("%s: accuracy %.4f, macro F1 %.4f (n = %d)", s, m["accuracy"], m["macro_f1"], m["n_objects"])
    info = json.loads(Path(info_path).read_text(encoding="utf-8"))
    plot_grid(read_tsv(grid_path), outputs["curves"],
              title=f"{experiment}: hyper-parameter search (fitted on train, scored on valid)")
    sections = summary_lines(experiment, info, results, classes, ev.split_counts(split_table), Path(model_path).name)
    write_text(outputs["summary"], ev.summary_text(experiment, sections))
    write_text(outputs["summary_html"], ev.summary_html(experiment, sections, results))
    return results
