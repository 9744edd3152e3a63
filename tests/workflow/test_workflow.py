"""The DAG as a user drives it: dry run, lint, a tiny end-to-end run, and rerun behaviour.

Each test works in a copy of the project (tmp folder) so that results never mix
with a user's own. The tiny config (tests/workflow/tiny.yaml) makes the demo
export small and trains one small experiment.
"""

import subprocess
import sys

import pandas as pd
import pytest
from project_copy import local_env, make_copy

pytestmark = pytest.mark.workflow



def snakemake(cwd, *args, check=True, timeout=1500):
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/config.yaml", "tiny.yaml", *args]
    env = local_env()
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and res.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-8000:]}")
    return res




def jobs_to_run(cwd, *extra):
    """Rule -> number of jobs a dry run would run."""
    res = snakemake(cwd, "-n", *extra)
    out = res.stdout + res.stderr
    counts = {}
    in_table = False
    for line in out.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            in_table = True
            continue
        if in_table:
            if not parts or parts[0].startswith("-"):
                if counts:
                    break
                continue
            if parts[0] == "total":
                break
            if len(parts) == 2 and parts[1].isdigit():
                counts[parts[0]] = int(parts[1])
    if "Nothing to be done" in out:
        return {}
    return counts


_TINY_RUN = {}


def shared_tiny_run(project_root, tmp_path_factory):
    """The tiny workflow, run once per test session and shared by the modules that need it (test_report.py)."""
    if "error" in _TINY_RUN:
        pytest.fail(f"the shared tiny run failed before: {_TINY_RUN['error']}")
    if "wd" not in _TINY_RUN:
        wd = make_copy(project_root, tmp_path_factory.mktemp("wf"))
        try:
            snakemake(wd)
        except AssertionError as exc:
            _TINY_RUN["error"] = str(exc)[:2000]
            raise
        _TINY_RUN["wd"] = wd
    return _TINY_RUN["wd"]


@pytest.fixture(scope="module")
def ran(project_root, tmp_path_factory):
    """The tiny workflow, run once to the end."""
    return shared_tiny_run(project_root, tmp_path_factory)


def test_dry_run_lists_the_dag(project_root, tmp_path):
    wd = make_copy(project_root, tmp_path)
    counts = jobs_to_run(wd)
    for rule in ["make_demo_export", "read_export", "balance_classes", "split_dataset", "normalise_images",
                 "train_model", "all"]:
        assert rule in counts, (rule, counts)
    assert counts["normalise_images"] == 2  # 1 image size x 2 shards, not one job per image


def test_lint_is_clean(project_root, tmp_path):
    wd = make_copy(project_root, tmp_path)
    res = snakemake(wd, "--lint", check=False)
    assert res.returncode == 0, res.stdout + res.stderr


def test_config_typo_fails_before_anything_runs(project_root, tmp_path):
    wd = make_copy(project_root, tmp_path)
    (wd / "typo.yaml").write_text("balance:\n  cpa: 10\n")
    res = snakemake(wd, "-n", "--configfile", "config/config.yaml", "tiny.yaml", "typo.yaml", check=False)
    assert res.returncode != 0
    assert "cpa" in res.stderr + res.stdout and "unknown key" in res.stderr + res.stdout


def test_end_to_end_outputs(ran):
    data = ran / "results" / "data"
    ledger = pd.read_csv(data / "ledger.tsv", sep="\t", dtype=str, keep_default_na=False)
    objects = pd.read_csv(data / "objects.tsv", sep="\t", dtype=str, keep_default_na=False)
    split = pd.read_csv(data / "split.tsv", sep="\t", dtype=str, keep_default_na=False)
    summary = pd.read_csv(data / "summary.tsv", sep="\t", keep_default_na=False)
    assert (ledger["outcome"] == "used").sum() == len(objects)
    assert {"status_not_selected", "unmapped_category"} <= set(ledger["outcome"])
    total = summary[summary["class_name"] == "TOTAL"].iloc[0]
    assert total["export_rows"] == len(ledger)
    dropped = sum(total[c] for c in summary.columns if c.startswith("dropped_"))
    assert total["export_rows"] == total["used"] + dropped
    # the accounting: rows of the export = objects in the split + dropped by reason (the cap included)
    acc = pd.read_csv(data / "accounting.tsv", sep="\t", keep_default_na=False)
    total = acc[acc["category"] == "TOTAL"].iloc[0]
    assert total["export_rows"] == len(ledger) and (acc["check"] == "ok").all()
    assert total["used"] == (split["augmented"] == "0").sum()
    assert total["export_rows"] == total["used"] + sum(total[c] for c in acc.columns if c.startswith("dropped_"))
    # every class balanced to the cap of the tiny config
    assert split.groupby("class_name").size().eq(24).all()
    assert split.groupby("object_id")["split"].nunique().max() == 1
    # Calanoida_egg is its own class, never swallowed by Calanoida
    assert set(objects.loc[objects["category"] == "Calanoida_egg", "class_name"]) == {"Calanoida_egg"}
    exp = ran / "results" / "experiments" / "tiny"
    for f in ["model.keras", "best.keras", "classes.txt", "history.tsv", "model_summary.txt", "train_info.json"]:
        assert (exp / f).stat().st_size > 0, f
    assert (ran / "logs" / "read_export.log").read_text().count("ledger:") == 1


def test_second_run_does_nothing(ran):
    assert jobs_to_run(ran) == {}


def test_changing_split_seed_reruns_only_split_and_downstream(ran, tmp_path):
    extra = tmp_path / "seed.yaml"
    extra.write_text("split:\n  seed: 4\n")
    counts = jobs_to_run(ran, "--configfile", "config/config.yaml", "tiny.yaml", str(extra))
    assert "split_dataset" in counts and "train_model" in counts
    for rule in ["make_demo_export", "read_export", "balance_classes", "normalise_images"]:
        assert rule not in counts, counts


def test_changing_threshold_reruns_normalisation_and_the_no_object_check(ran, tmp_path):
    """The threshold decides which images show no object (read_export's no_object, from statistics it
    keeps per image: nothing is decoded again there) and how images are cropped (normalise_images)."""
    extra = tmp_path / "thr.yaml"
    extra.write_text("normalise:\n  threshold: 240\n")
    counts = jobs_to_run(ran, "--configfile", "config/config.yaml", "tiny.yaml", str(extra))
    assert counts.get("normalise_images") == 2 and "train_model" in counts and counts.get("read_export") == 1
    assert "make_demo_export" not in counts, counts


def test_changing_the_number_of_shards_does_not_reread_the_export(ran, tmp_path):
    extra = tmp_path / "shards.yaml"
    extra.write_text("normalise:\n  shards: 3\n")
    counts = jobs_to_run(ran, "--configfile", "config/config.yaml", "tiny.yaml", str(extra))
    assert counts.get("normalise_images") == 3
    for rule in ["make_demo_export", "read_export", "balance_classes", "split_dataset"]:
        assert rule not in counts, counts


def test_decisions_of_the_tiny_run(ran):
    """The capped-out objects and the unknowns were predicted; the decisions hold for every class."""
    data = ran / "results" / "data"
    extra = pd.read_csv(data / "extra_objects.tsv", sep="\t", dtype=str, keep_default_na=False)
    ledger = pd.read_csv(data / "ledger.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert sorted(extra.loc[extra["set"] == "unknown", "object_id"]) == sorted(
        ledger.loc[ledger["outcome"] == "unmapped_category", "object_id"])
    assert (extra["set"] == "capped").sum() > 0
    ev = ran / "results" / "evaluation" / "tiny"
    pred = pd.read_csv(ev / "extra" / "predictions.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert pred["item_id"].tolist() == extra["item_id"].tolist() and (pred["status"] == "ok").all()
    classes = (ran / "results" / "experiments" / "tiny" / "classes.txt").read_text().split()
    thresholds = pd.read_csv(ev / "decisions" / "thresholds.tsv", sep="\t", keep_default_na=False)
    assert thresholds["class_name"].tolist() == classes


def test_changing_a_decision_setting_reruns_only_the_decisions(ran, tmp_path):
    extra = tmp_path / "target.yaml"
    extra.write_text("decisions:\n  target_precision: 0.8\n")
    counts = jobs_to_run(ran, "--configfile", "config/config.yaml", "tiny.yaml", str(extra))
    assert set(counts) - {"all"} == {"evaluate_decisions"}, counts
