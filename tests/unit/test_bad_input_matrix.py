"""The bad-input matrix (issue 8): every case gets a clear error or a skip that the ledger counts.

One row per case named in the issue, each its own pytest id, grouped in tables by what they exercise:
images, image paths and archives, the table itself, class sizes, class names, the configuration, and
the real broken files under ../shared/data/ecotaxa. Each row states the outcome a user gets:

* ``Refused(problem, file, row, hint)``: an :class:`InputError` (``ConfigError`` for the configuration)
  whose message names the file (and the row, where there is one), says the problem, and carries a
  hint of what to do; never a traceback from inside a library.
* ``Dropped(reason)``: the case's row is in the ledger with that reason (and, for a problem of the
  input rather than of the selection, a warning naming the file and row is logged); every other
  row is used, and the ledger adds up: one row per input row, used rows = objects.
* ``Used()``: the case's row is used, and its image decodes to 8-bit grey.

Each synthetic export holds two good rows of class A, then the case's row, last.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pathlib
import re
import signal
import socket
import stat
import struct
import time
import warnings
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from lokiml.balance import balance, is_augmented_id
from lokiml.config import class_slug, validate_config
from lokiml.ecotaxa import find_tables, open_export
from lokiml.errors import ConfigError, InputError
from lokiml.images import decode_grey
from lokiml.io import read_tsv, write_tsv
from lokiml.objects import REASONS, USED, select_objects
from lokiml.split import split_items

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "ecotaxa"
QA = "ecotaxa_back_qa"

# --------------------------------------------------------------------------- #
# Expected outcomes and the checks behind them
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Refused:
    problem: str  # words of the message
    file: str = ""  # the file the message must name ('' for configuration errors)
    row: int | None = None  # the row it must name, if any
    hint: str = ""  # words the hint must contain ('' = any hint)


@dataclass(frozen=True)
class Dropped:
    reason: str


@dataclass(frozen=True)
class Used:
    pass


# Reasons that come from the selection (config), not from a problem of the input: not logged row by row.
SELECTION_REASONS = {"other_image_rank", "status_not_selected", "no_category", "unmapped_category",
                     "dropped_by_mapping"}


def assert_refused(err: InputError, want: Refused) -> None:
    msg = str(err)
    assert isinstance(err, InputError), repr(err)
    assert want.file in msg and want.file in err.path, msg
    assert want.problem in msg, msg
    if want.row is not None:
        assert err.row == want.row and f"row {want.row}" in msg, msg
    assert err.hint and want.hint in err.hint, f"no hint of what to do: {msg}"


def assert_adds_up(sel, n_rows: int) -> None:
    """One ledger row per input row, each with a known outcome; used rows are the objects."""
    led = sel.ledger
    assert len(led) == n_rows
    assert set(led["outcome"]) <= set(REASONS) | {USED}
    assert (led["outcome"] == USED).sum() == len(sel.objects)
    assert not led.duplicated(["source", "line"]).any()


def read(path, classes=("A", "B"), **kw):
    """open_export + select_objects, as rule read_export does; returns (selection, data rows)."""
    with open_export(path) as ex:
        sel = select_objects(ex, list(classes), **kw)
        return sel, sum(len(t.df) for t in ex.tables)


def check_export(path, want, caplog, **kw):
    """Read the export at ``path`` and check the outcome of its last row (the case)."""
    if isinstance(want, Refused):
        with pytest.raises(InputError) as e:
            read(path, **kw)
        assert_refused(e.value, want)
        return None
    sel, n = read(path, **kw)
    assert_adds_up(sel, n)
    case = sel.ledger.iloc[-1]
    assert (sel.ledger["outcome"].iloc[:-1] == USED).all(), sel.ledger
    if isinstance(want, Used):
        assert case["outcome"] == USED
    else:
        assert case["outcome"] == want.reason, sel.ledger
        if want.reason not in SELECTION_REASONS:
            logged = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
            assert any(f"row {case['line']}" in m and want.reason in m for m in logged), logged
    return sel


# --------------------------------------------------------------------------- #
# Building synthetic exports
# --------------------------------------------------------------------------- #

HEADER = ["img_file_name", "object_id", "object_annotation_status", "object_annotation_category"]


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def grey(size=(40, 30)) -> Image.Image:
    im = Image.new("L", size, 240)
    im.paste(70, (10, 8, 28, 20))
    return im


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels (a decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def table_text(rows, header=HEADER, type_row=True) -> str:
    lines = ["\t".join(header)] + (["\t".join("[t]" for _ in header)] if type_row else [])
    lines += ["\t".join(r) for r in rows]
    return "\n".join(lines) + "\n"


GOOD_ROWS = [["good1.jpg", "o1", "validated", "A"], ["good2.jpg", "o2", "validated", "A"]]


def export(folder: pathlib.Path, case_row=None, images=None, text=None) -> pathlib.Path:
    """A folder export: two good rows of class A, then ``case_row``; ``images`` name -> bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    good = encode(grey(), "JPEG", quality=90)
    files = {"good1.jpg": good, "good2.jpg": good, **(images or {})}
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    if text is None:
        text = table_text(GOOD_ROWS + ([case_row] if case_row else []))
    (folder / "ecotaxa_t.tsv").write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return folder


# --------------------------------------------------------------------------- #
# 1. Images: broken ones are counted, unusual formats and modes are used
# --------------------------------------------------------------------------- #


def _jpeg():
    return encode(grey((120, 90)), "JPEG", quality=90)


def _png():
    return encode(grey((120, 90)), "PNG")


def _shared(rel):
    return lambda: (SHARED / QA / rel).read_bytes()


IMAGE_CASES = [
    pytest.param("t.jpg", lambda: _jpeg()[: len(_jpeg()) // 2], Dropped("unreadable_image"), id="image-truncated-jpeg"),
    pytest.param("t.png", lambda: _png()[: len(_png()) // 2], Dropped("unreadable_image"), id="image-truncated-png"),
    pytest.param("z.jpg", lambda: b"", Dropped("unreadable_image"), id="image-zero-bytes"),
    pytest.param("u.jpg", lambda: b"this is text, not an image\n" * 10, Dropped("unreadable_image"), id="image-unreadable"),
    pytest.param("g.gif", lambda: encode(grey().convert("P"), "GIF"), Used(), id="image-gif"),
    pytest.param("g.gif", lambda: encode(grey(), "GIF", save_all=True, append_images=[Image.new("L", (40, 30), 9)]),
                 Used(), id="image-gif-animated"),
    pytest.param("p.png", lambda: encode(grey().convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
                 Used(), id="image-palette"),
    pytest.param("a.png", lambda: encode(grey().convert("RGBA"), "PNG"), Used(), id="image-rgba"),
    pytest.param("c.jpg", lambda: encode(grey().convert("CMYK"), "JPEG"), Used(), id="image-cmyk"),
    pytest.param("s.png", lambda: encode(Image.fromarray(np.asarray(grey(), dtype=np.uint16) * 257), "PNG"),
                 Used(), id="image-16-bit"),
    pytest.param("s.tif", lambda: encode(Image.fromarray((np.asarray(grey(), dtype=np.uint16) * 16)), "TIFF"),
                 Used(), id="image-12-bit-in-16-bit-tiff"),
    pytest.param("bomb.png", lambda: png_header_only(100_000, 100_000), Dropped("image_too_large"),
                 id="image-decompression-bomb"),
    pytest.param("big.png", lambda: png_header_only(10_001, 10_000), Dropped("image_too_large"),
                 id="image-just-over-max-pixels"),
    # real files of ../shared/data/ecotaxa
    pytest.param("l.png", _shared("import_issues/corrupted_img/20200108 080729  764  000001 0702 1167.png"),
                 Dropped("unreadable_image"), id="real-loki-corrupted-png"),
    pytest.param("l.jpg", _shared("import_issues/corrupted_img/20200108 082117  116  000001 0000 0648.jpg"),
                 Dropped("unreadable_image"), id="real-loki-corrupted-jpeg"),
    pytest.param("c.jpg", _shared("import_issues/tsv_issues/m106_mn01_n3_sml_corrupted_image.jpg"),
                 Dropped("unreadable_image"), id="real-unreadable-jpeg"),
    pytest.param("g.gif", _shared("images/4261.gif"), Used(), id="real-gif-palette"),
]


@pytest.mark.parametrize("name, make, want", IMAGE_CASES)
def test_image(tmp_path, caplog, request, name, make, want):
    if request.node.callspec.id.startswith("real-"):
        request.getfixturevalue("shared_data")
    data = make()
    path = export(tmp_path / "e", [f"img/{name}", "case", "validated", "A"], images={f"img/{name}": data})
    check_export(path, want, caplog, max_pixels=100_000_000)
    if isinstance(want, Used):
        arr = decode_grey(data, name, max_pixels=100_000_000)
        assert arr.dtype == np.uint8 and arr.ndim == 2 and arr.size > 0


def test_image_over_the_configured_max_pixels_is_counted(tmp_path, caplog, shared_data):
    data = (shared_data / QA / "import_issues/tsv_issues/m106_mn01_n3_sml_too_big.png").read_bytes()  # 225 x 346
    path = export(tmp_path / "e", ["big.png", "case", "validated", "A"], images={"big.png": data})
    check_export(path, Dropped("image_too_large"), caplog, max_pixels=225 * 346 - 1)


# --------------------------------------------------------------------------- #
# 2. Image paths, links and archives
# --------------------------------------------------------------------------- #


def _path_absolute(tmp):
    return export(tmp / "e", ["/etc/passwd", "case", "validated", "A"])


def _path_windows_absolute(tmp):
    return export(tmp / "e", ["C:\\images\\x.jpg", "case", "validated", "A"])


def _path_climbs_out(tmp):
    (tmp / "outside.jpg").write_bytes(_jpeg())
    return export(tmp / "e", ["../outside.jpg", "case", "validated", "A"])


def _path_climbs_out_backslashes(tmp):
    (tmp / "outside.jpg").write_bytes(_jpeg())
    return export(tmp / "e", ["sub\\..\\..\\outside.jpg", "case", "validated", "A"])


def _symlink_out(tmp):
    (tmp / "secret.jpg").write_bytes(_jpeg())
    path = export(tmp / "e", ["link.jpg", "case", "validated", "A"])
    (path / "link.jpg").symlink_to(tmp / "secret.jpg")
    return path


def _symlink_inside(tmp):
    path = export(tmp / "e", ["link.jpg", "case", "validated", "A"])
    (path / "link.jpg").symlink_to(path / "good1.jpg")
    return path


def _symlinked_table(tmp):
    (tmp / "elsewhere").mkdir()
    (tmp / "elsewhere" / "ecotaxa_t.tsv").write_text(table_text(GOOD_ROWS))
    (tmp / "e").mkdir()
    (tmp / "e" / "ecotaxa_t.tsv").symlink_to(tmp / "elsewhere" / "ecotaxa_t.tsv")
    return tmp / "e"


def _zip(tmp, members: dict, name="e.zip"):
    path = tmp / name
    with zipfile.ZipFile(path, "w") as z:
        for member, data in members.items():
            info = member if isinstance(member, zipfile.ZipInfo) else zipfile.ZipInfo(member)
            z.writestr(info, data)
    return path


def _zip_members(case_row):
    good = encode(grey(), "JPEG")
    return {"ecotaxa_t.tsv": table_text(GOOD_ROWS + [case_row]), "good1.jpg": good, "good2.jpg": good}


def _zip_slip(tmp):
    return _zip(tmp, {**_zip_members(["../evil.jpg", "case", "validated", "A"]), "../evil.jpg": _jpeg()})


def _zip_slip_nested(tmp):
    return _zip(tmp, {**_zip_members(["a/../../evil.jpg", "case", "validated", "A"]), "a/../../evil.jpg": _jpeg()})


def _zip_symlink(tmp):
    link = zipfile.ZipInfo("link.jpg")
    link.external_attr = 0o120777 << 16
    return _zip(tmp, {**_zip_members(["link.jpg", "case", "validated", "A"]), link: "/etc/passwd"})


def _zip_in_zip(tmp):
    inner = _zip(tmp, _zip_members(["good1.jpg", "case", "validated", "A"]), name="inner.zip")
    return _zip(tmp, {"inner.zip": inner.read_bytes()}, name="outer.zip")


def _missing_image(tmp):
    return export(tmp / "e", ["nowhere.jpg", "case", "validated", "A"])


def _no_image_name(tmp):
    return export(tmp / "e", ["", "case", "validated", "A"])


PATH_CASES = [
    pytest.param(_path_absolute, Dropped("unsafe_image_path"), id="img_file_name-absolute"),
    pytest.param(_path_windows_absolute, Dropped("unsafe_image_path"), id="img_file_name-windows-absolute"),
    pytest.param(_path_climbs_out, Dropped("unsafe_image_path"), id="img_file_name-climbs-out"),
    pytest.param(_path_climbs_out_backslashes, Dropped("unsafe_image_path"), id="img_file_name-climbs-out-backslashes"),
    pytest.param(_symlink_out, Dropped("unsafe_image_path"), id="symlink-image-outside"),
    pytest.param(_symlink_inside, Used(), id="symlink-image-inside"),
    pytest.param(_symlinked_table, Refused("outside the export folder", "ecotaxa_t.tsv", hint="copy"),
                 id="symlink-table-outside"),
    pytest.param(_zip_slip, Dropped("unsafe_image_path"), id="zip-slip"),
    pytest.param(_zip_slip_nested, Dropped("unsafe_image_path"), id="zip-slip-nested"),
    pytest.param(_zip_symlink, Dropped("unsafe_image_path"), id="zip-member-symlink"),
    pytest.param(_zip_in_zip, Refused("inner.zip", "outer.zip", hint="unpack"), id="zip-in-zip"),
    pytest.param(_missing_image, Dropped("missing_image"), id="image-missing"),
    pytest.param(_no_image_name, Dropped("no_image_name"), id="img_file_name-empty"),
]


@pytest.mark.parametrize("build, want", PATH_CASES)
def test_path(tmp_path, caplog, build, want):
    check_export(build(tmp_path), want, caplog)


# --------------------------------------------------------------------------- #
# 3. The table: columns, rows, statuses
# --------------------------------------------------------------------------- #

ROW = ["good1.jpg", "case", "validated", "A"]
LINE = 5  # physical line of the case row: header, type row, two good rows


TABLE_CASES = [
    pytest.param(table_text(GOOD_ROWS + [["good1.jpg", "o1", "validated", "A"]]), Dropped("duplicate_object_id"),
                 id="duplicate-object_id"),
    pytest.param(table_text([r[1:] for r in GOOD_ROWS + [ROW]], header=HEADER[1:]),
                 Refused("missing required column(s) ['img_file_name']", "ecotaxa_t.tsv", row=1, hint="add the column"),
                 id="missing-column-img_file_name"),
    pytest.param(table_text([[r[0]] + r[2:] for r in GOOD_ROWS + [ROW]], header=[HEADER[0]] + HEADER[2:]),
                 Refused("missing required column(s) ['object_id']", "ecotaxa_t.tsv", row=1, hint="add the column"),
                 id="missing-column-object_id"),
    pytest.param(b"", Refused("file is empty", "ecotaxa_t.tsv", hint="export the table again"), id="empty-file"),
    pytest.param("\n \n\t\n", Refused("no header", "ecotaxa_t.tsv", hint="export the table again"),
                 id="blank-lines-only"),
    pytest.param("\t".join(HEADER) + "\n", Refused("header but no rows", "e", hint="export the project again"),
                 id="header-only"),
    pytest.param(table_text([]), Refused("header but no rows", "e", hint="export the project again"),
                 id="header-and-type-row-only"),
    # a ragged (short) row: its missing cells are read as empty, a warning names the row
    pytest.param(table_text(GOOD_ROWS + [ROW[:3]]), Dropped("no_category"), id="ragged-row-short"),
    pytest.param(table_text(GOOD_ROWS + [ROW + ["extra"]]),
                 Refused("5 cells but the header (row 1) has 4", "ecotaxa_t.tsv", row=LINE, hint="tab"),
                 id="row-longer-than-header"),
    # a quote that opens a cell and is never closed would swallow the rows after it
    pytest.param(table_text([GOOD_ROWS[0], ["good1.jpg", "case", "validated", '"A'], GOOD_ROWS[1]]),
                 Refused("never closed", "ecotaxa_t.tsv", row=4, hint='""'), id="unclosed-quote"),
    pytest.param(table_text(GOOD_ROWS + [["good1.jpg", "case", "Validated", "A"]]), Dropped("unknown_status"),
                 id="unknown-status"),
    pytest.param(table_text(GOOD_ROWS + [["good1.jpg", "case", "V", "A"]]), Dropped("unknown_status"),
                 id="unknown-status-letter"),
    pytest.param(table_text(GOOD_ROWS + [["good1.jpg", "case", "predicted", "A"]]), Dropped("status_not_selected"),
                 id="status-not-selected"),
    pytest.param(table_text(GOOD_ROWS + [["good1.jpg", "case", "validated", "Zzz"]]), Dropped("unmapped_category"),
                 id="category-unmapped"),
    pytest.param(table_text(GOOD_ROWS + [["good1.jpg", "case", "validated", ""]]), Dropped("no_category"),
                 id="category-empty"),
    pytest.param(table_text([r + ["0"] for r in GOOD_ROWS] + [ROW + ["one"]], header=HEADER + ["img_rank"]),
                 Refused("img_rank 'one' is not a number", "ecotaxa_t.tsv", row=LINE, hint="0, 1"),
                 id="img_rank-not-a-number"),
]


@pytest.mark.parametrize("text, want", TABLE_CASES)
def test_table(tmp_path, caplog, request, text, want):
    path = export(tmp_path / "e", text=text)
    check_export(path, want, caplog)
    if request.node.callspec.id == "ragged-row-short":
        assert any("fewer cells than the header (rows 5)" in r.getMessage() and r.levelname == "WARNING"
                   for r in caplog.records)
    if request.node.callspec.id.startswith("unknown-status"):
        assert any("object_annotation_status EcoTaxa does not write" in r.getMessage() and "row 5" in r.getMessage()
                   for r in caplog.records)


def test_table_without_status_column_warns_and_counts(tmp_path, caplog):
    header = ["img_file_name", "object_id", "object_annotation_category"]
    path = export(tmp_path / "e", text=table_text([[r[0], r[1], r[3]] for r in GOOD_ROWS], header=header))
    sel, n = read(path)
    assert_adds_up(sel, n)
    assert set(sel.ledger["outcome"]) == {"status_not_selected"}  # unclassified (''), not validated
    assert any("no object_annotation_status column" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- #
# 4. Classes of 0, 1 and 2 objects
# --------------------------------------------------------------------------- #


def objects_of(counts: dict[str, int]) -> pd.DataFrame:
    rows = [{"object_id": f"{c}{i}", "class_name": c, "image_ref": f"{c}{i}.jpg", "object_date": "20200101",
             "object_time": f"{i % 24:02d}0000"} for c, n in counts.items() for i in range(n)]
    return pd.DataFrame(rows, columns=["object_id", "class_name", "image_ref", "object_date", "object_time"])


SPLIT_HINT = "class_mapping"

CLASS_SIZE_CASES = [
    pytest.param({"A": 20, "B": 0}, Refused("class 'B' has no usable objects", "objects.tsv", hint="ledger"),
                 id="class-with-0-objects"),
    pytest.param({"A": 20, "B": 1}, Refused("'B' (1 object)", "balanced.tsv", hint=SPLIT_HINT), id="class-with-1-object"),
    pytest.param({"A": 20, "B": 2}, Refused("'B' (2 objects)", "balanced.tsv", hint=SPLIT_HINT),
                 id="class-with-2-objects"),
    pytest.param({"A": 20, "B": 1, "C": 2}, Refused("'B' (1 object), 'C' (2 objects)", "balanced.tsv", hint=SPLIT_HINT),
                 id="classes-with-1-and-2-objects-named-together"),
    pytest.param({"A": 20, "B": 3}, Used(), id="class-with-3-objects"),
]


@pytest.mark.parametrize("counts, want", CLASS_SIZE_CASES)
def test_class_size(counts, want):
    """A class must reach every split: 0 objects stops balancing, 1 or 2 stop splitting, with the class named.

    Balancing still works for 1 or 2 objects (the copies name their original and would stay in its split),
    but a class with no validation or test object cannot be evaluated: the user merges or removes it.
    """
    objects = objects_of(counts)
    classes = list(counts)
    if counts.get("B") == 0:
        with pytest.raises(InputError) as e:
            balance(objects, classes, cap=10, source="results/data/objects.tsv")
        assert_refused(e.value, want)
        return
    bal = balance(objects, classes, cap=10, source="results/data/objects.tsv")
    small = bal[bal["class_name"] != "A"]
    assert (small.groupby("class_name").size() == 10).all()  # filled up to the cap with copies
    assert set(small["object_id"]) <= set(objects["object_id"])  # each copy names its original
    if isinstance(want, Refused):
        with pytest.raises(InputError) as e:
            split_items(bal, objects, source="results/data/balanced.tsv")
        assert_refused(e.value, want)
        return
    out = split_items(bal, objects, source="results/data/balanced.tsv")
    assert set(out.loc[out["class_name"] == "B", "split"]) == {"train", "valid", "test"}
    assert out.groupby("object_id")["split"].nunique().max() == 1  # copies stay with their original


# --------------------------------------------------------------------------- #
# 5. Class names: safe, distinct file names, and the workflow still maps them exactly
# --------------------------------------------------------------------------- #


def wildcard_constraints() -> dict[str, str]:
    text = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    block = text.split("wildcard_constraints:", 1)[1].split("\n\n", 1)[0]
    return dict(re.findall(r'(\w+)=r"([^"]+)"', block))


NAME_CASES = [
    pytest.param("Copepoda/Calanoida", id="class-name-slash"),
    pytest.param("egg<other", id="class-name-less-than"),
    pytest.param("Metazoa>Copepoda", id="class-name-greater-than"),
    pytest.param("Noctiluca scintillans", id="class-name-space"),
    pytest.param('part "Annelida"', id="class-name-double-quote"),
    pytest.param("part 'Cnidaria'", id="class-name-single-quote"),
    pytest.param("Ophiuroïdea", id="class-name-non-ascii"),
    pytest.param("Сalanoida", id="class-name-cyrillic-lookalike"),  # a Cyrillic С
    pytest.param("-x", id="class-name-leading-dash"),
    pytest.param(".hidden", id="class-name-leading-dot"),
]


@pytest.mark.parametrize("name", NAME_CASES)
def test_class_name(tmp_path, caplog, name):
    slug = class_slug(name)
    # a safe file name, and one every name-like wildcard of the workflow accepts
    assert slug.isascii() and "/" not in slug and not slug.startswith((".", "-"))
    constraints = wildcard_constraints()
    assert {"experiment", "prediction"} <= set(constraints)
    for wildcard in ("experiment", "prediction"):
        assert re.fullmatch(constraints[wildcard], slug), (wildcard, constraints[wildcard], slug)
    # distinct from the names it could be confused with
    lookalikes = {re.sub(r"[^A-Za-z0-9_.-]", "_", name), re.sub(r"[^A-Za-z0-9_.-]", "", name), "Calanoida",
                  name.strip("._-")} - {name}
    assert slug not in {class_slug(n) for n in lookalikes}
    assert slug == class_slug(name)  # stable
    # the configuration takes it, next to the names it could be confused with
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["classes"] = [name] + sorted(lookalikes)
    validate_config(cfg)
    # and the data stage maps the category exactly, through the TSVs, to every split
    # one image per object, each different (objects sharing an image would share a split)
    rows = [[f"{i}.jpg", f"n{i}", "validated", name] for i in range(5)]
    rows += [[f"{i + 5}.jpg", f"x{i}", "validated", "other"] for i in range(5)]
    path = export(tmp_path / "e", text=table_text(rows),
                  images={f"{i}.jpg": encode(grey((40 + i, 30)), "JPEG") for i in range(10)})
    sel, n = read(path, classes=[name, "other"])
    assert_adds_up(sel, n)
    assert (sel.ledger["outcome"] == USED).all()
    write_tsv(tmp_path / "objects.tsv", sel.objects)
    objects = read_tsv(tmp_path / "objects.tsv")
    assert sorted(set(objects["class_name"])) == sorted({name, "other"})
    out = split_items(balance(objects, [name, "other"], cap=5), objects)
    assert set(out.loc[out["class_name"] == name, "split"]) == {"train", "valid", "test"}


@pytest.mark.parametrize("classes, key", [
    pytest.param([" Copepoda", "b"], "classes[0]", id="class-name-leading-space"),
    pytest.param(["a", "Copepoda "], "classes[1]", id="class-name-trailing-space"),
    pytest.param(["a\tb", "b"], "classes[0]", id="class-name-tab"),
    pytest.param(["a\nb", "b"], "classes[0]", id="class-name-newline"),
    pytest.param(["Calanoida", "calanoida"], "classes", id="class-names-differing-only-in-case"),
])
def test_class_name_refused(classes, key):
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["classes"] = classes
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    assert f"config key {key}" in str(e.value)


# --------------------------------------------------------------------------- #
# 6. The configuration
# --------------------------------------------------------------------------- #

CONFIG_CASES = [
    pytest.param(lambda c: c.update(clases=["a", "b"]), "config key (top level): unknown key ('clases'",
                 id="config-typo-top-level-key"),
    pytest.param(lambda c: c["balance"].update(cpa=3), "config key balance: unknown key ('cpa'", id="config-typo-key"),
    pytest.param(lambda c: c["balance"].update(cap=-5), "config key balance.cap: -5 is less than the minimum of 1",
                 id="config-negative-cap"),
    pytest.param(lambda c: c["balance"].update(cap=0), "config key balance.cap: 0 is less than the minimum of 1",
                 id="config-zero-cap"),
    pytest.param(lambda c: c.update(split={"train": 0.7, "valid": 0.2, "test": 0.2}),
                 "config key split: train + valid + test must sum to 1, got 0.7 + 0.2 + 0.2 = 1.1",
                 id="config-split-fractions-not-summing-to-1"),
    pytest.param(lambda c: c.update(split={"train": 0.6, "valid": 0.4, "test": 0}), "config key split.test",
                 id="config-split-fraction-zero"),
    pytest.param(lambda c: c.update(statuses=["validatd"]), "config key statuses.0: 'validatd' is not one of",
                 id="config-unknown-status"),
    pytest.param(lambda c: c.update(classes=["only"]), "config key classes", id="config-one-class"),
]


@pytest.mark.parametrize("change, message", CONFIG_CASES)
def test_config(change, message):
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    change(cfg)
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    assert message in str(e.value)


# --------------------------------------------------------------------------- #
# 7. The real files under ../shared/data/ecotaxa
# --------------------------------------------------------------------------- #

STATUSES = ["validated", "predicted", "dubious", ""]

# What the real broken (or quirky) exports give when read with every status and every category as a
# class; everything else under the shared folder is checked by the generic rule of test_shared_export.
SHARED_CASES = {
    # 0 bytes
    f"{QA}/import_issues/empty_tsv2": Refused("file is empty", "ecotaxa_m106_mn01_n365_sml.tsv", hint="again"),
    # header + type row, no data
    f"{QA}/import_issues/empty_tsv": Refused("header but no rows", "empty_tsv", hint="again"),
    # a row longer than its header
    f"{QA}/import_issues/extra_data_without_header": Refused("90 cells", "ecotaxa_m106_mn04_n1_sml.tsv", row=3,
                                                             hint="tab"),
    # [H] in the type row
    f"{QA}/import_issues/tsv_issues": Refused("[H]", "ecotaxa_m106_mn01_n3_sml.tsv", row=2, hint="[t]"),
    # the same object twice; rows 3-4 short by one cell
    f"{QA}/import_issues/duplicate_in_tsv": {"used": 1, "duplicate_object_id": 1},
    # across the tables of a folder
    f"{QA}/merge_test": {"used": 12, "duplicate_object_id": 1},
    # no status column: the categorised row has no status, the other no category
    f"{QA}/import_issues/classif_without_state": {"no_category": 1},
    f"{QA}/import_issues/predicted_but_what": {"no_category": 1},
    # the LOKI table holds no annotations: its corrupted images are checked in test_image
    f"{QA}/import_issues/corrupted_img": {"no_category": 4},
    f"{QA}/import_issues/breaking_hierarchy": {"used": 1},
    f"{QA}/import_issues/no_classif_id": {"used": 1},
    f"{QA}/import_issues/tsv_too_many_cols": {"used": 1},
    # CR-only line endings, a folder name with spaces, ambiguous categories
    f"{QA}/import de categories ambigues": {"used": 6},
    # a zip inside a zip, and one inside a folder
    f"{QA}/UVP6_example.zip": Refused("b_da_19_Images.zip", "UVP6_example.zip", hint="unpack"),
    f"{QA}/import_uvp6_zip_in_dir": Refused("b_da_19_Images.zip", "import_uvp6_zip_in_dir", hint="unpack"),
    # Latin-1 UVP6 table, second images
    f"{QA}/import_uvp6_zip_in_dir/b_da_19_Images.zip": {"other_image_rank": 15},
    # .tar and .gz bundles
    f"{QA}/my_files/cont.tar": Refused("cannot be read directly", "cont.tar", hint="unpack"),
    f"{QA}/my_files/cont.gz": Refused("cannot be read directly", "cont.gz", hint="unpack"),
    f"{QA}/my_files/ecotaxa_b_da_19.tsv.gz": Refused("cannot be read directly", "ecotaxa_b_da_19.tsv.gz", hint="unpack"),
    # tables that are not object tables
    f"{QA}/ref_exports/summary_whole/ref.tsv": Refused("missing required column(s)", "ref.tsv", row=1,
                                                       hint="add the column"),
    f"{QA}/images": Refused("no EcoTaxa table found", "images", hint="give the"),
    # the genuine ZooScan backup: BOM, quoted cells, type row, images in 0/
    "zooscan_export_13539/export_13539_20240728_0803.zip": {"used": 437},
    # an export without its images
    "ecotaxar/export.tsv": {"missing_image": 99},
}


def _shared_exports():
    """Every table, archive and folder under the shared folder (two levels deep), as pytest params."""
    if not SHARED.is_dir():
        return [pytest.param(None, id="shared-data-absent")]
    found = {p for p in SHARED.rglob("*") if p.is_file() and p.name.lower().endswith((".tsv", ".txt", ".zip", ".gz", ".tar"))}
    found |= {p for p in SHARED.iterdir() if p.is_dir()}
    found |= {p for p in (SHARED / QA).iterdir() if p.is_dir()}
    found |= {p for p in (SHARED / QA / "import_issues").iterdir() if p.is_dir()}
    rels = sorted(p.relative_to(SHARED).as_posix() for p in found)
    assert set(SHARED_CASES) <= set(rels), set(SHARED_CASES) - set(rels)
    return [pytest.param(r, id=f"real-{r}") for r in rels]


def read_shared(path):
    """Read a shared export as a user who wants every category of it would: (selection, data rows)."""
    with open_export(path) as ex:
        cats = {c for t in ex.tables if "object_annotation_category" in t.df for c in t.df["object_annotation_category"]}
        classes = sorted(cats - {""}) or ["a", "b"]
        return select_objects(ex, classes, statuses=STATUSES, threads=2), sum(len(t.df) for t in ex.tables)


@pytest.mark.parametrize("rel", _shared_exports())
def test_shared_export(shared_data, rel):
    if rel is None:
        pytest.skip("no shared data")
    path = shared_data / rel
    want = SHARED_CASES.get(rel)
    try:
        sel, n = read_shared(path)
    except InputError as e:
        assert not isinstance(want, dict), f"{rel} was refused: {e}"
        # the message names a file of this export (or the export itself) and says what to do
        assert str(path) in e.path, e
        assert e.hint, f"no hint of what to do: {e}"
        if want is not None:
            assert_refused(e, want)
        return
    assert not isinstance(want, Refused), f"{rel} was read, expected: {want}"
    assert_adds_up(sel, n)
    if want is not None:
        assert sel.ledger["outcome"].value_counts().to_dict() == want


def test_shared_cases_all_exist(shared_data):
    for rel in SHARED_CASES:
        assert (shared_data / rel).exists(), rel


# --------------------------------------------------------------------------- #
# 8. Inputs that must not exhaust memory, hang, or pass silently (issue 14)
# --------------------------------------------------------------------------- #


def _grey_array(arr) -> bytes:
    return encode(Image.fromarray(np.asarray(arr, dtype=np.uint8)), "PNG")


def _noise_background():
    rng = np.random.default_rng(3)
    return _grey_array(rng.integers(246, 256, (60, 80)))  # a light frame with nothing darker than 245


def _long_thin(shape, value=30):
    a = np.full(shape, 250, np.uint8)
    if shape[0] < shape[1]:
        a[:, shape[1] // 10: -shape[1] // 10] = value
    else:
        a[shape[0] // 10: -shape[0] // 10, :] = value
    return _grey_array(a)


def _transparent():
    return encode(Image.new("RGBA", (40, 30), (0, 0, 0, 0)), "PNG")


NO_OBJECT_CASES = [
    pytest.param("white.png", lambda: _grey_array(np.full((40, 60), 255)), Dropped("no_object"), id="image-all-white"),
    pytest.param("black.png", lambda: _grey_array(np.zeros((40, 60))), Dropped("no_object"), id="image-all-black"),
    pytest.param("grey.png", lambda: _grey_array(np.full((40, 60), 128)), Dropped("no_object"), id="image-flat-grey"),
    pytest.param("black.jpg", lambda: encode(Image.new("L", (300, 200), 0), "JPEG"), Dropped("no_object"),
                 id="image-all-black-jpeg"),
    pytest.param("frame.png", _noise_background, Dropped("no_object"), id="image-background-only"),
    pytest.param("clear.png", _transparent, Dropped("no_object"), id="image-fully-transparent"),
    pytest.param("one.png", lambda: _grey_array(np.full((1, 1), 40)), Dropped("no_object"), id="image-one-pixel"),
    # extreme shapes are used, and normalised without a canvas of their length (test_normalise_* below)
    pytest.param("long.png", lambda: _long_thin((10, 30000)), Used(), id="image-30000x10"),
    pytest.param("line.png", lambda: _long_thin((100000, 2)), Used(), id="image-2x100000"),
    pytest.param("tiny.png", lambda: _grey_array([[250, 40], [250, 250]]), Used(), id="image-2x2-with-an-object"),
    # other formats Pillow reads
    pytest.param("i.webp", lambda: encode(grey(), "WEBP", lossless=True), Used(), id="image-webp"),
    pytest.param("i.bmp", lambda: encode(grey(), "BMP"), Used(), id="image-bmp"),
    pytest.param("i.tif", lambda: encode(grey(), "TIFF", compression="tiff_lzw"), Used(), id="image-tiff-lzw"),
    pytest.param("t.jpg", lambda: _jpeg() + b"trailing bytes after the end of the JPEG", Used(),
                 id="image-jpeg-with-trailing-bytes"),
    pytest.param("h.jpg", lambda: b"<html><body>404 Not Found</body></html>\n", Dropped("unreadable_image"),
                 id="image-html-page-named-jpg"),
    pytest.param("g.gif", lambda: encode(grey().convert("P"), "GIF")[:-20], Dropped("unreadable_image"),
                 id="image-truncated-gif"),
]


@pytest.mark.parametrize("name, make, want", NO_OBJECT_CASES)
def test_image_content(tmp_path, caplog, name, make, want):
    data = make()
    path = export(tmp_path / "e", ["img/" + name, "case", "validated", "A"], images={"img/" + name: data})
    sel = check_export(path, want, caplog)
    if isinstance(want, Dropped):
        detail = sel.ledger.iloc[-1]["detail"]
        assert detail, "the ledger says why"


def test_no_object_follows_threshold_and_polarity(tmp_path, caplog):
    frame = _noise_background()
    path = export(tmp_path / "e", ["f.png", "case", "validated", "A"], images={"f.png": frame})
    check_export(path, Dropped("no_object"), caplog, threshold=245)
    check_export(path, Used(), caplog, threshold=252)  # now its darker speckles count as an object
    # light objects on a dark background: an all-black frame has none, with either polarity
    black = export(tmp_path / "b", ["k.png", "case", "validated", "A"], images={"k.png": _grey_array(np.zeros((9, 9)))})
    check_export(black, Dropped("no_object"), caplog, polarity="light")
    check_export(black, Dropped("no_object"), caplog, polarity="auto")


def _fifo(tmp, name):
    path = export(tmp / "e", [name, "case", "validated", "A"])
    os.mkfifo(path / name)
    return path


def _socket(tmp, name):
    path = export(tmp / "e", [name, "case", "validated", "A"])
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path / name))
    s.close()
    return path


def _folder(tmp, name):
    path = export(tmp / "e", [name, "case", "validated", "A"])
    (path / name).mkdir()
    return path


def _over_max_bytes(tmp, name):
    return export(tmp / "e", [name, "case", "validated", "A"], images={name: _jpeg()})


def _sparse_5_gib(tmp, name):
    """A 5 GiB file named as an image (sparse: it takes no disk), over the default max_bytes."""
    path = export(tmp / "e", [name, "case", "validated", "A"])
    with open(path / name, "wb") as f:
        f.truncate(5 * 2**30)
    return path


def _char_device(tmp, name):
    path = export(tmp / "e", [name, "case", "validated", "A"])
    try:
        os.mknod(path / name, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # like /dev/zero, inside the export
    except PermissionError:
        pytest.skip("creating a device node needs root")
    return path


def _link_to_fifo(tmp, name):
    path = export(tmp / "e", [name, "case", "validated", "A"])
    os.mkfifo(path / "fifo")
    (path / name).symlink_to(path / "fifo")
    return path


def _broken_link(tmp, name):
    path = export(tmp / "e", [name, "case", "validated", "A"])
    (path / name).symlink_to(path / "nowhere.jpg")
    return path


SPECIAL_FILE_CASES = [
    pytest.param(_fifo, "pipe.jpg", Dropped("not_a_file"), {}, id="image-named-pipe"),
    pytest.param(_socket, "sock.jpg", Dropped("not_a_file"), {}, id="image-socket"),
    pytest.param(_folder, "dir.jpg", Dropped("not_a_file"), {}, id="image-is-a-folder"),
    pytest.param(_over_max_bytes, "big.jpg", Dropped("file_too_large"), {"max_bytes": len(_jpeg()) - 1},
                 id="image-over-max-bytes"),
    pytest.param(_sparse_5_gib, "huge.jpg", Dropped("file_too_large"), {}, id="image-5-GiB-file"),
    pytest.param(_char_device, "dev.jpg", Dropped("not_a_file"), {}, id="image-character-device"),
    pytest.param(_link_to_fifo, "link.jpg", Dropped("not_a_file"), {}, id="image-link-to-a-named-pipe"),
    pytest.param(_broken_link, "broken.jpg", Dropped("missing_image"), {}, id="image-broken-link"),
]


@pytest.mark.parametrize("build, name, want, kw", SPECIAL_FILE_CASES)
def test_special_files_are_counted_never_read(tmp_path, caplog, build, name, want, kw):
    path = build(tmp_path, name)
    with no_hang(20):
        check_export(path, want, caplog, **kw)


@contextlib.contextmanager
def no_hang(seconds):
    """Fail (instead of blocking the test run for ever) when the block takes longer than ``seconds``."""
    def alarm(signum, frame):
        raise AssertionError(f"blocked for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_table_that_is_a_named_pipe_is_refused_without_blocking(tmp_path):
    path = export(tmp_path / "e")
    os.mkfifo(path / "ecotaxa_x.tsv")
    with no_hang(20), pytest.raises(InputError) as e:
        read(path)
    assert_refused(e.value, Refused("named pipe", "ecotaxa_x.tsv", hint="remove it"))


def test_export_that_is_a_named_pipe_or_a_device_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "export.zip")
    with no_hang(20), pytest.raises(InputError) as e:
        read(tmp_path / "export.zip")
    assert_refused(e.value, Refused("named pipe", "export.zip", hint="give a"))
    with no_hang(20), pytest.raises(InputError) as e:
        read("/dev/zero")
    assert_refused(e.value, Refused("character device", "/dev/zero", hint="give a"))


# Zips whose members must not be inflated, or are not what they seem


def _patch_zip(path, name, *, flag=None, method=None, size=None, corrupt=False):
    """Rewrite fields of member ``name`` in the local header and the central directory of the zip at ``path``."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
        local = info.header_offset
    for sig, off in ((b"PK\x03\x04", local), *((b"PK\x01\x02", i) for i in _find_all(data, b"PK\x01\x02"))):
        if data[off:off + 4] != sig:
            continue
        if sig == b"PK\x01\x02":
            n = struct.unpack_from("<H", data, off + 28)[0]
            if data[off + 46: off + 46 + n].decode() != name:
                continue
            base = off + 2  # the central header has 'version made by' before the common fields
        else:
            base = off
        if flag is not None:
            struct.pack_into("<H", data, base + 6, struct.unpack_from("<H", data, base + 6)[0] | flag)
        if method is not None:
            struct.pack_into("<H", data, base + 8, method)
        if size is not None:
            struct.pack_into("<I", data, base + 22, size)
    if corrupt:
        start = local + 30 + len(name) + struct.unpack_from("<H", data, local + 28)[0]
        for k in range(start + 5, start + 40):
            data[k] ^= 0x5A
    path.write_bytes(bytes(data))
    return path


def _find_all(data, sig):
    i = data.find(sig)
    while i >= 0:
        yield i
        i = data.find(sig, i + 1)


def _zip_case(tmp, members, **patch):
    good = encode(grey(), "JPEG")
    files = {"ecotaxa_t.tsv": table_text(GOOD_ROWS + [["case.png", "case", "validated", "A"]]), "good1.jpg": good,
             "good2.jpg": good}
    path = tmp / "e.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in [*files.items(), *members]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # duplicate names are the point of some cases
                z.writestr(name, data)
    return _patch_zip(path, "case.png", **patch) if patch else path


ZIP_CASES = [
    pytest.param([("case.png", _png()), ("case.png", _grey_array(np.full((9, 9), 3)))], {}, Dropped("ambiguous_image"),
                 id="zip-duplicate-member-different"),
    pytest.param([("case.png", _png()), ("case.png", _png())], {}, Used(), id="zip-duplicate-member-identical"),
    pytest.param([("case.png", _png())], {"flag": 0x1}, Dropped("unreadable_image"), id="zip-encrypted-member"),
    pytest.param([("case.png", _png())], {"corrupt": True}, Dropped("unreadable_image"), id="zip-corrupt-member"),
    pytest.param([("case.png", _png())], {"method": 99}, Dropped("unreadable_image"), id="zip-unknown-method"),
    pytest.param([("case.png", _png())], {"size": 2**32 - 2}, Dropped("file_too_large"),
                 id="zip-member-declares-4-GiB"),
    pytest.param([("case.png", b"\0" * (20 << 20))], {}, Dropped("file_too_large"), id="zip-bomb-ratio"),
]


ZIP_WORDS = {"zip-encrypted-member": "encrypted", "zip-corrupt-member": "corrupt", "zip-unknown-method": "method 99",
             "zip-member-declares-4-GiB": "not inflated", "zip-bomb-ratio": "zip bomb",
             "zip-duplicate-member-different": "2 different members"}


@pytest.mark.parametrize("members, patch, want", ZIP_CASES)
def test_zip_member(tmp_path, caplog, request, members, patch, want):
    path = _zip_case(tmp_path, members, **patch)
    with no_hang(30):
        sel = check_export(path, want, caplog)
    if isinstance(want, Dropped):  # the ledger says which: encrypted, corrupt, ...
        detail = sel.ledger.iloc[-1]["detail"]
        assert ZIP_WORDS[request.node.callspec.id] in detail, detail


def test_zip_over_max_bytes_is_not_inflated(tmp_path, caplog):
    big = encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120), dtype=np.uint8)), "PNG")
    path = _zip_case(tmp_path, [("case.png", big)])
    assert len(encode(grey(), "JPEG")) < len(big) - 1  # the good rows' images stay under the limit
    check_export(path, Dropped("file_too_large"), caplog, max_bytes=len(big) - 1)


@pytest.mark.parametrize("patch, words", [({"flag": 0x1}, "encrypted"), ({"method": 99}, "method 99")],
                         ids=["zip-encrypted-table", "zip-table-unknown-method"])
def test_zip_table_that_cannot_be_inflated_is_refused(tmp_path, patch, words):
    path = _zip_case(tmp_path, [("case.png", _png())])
    _patch_zip(path, "ecotaxa_t.tsv", **patch)
    with pytest.raises(InputError) as e:
        read(path)
    assert_refused(e.value, Refused(words, "ecotaxa_t.tsv"))


def test_zip_with_two_different_tables_of_one_name_is_refused(tmp_path):
    path = _zip_case(tmp_path, [("ecotaxa_t.tsv", table_text(GOOD_ROWS[:1]))])
    with pytest.raises(InputError) as e:
        read(path)
    assert_refused(e.value, Refused("2 different tables of this name", "ecotaxa_t.tsv", hint="unzip"))


def test_truncated_zip_is_refused(tmp_path):
    path = _zip_case(tmp_path, [("case.png", _png())])
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(InputError) as e:
        read(path)
    assert_refused(e.value, Refused("not a readable zip", "e.zip", hint="download"))


# Tables: encodings, ids, names


def _utf(encoding, bom=b""):
    return bom + table_text(GOOD_ROWS + [["good1.jpg", "case", "validated", "A"]]).encode(encoding)


ENCODING_CASES = [
    pytest.param(_utf("utf-16-le"), id="utf-16-le-without-bom"),
    pytest.param(_utf("utf-16-be"), id="utf-16-be-without-bom"),
    pytest.param(_utf("utf-16"), id="utf-16-with-bom"),
    pytest.param(_utf("utf-32-le"), id="utf-32-le-without-bom"),
    pytest.param(_utf("utf-32"), id="utf-32-with-bom"),
    pytest.param(_utf("utf-8", b"\xef\xbb\xbf"), id="utf-8-with-bom"),
]


@pytest.mark.parametrize("data", ENCODING_CASES)
def test_table_encodings(tmp_path, caplog, data):
    check_export(export(tmp_path / "e", text=data), Used(), caplog)


def test_utf16_with_a_broken_character_is_refused_naming_it(tmp_path):
    data = _utf("utf-16-le") + b"\x00\xd8"  # a lone high surrogate at the end
    with pytest.raises(InputError) as e:
        read(export(tmp_path / "e", text=data))
    assert_refused(e.value, Refused("not valid UTF-16-LE", "ecotaxa_t.tsv", hint="UTF-8"))


ID_CASES = [
    pytest.param(["good1.jpg", "", "validated", "A"], Dropped("no_object_id"), id="object_id-empty"),
    pytest.param(["good1.jpg", "   ", "validated", "A"], Dropped("no_object_id"), id="object_id-blank"),
    pytest.param(["good1.jpg", "o1#aug0001", "validated", "A"], Dropped("reserved_object_id"),
                 id="object_id-of-an-augmented-copy"),
    pytest.param(["good1.jpg", "o1#aug", "validated", "A"], Used(), id="object_id-with-aug-but-no-number"),
    pytest.param(["good1.jpg", "o1 ", "validated", "A"], Dropped("duplicate_object_id"),
                 id="object_id-repeated-with-a-trailing-space"),
]


@pytest.mark.parametrize("row, want", ID_CASES)
def test_object_id(tmp_path, caplog, row, want):
    check_export(export(tmp_path / "e", row), want, caplog)


def test_two_empty_ids_are_both_no_object_id(tmp_path, caplog):
    rows = GOOD_ROWS + [["good1.jpg", "", "validated", "A"], ["good2.jpg", "", "validated", "A"]]
    sel, n = read(export(tmp_path / "e", text=table_text(rows)))
    assert list(sel.ledger["outcome"]) == ["used", "used", "no_object_id", "no_object_id"]


def test_augmented_ids_never_collide_with_real_ones(tmp_path):
    objects = objects_of({"A": 30, "B": 3})
    bal = balance(objects, ["A", "B"], cap=30)
    aug = bal[bal["augmented"] == 1]
    assert len(aug) and aug["item_id"].map(is_augmented_id).all()
    assert not bal[bal["augmented"] == 0]["item_id"].map(is_augmented_id).any()
    assert bal["item_id"].is_unique


@pytest.mark.parametrize("name", ["EcoTaxa_demo.tsv", "ECOTAXA_DEMO.TXT", "my_project.tsv"],
                         ids=["table-name-mixed-case", "table-name-upper-case", "table-fallback-every-tsv"])
def test_the_workflow_inputs_are_the_tables_the_reader_reads(tmp_path, name):
    """find_tables (the rule's inputs) lists exactly the tables the reader reads, whatever their names."""
    path = export(tmp_path / "e")
    (path / "ecotaxa_t.tsv").rename(path / name)
    (path / "notes.txt").write_text("not a table\n")
    (path / ".hidden.tsv").write_text("x\n")
    with open_export(path) as ex:
        read_by_reader = sorted(t.source for t in ex.tables)
    assert find_tables(path) == read_by_reader == [str(path / name)]


def test_a_cap_larger_than_every_class_is_fast():
    objects = objects_of({"A": 300, "B": 20, "C": 1})
    t = time.perf_counter()
    bal = balance(objects, ["A", "B", "C"], cap=100_000_000)
    assert time.perf_counter() - t < 5
    assert bal.groupby("class_name").size().to_dict() == {"A": 300, "B": 300, "C": 300}  # filled to the largest


# The configuration, at validation (a dry run)

MORE_CONFIG_CASES = [
    pytest.param(lambda c: c.update(export=""), "config key export: '' is empty", id="config-export-empty"),
    pytest.param(lambda c: c.update(export="  "), "config key export: '  ' is empty", id="config-export-blank"),
    pytest.param(lambda c: c["experiments"].update(x={"model": "inceptionv4"}),
                 "config key experiments.x.model: unknown model 'inceptionv4' (did you mean inceptionv3",
                 id="config-unknown-model"),
    pytest.param(lambda c: c["experiments"].update(x={"model": "resnet"}),
                 "config key experiments.x.model: unknown model 'resnet'", id="config-unknown-model-family"),
    pytest.param(lambda c: c["normalise"].update(max_bytes=0), "config key normalise.max_bytes", id="config-max-bytes-0"),
]


@pytest.mark.parametrize("change, message", MORE_CONFIG_CASES)
def test_config_more(change, message):
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    change(cfg)
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
    assert message in str(e.value)


@pytest.mark.parametrize("model", ["ResNet-101", "EfficientNet_B0", "mobilenetv2", "InceptionV3"])
def test_config_model_names_as_keras_writes_them(model):
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    cfg["experiments"]["x"] = {"model": model}
    validate_config(cfg)


# Polarity: the evidence is logged, and contradicting images warn


def _uvp_like(k):
    a = np.full((60, 60), 8, np.uint8)
    a[20 + k % 5:35, 15:40 - k % 7] = 200  # a light particle on a dark frame
    return _grey_array(a)


@pytest.mark.parametrize("polarity, warned", [("dark", True), ("light", False), ("auto", False)])
def test_light_objects_on_dark_frames_warn_under_dark_polarity(tmp_path, caplog, polarity, warned):
    caplog.set_level(logging.INFO)
    rows = [[f"u{k}.png", f"u{k}", "validated", "A"] for k in range(6)]
    path = export(tmp_path / "e", text=table_text(rows), images={f"u{k}.png": _uvp_like(k) for k in range(6)})
    sel, _ = read(path, polarity=polarity)
    assert (sel.ledger["outcome"] == USED).all()
    msgs = [r for r in caplog.records if "polarity:" in r.getMessage()]
    assert msgs and "6 of 6 usable images (100 %) have a border darker than their middle" in msgs[-1].getMessage()
    assert (msgs[-1].levelname == "WARNING") == warned, msgs[-1].getMessage()
    if warned:
        assert "set normalise.polarity to 'light'" in msgs[-1].getMessage()
