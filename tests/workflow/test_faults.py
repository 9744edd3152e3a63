"""Faults: a job killed at the worst moment, then the workflow run again, ends with the outputs of an
uninterrupted run; with --keep-going, a failing experiment does not stop an independent one.

The worst moment is injected by lokiml.io's fault hook (LOKIML_FAULT, see lokiml/io.py): SIGKILL once
the temporary file of an output is fully written, before its rename, so a killed job leaves a finished
temporary file behind. Variant "job" kills the job only (a crash, the OOM killer); variant "power"
kills its process group, Snakemake included (a power loss, a node failure), which leaves Snakemake's
lock and incomplete markers behind.

Every kind of job of the workflow is killed once, except resolve_weights (it downloads pretrained
weights, and the tests run without the internet). The rules of the tiny DAG (CASES) use the shared
tiny run of test_workflow.py (one uninterrupted run per session) as their reference. The rules outside
it (EXTENDED_CASES: the descriptors and deep_features experiments, prediction) use an "extended
reference": a copy of the shared tiny run with EXTENDED switched on over tiny.yaml (a small descriptors
experiment, a deep_features experiment on the tiny CNN, a prediction of the demo export's images), run
once, so that only their own jobs (and the leaderboard) run.

Each case works in a copy of its reference and forces one job (its outputs as targets, --forcerun its
rule), with the fault on; then runs the same targets again without the fault, as a user would
(workstation profile, which sets rerun-incomplete; after a power loss `--unlock` first). Downstream
jobs are left alone (the reruns would only repeat them deterministically at CI cost): what is compared
is that every output under results/ and resources/ equals the reference afterwards, the rerun job's
included.
"""

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile

import pandas as pd
import pytest
from project_copy import local_env
from test_workflow import shared_tiny_run

pytestmark = pytest.mark.workflow

EXP = "results/experiments/tiny"
EVAL = "results/evaluation/tiny"
_WEIGHTS = "resources/demo_weights/mobilenetv2_seeded_random.weights.h5"  # tiny.yaml's
BASE_FEATURES = (f"results/features/mobilenetv2-mobilenetv2_seeded_random-"
                 f"{hashlib.sha1(_WEIGHTS.encode()).hexdigest()[:8]}-48px")

# (rule, target: an output of the forced job, glob of the write that is killed, variant). One case per
# rule of the tiny DAG (`snakemake --configfile config/config.yaml tests/workflow/tiny.yaml -n`);
# resolve_weights downloads; the descriptors, deep features and prediction rules are in EXTENDED_CASES.
# The killed write is the job's last (or, for training, a mid-training checkpoint), so that in the
# "power" cases the job's other outputs are already in place and must be flagged incomplete.
CASES = [
    ("make_demo_export", "resources/demo_export", "resources/demo_export", "power"),
    ("read_export", "results/data/ledger.tsv", "results/data/ledger.tsv", "job"),  # after objects.tsv
    ("balance_classes", "results/data/balanced.tsv", "results/data/balanced.tsv", "job"),
    ("split_dataset", "results/data/split.tsv", "results/data/split.tsv", "power"),
    ("normalise_images", "results/data/images/48px/shard1.tsv", "results/data/images/48px/shard1.tsv", "job"),
    ("summarise_data", "results/data/summary.tsv", "results/data/summary.tsv", "power"),  # after accounting.*
    ("plot_data_summary", "results/data/report/summary.html", "results/data/report/summary.html", "job"),
    ("make_demo_weights", "resources/demo_weights/mobilenetv2_seeded_random.weights.h5",
     "resources/demo_weights/*.weights.h5", "job"),
    # mid-training: the epoch-2 checkpoint; the rerun resumes from epoch 1
    ("train_model", f"{EXP}/model.keras", "resources/train_state/tiny/model_e0002.keras", "job"),
    # after model.keras, best.keras, ...: the rerun resumes from the finished state and writes them again
    ("train_model", f"{EXP}/train_info.json", f"{EXP}/train_info.json", "power"),
    ("evaluate_model", f"{EVAL}/summary.html", f"{EVAL}/summary.html", "job"),
    ("make_leaderboard", "results/evaluation/leaderboard.svg", "results/evaluation/leaderboard.svg", "power"),
    ("record_normalisation", f"{EXP}/normalisation.json", f"{EXP}/normalisation.json", "job"),
    ("plot_class_gallery", "results/data/report/class_gallery.jpg", "results/data/report/class_gallery.jpg", "job"),
    # after per_class_f1.tsv
    ("compare_classes", "results/evaluation/per_class_f1.svg", "results/evaluation/per_class_f1.svg", "power"),
    # the frozen base's features, computed once (issue 20); key: model, weights file (name + SHA-1 of its path), size
    ("compute_base_features", f"{BASE_FEATURES}/base.tsv", f"{BASE_FEATURES}/base.tsv", "job"),
    # the objects training never saw, their images, and the decisions (issue 16)
    ("collect_extra_objects", "results/data/natural_counts.tsv", "results/data/natural_counts.tsv", "job"),
    ("normalise_extra_images", "results/data/extra_images/48px.tsv", "results/data/extra_images/48px.tsv", "job"),
    ("evaluate_decisions", f"{EVAL}/decisions/decisions.json", f"{EVAL}/decisions/decisions.json", "job"),
]

# The rules outside the tiny DAG, switched on over tiny.yaml by this extra config file: a descriptors
# experiment, a deep_features experiment on the tiny CNN, and a prediction of the demo export with the
# tiny CNN (statuses_to_keep empty: every object is classified, none keeps its validated category).
# Grids of two candidates and few trees: seconds on a CPU.
EXTENDED_CONFIG = "extended.yaml"
EXTENDED = """experiments:
  forest:
    kind: descriptors
    classifier: random_forest
    param_grid: {n_estimators: [20], min_samples_leaf: [1, 3]}
  tiny_deep:
    kind: deep_features
    cnn: tiny
    pca: 8
    param_grid: {n_estimators: [20], min_samples_leaf: [1, 3]}
predict:
  demo:
    input: resources/demo_export
    experiment: tiny
    threshold: 0.3
    statuses_to_keep: []
"""
FOREST, DEEP = "results/experiments/forest", "results/experiments/tiny_deep"
PRED = "results/predictions/demo"
# As CASES, against the extended reference; one case per rule that EXTENDED adds to the tiny DAG.
EXTENDED_CASES = [
    # after model.pkl, classes.txt, columns.tsv, grid.tsv: all in place, to be flagged incomplete
    ("train_descriptors", f"{FOREST}/train_info.json", f"{FOREST}/train_info.json", "power"),
    ("evaluate_descriptors", "results/evaluation/forest/summary.html", "results/evaluation/forest/summary.html",
     "job"),
    # the forest's features: auto reads the morphometrics of the images, one job per shard
    ("compute_morphometrics", "results/data/morphometrics/shard1.tsv", "results/data/morphometrics/shard1.tsv",
     "job"),
    # after estimate.tsv: in place, to be flagged incomplete
    ("estimate_descriptors", "results/evaluation/forest/estimate.json", "results/evaluation/forest/estimate.json",
     "power"),
    ("estimate_deep_features", "results/evaluation/tiny_deep/estimate.tsv",
     "results/evaluation/tiny_deep/estimate.tsv", "job"),
    # after penultimate.npy
    ("extract_deep_features", f"{EXP}/penultimate.tsv", f"{EXP}/penultimate.tsv", "job"),
    ("train_deep_features", f"{DEEP}/train_info.json", f"{DEEP}/train_info.json", "job"),
    ("evaluate_deep_features", "results/evaluation/tiny_deep/summary.html",
     "results/evaluation/tiny_deep/summary.html", "job"),
    # after the import table, the zip bundle and top3.csv: all in place, to be flagged incomplete
    ("predict_images", f"{PRED}/summary.json", f"{PRED}/summary.json", "power"),
    # after summary.html and predicted_classes.svg
    ("report_prediction", f"{PRED}/report/examples.jpg", f"{PRED}/report/examples.jpg", "power"),
]
# Not killed: resolve_weights (downloads), all (no job of its own).
NOT_KILLED = {"resolve_weights", "all"}

# What is compared. Outputs of rules live in results/, resources/demo_export and resources/demo_weights.
# Not compared: logs/ and benchmarks/ (run times, dates); resources/train_state (training's resume
# state, not an output) and resources/cache (a cache of normalised images, not an output).
OUTPUT_DIRS = ["results", "resources/demo_export", "resources/demo_weights"]
# Outputs that legitimately differ between two correct runs, and how they are compared instead:
# - *.keras: a zip whose metadata.json holds the save date, and whose config.json holds
#   "shared_object_id" values (Python id()s of shared objects, different in every process): the
#   weights (model.weights.h5) are compared byte for byte, config.json with those ids renumbered.
# - history.tsv (column seconds), train_info.json (seconds_total, seconds_per_epoch, feature_seconds)
#   and leaderboard.tsv (training_seconds) hold wall-clock times; train_info.json's
#   resumed_from_epoch says whether training resumed, which it does after a kill, by design.
# - leaderboard.html and the experiment's summary.txt/.html print the training time ("11.3 s").
# - normalisation.json holds the SHA-1 of best.keras, whose bytes carry the save date: checked to
#   match the best.keras beside it instead (except where best.keras was made again and
#   record_normalisation, downstream, deliberately not rerun).
# Compared byte for byte although they could have differed: model.pkl (descriptors and deep_features
# experiments; seeded scikit-learn fits, whose pickles are identical from process to process whatever
# PYTHONHASHSEED), penultimate.npy (CNN inference on the CPU), the prediction bundle (fixed zip dates).
SECONDS_COLUMNS = {"history.tsv": "seconds", "leaderboard.tsv": "training_seconds"}
TIMED_INFO_KEYS = ("seconds_total", "seconds_per_epoch", "feature_seconds", "resumed_from_epoch")
DURATIONS_IN_TEXT = {"leaderboard.html", "summary.txt", "summary.html"}
DURATION = re.compile(r"\b\d+(?:\.\d+)? s\b")


def _keras_content(path):
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        assert {"config.json", "metadata.json", "model.weights.h5"} <= names, (path, names)
        ids = {}
        config = re.sub(r'"shared_object_id": (\d+)', lambda m: f'"shared_object_id": {ids.setdefault(m[1], len(ids))}',
                        z.read("config.json").decode())
        return {"config.json": config, "model.weights.h5": z.read("model.weights.h5"),
                "other": sorted(names - {"config.json", "metadata.json", "model.weights.h5"})}


def _without_column(data: bytes, column: str) -> str:
    rows = [line.split("\t") for line in data.decode().splitlines()]
    k = rows[0].index(column)
    return "\n".join("\t".join(r[:k] + r[k + 1:]) for r in rows)


def content(wd, rel, check_sha1=True):
    """What must be equal in ``rel`` (relative to ``wd``) between two correct runs."""
    path = wd / rel
    name = path.name
    if name.endswith(".keras"):
        return _keras_content(path)
    data = path.read_bytes()
    if name in SECONDS_COLUMNS:
        return _without_column(data, SECONDS_COLUMNS[name])
    if name == "train_info.json":
        info = json.loads(data)
        return {k: v for k, v in info.items() if k not in TIMED_INFO_KEYS}
    if name == "normalisation.json":
        record = json.loads(data)
        # the model the record belongs to: best.keras (CNN), model.pkl (descriptors, deep features; issue 16)
        model = path.parent / ("best.keras" if record.get("kind", "cnn") == "cnn" else "model.pkl")
        assert not check_sha1 or record["model_sha1"] == hashlib.sha1(model.read_bytes()).hexdigest(), rel
        return {k: v for k, v in record.items() if k != "model_sha1"}
    if name in DURATIONS_IN_TEXT:
        return DURATION.sub("# s", data.decode())
    return data


def outputs_of(wd):
    """Every file of the OUTPUT_DIRS, hidden ones (a left-over temporary file) included."""
    return sorted(str(p.relative_to(wd)) for top in OUTPUT_DIRS for p in (wd / top).rglob("*") if p.is_file())


def fingerprint(wd, check_sha1=True):
    return {rel: content(wd, rel, check_sha1) for rel in outputs_of(wd)}


def temporaries_of(path):
    """The temporary names lokiml.io gives ``path`` while it is written (atomic_path, or mkdtemp for a folder)."""
    stale = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}" + re.escape("".join(path.suffixes)))
    return [p for p in path.parent.iterdir() if stale.fullmatch(p.name)] if path.parent.is_dir() else []


@pytest.fixture(scope="module")
def env():
    """The environment of the runs here (project_copy.local_env: no SLURM probe, no inherited fault)."""
    return local_env()


def run(wd, env, *targets, opts=(), configs=(), fault=None, timeout=600):
    """Snakemake in ``wd`` in its own process group (so that a "power loss" kills it, not pytest)."""
    cmd = [sys.executable, "-m", "snakemake", *targets, "--cores", "2", *opts,
           "--configfile", "config/config.yaml", "tiny.yaml", *configs]
    if fault:
        env = dict(env, LOKIML_FAULT=fault[0], LOKIML_FAULT_MODE=fault[1])
    res = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=timeout,
                         start_new_session=True)
    res.text = res.stdout + res.stderr
    return res


def announced(text, rule, field):
    """A field (output, log) of the job of ``rule`` as Snakemake announced it, as a list of paths."""
    m = re.search(rf"^(?:local)?rule {rule}:\n(?:    .*\n)*?    {field}: (.*)$", text, re.M)
    assert m, f"no job of {rule} with a {field} announced:\n{text[-3000:]}"
    return m[1].split(", ")


@pytest.fixture(scope="module")
def reference(project_root, tmp_path_factory):
    wd = shared_tiny_run(project_root, tmp_path_factory)
    return wd, fingerprint(wd)


def kill_then_rerun(ref_wd, ref, env, tmp_path, rule, target, glob, variant, configs=()):
    """One case: in a copy of ``ref_wd``, kill the job of ``rule`` making ``target`` where it writes
    ``glob`` (``variant`` job or power), run it again, and compare every output with ``ref``."""
    wd = tmp_path / "wd"
    shutil.copytree(ref_wd, wd, symlinks=True)
    killed = run(wd, env, target, opts=["--forcerun", rule], configs=configs, fault=(glob, variant))
    expected_rc = -signal.SIGKILL if variant == "power" else 1
    assert killed.returncode == expected_rc, f"{rule}: the fault did not strike ({killed.returncode}):\n" \
                                             f"{killed.text[-4000:]}"
    outputs = announced(killed.text, rule, "output")
    assert target in outputs, outputs
    faulted = wd / (target if "*" in glob else glob)
    assert temporaries_of(faulted), f"no finished temporary file of {faulted} left behind"
    assert not faulted.exists()
    existing = [o for o in outputs if (wd / o).exists()]
    if variant == "job":
        # Snakemake removed the failed job's outputs; its log says what happened
        assert existing == [], existing
        (log,) = announced(killed.text, rule, "log")
        assert "LOKIML_FAULT" in (wd / log).read_text().splitlines()[-1]
    else:
        # Snakemake was killed too: its lock stays, and every output already in place is flagged
        # incomplete, so that a run without --rerun-incomplete refuses to take it for finished
        assert run(wd, env, "--unlock", configs=configs).returncode == 0
        if existing:
            refused = run(wd, env, target, opts=["-n"], configs=configs)
            assert refused.returncode != 0 and "IncompleteFilesException" in refused.text, refused.text[-3000:]
            listed = refused.text.split("Incomplete files:", 1)[1].split()
            assert set(existing) <= set(listed), (existing, listed)
        markers = {base64.urlsafe_b64decode(p.name).decode() for p in (wd / ".snakemake" / "incomplete").iterdir()}
        assert set(existing) <= markers
    again = run(wd, env, target, opts=["--workflow-profile", "profiles/workstation"], configs=configs)
    assert again.returncode == 0, again.text[-6000:]
    assert f"rule {rule}:" in again.text
    assert not temporaries_of(faulted), "a left-over temporary file was not removed"
    now = fingerprint(wd, check_sha1=rule != "train_model")
    assert sorted(now) == sorted(ref), {"extra": sorted(set(now) - set(ref)), "missing": sorted(set(ref) - set(now))}
    differ = [rel for rel in ref if now[rel] != ref[rel]]
    assert differ == [], f"outputs differ from the uninterrupted run: {differ}"


@pytest.mark.parametrize("rule,target,glob,variant", CASES, ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_killed_job_then_rerun_gives_the_uninterrupted_outputs(reference, env, tmp_path, rule, target, glob,
                                                              variant):
    kill_then_rerun(*reference, env, tmp_path, rule, target, glob, variant)


@pytest.fixture(scope="module")
def extended(reference, env, tmp_path_factory):
    """The extended reference: a copy of the shared tiny run with EXTENDED on, run once to the end."""
    wd = tmp_path_factory.mktemp("extended") / "wd"
    shutil.copytree(reference[0], wd, symlinks=True)
    (wd / EXTENDED_CONFIG).write_text(EXTENDED)
    res = run(wd, env, configs=[EXTENDED_CONFIG])
    assert res.returncode == 0, res.text[-6000:]
    # only the added jobs ran, each once but compute_morphometrics, once per shard (2 in tiny.yaml); and what
    # lists or judges the new experiments: the leaderboard, the per-class comparison, their decisions and
    # prediction records (one job per new experiment)
    ran = re.findall(r"^(?:local)?rule (\w+):$", res.text, re.M)
    per_experiment = {"evaluate_decisions", "record_normalisation"}
    assert sorted(r for r in ran if r not in per_experiment) == sorted(
        [c[0] for c in EXTENDED_CASES] + ["compute_morphometrics", "make_leaderboard", "compare_classes", "all"]), ran
    assert {r for r in ran if r in per_experiment} == per_experiment, ran
    return wd, fingerprint(wd)


@pytest.mark.parametrize("rule,target,glob,variant", EXTENDED_CASES, ids=[f"{c[0]}-{c[3]}" for c in EXTENDED_CASES])
def test_killed_job_outside_the_tiny_dag_then_rerun_gives_the_uninterrupted_outputs(extended, env, tmp_path, rule,
                                                                                    target, glob, variant):
    kill_then_rerun(*extended, env, tmp_path, rule, target, glob, variant, configs=[EXTENDED_CONFIG])


def test_every_rule_is_killed_once(project_root):
    """A rule added to the workflow gets its case here (or a reason in NOT_KILLED)."""
    rules = set()
    for smk in [project_root / "workflow" / "Snakefile", *sorted((project_root / "workflow" / "rules").glob("*.smk"))]:
        rules |= set(re.findall(r"^(?:rule|checkpoint) (\w+):", smk.read_text(), re.M))
    killed = {c[0] for c in CASES + EXTENDED_CASES}
    assert killed & NOT_KILLED == set()
    assert rules == killed | NOT_KILLED, {"not killed": sorted(rules - killed - NOT_KILLED),
                                          "unknown": sorted((killed | NOT_KILLED) - rules)}


def test_keep_going_finishes_independent_experiments(reference, env, tmp_path):
    """A CNN experiment with a corrupt weights file fails; a descriptors experiment beside it still
    trains and is evaluated; the run exits non-zero; the failed job's log says why."""
    ref_wd, _ = reference
    wd = tmp_path / "wd"
    shutil.copytree(ref_wd, wd, symlinks=True)
    (wd / "broken.weights.h5").write_text("not an HDF5 file\n")
    (wd / "two.yaml").write_text(
        "experiments:\n"
        "  broken: {model: mobilenetv2, weights: broken.weights.h5, image_size: 48, batch_size: 16, epochs: 2}\n"
        "  forest: {kind: descriptors, classifier: random_forest}\n")
    # The broken file fails where it is first loaded: computing the frozen base's features (issue 20), before
    # training. --prioritize: the failing job runs first, so the independent one is left to --keep-going
    res = run(wd, env, opts=["--keep-going", "--prioritize", "compute_base_features"], configs=["two.yaml"])
    assert res.returncode != 0, res.text[-4000:]
    text = res.text
    failed = text.find("Error in rule compute_base_features")
    assert failed >= 0, text[-4000:]
    assert "broken" in text[failed:failed + 2000]
    assert text.find("rule evaluate_descriptors:", failed) > failed, "the descriptors experiment was not left to --keep-going"
    for f in ("metrics.json", "predictions.tsv"):
        assert (wd / "results" / "evaluation" / "forest" / "test" / f).is_file(), f
    assert not (wd / "results" / "experiments" / "broken" / "model.keras").exists()
    (log,) = (wd / "logs" / "compute_base_features").glob("mobilenetv2-broken-*.log")
    log = log.read_text()
    assert "broken.weights.h5: cannot load it into the MobileNetV2 base" in log, log[-3000:]


# --------------------------------------------------------------------------------------------------
# Data updates that are never missed, and bad input that stops at once (issue 14)
#
# A folder export whose table is found by the reader's fallback (every .tsv: my_project.tsv), read once
# through the data stage; each case changes a copy of it and checks what Snakemake would rerun, or runs
# the data stage again and checks that the ledger, the accounting and the image store agree.
# --------------------------------------------------------------------------------------------------

UPDATES_CONFIG = "updates.yaml"
DATA_TARGETS = ["results/data/split.tsv", "results/data/summary.tsv", "results/data/images.tsv",
                "results/data/images/48px/shard0.tsv", "results/data/images/48px/shard1.tsv"]


def dry_run_jobs(wd, env, configs=(UPDATES_CONFIG,)):
    res = run(wd, env, *DATA_TARGETS, opts=["-n"], configs=configs)
    assert res.returncode == 0, res.text[-3000:]
    return sorted(set(re.findall(r"^(?:local)?rule (\w+):$", res.text, re.M)))


@pytest.fixture(scope="module")
def updated_export(reference, env, tmp_path_factory):
    """A copy of the tiny run reading its export as a folder with a fallback-named table, data stage run once."""
    wd = tmp_path_factory.mktemp("updates") / "wd"
    shutil.copytree(reference[0], wd, symlinks=True)
    shutil.copytree(wd / "resources" / "demo_export", wd / "myexport")
    (wd / "myexport" / "ecotaxa_demo.tsv").rename(wd / "myexport" / "my_project.tsv")
    (wd / UPDATES_CONFIG).write_text("export: myexport\n")
    res = run(wd, env, *DATA_TARGETS, configs=[UPDATES_CONFIG])
    assert res.returncode == 0, res.text[-6000:]
    assert dry_run_jobs(wd, env) == []  # a second run does nothing
    return wd


def _copy(wd, tmp_path):
    dst = tmp_path / "wd"
    shutil.copytree(wd, dst, symlinks=True)
    return dst


def test_a_row_appended_to_a_fallback_table_reruns_the_reader(updated_export, env, tmp_path):
    wd = _copy(updated_export, tmp_path)
    table = wd / "myexport" / "my_project.tsv"
    header = table.read_text().splitlines()[0].split("\t")
    row = table.read_text().splitlines()[-1].split("\t")
    row[header.index("object_id")] = "demo_appended_0001"
    row[header.index("object_annotation_status")] = "validated"
    with table.open("a") as f:
        f.write("\t".join(row) + "\n")
    assert "read_export" in dry_run_jobs(wd, env)


def test_a_mixed_case_table_name_is_an_input_of_the_reader(reference, env, tmp_path):
    wd = _copy(reference[0], tmp_path)
    shutil.copytree(wd / "resources" / "demo_export", wd / "myexport")
    (wd / "myexport" / "ecotaxa_demo.tsv").rename(wd / "myexport" / "EcoTaxa_Demo.tsv")
    (wd / UPDATES_CONFIG).write_text("export: myexport\n")
    res = run(wd, env, "results/data/objects.tsv", opts=["-n"], configs=[UPDATES_CONFIG])
    assert res.returncode == 0, res.text[-3000:]
    assert "myexport/EcoTaxa_Demo.tsv" in announced(res.text, "read_export", "input")


def test_an_image_replaced_in_place_is_read_again_and_counted_everywhere(updated_export, env, tmp_path):
    """Truncated in place: read_export reruns, reads that image only, drops it as unreadable_image; the
    ledger, the accounting, the split and the image store agree that it is not used."""
    wd = _copy(updated_export, tmp_path)
    objects = pd.read_csv(wd / "results/data/objects.tsv", sep="\t", dtype=str, keep_default_na=False)
    victim = objects.iloc[0]
    path = wd / "myexport" / victim["image_ref"]
    path.write_bytes(path.read_bytes()[:400])
    assert "read_export" in dry_run_jobs(wd, env)
    res = run(wd, env, *DATA_TARGETS, configs=[UPDATES_CONFIG])
    assert res.returncode == 0, res.text[-6000:]
    log = (wd / "logs" / "read_export.log").read_text()
    assert re.search(r"images: \d+ named, 1 read \(new or changed files\), 1 decoded", log), log[-2000:]
    ledger = pd.read_csv(wd / "results/data/ledger.tsv", sep="\t", dtype=str, keep_default_na=False)
    row = ledger[ledger["object_id"] == victim["object_id"]].iloc[0]
    assert row["outcome"] == "unreadable_image" and "truncated" in row["detail"]
    acc = pd.read_csv(wd / "results/data/accounting.tsv", sep="\t", keep_default_na=False)
    total = acc[acc["category"] == "TOTAL"].iloc[0]
    assert total["dropped_unreadable_image"] == 1 and (acc["check"] == "ok").all()
    split = pd.read_csv(wd / "results/data/split.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert victim["object_id"] not in set(split["object_id"])
    assert total["used"] == (split["augmented"] == "0").sum()
    stored = pd.concat([pd.read_csv(wd / t, sep="\t", dtype=str) for t in DATA_TARGETS[3:]])
    assert (stored["status"] == "ok").all() and set(stored["item_id"]) == set(split["item_id"])
    assert dry_run_jobs(wd, env) == []


def test_a_table_that_is_a_named_pipe_stops_the_reader_at_once(updated_export, env, tmp_path):
    wd = _copy(updated_export, tmp_path)
    (wd / "myexport" / "my_project.tsv").rename(wd / "myexport" / "ecotaxa_x.tsv")
    os.mkfifo(wd / "myexport" / "ecotaxa_y.tsv")
    res = run(wd, env, "results/data/objects.tsv", configs=[UPDATES_CONFIG], timeout=300)
    assert res.returncode != 0
    log = (wd / "logs" / "read_export.log").read_text()
    assert "myexport/ecotaxa_y.tsv: is a named pipe, not a file: a table must be a regular file" in log, log[-2000:]


@pytest.mark.parametrize("config, words", [
    ("export: ''\n", "config key export: '' is empty"),
    ("export: does/not/exist\n", "config key export: 'does/not/exist' does not exist"),
    ("experiments:\n  tiny:\n    model: mobilenetv4\n", "config key experiments.tiny.model: unknown model 'mobilenetv4'"),
], ids=["export-empty", "export-missing", "unknown-model"])
def test_bad_configuration_stops_the_dry_run(reference, env, tmp_path, config, words):
    wd = _copy(reference[0], tmp_path)
    (wd / "bad.yaml").write_text(config)
    res = run(wd, env, opts=["-n"], configs=["bad.yaml"])
    assert res.returncode != 0 and words in res.text, res.text[-3000:]


def test_descriptor_experiments_run_on_a_table_without_images(reference, env, tmp_path):
    """Issue 17 item 1: with only descriptor experiments, the export needs no image columns; the ledger
    and the accounting count every row as with images."""
    wd = _copy(reference[0], tmp_path)
    demo = pd.read_csv(wd / "resources/demo_export/ecotaxa_demo.tsv", sep="\t", dtype=str, keep_default_na=False)
    (wd / "noimages").mkdir()
    demo.drop(columns=[c for c in demo.columns if c.startswith("img_")]).to_csv(
        wd / "noimages" / "ecotaxa_descriptors.tsv", sep="\t", index=False)
    (wd / "desc.yaml").write_text(
        "export: noimages\nexperiments:\n  tiny: null\n"
        "  forest: {kind: descriptors, classifier: random_forest, param_grid: {n_estimators: [20]}}\n")
    res = run(wd, env, configs=["desc.yaml"])
    assert res.returncode == 0, res.text[-6000:]
    ran = set(re.findall(r"^(?:local)?rule (\w+):$", res.text, re.M))
    assert "normalise_images" not in ran and {"read_export", "train_descriptors", "evaluate_descriptors"} <= ran
    ledger = pd.read_csv(wd / "results/data/ledger.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert len(ledger) == len(demo) - 1  # every row but the type row
    acc = pd.read_csv(wd / "results/data/accounting.tsv", sep="\t", keep_default_na=False)
    assert (acc["check"] == "ok").all()
    assert (wd / "results/evaluation/forest/test/metrics.json").is_file()
