"""A descriptors experiment in the workflow, alone (no CNN): morphometrics measured on the demo's images,
metadata left out, refit, its estimate (k-fold and a new cruise) in the summary and the leaderboard, and
reruns that redo only what a change makes stale."""

import json

import pandas as pd
import pytest

from project_copy import make_copy
from test_workflow import jobs_to_run, snakemake

pytestmark = pytest.mark.workflow

ONLY_DESCRIPTORS = """experiments:
  tiny: null
  forest:
    kind: descriptors
    classifier: random_forest
    param_grid: {n_estimators: [30], min_samples_leaf: [1, 3]}
    estimate: {folds: 3, repeats: 1, group_by: object_cruise}
"""
CONFIG = ("--configfile", "config/config.yaml", "tiny.yaml", "forest.yaml")


@pytest.fixture(scope="module")
def forest_run(project_root, tmp_path_factory):
    wd = make_copy(project_root, tmp_path_factory.mktemp("forest"))
    (wd / "forest.yaml").write_text(ONLY_DESCRIPTORS)
    before = jobs_to_run(wd, *CONFIG)
    snakemake(wd, *CONFIG)
    return wd, before


def test_jobs_morphometrics_in_shards_and_no_cnn(forest_run):
    _, before = forest_run
    assert before["compute_morphometrics"] == 2  # normalise.shards: 2 in tiny.yaml, never a job per image
    for rule in ("train_descriptors", "estimate_descriptors", "evaluate_descriptors", "make_leaderboard"):
        assert before[rule] == 1, before
    assert not {"normalise_images", "train_model"} & set(before), before


def test_columns_morphometrics_estimate_and_leaderboard(forest_run):
    wd, _ = forest_run
    data, exp, ev = wd / "results" / "data", wd / "results" / "experiments" / "forest", wd / "results" / "evaluation"
    split = pd.read_csv(data / "split.tsv", sep="\t", dtype=str, keep_default_na=False)
    originals = split[split["augmented"] == "0"]
    morpho = pd.concat([pd.read_csv(p, sep="\t", dtype=str, keep_default_na=False)
                        for p in sorted((data / "morphometrics").glob("shard*.tsv"))])
    assert sorted(morpho["object_id"]) == sorted(originals["object_id"])  # every original once, no copy
    assert (morpho["morpho_status"] == "ok").all()
    columns = pd.read_csv(exp / "columns.tsv", sep="\t", keep_default_na=False).set_index("column")
    used = columns.index[columns["used"] == 1]
    assert any(c.startswith("morpho_") for c in used) and any(c.startswith("object_") for c in used)  # auto: both
    reasons = columns["reason"].to_dict()
    assert reasons["object_lat"] == "position" and reasons["object_depth_min"] == "depth"
    assert reasons["object_cruise"] == "sampling_event" and reasons["object_index"] == "identifier"
    info = json.loads((exp / "train_info.json").read_text())
    assert info["refit"] is True and info["morphometrics"]["threshold"] == 245
    assert info["fitted_on"] == int((originals["split"] != "test").sum())
    estimate = json.loads((ev / "forest" / "estimate.json").read_text())
    assert estimate["kfold"]["folds"] == 3 and estimate["group_by"] == "object_cruise"
    assert estimate["logo"]["folds"] == 2  # the demo's two cruises
    assert estimate["kfold"]["macro_f1_mean"] > 0.7  # the demo's shapes are easy in descriptor space
    summary = (ev / "forest" / "summary.txt").read_text()
    for needle in ("Repeated estimate", "New object_cruise", "Refit", "morphometric descriptors"):
        assert needle in summary, needle
    board = pd.read_csv(ev / "leaderboard.tsv", sep="\t").set_index("experiment")
    assert board.loc["forest", "cv_macro_f1"] == pytest.approx(estimate["kfold"]["macro_f1_mean"], abs=1e-4)
    assert board.loc["forest", "logo_macro_f1"] == pytest.approx(estimate["logo"]["macro_f1_mean"], abs=1e-4)


def test_reruns(forest_run, tmp_path):
    wd, _ = forest_run
    assert jobs_to_run(wd, *CONFIG) == {}
    # the estimate's settings rerun the estimate and what shows it, not the training nor the morphometrics
    (wd / "est.yaml").write_text("experiments:\n  forest:\n    estimate: {folds: 4, repeats: 1}\n")
    counts = jobs_to_run(wd, *CONFIG, "est.yaml")
    assert set(counts) - {"all"} == {"estimate_descriptors", "evaluate_descriptors", "make_leaderboard",
                                     "compare_classes", "evaluate_decisions"}, counts
    # the object threshold measures again, and retrains
    (wd / "thr.yaml").write_text("normalise:\n  threshold: 200\n")
    counts = jobs_to_run(wd, *CONFIG, "thr.yaml")
    assert {"compute_morphometrics", "train_descriptors", "estimate_descriptors"} <= set(counts), counts
    # features: export needs no morphometrics
    (wd / "exp.yaml").write_text("experiments:\n  forest:\n    features: export\n")
    counts = jobs_to_run(wd, *CONFIG, "exp.yaml")
    assert "compute_morphometrics" not in counts and "train_descriptors" in counts, counts
