"""The accounting of every row of an export (issue 8): rows of the export = used + dropped by reason.

``results/data/accounting.tsv`` (rule summarise_data) has one line per EcoTaxa category and the
class it maps to; ``used`` counts the objects in the split, the ``dropped_*`` columns every other
row, by the ledger's reason or ``capped_by_balance``. Checked per line, per class and in total, over
the demo export and over every real export under ../shared/data/ecotaxa.
"""

from __future__ import annotations

import pathlib
import re

import pandas as pd
import pytest

from lokiml import pipeline
from lokiml.balance import balance
from lokiml.demo import DEMO_CONFIG_CLASSES, make_demo_export
from lokiml.ecotaxa import open_export
from lokiml.errors import InputError
from lokiml.io import read_tsv
from lokiml.objects import select_objects

SHARED = pathlib.Path(__file__).resolve().parents[3] / "shared" / "data" / "ecotaxa"


def check(acc: pd.DataFrame, n_rows: int, used: int) -> pd.DataFrame:
    """Assert that ``acc`` adds up per line, per class and in total; return its lines without TOTAL."""
    acc = acc.copy()
    counts = [c for c in acc.columns if c not in ("category", "class_name", "check")]
    acc[counts] = acc[counts].apply(pd.to_numeric).astype(int)
    dropped = [c for c in acc.columns if c.startswith("dropped_")]
    assert "dropped_capped_by_balance" in dropped
    assert acc["category"].iloc[-1] == "TOTAL"
    body, total = acc.iloc[:-1], acc.iloc[-1]
    assert (body["export_rows"] == body["used"] + body[dropped].sum(axis=1)).all()
    assert (acc["check"] == "ok").all()
    per_class = body.groupby("class_name")[counts].sum()
    assert (per_class["export_rows"] == per_class["used"] + per_class[dropped].sum(axis=1)).all()
    assert (body[counts].sum() == total[counts]).all()
    assert total["export_rows"] == n_rows
    assert total["used"] == used
    assert not body.duplicated(["category", "class_name"]).any()
    return body


def test_demo_export(tmp_path):
    folder = tmp_path / "demo_export"
    tsv = make_demo_export(folder, seed=1)
    n_rows = len(tsv.read_text().splitlines()) - 2  # header and type row
    d = tmp_path / "data"
    classes = DEMO_CONFIG_CLASSES
    pipeline.read_export(folder, d / "objects.tsv", d / "ledger.tsv", classes, threads=2)
    pipeline.balance_classes(d / "objects.tsv", d / "balanced.tsv", classes, cap=60)
    split = pipeline.split_dataset(d / "balanced.tsv", d / "objects.tsv", d / "split.tsv")
    pipeline.summarise_data(d / "ledger.tsv", d / "objects.tsv", d / "split.tsv", d / "summary.tsv", classes,
                            accounting_out=d / "accounting.tsv", accounting_html_out=d / "report" / "accounting.html")
    acc = read_tsv(d / "accounting.tsv")
    body = check(acc, n_rows, used=int((split["augmented"].astype(int) == 0).sum()))
    # every reason the demo holds shows up: non-validated rows, an unmapped category, the cap
    total = acc.iloc[-1]
    for col in ("dropped_status_not_selected", "dropped_unmapped_category", "dropped_capped_by_balance"):
        assert int(total[col]) > 0, col
    assert set(body.loc[body["class_name"] == "(no class)", "category"]) == {"Foraminifera", "Cyclopoida", "artefact"}
    assert list(dict.fromkeys(body["class_name"])) == [c for c in classes] + ["(no class)"]
    # the per-class summary agrees: its "used" (before balancing) = used + capped here
    summary = read_tsv(d / "summary.tsv").set_index("class_name")
    per_class = body.groupby("class_name")[["export_rows", "used", "dropped_capped_by_balance"]].sum()
    for c in classes:
        assert int(summary.loc[c, "export_rows"]) == per_class.loc[c, "export_rows"]
        assert int(summary.loc[c, "used"]) == per_class.loc[c, "used"] + per_class.loc[c, "dropped_capped_by_balance"]
    html = (d / "report" / "accounting.html").read_text()
    assert "TOTAL" in html and "capped by balance" in html and "Foraminifera" in html


def _shared_exports():
    if not SHARED.is_dir():
        return [pytest.param(None, id="shared-data-absent")]
    found = {p for p in SHARED.rglob("*") if p.is_file() and p.name.lower().endswith((".tsv", ".txt", ".zip"))}
    found |= {p for p in SHARED.iterdir() if p.is_dir()}
    found |= {p for p in (SHARED / "ecotaxa_back_qa").iterdir() if p.is_dir()}
    return [pytest.param(p.relative_to(SHARED).as_posix(), id=p.relative_to(SHARED).as_posix()) for p in sorted(found)]


@pytest.mark.parametrize("rel", _shared_exports())
def test_every_shared_export(shared_data, rel):
    """Every real export adds up, or is refused with an error that names a file of it and says what
    to do (which error, for which export, is asserted in test_bad_input_matrix.py)."""
    if rel is None:
        pytest.skip("no shared data")
    try:
        with open_export(shared_data / rel) as ex:
            cats = {c for t in ex.tables if "object_annotation_category" in t.df
                    for c in t.df["object_annotation_category"]}
            classes = sorted(cats - {""}) or ["a", "b"]
            sel = select_objects(ex, classes, statuses=["validated", "predicted", "dubious", ""], threads=2)
            n_rows = sum(len(t.df) for t in ex.tables)
    except InputError as e:
        assert str(shared_data / rel.split("/")[0]) in str(e) or rel.split("/")[-1] in str(e), str(e)
        assert e.hint, str(e)
        return
    used_classes = [c for c in classes if c in set(sel.objects["class_name"])]
    if used_classes:
        kept = balance(sel.objects, used_classes, cap=2)  # a small cap, so that capping shows up
    else:
        kept = pd.DataFrame({"object_id": [], "augmented": []})
    acc = pipeline.accounting(sel.ledger, kept, classes)
    check(acc, n_rows, used=int((kept["augmented"].astype(int) == 0).sum()))


def test_split_of_another_run_is_refused():
    ledger = pd.DataFrame({"category": ["A"], "class_name": ["A"], "outcome": ["used"], "object_id": ["o1"]})
    split = pd.DataFrame({"object_id": ["o1", "o2"], "augmented": [0, 0]})
    with pytest.raises(InputError, match="split.tsv: holds 2 objects but the ledger used only 1") as e:
        pipeline.accounting(ledger, split, ["A"])
    assert "run again" in e.value.hint


def test_an_object_normalisation_could_not_use_is_counted_as_training_counts_it(tmp_path, caplog):
    """Should an image fail at normalisation after read_export used it (it changed in between), the
    accounting counts it as dropped, as training leaves it out: ledger, accounting and training agree."""
    ledger = pd.DataFrame({"category": ["A", "A", "A"], "class_name": ["A", "A", "A"], "outcome": ["used"] * 3,
                           "object_id": ["o1", "o2", "o3"]})
    split = pd.DataFrame({"item_id": ["o1", "o2", "o3", "o3#aug0001"], "object_id": ["o1", "o2", "o3", "o3"],
                          "augmented": [0, 0, 0, 1]})
    store = pd.DataFrame({"item_id": ["o1", "o2", "o3", "o3#aug0001"],
                          "status": ["ok", "truncated_image: o2.jpg: truncated image", "ok", "ok"]})
    fixed = pipeline.store_failures(ledger, split, store)
    assert list(fixed["outcome"]) == ["used", "unreadable_image", "used"]
    assert any("could not be normalised" in r.getMessage() for r in caplog.records)
    kept = split[split["object_id"] != "o2"]
    acc = pipeline.accounting(fixed, kept, ["A"])
    total = acc.iloc[-1]
    assert total["used"] == 2 and total["dropped_unreadable_image"] == 1 and (acc["check"] == "ok").all()


def test_the_accounting_page_shows_the_polarity_evidence(tmp_path):
    folder = tmp_path / "demo_export"
    make_demo_export(folder, seed=1)
    d = tmp_path / "data"
    classes = DEMO_CONFIG_CLASSES
    pipeline.read_export(folder, d / "objects.tsv", d / "ledger.tsv", classes, threads=2,
                         manifest_out=d / "images.tsv")
    pipeline.balance_classes(d / "objects.tsv", d / "balanced.tsv", classes, cap=60)
    pipeline.split_dataset(d / "balanced.tsv", d / "objects.tsv", d / "split.tsv")
    pipeline.summarise_data(d / "ledger.tsv", d / "objects.tsv", d / "split.tsv", d / "summary.tsv", classes,
                            accounting_out=d / "accounting.tsv", accounting_html_out=d / "accounting.html",
                            manifest_path=d / "images.tsv")
    html = (d / "accounting.html").read_text()
    assert "have a border darker than their middle" in html and "normalise.polarity is &#x27;dark&#x27;" in html
    from lokiml.evaluate import plot_data_summary

    r = d / "report"
    plot_data_summary(d / "summary.tsv", d / "split.tsv", r / "o.svg", r / "d.svg", r / "s.svg", r / "summary.html",
                      classes=classes, cap=60, manifest_path=d / "images.tsv")
    assert re.search(r"Images: polarity: 0 of \d+ usable images \(0 %\) have a border darker", (r / "summary.html").read_text())
