"""Prediction end to end: the tiny run's model classifies the demo export with its labels removed,
and the EcoTaxa import table it writes reads back with the project's own reader."""

import json
import shutil
import zipfile

import pandas as pd
import pytest

from lokiml.ecotaxa import open_export, parse_table
from lokiml.predict import write_import_table
from test_workflow import jobs_to_run, shared_tiny_run, snakemake

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def predicted(project_root, tmp_path_factory):
    wd = shared_tiny_run(project_root, tmp_path_factory)
    export = wd / "resources" / "demo_export"
    table_path = export / "ecotaxa_demo.tsv"
    truth = parse_table(table_path.read_bytes(), str(table_path))
    unlabelled = wd / "unlabelled"
    shutil.rmtree(unlabelled, ignore_errors=True)
    shutil.copytree(export, unlabelled)
    df = truth.df.copy()
    for col in ("object_annotation_status", "object_annotation_category", "object_annotation_hierarchy"):
        if col in df.columns:
            df[col] = ""
    types = {c: (truth.types or {}).get(c) or "[t]" for c in df.columns}
    write_import_table(unlabelled / "ecotaxa_demo.tsv", df, types)
    extra = wd / "predict.yaml"
    extra.write_text("predict:\n  demo_unlabelled:\n    input: unlabelled\n    experiment: tiny\n    threshold: 0.3\n")
    args = ("--configfile", "config/config.yaml", "tiny.yaml", str(extra))
    counts = jobs_to_run(wd, *args)
    assert counts.get("predict_images") == 1 and "train_model" not in counts, counts
    snakemake(wd, *args)
    return wd, truth, args


def test_round_trip_on_the_demo_export(predicted):
    wd, truth, _ = predicted
    out = wd / "results" / "predictions" / "demo_unlabelled"
    summary = json.loads((out / "summary.json").read_text())
    c = summary["counts"]
    assert c["rows"] == len(truth.df)
    assert c["rows"] == sum(c[k] for k in ("predicted", "below_threshold", "kept", "unreadable", "missing_image",
                                           "missing_object_id", "other_image_rank", "duplicate_object_id"))
    assert c["kept"] == 0 and c["unreadable"] == 0
    record = json.loads((wd / "results" / "experiments" / "tiny" / "normalisation.json").read_text())
    names = {cl["ecotaxa_name"] for cl in record["classes"]}
    with open_export(out / "ecotaxa_demo_unlabelled.tsv") as ex:
        (table,) = ex.tables
        df = table.df.set_index("object_id")
    assert table.types["object_score"] == "[f]" and table.types["object_annotation_category"] == "[t]"
    assert len(df) == c["predicted"] + c["below_threshold"]
    classified = df["object_annotation_category"] != ""
    assert set(df.loc[classified, "object_annotation_category"]) <= names
    assert (df.loc[classified, "object_annotation_status"] == "predicted").all()
    assert (df.loc[~classified, "object_annotation_status"] == "").all()
    assert (df.loc[classified, "object_score"].astype(float) >= 0.3).all()
    assert (df.loc[~classified, "object_score"].astype(float) < 0.3).all()
    # compared with the truth: objects whose true category is one of the classes
    t = truth.df.set_index("object_id")
    both = df.index[classified & df.index.isin(t.index[t["object_annotation_status"] == "validated"])]
    true_cat = t.loc[both, "object_annotation_category"]
    in_classes = true_cat.isin(names)
    agree = (df.loc[both, "object_annotation_category"][in_classes] == true_cat[in_classes]).mean()
    print(f"demo round trip: {int(in_classes.sum())} validated objects of the classes classified, agreement {agree:.3f}")
    assert in_classes.sum() > 0
    # the bundle: the table and every image it names
    with zipfile.ZipFile(out / "ecotaxa_demo_unlabelled.zip") as z:
        assert set(z.namelist()) == {"ecotaxa_demo_unlabelled.tsv", *df["img_file_name"]}
    top3 = pd.read_csv(out / "top3.csv")
    assert len(top3) == len(df)
    # decisions: every classified object trusted or to check, by the tiny experiment's thresholds; the lists
    # name the same objects; the table is in review order
    trusted = pd.read_csv(out / "trusted.tsv", sep="\t", keep_default_na=False)
    to_check = pd.read_csv(out / "to_check.tsv", sep="\t", keep_default_na=False)
    assert len(trusted) + len(to_check) == c["predicted"] + c["below_threshold"]
    assert (df["object_lokiml_decision"].isin(["trusted", "to_check"])).all()
    assert df["object_lokiml_review_rank"].astype(int).tolist() == list(range(1, len(df) + 1))
    rules = json.loads((wd / "results" / "evaluation" / "tiny" / "decisions" / "decisions.json").read_text())
    for row in trusted.itertuples():
        assert rules["thresholds"][row.class_name] is not None and row.probability >= rules["thresholds"][
            row.class_name] - 1e-6
    assert summary["decisions"]["thresholds"] == rules["thresholds"]


def test_a_descriptors_experiment_predicts_too(predicted, tmp_path):
    """Prediction works with every kind of experiment: a descriptors experiment classifies the same table
    from its object_* columns. (In a copy: its experiment would change the shared run's leaderboard.)"""
    shared, truth, args = predicted
    wd = tmp_path / "wd"
    shutil.copytree(shared, wd, symlinks=True)
    extra = wd / "predict_desc.yaml"
    extra.write_text("experiments:\n  tiny_desc:\n    kind: descriptors\n    param_grid: {n_estimators: [30]}\n"
                     "predict:\n  demo_desc:\n    input: unlabelled\n    experiment: tiny_desc\n")
    more = ("--configfile", "config/config.yaml", "tiny.yaml", str(extra))
    counts = jobs_to_run(wd, *more)
    assert counts.get("predict_images") == 1 and "train_model" not in counts, counts
    snakemake(wd, *more)
    out = wd / "results" / "predictions" / "demo_desc"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "descriptors" and summary["counts"]["predicted"] == summary["counts"]["rows"]
    with open_export(out / "ecotaxa_demo_desc.tsv") as ex:
        (table,) = ex.tables
        df = table.df.set_index("object_id")
    t = truth.df.set_index("object_id")
    names = {cl["ecotaxa_name"] for cl in json.loads(
        (wd / "results" / "experiments" / "tiny_desc" / "normalisation.json").read_text())["classes"]}
    known = t.index[(t["object_annotation_status"] == "validated") & t["object_annotation_category"].isin(names)]
    agree = (df.loc[known, "object_annotation_category"] == t.loc[known, "object_annotation_category"]).mean()
    print(f"demo round trip, descriptors: agreement {agree:.3f} on {len(known)} validated objects")
    assert agree > 0.6  # the demo's descriptors separate its classes well


def test_second_prediction_run_does_nothing(predicted):
    wd, _, args = predicted
    assert jobs_to_run(wd, *args) == {}
