"""Tests of lokiml.ecotaxa: parsing EcoTaxa tables and reading images from exports.

Two halves: synthetic cases built in tmp_path (encodings, line endings,
quoting, broken tables, unsafe paths), and the real files under
../shared/data/ecotaxa (through the ``shared_data`` fixture), where every
expected number below was checked by hand against the raw file (awk, grep,
unzip -l).
"""

from __future__ import annotations

import csv
import io
import os
import pathlib
import random
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest

from lokiml.ecotaxa import (
    Export,
    ImageMissing,
    Table,
    UnsafePath,
    open_export,
    parse_table,
)
from lokiml.errors import InputError

# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #

HEADER = ["object_id", "img_file_name", "object_annotation_category", "object_annotation_status"]
ROWS = [
    ["o1", "a.jpg", "Copepoda", "validated"],
    ["o2", "b.jpg", "détritus µm", "predicted"],
]


def tsv(rows, eol="\n", quote=False) -> str:
    q = (lambda c: '"' + c.replace('"', '""') + '"') if quote else (lambda c: c)
    return eol.join("\t".join(q(c) for c in r) for r in rows) + eol


def make_zip(path: pathlib.Path, members: dict[str, bytes]) -> pathlib.Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(zipfile.ZipInfo(name), data)
    return path


JPEG = b"\xff\xd8\xff\xe0fake-jpeg"


# --------------------------------------------------------------------------- #
# parse_table: encodings
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "encode, encoding",
    [
        (lambda s: s.encode("utf-8"), "utf-8"),
        (lambda s: b"\xef\xbb\xbf" + s.encode("utf-8"), "utf-8-sig"),
        (lambda s: s.encode("latin-1"), "cp1252"),
        (lambda s: s.encode("utf-16"), "utf-16"),
    ],
    ids=["utf8", "utf8-bom", "latin1", "utf16-bom"],
)
def test_encodings_decode_to_the_same_table(encode, encoding):
    t = parse_table(encode(tsv([HEADER] + ROWS)), "x.tsv")
    assert t.encoding == encoding
    assert list(t.df.columns) == HEADER  # no BOM glued to the first name
    assert t.df.values.tolist() == ROWS
    assert t.lines == [2, 3]


def test_cp1252_specials_and_undefined_bytes():
    # 0x80 is the euro sign in cp1252; 0x81 is undefined there, so that line falls back to Latin-1.
    data = b"a\tb\n\x80\tx\n\x81\ty\n"
    t = parse_table(data, "x.tsv")
    assert t.df["a"].tolist() == ["\u20ac", "\x81"]


def test_mixed_utf8_and_latin1_lines_are_each_decoded():
    data = "a\tb\nµ\t1\n".encode("utf-8") + "é\t2\n".encode("latin-1")
    t = parse_table(data, "x.tsv")
    assert t.df["a"].tolist() == ["µ", "é"]
    assert t.encoding.startswith("mixed")


def test_binary_file_is_refused():
    with pytest.raises(InputError, match="binary"):
        parse_table(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "img.tsv")


# --------------------------------------------------------------------------- #
# parse_table: line endings, quoting, blank lines, line numbers
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("eol", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
@pytest.mark.parametrize("quote", [False, True], ids=["unquoted", "quoted"])
def test_line_endings_and_quoting(eol, quote):
    t = parse_table(tsv([HEADER, ["[t]"] * 4] + ROWS, eol=eol, quote=quote).encode(), "x.tsv")
    assert t.df.values.tolist() == ROWS
    assert t.types == dict.fromkeys(HEADER, "[t]")
    assert t.lines == [3, 4]
    assert t.short_rows == []


def test_quoted_cells_with_escapes_tabs_and_newlines_keep_line_numbers():
    text = (
        "id\tnote\tn\n"
        '1\t"say ""hi"""\t1\n'
        '2\t"tab\there"\t2\n'
        '3\t"two\nlines\r\nand CRLF"\t3\n'
        "\n"
        "4\tplain\t4\n"
        '5\t5" long\t5\n'  # a quote inside an unquoted cell is literal text
    )
    t = parse_table(text.encode(), "x.tsv")
    assert t.df["note"].tolist() == ['say "hi"', "tab\there", "two\nlines\nand CRLF", "plain", '5" long']
    assert t.df["n"].tolist() == ["1", "2", "3", "4", "5"]
    assert t.lines == [2, 3, 4, 8, 9]


def test_blank_lines_are_skipped_and_counted():
    text = "\n\na\tb\n\n1\t2\n   \n\t\n3\t4\n\n"
    t = parse_table(text.encode(), "x.tsv")
    assert t.header_line == 3
    assert t.df.values.tolist() == [["1", "2"], ["3", "4"]]
    assert t.lines == [5, 8]


def test_nan_cells_stay_text():
    t = parse_table(b"a\tb\tc\nnan\tNaN\tNA\n", "x.tsv")
    assert t.df.iloc[0].tolist() == ["nan", "NaN", "NA"]


def test_all_columns_are_text():
    t = parse_table(b"a\tb\n001\t1.50\n", "x.tsv")
    assert t.df.iloc[0].tolist() == ["001", "1.50"]  # no numeric conversion, leading zeros kept
    assert all(str(dt) in ("str", "object", "string") for dt in t.df.dtypes)


def test_column_names_are_stripped():
    t = parse_table(b" a \t b\n1\t2\n", "x.tsv")
    assert list(t.df.columns) == ["a", "b"]


def test_unclosed_quote_names_its_row():
    text = 'a\tb\n1\t2\n"3\t4\n5\t6\n'
    with pytest.raises(InputError) as e:
        parse_table(text.encode(), "bad.tsv")
    assert e.value.row == 3 and "never closed" in str(e.value) and "bad.tsv" in str(e.value)


# --------------------------------------------------------------------------- #
# parse_table: type row
# --------------------------------------------------------------------------- #


def test_type_row_detected_with_empty_cells_and_short():
    text = "a\tb\tc\td\n\t[f]\t[n]\n1\t2\t3\t4\n"  # first code empty, last missing: still a type row
    t = parse_table(text.encode(), "x.tsv")
    assert t.types == {"a": "", "b": "[f]", "c": "[n]", "d": ""}
    assert t.lines == [3]
    assert t.short_rows == []  # the type row is not a data row


def test_no_type_row_when_the_second_row_is_data():
    t = parse_table(b"a\tb\n[t]\tx\n", "x.tsv")
    assert t.types is None
    assert t.df.values.tolist() == [["[t]", "x"]]


def test_unknown_type_code_is_refused():
    with pytest.raises(InputError) as e:
        parse_table(b"a\tb\n[t]\t[H]\n1\t2\n", "x.tsv")
    assert e.value.row == 2 and "[H]" in str(e.value) and "'b'" in str(e.value)


# --------------------------------------------------------------------------- #
# parse_table: broken tables
# --------------------------------------------------------------------------- #


def test_empty_file():
    with pytest.raises(InputError, match="file is empty") as e:
        parse_table(b"", "empty.tsv")
    assert "empty.tsv" in str(e.value)


def test_whitespace_only_file_has_no_header():
    with pytest.raises(InputError, match="no header"):
        parse_table(b"\n  \n\t\n", "blank.tsv")


def test_header_only_file_gives_zero_rows():
    t = parse_table(b"a\tb\tc\n", "x.tsv")
    assert list(t.df.columns) == ["a", "b", "c"] and len(t.df) == 0 and t.lines == [] and t.types is None
    t = parse_table(b"a\tb\tc\n[t]\t[f]\t[t]\n", "x.tsv")
    assert len(t.df) == 0 and t.types == {"a": "[t]", "b": "[f]", "c": "[t]"}


@pytest.mark.parametrize("quote", [False, True])
def test_row_longer_than_header_is_refused(quote):
    rows = [["a", "b"], ["1", "2"], ["3", "4", "5"]]
    with pytest.raises(InputError) as e:
        parse_table(tsv(rows, quote=quote).encode(), "long.tsv")
    assert e.value.row == 3
    assert "3 cells" in str(e.value) and "has 2" in str(e.value) and "long.tsv" in str(e.value)


def test_row_longer_than_header_after_a_multiline_cell():
    text = 'a\tb\n"x\ny"\t1\n1\t2\t3\n'
    with pytest.raises(InputError) as e:
        parse_table(text.encode(), "long.tsv")
    assert e.value.row == 4


def test_short_rows_are_padded_and_recorded():
    t = parse_table(b"a\tb\tc\n1\t2\t3\n4\t5\n6\n", "x.tsv")
    assert t.df.values.tolist() == [["1", "2", "3"], ["4", "5", ""], ["6", "", ""]]
    assert t.short_rows == [3, 4]


@pytest.mark.parametrize("header", [b"a\tb\ta\n", b"a\tb\t a \n"])
def test_duplicate_column_names(header):
    with pytest.raises(InputError, match="duplicate column") as e:
        parse_table(header + b"1\t2\t3\n", "dup.tsv")
    assert e.value.row == 1 and "'a'" in str(e.value)


def test_trailing_tab_in_header_is_ignored():
    t = parse_table(b"a\tb\t\n1\t2\t\n3\t4\n", "x.tsv")
    assert list(t.df.columns) == ["a", "b"]
    assert t.short_rows == []  # the missing trailing tab is not a missing value


def test_unnamed_column_with_data_is_refused():
    with pytest.raises(InputError, match="no name") as e:
        parse_table(b"a\t\tc\n1\t\t3\n4\t5\t6\n", "x.tsv")
    assert e.value.row == 3


# --------------------------------------------------------------------------- #
# parse_table: speed and the slow (csv) path
# --------------------------------------------------------------------------- #


def _big_table(n: int, quote: bool) -> bytes:
    cells = ["m106_mn01_n1_sml_1", "18.0", "-24.41", "20140420", "validated", "Calanoida<Copepoda", "x.jpg"]
    cells += ["123.456"] * 23
    q = (lambda c: f'"{c}"') if quote else (lambda c: c)
    head = "\t".join(q(f"col_{i}") for i in range(30)) + "\n" + "\t".join(q("[f]") for _ in range(30)) + "\n"
    return (head + ("\t".join(q(c) for c in cells) + "\n") * n).encode()


def test_multiline_cells_in_a_larger_table_keep_exact_line_numbers():
    rows = ["id\tnote"]
    expected = []
    line = 2
    for i in range(5000):
        if i % 7 == 0:
            rows.append(f'{i}\t"a\nb"')
            expected.append(line)
            line += 2
        else:
            rows.append(f"{i}\tplain")
            expected.append(line)
            line += 1
    t = parse_table(("\n".join(rows) + "\n").encode(), "x.tsv")
    assert len(t.df) == 5000 and t.lines == expected
    assert t.df["note"].iloc[7] == "a\nb"


def _reference_parse(text: str):
    """(line, cells) of every non-blank record, by the csv module alone: the dialect EcoTaxa reads."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    reader = csv.reader(io.StringIO(text), delimiter="\t", strict=False)
    out, prev = [], 0
    for row in reader:
        start, prev = prev + 1, reader.line_num
        if any(c.strip() for c in row):
            out.append((start, row))
    return out


def test_fast_path_agrees_with_the_csv_module_on_random_tables():
    """Differential test: pandas' fast path must give what the csv module gives, cell for cell."""
    rng = random.Random(20240728)
    pieces = ["a", "b", " ", '"', "\t", "\n", "\r\n", "é", '""', "[t]", "nan"]
    parsed = 0
    for _ in range(1500):
        ncol = rng.randint(1, 4)
        lines = []
        for _ in range(rng.randint(1, 6)):
            cells = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 4))) for _ in range(ncol)]
            if rng.random() < 0.5:
                cells = ['"' + c.replace('"', '""') + '"' for c in cells]
            lines.append("\t".join(cells))
        text = "\n".join(lines) + rng.choice(["", "\n", "\n\n"])
        try:
            t = parse_table(text.encode(), "fuzz.tsv")
        except InputError as e:
            if "cells but the header" in e.problem:  # a refused long row must really be long, at that line
                rows = _reference_parse(text)
                assert any(len(r) > len(rows[0][1]) and line == e.row for line, r in rows[1:]), text
            continue
        parsed += 1
        rows = _reference_parse(text)
        header = [c.strip() for c in rows[0][1]]
        body = rows[2:] if t.types is not None else rows[1:]
        keep = [i for i, h in enumerate(header) if h]
        expected = [[(r + [""] * len(header))[i] for i in keep] for _, r in body]
        assert t.df.values.tolist() == expected, text
        assert t.lines == [line for line, _ in body], text
    assert parsed > 250


@pytest.mark.slow
@pytest.mark.parametrize("quote", [False, True], ids=["unquoted", "quoted"])
def test_one_million_rows_in_well_under_a_minute(quote):
    data = _big_table(1_000_000, quote)
    t0 = time.perf_counter()
    t = parse_table(data, "big.tsv")
    elapsed = time.perf_counter() - t0
    assert t.df.shape == (1_000_000, 30)
    assert t.lines[0] == 3 and t.lines[-1] == 1_000_002
    assert elapsed < 40, f"parse took {elapsed:.1f} s"


# --------------------------------------------------------------------------- #
# Export: discovery
# --------------------------------------------------------------------------- #


def test_single_file_export_resolves_images_next_to_it(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(JPEG)
    f = tmp_path / "mine.tsv"  # any name works when the file is given directly
    f.write_text(tsv([["object_id", "img_file_name"], ["o1", "img\\a.jpg"]]))
    with open_export(f) as ex:
        (t,) = ex.tables
        assert t.folder == "" and t.source == str(f)
        assert ex.image_ref(t, "img\\a.jpg") == "img/a.jpg"  # Windows separators accepted
        assert ex.read_image(t, "img\\a.jpg") == JPEG
        assert ex.read_image_by_ref("img/a.jpg") == JPEG


def test_folder_export_finds_ecotaxa_tables_recursively_sorted(tmp_path):
    for sub in ("s2", "s1", "s1/deep"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
    (tmp_path / "s2" / "ecotaxa_s2.tsv").write_text("object_id\tImg_file_name\nb\tb.jpg\n")
    (tmp_path / "s1" / "ECOTAXA_s1.TXT").write_text("object_id\nx\n")
    (tmp_path / "s1" / "deep" / "ecotaxa_deep.tsv").write_text("object_id\ny\n")
    (tmp_path / "s1" / "notes.tsv").write_text("not\na table of the export\n")  # ignored: ecotaxa* tables exist
    (tmp_path / "s1" / ".~lock.ecotaxa_s1.tsv#").write_text("lock")
    (tmp_path / "s1" / "._ecotaxa_s1.tsv").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork
    with open_export(tmp_path) as ex:
        assert [t.folder for t in ex.tables] == ["s1", "s1/deep", "s2"]
        assert [pathlib.Path(t.source).name for t in ex.tables] == ["ECOTAXA_s1.TXT", "ecotaxa_deep.tsv", "ecotaxa_s2.tsv"]


def test_folder_without_ecotaxa_tables_falls_back_to_every_tsv(tmp_path):
    (tmp_path / "a.tsv").write_text("x\n1\n")
    (tmp_path / "b.txt").write_text("y\n2\n")
    with open_export(tmp_path) as ex:
        assert [pathlib.Path(t.source).name for t in ex.tables] == ["a.tsv"]


def test_nothing_found_names_the_patterns(tmp_path):
    (tmp_path / "readme.md").write_text("hi")
    with pytest.raises(InputError) as e:
        open_export(tmp_path)
    assert "ecotaxa*.tsv" in str(e.value) and "ecotaxa*.txt" in str(e.value) and "*.tsv" in str(e.value)


def test_missing_path_and_unsupported_archive(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_export(tmp_path / "nope.zip")
    (tmp_path / "x.tar").write_bytes(b"not really")
    with pytest.raises(InputError, match="unpack"):
        open_export(tmp_path / "x.tar")


def test_zip_export_with_table_in_subfolder(tmp_path):
    table = tsv([["img_file_name", "object_id"], ["[t]", "[t]"], ["m106_1.jpg", "o1"], ["sub\\m106_2.jpg", "o2"]])
    z = make_zip(
        tmp_path / "export.zip",
        {
            "0/ecotaxa_0.tsv": b"\xef\xbb\xbf" + table.encode(),
            "0/m106_1.jpg": JPEG,
            "0\\sub\\m106_2.jpg": JPEG + b"2",  # a member written by a Windows tool
            "__MACOSX/0/._ecotaxa_0.tsv": b"\x00\x05",
        },
    )
    with open_export(z) as ex:
        (t,) = ex.tables
        assert t.source == f"{z}!0/ecotaxa_0.tsv" and t.folder == "0"
        assert ex.image_ref(t, "m106_1.jpg") == "0/m106_1.jpg"
        assert ex.read_image(t, "m106_1.jpg") == JPEG
        assert ex.read_image(t, "sub\\m106_2.jpg") == JPEG + b"2"
        assert ex.read_image_by_ref("0/sub/m106_2.jpg") == JPEG + b"2"
        assert ex.image_exists(t, "m106_1.jpg") and not ex.image_exists(t, "nope.jpg")
        with pytest.raises(ImageMissing) as e:
            ex.read_image(t, "nope.jpg")
        assert "ecotaxa_0.tsv" in str(e.value) and "nope.jpg" in str(e.value)


def test_zip_member_names_in_utf8_without_the_utf8_flag(tmp_path):
    # Many zip tools write UTF-8 names without setting the flag; zipfile then decodes them as cp437.
    z = make_zip(tmp_path / "e.zip", {"ecotaxa_x.tsv": "img_file_name\nµé.jpg\n".encode(), "XXXX.jpg": JPEG})
    raw = z.read_bytes()
    assert raw.count(b"XXXX.jpg") == 2  # local header and central directory
    z.write_bytes(raw.replace(b"XXXX.jpg", "µé.jpg".encode("utf-8")))
    with open_export(z) as ex:
        assert ex.read_image(ex.tables[0], "µé.jpg") == JPEG


def test_zip_reads_are_thread_safe(tmp_path):
    members = {f"s/{i}.jpg": os.urandom(2000 + i) for i in range(200)}
    members["s/ecotaxa_s.tsv"] = tsv([["img_file_name"]] + [[f"{i}.jpg"] for i in range(200)]).encode()
    z = make_zip(tmp_path / "e.zip", members)
    with open_export(z) as ex:
        t = ex.tables[0]
        names = t.df["img_file_name"].tolist() * 5
        with ThreadPoolExecutor(max_workers=8) as pool:
            got = list(pool.map(lambda n: ex.read_image(t, n), names))
        assert all(g == members[f"s/{n}"] for g, n in zip(got, names))


def test_tables_are_parsed_once_even_from_threads(tmp_path):
    f = tmp_path / "ecotaxa_x.tsv"
    f.write_text("a\n1\n")
    ex = open_export(f)
    seen = []
    barrier = threading.Barrier(4)

    def get():
        barrier.wait()
        seen.append(id(ex.tables[0]))

    threads = [threading.Thread(target=get) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(set(seen)) == 1


def test_zip_in_zip_is_not_opened(tmp_path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("ecotaxa_x.tsv", "img_file_name\na.jpg\n")
    outer = make_zip(tmp_path / "outer.zip", {"inner.zip": inner.getvalue()})
    with pytest.raises(InputError) as e:
        open_export(outer)
    assert "inner.zip" in str(e.value) and "unpack" in str(e.value)


def test_corrupt_zip_is_an_input_error(tmp_path):
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 not a zip at all")
    with pytest.raises(InputError, match="zip"):
        open_export(tmp_path / "bad.zip")


# --------------------------------------------------------------------------- #
# Export: unsafe paths
# --------------------------------------------------------------------------- #


def test_zip_slip_members_are_never_followed(tmp_path):
    z = make_zip(
        tmp_path / "evil.zip",
        {
            "ecotaxa_x.tsv": b"img_file_name\n../evil.jpg\n",
            "../evil.jpg": JPEG,
            "/abs.jpg": JPEG,
            "a/../../evil2.jpg": JPEG,
            "ok.jpg": JPEG,
        },
    )
    with open_export(z) as ex:
        t = ex.tables[0]
        with pytest.raises(UnsafePath) as e:
            ex.read_image(t, "../evil.jpg")
        assert "ecotaxa_x.tsv" in str(e.value)
        with pytest.raises(UnsafePath):
            ex.read_image(t, "/abs.jpg")
        for ref in ("../evil.jpg", "/abs.jpg", "a/../../evil2.jpg", "a/../ok.jpg"):
            with pytest.raises(UnsafePath):
                ex.read_image_by_ref(ref)
        assert ex.read_image_by_ref("ok.jpg") == JPEG


def test_zip_member_that_is_a_symlink_is_not_read(tmp_path):
    z = tmp_path / "link.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("ecotaxa_x.tsv", "img_file_name\nl.jpg\n")
        info = zipfile.ZipInfo("l.jpg")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with open_export(z) as ex:
        with pytest.raises(UnsafePath):
            ex.read_image(ex.tables[0], "l.jpg")


@pytest.mark.parametrize(
    "name",
    ["../../outside.jpg", "sub/../../../outside.jpg", "..\\..\\outside.jpg", "/etc/passwd", "\\\\server\\share\\x.jpg", "C:\\x.jpg", "c:x.jpg"],
)
def test_img_file_name_leaving_the_export_is_refused(tmp_path, name):
    root = tmp_path / "export"
    (root / "s").mkdir(parents=True)
    (tmp_path / "outside.jpg").write_bytes(JPEG)
    (root / "s" / "ecotaxa_s.tsv").write_text("img_file_name\nx.jpg\n")
    with open_export(root) as ex:
        t = ex.tables[0]
        with pytest.raises(UnsafePath) as e:
            ex.read_image(t, name)
        assert "ecotaxa_s.tsv" in str(e.value)
        with pytest.raises(UnsafePath):
            ex.image_exists(t, name)


def test_dotdot_inside_the_export_is_fine(tmp_path):
    (tmp_path / "s" / "imgs").mkdir(parents=True)
    (tmp_path / "s" / "imgs" / "a.jpg").write_bytes(JPEG)
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "ecotaxa_t.tsv").write_text("img_file_name\n../s/imgs/a.jpg\n")
    with open_export(tmp_path) as ex:
        t = ex.tables[0]
        assert ex.image_ref(t, "../s/imgs/a.jpg") == "s/imgs/a.jpg"
        assert ex.read_image(t, "../s/imgs/./a.jpg") == JPEG


def test_symlinks_out_of_the_folder_are_refused(tmp_path):
    root = tmp_path / "export"
    root.mkdir()
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"secret")
    (root / "inside.jpg").write_bytes(JPEG)
    (root / "out.jpg").symlink_to(secret)
    (root / "in.jpg").symlink_to(root / "inside.jpg")
    (root / "ecotaxa_x.tsv").write_text("img_file_name\nout.jpg\nin.jpg\n")
    with open_export(root) as ex:
        t = ex.tables[0]
        with pytest.raises(UnsafePath, match="outside"):
            ex.read_image(t, "out.jpg")
        with pytest.raises(UnsafePath):
            ex.read_image_by_ref("out.jpg")
        assert ex.read_image(t, "in.jpg") == JPEG  # a link that stays inside is fine


def test_symlinked_table_out_of_the_folder_is_refused(tmp_path):
    root = tmp_path / "export"
    root.mkdir()
    (tmp_path / "ecotaxa_other.tsv").write_text("img_file_name\nx.jpg\n")
    (root / "ecotaxa_x.tsv").symlink_to(tmp_path / "ecotaxa_other.tsv")
    with pytest.raises(UnsafePath):
        open_export(root)


def test_empty_and_missing_image_names(tmp_path):
    (tmp_path / "ecotaxa_x.tsv").write_text("img_file_name\nx.jpg\n")
    with open_export(tmp_path) as ex:
        t = ex.tables[0]
        assert not ex.image_exists(t, "")
        with pytest.raises(ImageMissing):
            ex.read_image(t, " ")
        with pytest.raises(ImageMissing):
            ex.read_image(t, "x.jpg")
        with pytest.raises(ImageMissing):
            ex.read_image_by_ref("x.jpg")


def test_table_dataclass_fields():
    t = parse_table(b"a\n1\n", "x.tsv")
    assert isinstance(t, Table)
    assert (t.source, t.folder, t.types, t.lines, t.short_rows) == ("x.tsv", "", None, [2], [])
    assert issubclass(ImageMissing, InputError) and issubclass(UnsafePath, InputError)


def test_open_export_returns_a_context_manager(tmp_path):
    (tmp_path / "ecotaxa_x.tsv").write_text("a\n1\n")
    with open_export(tmp_path) as ex:
        assert isinstance(ex, Export) and ex.path == tmp_path
    ex.close()  # closing twice is fine


# --------------------------------------------------------------------------- #
# The real files under ../shared/data/ecotaxa
# --------------------------------------------------------------------------- #


def _shared_files(suffixes):
    """Every file with one of ``suffixes`` under the shared folder, for parametrising (empty when absent)."""
    root = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ecotaxa"
    if not root.is_dir():
        return [pytest.param(None, id="shared-data-absent")]
    return [
        pytest.param(p.relative_to(root).as_posix(), id=p.relative_to(root).as_posix())
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name.lower().endswith(suffixes)
    ]


@pytest.mark.parametrize("rel", _shared_files((".tsv", ".txt")))
def test_every_shared_table_parses_or_raises_input_error(shared_data, rel):
    if rel is None:
        pytest.skip("no shared data")
    path = shared_data / rel
    try:
        t = parse_table(path.read_bytes(), str(path))
    except InputError as e:
        assert path.name in str(e)
        return
    assert len(t.lines) == len(t.df) and list(t.df.columns)


@pytest.mark.parametrize("rel", _shared_files((".tsv", ".txt", ".zip", ".gz", ".tar")))
def test_every_shared_export_opens_or_raises_input_error(shared_data, rel):
    if rel is None:
        pytest.skip("no shared data")
    try:
        with open_export(shared_data / rel) as ex:
            for t in ex.tables:
                if "img_file_name" in t.df.columns:
                    for name in t.df["img_file_name"].head(20):
                        try:
                            ex.image_exists(t, name)
                        except InputError:
                            pass
    except InputError:
        pass


ZOOSCAN = "zooscan_export_13539/export_13539_20240728_0803.zip"


def test_zooscan_zip_export(shared_data):
    from PIL import Image

    path = shared_data / ZOOSCAN
    with open_export(path) as ex:
        (t,) = ex.tables
        assert t.source == f"{path}!0/ecotaxa_0.tsv" and t.folder == "0"
        assert t.encoding == "utf-8-sig"  # BOM
        df = t.df
        assert df.shape == (437, 160)
        assert df.columns[0] == "img_file_name"  # BOM not glued to the name; quotes removed
        assert t.types["img_file_name"] == "[t]" and t.types["object_lat"] == "[f]"
        assert t.lines[0] == 3 and t.lines[-1] == 439  # header, type row, 437 rows
        assert df["object_annotation_status"].value_counts().to_dict() == {"validated": 308, "predicted": 69, "dubious": 60}
        cats = df["object_annotation_category"].value_counts()
        assert cats["fiber<detritus"] == 166 and cats["artefact"] == 126
        assert cats["Noctiluca scintillans<Noctiluca<Noctilucaceae"] == 36
        assert "object_annotation_hierarchy" not in df.columns
        assert (df["sample_ship"] == "nan").all()  # 'nan' left as text
        first = df.iloc[0]
        assert (first["object_id"], first["img_file_name"], first["object_annotation_category"]) == (
            "0_d1_1_1", "0_d1_1_1.jpg", "fiber<detritus")
        assert ex.image_ref(t, "0_d1_1_1.jpg") == "0/0_d1_1_1.jpg"
        assert all(ex.image_exists(t, n) for n in df["img_file_name"])
        data = ex.read_image(t, "0_d1_1_1.jpg")
        assert len(data) == 5181 and data[:2] == b"\xff\xd8"
        assert ex.read_image_by_ref("0/0_d1_1_1.jpg") == data
        im = Image.open(io.BytesIO(ex.read_image(t, "0_d1_1_380.jpg")))
        assert im.size == (1723, 134) and im.mode == "RGB"  # the long fibre


def test_ecotaxar_old_export(shared_data):
    with open_export(shared_data / "ecotaxar" / "export.tsv") as ex:
        (t,) = ex.tables
        df = t.df
        assert t.types is None  # no type row
        assert df.shape == (99, 160) and t.lines == list(range(2, 101))
        assert list(df.columns).index("object_annotation_hierarchy") == 11
        assert df.columns[0] == "object_id"  # newer exports start with img_file_name
        assert (df["object_annotation_status"] == "validated").all()
        assert df["object_annotation_category"].value_counts().to_dict() == {
            "Calanidae": 43, "detritus": 31, "badfocus": 23, "fiber": 2}
        h = df.loc[0, "object_annotation_hierarchy"]
        assert h.startswith("living>Eukaryota>") and h.endswith(">Calanoida>Calanidae")
        xml = df.loc[0, "sample_dataportal_descriptor"]
        assert xml.startswith("<bioimagingdescriptors>") and 'descriptor="zooscan"' in xml  # "" unescaped


def test_ecotaxar_import_table_two_images_per_object(shared_data):
    t = open_export(shared_data / "ecotaxar" / "import.tsv").tables[0]
    df = t.df
    assert t.types is not None and t.types["img_rank"] == "[f]"
    assert df.shape == (98, 153) and t.lines[0] == 3
    assert df["img_rank"].value_counts().to_dict() == {"0": 49, "1": 49}
    assert df["object_id"].nunique() == 49
    assert not any(c.startswith("object_annotation") for c in df.columns)
    assert df.loc[0, "img_file_name"] == "tara_med_20140607_n_manta_016_microplastik_color_1_1.jpg"


def test_front_examples(shared_data):
    d = shared_data / "ecotaxa_front_examples"
    t = parse_table((d / "ecotaxa_table_minimum.tsv").read_bytes(), "min")
    assert list(t.df.columns) == ["img_file_name", "object_id"] and len(t.df) == 3 and t.types is not None
    t = parse_table((d / "ecotaxa_table_with_classification.tsv").read_bytes(), "with")
    assert t.df.shape == (9, 86) and (t.df["object_annotation_status"] == "validated").all()
    assert "object_annotation_hierarchy" not in t.df.columns
    raw = (d / "ecotaxa_table_without_classification.tsv").read_bytes()
    assert b"process_particle_pixel_size_\xb5m" in raw  # really Latin-1 on disk
    t = parse_table(raw, "without")
    assert t.encoding in ("cp1252", "latin-1")
    assert "process_particle_pixel_size_µm" in t.df.columns
    assert t.df["process_particle_pixel_size_µm"].unique().tolist() == ["0.0106"]
    assert t.df.shape == (7, 152)
    assert t.df["img_rank"].tolist()[:3] == ["0", "1", "2"]


def test_cr_only_table_in_folder_with_spaces(shared_data):
    d = shared_data / "ecotaxa_back_qa" / "import de categories ambigues"
    assert b"\n" not in (d / "ecotaxa.tsv").read_bytes()  # CR-only line endings
    with open_export(d) as ex:
        (t,) = ex.tables
        assert t.types["object_lon"] == "[n]"
        assert t.lines == [3, 4, 5, 6, 7, 8]
        assert t.df["object_annotation_category"].tolist()[:3] == ["part (Annelida)", "part (Cnidaria)", "part"]
        assert t.df["object_annotation_status"].value_counts().to_dict() == {"validated": 2, "predicted": 2, "dubious": 2}
        assert all(ex.image_exists(t, n) for n in t.df["img_file_name"])


def test_back_qa_folder_and_zip_exports(shared_data):
    qa = shared_data / "ecotaxa_back_qa"
    with open_export(qa / "import_test") as ex:
        assert [(t.folder, len(t.df)) for t in ex.tables] == [("m106_mn01_n1_sml", 8), ("m106_mn01_n2_sml", 3)]
        assert all(ex.image_exists(t, n) for t in ex.tables for n in t.df["img_file_name"])
    with open_export(qa / "import_test.zip") as ex:  # the .~lock file in it is not a table
        assert [(t.folder, len(t.df)) for t in ex.tables] == [("m106_mn01_n1_sml", 5), ("m106_mn01_n2_sml", 3)]
        t = ex.tables[0]
        assert ex.read_image(t, "m106_mn01_n1_sml_409.jpg")[:2] == b"\xff\xd8"
    with open_export(qa / "ref_exports" / "tsv_by_taxon") as ex:  # BOM + type row, images in category folders
        assert len(ex.tables) == 7 and all(t.encoding == "utf-8-sig" for t in ex.tables)
        small = next(t for t in ex.tables if t.source.endswith("ecotaxa_small_egg.tsv"))
        assert small.df["img_file_name"].tolist() == ["small_egg/m106_mn01_n3_sml_1111.jpg", "small_egg/m106_mn01_n3_sml_1112.jpg"]
        assert small.df["object_annotation_category"].tolist() == ["small<egg", "small<egg"]
        assert all(ex.image_exists(t, n) for t in ex.tables for n in t.df["img_file_name"])
    with open_export(qa / "ref_exports" / "doi") as ex:
        (t,) = ex.tables
        assert len(t.df) == 12 and t.types is None
        assert ex.image_ref(t, "images/detritus/11_0.png") == "images/detritus/11_0.png"
        assert all(ex.image_exists(t, n) for n in t.df["img_file_name"])


def test_uvp6_zips(shared_data):
    qa = shared_data / "ecotaxa_back_qa"
    with pytest.raises(InputError) as e:
        open_export(qa / "UVP6_example.zip")
    assert "b_da_19_Images.zip" in str(e.value) and "unpack" in str(e.value)
    with pytest.raises(InputError) as e:
        open_export(qa / "import_uvp6_zip_in_dir")
    assert "b_da_19_Images.zip" in str(e.value)
    with open_export(qa / "import_uvp6_zip_in_dir" / "b_da_19_Images.zip") as ex:
        (t,) = ex.tables
        assert t.folder == "b_da_19_Images" and t.encoding == "cp1252"  # Latin-1 degree signs
        assert t.df.shape == (15, 121) and t.df.loc[0, "object_lat"] == "43°0 0"
        assert ex.image_ref(t, "sub2/20200205-112059_1.png") == "b_da_19_Images/sub2/20200205-112059_1.png"
        assert all(ex.read_image(t, n)[:4] == b"\x89PNG" for n in t.df["img_file_name"])


def test_my_files_fallback_and_archives(shared_data):
    d = shared_data / "ecotaxa_back_qa" / "my_files"
    with open_export(d / "cont.zip") as ex:  # no ecotaxa* table: every .tsv
        assert [(t.source.rsplit("!", 1)[1], list(t.df.columns)) for t in ex.tables] == [
            ("file1.tsv", ["XXX"]), ("file2.tsv", ["YYY XXX"])]
    for name in ("cont.tar", "cont.gz", "ecotaxa_b_da_19.tsv.gz"):
        with pytest.raises(InputError, match="unpack"):
            open_export(d / name)


# What each table under import_issues/ gives, and why. The reader refuses only
# what is broken as a *table* (its format); problems of meaning (a category id
# that does not exist, a predicted row without category, duplicate objects,
# missing or corrupt images) are for the caller, which reports them per row.
IMPORT_ISSUES = {
    # read: the hierarchy problem is about taxonomy, the table is fine
    "breaking_hierarchy/m106_mn01_n1_sml/ecotaxa_breaking_hier.tsv": dict(rows=1, cols=90),
    # read: no object_annotation_status column; row 3 lacks its trailing cell (padded)
    "classif_without_state/m106_mn01_n3_sml/ecotaxa_m106_mn01_n3_sml_pls.tsv": dict(rows=1, cols=89, short=[3]),
    # read: the LOKI table (quoted, type row); its images are the problem, not the table
    "corrupted_img/ecotaxa.PS122.txt": dict(rows=4, cols=54),
    # read: the same object twice is for the caller to notice; rows 3-4 short by one cell
    "duplicate_in_tsv/m106_mn01_n3_sml/ecotaxa_m106_mn01_n3_sml_pls.tsv": dict(rows=2, cols=92, short=[3, 4]),
    # read: header + (short) type row and no data: zero rows, the caller decides
    "empty_tsv/ecotaxa_m106_mn01_n365_sml.tsv": dict(rows=0, cols=89),
    # refused: 0 bytes
    "empty_tsv2/ecotaxa_m106_mn01_n365_sml.tsv": dict(error="file is empty", row=None),
    # refused: row 3 has 90 cells under an 88-name header
    "extra_data_without_header/ecotaxa_m106_mn04_n1_sml.tsv": dict(error="90 cells", row=3),
    # read: category id 99999999 is unknown to EcoTaxa, a question of meaning
    "no_classif_id/ecotaxa_m106_mn01_n3_sml.tsv": dict(rows=1, cols=89),
    # read: 'predicted' without a category; row 3 short by one cell
    "predicted_but_what/m106_mn01_n3_sml/ecotaxa_m106_mn01_n3_sml_pls.tsv": dict(rows=1, cols=90, short=[3]),
    # refused: the type row holds [H], which is no type
    "tsv_issues/ecotaxa_m106_mn01_n3_sml.tsv": dict(error="[H]", row=2),
    # read: 189 columns is a limit of EcoTaxa's database, not of the format
    "tsv_too_many_cols/ecotaxa_m106_mn01_n3_sml.tsv": dict(rows=1, cols=189),
}


@pytest.mark.parametrize("rel", sorted(IMPORT_ISSUES))
def test_import_issues(shared_data, rel):
    path = shared_data / "ecotaxa_back_qa" / "import_issues" / rel
    want = IMPORT_ISSUES[rel]
    if "error" in want:
        with pytest.raises(InputError) as e:
            open_export(path).tables
        msg = str(e.value)
        assert want["error"] in msg and path.name in msg
        assert e.value.row == want["row"]
        if want["row"] is not None:
            assert f"row {want['row']}" in msg
        return
    with open_export(path) as ex:
        (t,) = ex.tables
        assert t.df.shape == (want["rows"], want["cols"])
        assert t.short_rows == want.get("short", [])


def test_import_issues_all_covered(shared_data):
    d = shared_data / "ecotaxa_back_qa" / "import_issues"
    found = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.suffix in (".tsv", ".txt")}
    assert found == set(IMPORT_ISSUES)


def test_loki_table_keeps_runs_of_spaces_in_file_names(shared_data):
    d = shared_data / "ecotaxa_back_qa" / "import_issues" / "corrupted_img"
    with open_export(d) as ex:
        (t,) = ex.tables
        names = t.df["img_file_name"].tolist()
        assert names[0] == "20200108 080729  764  000001 0702 1167.png"
        assert [ex.image_exists(t, n) for n in names] == [True, True, False, True]  # the .tif is absent
        assert len(ex.read_image(t, names[0])) == 42953


def test_various_states_keep_empty_status(shared_data):
    d = shared_data / "ecotaxa_back_qa" / "import_various_states" / "import_vs_sample2"
    t = open_export(d).tables[0]
    assert sorted(t.df["object_annotation_status"]) == ["", "predicted", "validated", "validated"]
