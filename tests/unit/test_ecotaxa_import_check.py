"""The EcoTaxa import checker (lokiml.ecotaxa_import) and the prediction outputs it guards.

* EcoTaxa's own example tables and the QA import tables its backend expects to import pass;
* the QA tables its backend expects to refuse fail, for the reason its QA test gives
  (QA/py/tests/test_import.py of ecotaxa/ecotaxa_back, newest stored version);
* every rule has a small table that breaks it, next to one that does not;
* what the prediction writes (demo export, a real ZooScan export, EcoTaxa's QA tables, awkward
  inputs) passes, and an input EcoTaxa would refuse stops the prediction with the row.
"""

import io
import json
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from lokiml import ecotaxa_import as eti
from lokiml import predict as pr
from lokiml.ecotaxa import parse_table
from lokiml.ecotaxa_import import check_import_table
from lokiml.errors import InputError

QA = "ecotaxa_back_qa"


def rules(problems, level=None):
    return sorted({p.rule for p in problems if level is None or p.level == level})


def triples(problems):
    return [(p.row, p.field, p.rule) for p in problems]


# --------------------------------------------------------------------------------------------
# EcoTaxa's own tables
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ecotaxa_table_minimum.tsv", "ecotaxa_table_without_classification.tsv"])
def test_front_examples_pass(shared_data, name):
    # shipped without their images
    assert check_import_table(shared_data / "ecotaxa_front_examples" / name, check_images=False) == []


def test_front_example_with_classification_has_times_without_leading_zero(shared_data):
    """Its times lost their leading zero in a spreadsheet (90239 for 09:02:39); EcoTaxa pads on the
    right (902390) and refuses them: the only problems of this old example."""
    probs = check_import_table(shared_data / "ecotaxa_front_examples" / "ecotaxa_table_with_classification.tsv",
                               check_images=False)
    assert rules(probs) == ["time"]
    assert {p.field for p in probs} == {"object_time", "object_annotation_time"}
    assert "'90239'" in probs[0].message


def test_ecotaxar_import_table_passes_under_an_ecotaxa_name(shared_data, tmp_path):
    src = shared_data / "ecotaxar" / "import.tsv"
    assert triples(check_import_table(src, check_images=False)) == [(None, "", "file_name")]
    shutil.copy(src, tmp_path / "ecotaxa_import.tsv")
    assert check_import_table(tmp_path / "ecotaxa_import.tsv", check_images=False) == []


@pytest.mark.parametrize("bundle", [
    "import_test", "import_test.zip", "UVP6_example.zip", "import_uvp6_zip_in_dir", "import de categories ambigues",
    "import_bad_free_data", "import_test_plus/m106_mn01_n3_sml", "import_test_plus_more", "import_test_tot_vol",
    "import_test_weird", "import_v_or_d_just_state", "import_various_states", "import_just_predicted",
    "import_mixed_states",
])
def test_qa_bundles_ecotaxa_imports_pass(shared_data, bundle):
    assert check_import_table(shared_data / QA / bundle) == []


def test_a_real_zooscan_export_passes(shared_data):
    """EcoTaxa's backup export (BOM, quoted cells, type row, table in 0/) can be imported again."""
    assert check_import_table(shared_data / "zooscan_export_13539" / "export_13539_20240728_0803.zip") == []


def test_qa_tsv_issues_fails_as_ecotaxa_says(shared_data):
    """The 15 errors EcoTaxa's QA test expects, in its order and on its lines."""
    probs = check_import_table(shared_data / QA / "import_issues" / "tsv_issues")
    assert triples(probs) == [
        (1, "NoUnderscoreCol", "header"),
        (1, "unknown_target", "header"),
        (2, "object_wrongtype", "type"),
        (3, "object_buggy_float", "float"),
        (3, "object_lat", "lat"),
        (3, "object_lon", "lon"),
        (3, "object_date", "date"),
        (3, "object_time", "time"),
        (3, "object_annotation_status", "status"),
        (5, "object_annotation_date", "date"),
        (5, "object_annotation_time", "time"),
        (6, "img_file_name", "image_missing"),
        (7, "img_file_name", "image_unreadable"),
        (8, "object_id", "object_id"),
        (8, "img_file_name", "image_missing"),
    ]
    assert "'predit'" in probs[8].message and "'2015-11-31'" in probs[9].message and "'5:31'" in probs[10].message


@pytest.mark.parametrize("bundle, expected", [
    ("predicted_but_what", [(3, "object_annotation_status", "status_without_category")]),
    ("classif_without_state", [(3, "object_annotation_category", "category_without_status")]),
    ("extra_data_without_header", [(3, "", "headerless_value")]),
    ("duplicate_in_tsv", [(4, "object_id", "duplicate")]),
    ("empty_tsv", [(None, "", "empty")]),    # header and type row only
    ("empty_tsv2", [(None, "", "empty")]),   # 0 bytes
])
def test_qa_bundles_ecotaxa_refuses_fail_for_its_reason(shared_data, bundle, expected):
    assert triples(check_import_table(shared_data / QA / "import_issues" / bundle)) == expected


def test_qa_too_many_custom_columns(shared_data):
    """EcoTaxa's QA: the last 3 sample, process and acquisition columns find no free column."""
    probs = check_import_table(shared_data / QA / "import_issues" / "tsv_too_many_cols")
    assert rules(probs) == ["too_many_columns"]
    assert [p.field for p in probs] == [f"{t}_cus{n}" for t, ns in (("sample", (59, 60, 61)), ("process", (29, 30, 31)),
                                                                   ("acq", (29, 30, 31))) for n in ns]


def test_qa_sparse_table_lacks_sample_and_acquisition_ids(shared_data):
    probs = check_import_table(shared_data / QA / "import_sparse")
    assert [(p.field, p.rule) for p in probs] == [("acq_id", "id_column"), ("sample_id", "id_column")]
    assert "acq_hardware" in probs[0].message


def test_qa_loki_table_with_corrupted_images(shared_data):
    probs = check_import_table(shared_data / QA / "import_issues" / "corrupted_img")
    assert [(p.row, p.rule) for p in probs] == [(3, "image_unreadable"), (4, "image_unreadable"), (5, "image_missing"),
                                                (6, "image_unreadable")]


def test_qa_acquisition_moved_to_another_sample(shared_data):
    probs = check_import_table(shared_data / QA / "import_test_tot_vol_bad_update", check_images=False)
    assert triples(probs) == [(5, "acq_id", "acquisition_sample")]


@pytest.mark.parametrize("bundle", ["import_issues/no_classif_id", "import_issues/breaking_hierarchy"])
def test_what_depends_on_the_server_is_not_checked(shared_data, bundle):
    """An unknown taxon id, an acquisition already under another sample in the project: EcoTaxa's QA
    refuses these against its database, which an offline check cannot see."""
    assert check_import_table(shared_data / QA / bundle) == []


# --------------------------------------------------------------------------------------------
# One rule at a time
# --------------------------------------------------------------------------------------------

COLUMNS = ["img_file_name", "object_id", "object_lat", "object_lon", "object_date", "object_time",
           "object_annotation_status", "object_annotation_category", "object_area", "object_note", "sample_id",
           "sample_ship", "acq_id", "acq_instrument", "process_id", "img_rank"]
TYPES = ["[t]", "[t]", "[f]", "[f]", "[t]", "[t]", "[t]", "[t]", "[f]", "[t]", "[t]", "[t]", "[t]", "[t]", "[t]", "[f]"]
ROWS = [
    ["imgs/a.png", "a", "43.5", "7.25", "20240101", "123000", "validated", "Calanoida", "12", "x", "s1", "Tara", "q1",
     "LOKI", "p1", "0"],
    ["imgs/b.jpg", "b", "43°30 15", "-7.5", "2024-01-02", "09:15:00", "predicted", "detritus<other", "nan", "", "s1",
     "Tara", "q1", "LOKI", "p1", "0"],
    ["imgs/c.gif", "c", "", "NaN", "", "0915", "", "", "1e3", "é", "s2", "Tara", "q2", "LOKI", "p2", ""],
]


def _png(fmt="PNG"):
    buf = io.BytesIO()
    Image.fromarray(np.full((12, 10), 128, np.uint8)).save(buf, fmt)
    return buf.getvalue()


def _table(d, columns=COLUMNS, types=TYPES, rows=ROWS, name="ecotaxa_t.tsv", encoding="utf-8-sig", images=None,
           raw=None):
    """Write a table and its images into folder ``d``; return the folder."""
    d.mkdir(parents=True, exist_ok=True)
    images = {"imgs/a.png": _png(), "imgs/b.jpg": _png("JPEG"), "imgs/c.gif": _png("GIF")} if images is None else images
    for rel, data in images.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    if raw is None:
        lines = ["\t".join(columns)] + (["\t".join(types)] if types is not None else []) + ["\t".join(r) for r in rows]
        raw = ("\n".join(lines) + "\n").encode(encoding)
    (d / name).write_bytes(raw)
    return d


def _with(column, row, value, columns=COLUMNS, rows=ROWS):
    rows = [list(r) for r in rows]
    rows[row][columns.index(column)] = value
    return rows


def test_the_base_table_passes_as_folder_file_and_zip(tmp_path):
    d = _table(tmp_path / "b")
    assert check_import_table(d) == []
    assert check_import_table(d / "ecotaxa_t.tsv") == []
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as z:
        for f in d.rglob("*"):
            if f.is_file():
                z.write(f, f.relative_to(d).as_posix())
    assert check_import_table(tmp_path / "b.zip", threads=2) == []


# (rule, the table that breaks it, what the message names)
BROKEN = {
    "file_name": (dict(name="Ecotaxa_t.tsv"), "ecotaxa*.tsv"),
    "empty": (dict(rows=[]), "no object"),
    "header": (dict(columns=COLUMNS[:-1] + ["rank"]), "'rank'"),
    "type_row": (dict(types=None), "type row"),
    "type": (dict(types=TYPES[:8] + ["[n]"] + TYPES[9:]), "'[n]'"),
    "id_column": (dict(columns=COLUMNS[:10] + ["sample_name"] + COLUMNS[11:]), "sample_id"),
    "headerless_value": (dict(rows=[ROWS[0] + ["extra"]] + ROWS[1:]), "'extra'"),
    "object_id": (dict(rows=_with("object_id", 1, " ")), "object_id"),
    "img_file_name": (dict(rows=_with("img_file_name", 1, "/data/imgs/b.jpg")), "absolute"),
    "image_missing": (dict(rows=_with("img_file_name", 1, "imgs/B.jpg")), "'imgs/B.jpg'"),
    "image_unreadable": (dict(images={"imgs/a.png": b"\x89PNG not really", "imgs/b.jpg": _png("JPEG"),
                                      "imgs/c.gif": _png("GIF")}), "cannot be read"),
    "duplicate": (dict(rows=ROWS + [ROWS[0]]), "already in this table, row 3"),
    "float": (dict(rows=_with("object_area", 1, "-inf")), "'-inf'"),
    "lat": (dict(rows=_with("object_lat", 1, "95°10 00")), "latitude"),
    "lon": (dict(rows=_with("object_lon", 0, "181")), "longitude"),
    "date": (dict(rows=_with("object_date", 0, "2024-02-30")), "'2024-02-30'"),
    "time": (dict(rows=_with("object_time", 0, "12:30")), "'12:30'"),
    "status": (dict(rows=_with("object_annotation_status", 0, "valid")), "'valid'"),
    "status_without_category": (dict(rows=_with("object_annotation_category", 0, " ")), "status 'validated'"),
    "category_without_status": (dict(rows=_with("object_annotation_status", 0, "")), "'Calanoida'"),
    "acquisition_sample": (dict(rows=_with("acq_id", 2, "q1")), "'q1'"),
    "short_row": (dict(rows=ROWS[:2] + [ROWS[2][:7]]), "stops before"),
    "csv": (dict(raw=b"img_file_name\tobject_id\n[t]\t[t]\nimgs/a.png\ta\x00\n"), "NUL"),
}


@pytest.mark.parametrize("rule", sorted(BROKEN))
def test_each_rule_refuses_what_ecotaxa_refuses(tmp_path, rule):
    kw, words = BROKEN[rule]
    probs = check_import_table(_table(tmp_path / "t", **kw) / kw.get("name", "ecotaxa_t.tsv"))
    assert rules(probs) == [rule], probs
    assert words in probs[0].message or words in probs[0].field, probs[0]


def test_values_ecotaxa_accepts(tmp_path):
    """What EcoTaxa reads although it looks odd: nan/NaN/na in number columns, inf and 1_000 (Python's
    float), DD°MM SS latitudes, YYYY-MM-DD dates, HHMM and HH:MM:SS times, 'noid' and statuses in any case."""
    rows = _with("object_area", 0, "1_000", rows=_with("object_area", 2, "inf"))
    rows = _with("object_annotation_status", 0, "VALIDATED", rows=rows)
    rows = _with("object_lon", 2, "na", rows=rows)
    rows = _with("object_annotation_status", 1, "noid", rows=rows)
    rows = _with("object_time", 2, "5", rows=rows)  # -> 0005, 00:05:00
    assert check_import_table(_table(tmp_path / "t", rows=rows)) == []


def test_same_value_is_reported_once_per_column(tmp_path):
    rows = [_with("object_area", 0, "x")[0]] * 1 + [_with("object_area", 1, "x")[1]]
    probs = check_import_table(_table(tmp_path / "t", rows=rows))
    assert triples(probs) == [(3, "object_area", "float")]


def test_checking_block_by_block_finds_the_same_problems(tmp_path, monkeypatch):
    """A table is checked a block of rows at a time (memory flat in its length): a bad value repeated
    in later blocks is still reported once, a bad latitude on every row (as EcoTaxa does), a duplicate
    and a missing image in another block than their first row are still found."""
    rows = [list(r) for r in ROWS]
    rows += [_with("object_area", 0, "x")[0], _with("object_lat", 1, "95")[1], _with("object_id", 2, "z")[2]]
    rows += [_with("object_area", 0, "x")[0][:1] + ["y"] + _with("object_area", 0, "x")[0][2:],
             _with("object_lat", 1, "95")[1][:1] + ["w"] + _with("object_lat", 1, "95")[1][2:],
             ROWS[0], _with("img_file_name", 2, "imgs/none.png")[2]]
    d = _table(tmp_path / "t", rows=rows)
    whole = check_import_table(d)
    monkeypatch.setattr(eti, "ROW_BLOCK", 2)
    blocks = check_import_table(d)
    assert triples(blocks) == triples(whole)
    assert [str(p) for p in blocks] == [str(p) for p in whole]
    assert triples(whole).count((6, "object_area", "float")) == 1 and (9, "object_area", "float") not in triples(whole)
    assert [t for t in triples(whole) if t[2] == "lat"] == [(7, "object_lat", "lat"), (10, "object_lat", "lat")]
    assert (11, "object_id", "duplicate") in triples(whole) and (12, "img_file_name", "image_missing") in triples(whole)


def test_duplicates_and_acquisitions_across_the_tables_of_a_bundle(tmp_path):
    d = _table(tmp_path / "t")
    shutil.copytree(d / "imgs", d / "s2" / "imgs")
    (d / "s2" / "ecotaxa_2.tsv").write_bytes((d / "ecotaxa_t.tsv").read_bytes())
    probs = check_import_table(d)
    # a.png / b.jpg / c.gif are other files in s2/, but the (object_id, img_file_name) pairs repeat
    assert rules(probs) == ["duplicate"] and len(probs) == 3
    assert "ecotaxa_t.tsv, row 3" in probs[0].message


def test_unsupported_image_format(tmp_path):
    images = {"imgs/a.png": _png("BMP"), "imgs/b.jpg": _png("JPEG"), "imgs/c.gif": _png("GIF")}
    probs = check_import_table(_table(tmp_path / "t", images=images))
    assert triples(probs) == [(3, "img_file_name", "image_unreadable")]
    assert "BMP" in probs[0].message


@pytest.mark.parametrize("path, words", [("", "empty"), ("../c.gif", "out of the bundle")])
def test_image_names_ecotaxa_cannot_follow(tmp_path, path, words):
    probs = check_import_table(_table(tmp_path / "t", rows=_with("img_file_name", 2, path)))
    assert triples(probs) == [(5, "img_file_name", "img_file_name")] and words in probs[0].message


def test_no_img_file_name_column(tmp_path):
    cols = [c for c in COLUMNS if c != "img_file_name"]
    rows = [r[1:] for r in ROWS]
    probs = check_import_table(_table(tmp_path / "t", columns=cols, types=TYPES[1:], rows=rows))
    assert triples(probs) == [(1, "img_file_name", "img_file_name")]


def test_encoding_as_ecotaxa_reads_it(tmp_path):
    # UTF-8 with a BOM (what we write) and Latin-1: read right
    assert check_import_table(_table(tmp_path / "bom", encoding="utf-8-sig")) == []
    assert check_import_table(_table(tmp_path / "latin", encoding="latin-1")) == []
    # UTF-8 without a BOM: EcoTaxa reads Latin-1, '°' becomes 'Â°' (and 'é' 'Ã©'): here the latitude
    # 43°30 15 of row 4 then no longer reads
    probs = check_import_table(_table(tmp_path / "utf8", encoding="utf-8"))
    assert [(p.row, p.rule, p.level) for p in probs] == [(4, "encoding", "warning"), (4, "lat", "error")]
    assert "'43Â°30'" in probs[0].message and "'43Â°30 15'" in probs[1].message
    # a BOM then bytes that are not UTF-8, and UTF-16: EcoTaxa fails to read them
    bad = b"\xef\xbb\xbf" + "img_file_name\tobject_id\n[t]\t[t]\nimgs/a.png\t\xe9\n".encode("latin-1")
    assert [(p.row, p.rule) for p in check_import_table(_table(tmp_path / "badbom", raw=bad))] == [(3, "encoding")]
    u16 = "img_file_name\tobject_id\n[t]\t[t]\nimgs/a.png\ta\n".encode("utf-16")
    assert rules(check_import_table(_table(tmp_path / "u16", raw=u16))) == ["encoding"]


def test_crlf_cr_and_quotes_are_read_like_ecotaxa(tmp_path):
    text = "\r".join(['"img_file_name"\t"object_id"\t"object_note"', "[t]\t[t]\t[t]",
                      'imgs/a.png\ta\t"say ""hi""\tthere"', "imgs/b.jpg\tb\tx"]) + "\r"
    assert check_import_table(_table(tmp_path / "cr", raw=text.encode("ascii"))) == []


def test_prefixes_ecotaxa_accepts_but_does_not_store(tmp_path):
    cols = COLUMNS + ["samples_depth"]
    probs = check_import_table(_table(tmp_path / "t", columns=cols, types=TYPES + ["[t]"],
                                      rows=[r + ["5"] for r in ROWS]))
    assert [(p.field, p.rule, p.level) for p in probs] == [("samples_depth", "header", "warning")]


def test_too_many_object_text_columns(tmp_path):
    cols = COLUMNS + [f"object_t{i}" for i in range(20)]  # object_note is the 21st text column
    probs = check_import_table(_table(tmp_path / "t", columns=cols, types=TYPES + ["[t]"] * 20,
                                      rows=[r + ["v"] * 20 for r in ROWS]))
    assert [(p.field, p.rule) for p in probs] == [("object_t19", "too_many_columns")]


def test_too_many_tables(tmp_path, monkeypatch):
    monkeypatch.setattr(eti, "MAX_FILES", 1)
    d = _table(tmp_path / "t")
    shutil.copy(d / "ecotaxa_t.tsv", d / "ecotaxa_u.tsv")
    assert "bundle" in rules(check_import_table(d))


def test_tables_ecotaxa_does_not_see_in_a_folder(tmp_path):
    d = _table(tmp_path / "t", name="EcoTaxa_t.tsv")
    probs = check_import_table(d)
    assert [(p.rule, p.level) for p in probs] == [("file_name", "warning"), ("empty", "error")]


# --------------------------------------------------------------------------------------------
# What the prediction writes
# --------------------------------------------------------------------------------------------

CLASSES = ["Calanoida", "detritus", "Noctiluca"]


class GreyModel:
    """A stand-in classifier: the mean grey level of the image decides the class."""

    def predict_on_batch(self, x):
        m = np.asarray(x, dtype=np.float32).reshape(len(x), -1).mean(axis=1) / 255.0
        p = np.stack([1.0 - m, m, np.full_like(m, 0.3)], axis=1) + 0.05
        return p / p.sum(axis=1, keepdims=True)


def _record(path, names=("Calanoida", "detritus", "Noctiluca scintillans<Noctiluca")):
    rec = {"version": 1, "experiment": "x", "model": "best.keras", "model_sha1": None, "image_size": 16,
           "threshold": 245, "polarity": "dark", "bottom_crop": 0.0, "max_pixels": 10_000_000, "img_rank": 0,
           "classes": [{"name": c, "ecotaxa_name": e} for c, e in zip(CLASSES, names)]}
    path.write_text(json.dumps(rec, ensure_ascii=False), encoding="utf-8")
    return path


def _predict(tmp_path, src, record=None, **kw):
    out = tmp_path / "out"
    paths = {"out_table": out / "ecotaxa_p.tsv", "out_zip": out / "ecotaxa_p.zip", "out_top3": out / "top3.csv",
             "out_summary": out / "summary.json"}
    summary = pr.predict_job(src, tmp_path / "best.keras", record or _record(tmp_path / "rec.json"), "p",
                             model=GreyModel(), **paths, **kw)
    return summary, paths


def _assert_accepted(paths):
    assert check_import_table(paths["out_zip"]) == []
    # the table alone (its images are in the zip)
    assert check_import_table(paths["out_table"], check_images=False) == []
    assert paths["out_table"].read_bytes().startswith(b"\xef\xbb\xbf")


def test_prediction_on_the_demo_export_is_accepted(tmp_path):
    from lokiml.demo import make_demo_export

    export = make_demo_export(tmp_path / "demo", seed=3, scale=0.05).parent
    summary, paths = _predict(tmp_path, export, threshold=0.4)
    _assert_accepted(paths)
    c = summary["counts"]
    assert c["predicted"] + c["kept"] + c["below_threshold"] > 0 and c["unreadable"] == 0
    # the demo's acq_instrument has no acq_id next to it: EcoTaxa would refuse it, so it is left out
    assert set(summary["columns_not_carried"]) == {"acq_instrument"}
    table = parse_table(paths["out_table"].read_bytes(), "t")
    assert "acq_instrument" not in table.df.columns and "sample_id" in table.df.columns
    assert table.types["object_area"] == "[f]" and table.types["object_cruise"] == "[t]"


def test_prediction_on_a_real_zooscan_export_is_accepted(tmp_path, shared_data):
    src = shared_data / "zooscan_export_13539" / "export_13539_20240728_0803.zip"
    summary, paths = _predict(tmp_path, src, threshold=0.0, threads=2)
    _assert_accepted(paths)
    assert summary["counts"]["kept"] == 308 and summary["columns_not_carried"] == {}


@pytest.mark.parametrize("qa", ["import_test", "import de categories ambigues", "import_mixed_states"])
def test_prediction_on_qa_import_tables_is_accepted(tmp_path, shared_data, qa):
    summary, paths = _predict(tmp_path, shared_data / QA / qa, threshold=0.5)
    _assert_accepted(paths)
    assert summary["counts"]["rows"] > 0


def test_prediction_on_the_corrupted_loki_table(tmp_path, shared_data):
    """Every image is unreadable or missing: nothing to upload, which is said, not an error."""
    summary, paths = _predict(tmp_path, shared_data / QA / "import_issues" / "corrupted_img")
    c = summary["counts"]
    assert (c["rows"], c["unreadable"], c["missing_image"]) == (4, 3, 1)
    assert rules(check_import_table(paths["out_zip"])) == ["empty"]


def _input(d, header, types, rows, images):
    d.mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        (d / name).write_bytes(data)
    lines = ["\t".join(header), "\t".join(types)] + ["\t".join(r) for r in rows]
    (d / "ecotaxa_in.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


def _grey(level, fmt="PNG"):
    arr = np.full((30, 40), 255, np.uint8)
    arr[8:22, 10:30] = level
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


def test_input_columns_ecotaxa_would_refuse_are_left_out_or_retyped(tmp_path):
    header = ["object_id", "img_file_name", "object_annotation_status", "object_annotation_category", "depth",
              "img_thumb", "object_n", "object_text", "sample_station", "process_soft", "process_id", "object_date"]
    types = ["[t]", "[t]", "[t]", "[t]", "[f]", "[t]", "[n]", "[f]", "[t]", "[t]", "[t]", "[t]"]
    rows = [["o1", "a.png", "validated", "Ceratium à cornes", "5", "t.png", "1.5", "3", "st1", "zoo", "p1", "20240101"],
            ["o2", "b.png", "validated", "", "6", "t.png", "2", "n/a", "st1", "zoo", "p1", "nan"],
            ["o3", "c.bmp", "", "", "7", "t.png", "nan", "x", "st2", "zoo", "p1", "20240103"]]
    src = _input(tmp_path / "in", header, types, rows,
                 {"a.png": _grey(0), "b.png": _grey(100), "c.bmp": _grey(180, "BMP")})
    summary, paths = _predict(tmp_path, src, threshold=0.0)
    _assert_accepted(paths)
    assert set(summary["columns_not_carried"]) == {"depth", "img_thumb", "sample_station"}
    assert "sample_id" in summary["columns_not_carried"]["sample_station"]
    t = parse_table(paths["out_table"].read_bytes(), "t")
    df = t.df.set_index("object_id")
    assert (t.types["object_n"], t.types["object_text"], t.types["process_soft"]) == ("[f]", "[t]", "[t]")
    # kept with its (non-ASCII) category; a validated object without category is predicted instead
    assert df.loc["o1", "object_annotation_category"] == "Ceratium à cornes"
    assert df.loc["o2", "object_annotation_status"] == "predicted" and summary["counts"]["kept"] == 1
    assert df.loc["o2", "object_date"] == ""
    # the BMP is converted to PNG in the bundle, and the table names the PNG
    assert df.loc["o3", "img_file_name"] == "c.bmp.png"
    with zipfile.ZipFile(paths["out_zip"]) as z:
        assert Image.open(io.BytesIO(z.read("c.bmp.png"))).format == "PNG"
        assert parse_table(z.read("ecotaxa_p.tsv"), "z").df["img_file_name"].tolist() == df["img_file_name"].tolist()


def test_plain_folder_with_bmp_and_tiff(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "a.bmp").write_bytes(_grey(0, "BMP"))
    (d / "b.tif").write_bytes(_grey(100, "TIFF"))
    (d / "b.tif.png").write_bytes(_grey(100))  # the name a conversion would take
    summary, paths = _predict(tmp_path, d, threshold=0.0)
    _assert_accepted(paths)
    with zipfile.ZipFile(paths["out_zip"]) as z:
        assert sorted(z.namelist()) == ["a.bmp.png", "b.tif.1.png", "b.tif.png", "ecotaxa_p.tsv"]


def test_row_without_object_id_is_accounted_for(tmp_path):
    src = _input(tmp_path / "in", ["object_id", "img_file_name"], ["[t]", "[t]"], [["o1", "a.png"], ["", "b.png"]],
                 {"a.png": _grey(0), "b.png": _grey(100)})
    summary, paths = _predict(tmp_path, src)
    assert summary["counts"]["missing_object_id"] == 1 and summary["counts"]["rows"] == 2
    _assert_accepted(paths)


def test_a_value_ecotaxa_refuses_stops_the_prediction_with_its_row(tmp_path):
    header = ["object_id", "img_file_name", "object_date", "object_lat"]
    rows = [["o1", "a.png", "20240101", "43.1"], ["o2", "b.png", "20241301", "43.2"]]
    src = _input(tmp_path / "in", header, ["[t]", "[t]", "[t]", "[f]"], rows, {"a.png": _grey(0), "b.png": _grey(9)})
    with pytest.raises(InputError) as e:
        _predict(tmp_path, src)
    msg = str(e.value)
    assert "object_date" in msg and "'20241301'" in msg and "object 'o2'" in msg and "ecotaxa_in.tsv, row 4" in msg
    # the written table is in review order (issue 16: the objects most worth a look first), so o2's row there is
    # 3 or 4 (after the header and the type row); its input row is exact in the message above
    assert e.value.row in (3, 4) and e.value.path.endswith("ecotaxa_p.zip!ecotaxa_p.tsv")
    out = tmp_path / "out"
    assert not (out / "ecotaxa_p.zip").exists() and not (out / "ecotaxa_p.tsv").exists()
    assert not (out / "summary.json").exists()
