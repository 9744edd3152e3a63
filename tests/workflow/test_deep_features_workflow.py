"""A deep_features experiment in the workflow, on top of the shared tiny run (test_workflow.py).

Only its own jobs run (the CNN is not retrained), it lands on the leaderboard like any other experiment,
and a change of its classifier settings does not extract the features again.
"""

import shutil

import pandas as pd
import pytest

from test_workflow import jobs_to_run, shared_tiny_run, snakemake

pytestmark = pytest.mark.workflow

DEEP = """experiments:
  tiny_deep:
    kind: deep_features
    cnn: tiny
    pca: 8
    param_grid: {n_estimators: [20], min_samples_leaf: [1, 3]}
"""
CONFIG = ("--configfile", "config/config.yaml", "tiny.yaml", "deep.yaml")


@pytest.fixture(scope="module")
def deep_run(project_root, tmp_path_factory):
    wd = shared_tiny_run(project_root, tmp_path_factory)
    copy = tmp_path_factory.mktemp("deep") / "wd"
    shutil.copytree(wd, copy, symlinks=True)
    (copy / "deep.yaml").write_text(DEEP)
    before = jobs_to_run(copy, *CONFIG)
    snakemake(copy, *CONFIG)
    return copy, before


def test_only_the_deep_features_jobs_run(deep_run):
    _, before = deep_run
    assert set(before) - {"all"} == {"extract_deep_features", "train_deep_features", "estimate_deep_features",
                                     "evaluate_deep_features", "make_leaderboard", "compare_classes",
                                     "evaluate_decisions", "record_normalisation"}, before
    assert before["extract_deep_features"] == 1


def test_outputs_and_leaderboard(deep_run):
    wd, _ = deep_run
    split = pd.read_csv(wd / "results" / "data" / "split.tsv", sep="\t", dtype=str, keep_default_na=False)
    index = pd.read_csv(wd / "results" / "experiments" / "tiny" / "penultimate.tsv", sep="\t", dtype=str,
                        keep_default_na=False)
    assert sorted(index["item_id"]) == sorted(split.loc[split["augmented"] == "0", "item_id"])  # originals only
    ev = wd / "results" / "evaluation" / "tiny_deep"
    pred = pd.read_csv(ev / "test" / "predictions.tsv", sep="\t", dtype=str, keep_default_na=False)
    expected = split[(split["split"] == "test") & (split["augmented"] == "0")].set_index("object_id")
    assert sorted(pred["object_id"]) == sorted(expected.index)
    assert (pred["true_class"].to_numpy() == expected.loc[pred["object_id"], "class_name"].to_numpy()).all()
    board = pd.read_csv(wd / "results" / "evaluation" / "leaderboard.tsv", sep="\t", keep_default_na=False)
    assert sorted(board["experiment"]) == ["tiny", "tiny_deep"]
    row = board.set_index("experiment").loc["tiny_deep"]
    assert row["weights"] == "features of tiny and descriptors" and int(row["image_size"]) == 48
    assert row["epochs_run"] == "" and row["best_epoch"] == ""  # not -1
    assert "penultimate-layer features" in (ev / "summary.txt").read_text()
    # its repeated estimate: only objects the CNN did not train on are tested, each once per repeat
    folds = pd.read_csv(ev / "estimate.tsv", sep="\t")
    unseen = int(((split["augmented"] == "0") & (split["split"] != "train")).sum())
    assert (folds[folds["scheme"] == "kfold"].groupby("repeat")["n_test"].sum() == unseen).all()
    assert float(row["cv_macro_f1"]) > 0 and board.set_index("experiment").loc["tiny", "cv_macro_f1"] == ""
    assert "Repeated estimate" in (ev / "summary.txt").read_text()


def test_second_run_does_nothing_and_a_grid_change_does_not_extract_again(deep_run, tmp_path):
    wd, _ = deep_run
    assert jobs_to_run(wd, *CONFIG) == {}
    (wd / "grid.yaml").write_text("experiments:\n  tiny_deep:\n    param_grid: {n_estimators: [30]}\n")
    counts = jobs_to_run(wd, *CONFIG, "grid.yaml")
    assert set(counts) - {"all"} == {"train_deep_features", "estimate_deep_features", "evaluate_deep_features",
                                     "make_leaderboard", "compare_classes", "evaluate_decisions",
                                     "record_normalisation"}, counts


def test_every_image_goes_through_the_frozen_base_once(deep_run):
    """tiny's base is pre-trained and frozen: training, evaluation and the deep features all read its
    features, computed once by compute_base_features (lokiml/base_features.py), from the job logs'
    "forward passes: N images through ..." lines. (Before: train + valid in training, valid + test in
    evaluation, every original again in the extraction.)"""
    wd, _ = deep_run
    passes = {}
    for log in (wd / "logs").rglob("*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if "forward passes: " in line:
                n, network = line.split("forward passes: ")[1].split(" images through ")
                passes.setdefault(log.parent.name, []).append((int(n), network))
    store = pd.concat([pd.read_csv(p, sep="\t", keep_default_na=False)
                       for p in sorted((wd / "results" / "data" / "images" / "48px").glob("shard*.tsv"))])
    distinct = int((store["status"] == "ok").sum())
    # No other job puts an image of the store through a network. The objects training never saw (issue 16's
    # extra objects) have a store of their own, which no base-features file covers: their images go through
    # the model in evaluation (their predictions) and again in the extraction (their features), once each.
    extra = pd.read_csv(wd / "results" / "data" / "extra_images" / "48px.tsv", sep="\t", keep_default_na=False)
    n_extra = int((extra["status"] == "ok").sum())
    store_passes = {job: [p for p in got if "extra_images" not in p[1]] for job, got in passes.items()}
    assert [job for job, got in store_passes.items() if got] == ["compute_base_features"], passes
    assert {job: [n for n, net in got if "extra_images" in net] for job, got in passes.items()
            if job != "compute_base_features"} == {"evaluate_model": [n_extra], "extract_deep_features": [n_extra]}
    [(n, network)] = passes["compute_base_features"]
    assert n == distinct and "frozen mobilenetv2 base" in network and "48 px" in network, (n, distinct, network)
    info = (wd / "results" / "experiments" / "tiny" / "train_info.json").read_text()
    assert '"cached_features": true' in info
