"""The Snakemake report of the tiny run: it builds, and holds what a user looks for.

Shares the tiny end-to-end run of test_workflow.py (one run per session). The
report is parsed from the ``results`` and ``categories`` objects that
Snakemake 9 embeds in report.html.
"""

import base64
import json
import re
import shutil
import urllib.parse

import pandas as pd
import pytest

from test_workflow import jobs_to_run, shared_tiny_run, snakemake

pytestmark = pytest.mark.workflow

EXPERIMENT = "tiny"  # tests/workflow/tiny.yaml
SPLIT_ENTRIES = {"predictions.tsv", "classification_report.html", "confusion_counts.svg", "confusion_normalised.svg",
                 "reliability.svg", "mistakes.jpg"}
DECISION_ENTRIES = {"decisions.html", "thresholds.tsv", "precision_recall.svg", "natural_confusion.svg",
                    "abundance.tsv", "abundance.svg", "open_set.svg"}
DATA_ENTRIES = {"summary.html", "objects_per_class.svg", "dropped_rows.svg", "split_sizes.svg", "accounting.html",
                "accounting.tsv", "class_gallery.jpg"}
DATA, LEADERBOARD = "2. Data", "1. Leaderboard"  # numbered: the report's menu lists categories alphabetically


def _embedded(html: str, name: str):
    m = re.search(rf'<script id="{name}">\s*var {name} = (.*?);\s*</script>', html, re.S)
    assert m, f"no {name} object in the report"
    return json.loads(m.group(1))


def _content(entry) -> str:
    """The text of a result embedded as a data URI."""
    uri = entry["data_uri"]
    head, data = uri.split(",", 1)
    raw = base64.b64decode(data) if ";base64" in head else urllib.parse.unquote(data).encode()
    return raw.decode("utf-8")


@pytest.fixture(scope="module")
def report(project_root, tmp_path_factory):
    wd = shared_tiny_run(project_root, tmp_path_factory)
    snakemake(wd, "--report", "report.html")
    html = (wd / "report.html").read_text(encoding="utf-8")
    return wd, html, _embedded(html, "results"), _embedded(html, "categories")


def test_report_builds_with_the_workflow_description(report):
    wd, html, results, categories = report
    assert (wd / "report.html").stat().st_size > 10_000
    assert "lokiml" in html and "originals only" in html  # workflow/report/workflow.rst, rendered


def test_report_categories_per_experiment(report):
    _, _, results, categories = report
    assert {DATA, LEADERBOARD, EXPERIMENT} <= set(categories)
    assert set(categories[EXPERIMENT]) == {"summary", "training", "test", "valid", "decisions"}
    decisions = {p.rsplit("/", 1)[-1] for p in categories[EXPERIMENT]["decisions"]}
    assert decisions == DECISION_ENTRIES, decisions
    for split in ("test", "valid"):
        names = {p.rsplit("/", 1)[-1] for p in categories[EXPERIMENT][split]}
        assert names == SPLIT_ENTRIES, (split, names)
        assert all(f"/{split}/" in p for p in categories[EXPERIMENT][split])
    training = [p.rsplit("/", 1)[-1] for p in categories[EXPERIMENT]["training"]]
    assert training == ["training_curves.svg"]
    summary = {p.rsplit("/", 1)[-1] for p in categories[EXPERIMENT]["summary"]}
    assert summary == {"summary.html", "summary.txt"}
    data = {p.rsplit("/", 1)[-1] for sub in categories[DATA].values() for p in sub}
    assert data == DATA_ENTRIES
    board = {p.rsplit("/", 1)[-1] for sub in categories[LEADERBOARD].values() for p in sub}
    assert board == {"leaderboard.html", "leaderboard.tsv", "leaderboard.svg", "per_class_f1.svg", "per_class_f1.tsv"}


def test_every_entry_has_a_caption_labels_and_a_viewable_type(report):
    _, _, results, _ = report
    for path, entry in results.items():
        assert entry["caption"].strip(), f"{path}: no caption"
        assert set(entry["labels"]) == {"result", "type"}, path
        if path.endswith(".svg"):
            assert entry["mime_type"] == "image/svg+xml", path
        if path.endswith(".html"):
            assert entry["mime_type"] == "text/html", path
        if path.endswith(".jpg"):
            assert entry["mime_type"] == "image/jpeg", path
    # captions are rendered with the experiment's name
    assert EXPERIMENT in results[f"results/evaluation/{EXPERIMENT}/test/confusion_counts.svg"]["caption"]


def test_report_tables_hold_the_numbers(report):
    wd, _, results, _ = report
    classes = (wd / "results" / "experiments" / EXPERIMENT / "classes.txt").read_text().split()
    table = _content(results[f"results/evaluation/{EXPERIMENT}/test/classification_report.html"])
    for c in classes + ["macro avg", "weighted avg", "balanced accuracy", "log loss"]:
        assert c in table, c
    summary = _content(results[f"results/evaluation/{EXPERIMENT}/summary.html"])
    for needle in ["Model", "Weights", "Training", "Epochs run", "Early stopping", "Training time", "originals only"]:
        assert needle in summary, needle
    data = _content(results["results/data/report/summary.html"])
    assert "TOTAL" in data and all(c in data for c in classes)
    accounting = _content(results["results/data/report/accounting.html"])
    assert "TOTAL" in accounting and "capped by balance" in accounting and all(c in accounting for c in classes)
    board = _content(results["results/evaluation/leaderboard.html"])
    assert EXPERIMENT in board and "ranked by macro F1 on the validation split" in board and "macro F1" in board
    page = _content(results[f"results/evaluation/{EXPERIMENT}/decisions/decisions.html"])
    for needle in ["Trust thresholds", "need no human look", "Natural frequencies beside the balanced test split",
                   "Abundances per sample_id", "open set", "Lineage nodes", "<svg"] + classes:
        assert needle in page, needle
    svg = _content(results[f"results/evaluation/{EXPERIMENT}/test/confusion_normalised.svg"])
    assert svg.lstrip().startswith("<?xml") and all(f"<!-- {c} -->" in svg for c in classes)


def test_captions_fit_the_kind_of_experiment(report):
    """A CNN's summary caption speaks of checkpoints; the rule graph shows each rule once."""
    wd, html, results, _ = report
    assert "checkpoint" in results[f"results/evaluation/{EXPERIMENT}/summary.html"]["caption"]
    assert "as the model saw it" in results[f"results/evaluation/{EXPERIMENT}/test/mistakes.jpg"]["caption"]
    block = re.search(r'<script id="rulegraph">(.*?)</script>', html, re.S).group(1)
    names = re.findall(r'"rule":\s*"(\w+)"', block)
    assert "train_model" in names and len(names) == len(set(names)), names


def test_evaluation_outputs_agree_with_the_split(report):
    wd, _, _, _ = report
    split = pd.read_csv(wd / "results" / "data" / "split.tsv", sep="\t", dtype=str, keep_default_na=False)
    ev = wd / "results" / "evaluation" / EXPERIMENT
    for s in ("test", "valid"):
        pred = pd.read_csv(ev / s / "predictions.tsv", sep="\t", dtype=str, keep_default_na=False)
        expected = split[(split["split"] == s) & (split["augmented"] == "0")].set_index("object_id")
        assert sorted(pred["object_id"]) == sorted(expected.index), s
        assert (pred["true_class"].to_numpy() == expected.loc[pred["object_id"], "class_name"].to_numpy()).all()
        metrics = json.loads((ev / s / "metrics.json").read_text())
        assert metrics["n_objects"] == len(pred)
        assert metrics["accuracy"] == pytest.approx(pred["correct"].astype(int).mean(), abs=1e-6)
    board = pd.read_csv(wd / "results" / "evaluation" / "leaderboard.tsv", sep="\t")
    assert board["experiment"].tolist() == [EXPERIMENT]
    text = (ev / "summary.txt").read_text()
    assert "Test accuracy:" in text and "Epochs run:" in text


def test_changing_evaluation_code_never_retrains(report, tmp_path):
    wd, _, _, _ = report
    copy = tmp_path / "wd"
    shutil.copytree(wd, copy, symlinks=True)
    script = copy / "workflow" / "scripts" / "evaluate_model.py"
    script.write_text(script.read_text() + "\n# a change of the evaluation code\n")
    counts = jobs_to_run(copy)
    assert counts.get("evaluate_model") == 1, counts
    assert "train_model" not in counts and "normalise_images" not in counts, counts


def test_a_deleted_figure_is_made_again_without_retraining(report, tmp_path):
    wd, _, _, _ = report
    copy = tmp_path / "wd"
    shutil.copytree(wd, copy, symlinks=True)
    (copy / "results" / "evaluation" / EXPERIMENT / "test" / "reliability.svg").unlink()
    counts = jobs_to_run(copy)
    assert counts.get("evaluate_model") == 1 and "train_model" not in counts, counts
