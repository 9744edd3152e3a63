"""Check an EcoTaxa import table, or a whole import bundle, against the rules of EcoTaxa's importer.

We cannot upload to an EcoTaxa server from here, so :func:`check_import_table` applies, offline,
the checks that EcoTaxa's backend runs before it imports anything, and says what it would refuse.
The rules are re-implemented (not copied) from ``ecotaxa/ecotaxa_back``, the newest versions stored
in the public code index (``TSVFile.py`` with ``user_loc`` messages and ``TrainingBOProvider``, the
module-level ``Mappings.py``, ``Object.py`` with the ``discarded`` status, ``test_import.py`` with
``line N:`` messages). The index does not name the commit of those versions; where a commit is
quoted it is the stored version read, or an older one compared with:

* ``py/BO/Bundle.py`` (commit e447611): which files are tables (``**/ecotaxa*.txt``,
  ``**/ecotaxa*.tsv``, matched case-sensitively, in any folder; at most 1000), UVP6 sub-bundles
  (``**/*Images.zip``), "No object to import" when no row is found; a ``.zip`` is unpacked as is
  (``API_operations/imports/ImportBase.py``, commit a73c17c).
* ``py/BO/TSVFile.py`` (``open``, ``validate_structure``, ``validate_content``,
  ``validate_line``): the text is read as **Latin-1 unless it starts with a UTF-8 BOM** (then
  UTF-8): unchanged since commit 9418f0f1, where the BOM test was added to the Latin-1-only reader
  of 019acf45; the ``csv`` dialect (tab, ``"``); the header is cleaned (stripped, lower-cased); the
  second row is *always* taken as the type row; a column name is ``<prefix>_<field>`` with a
  prefix naming a table; a new ``object_`` column needs type ``[f]`` or ``[t]`` exactly (the type
  of other tables' columns is ignored: they are text); ``<prefix>_id`` is mandatory next to other
  ``object_``/``sample_``/``acq_``/``process_`` columns; values in a header-less column; empty
  ``object_id``; missing or unreadable image (relative to the table's folder); a repeated
  (``object_id``, ``img_file_name``) pair, in a table or across the tables of a bundle; an
  acquisition (``acq_id``) under two samples; a status without category or a category without
  status; per value (each distinct value of a column once): numbers as ``to_float`` reads them,
  latitude in -90..90 and longitude in -180..180 (decimal or ``DD°MM SS``), dates, times, statuses.
* ``py/BO/Mappings.py``: the predefined columns, the prefixes (``object``, ``sample``, ``acq``,
  ``process``) and the type codes (``[f]`` number, ``[t]`` text).
* ``py/BO/helpers/TSVHelpers.py`` (commit 0e78b97): ``clean_value`` (strip; ``nan``/``na`` are
  empty in number columns), ``to_float`` (Python ``float``, ``-inf`` refused),
  ``convert_degree_minute_float_to_decimal_degree``.
* ``py/DB/Object.py``: statuses ``predicted``, ``validated``, ``dubious``, ``discarded`` (any
  case) and ``noid``; ``date_from_txt`` (``YYYYMMDD`` or ``YYYY-MM-DD``), ``time_from_txt``
  (``HH:MM:SS``, or ``HHMM[SS]`` padded with zeros); free columns of ``obj_field`` (500 numbers,
  20 texts), ``py/DB/{Sample,Acquisition,Process}.py`` (60, 30, 30 texts).
* ``py/BO/Image.py`` (commit d5155c7): an image must open and load with Pillow and be PNG, JPEG
  or GIF.
* ``QA/py/tests/test_import.py``: which QA tables EcoTaxa expects to pass or fail, and why.

Not checked, because it depends on the EcoTaxa server: category names and annotators must exist
there (EcoTaxa asks the user to map unknown ones at import), ``object_annotation_category_id``
must be a known taxon, objects and images already in the project, acquisitions already attached to
another sample in the project, and custom columns already mapped in the project (they count
against the free-column limits, checked here for the bundle alone).
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import math
import os
import posixpath
import re
import threading
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["Problem", "check_import_table", "format_problems", "header_problem", "custom_table",
           "ecotaxa_float", "is_ecotaxa_float", "PREDEFINED_FIELDS", "ID_PREFIXES", "FREE_COLUMNS",
           "SUPPORTED_IMAGE_FORMATS", "ACCEPTED_STATUSES"]

#: Names of the tables EcoTaxa imports from a folder or zip (file name, case-sensitive, any folder).
TABLE_GLOBS = ("ecotaxa*.txt", "ecotaxa*.tsv")
#: UVP6 sub-bundles: a zip of one sample's images and table, inside the bundle.
UVP6_GLOB = "*Images.zip"
MAX_FILES = 1000

#: Predefined columns: name -> 'n' (number) or 't' (text). Their type row code is ignored.
PREDEFINED_FIELDS = {
    "object_annotation_category": "t", "object_annotation_category_id": "n", "object_annotation_date": "t",
    "object_annotation_person_name": "t", "object_annotation_status": "t",
    "object_id": "t", "sample_id": "t", "acq_id": "t", "process_id": "t",
    "object_lat": "n", "object_lon": "n", "object_date": "t", "object_time": "t", "object_link": "t",
    "object_depth_min": "n", "object_depth_max": "n", "complement_info": "t",
    "img_rank": "n", "img_file_name": "t", "sample_dataportal_descriptor": "t", "acq_instrument": "t",
}
#: Read by EcoTaxa with another column (annotation time with its date, e-mail with the annotator).
DOUBLED_FIELDS = {"object_annotation_time": "t", "object_annotation_person_email": "t"}
#: Prefix of a custom column -> the table it is stored in; ``<prefix>_id`` is mandatory next to it.
ID_PREFIXES = {"object": "object", "sample": "sample", "acq": "acquisition", "process": "process"}
#: Prefixes EcoTaxa maps to a table in which it cannot store the column.
_UNSTORED_PREFIXES = {"samples": "sample", "acquisitions": "acq"}
_FAILING_PREFIXES = {"images": "img"}
#: Free columns per (table, kind): how many custom columns one project can hold.
FREE_COLUMNS = {("object", "n"): 500, ("object", "t"): 20, ("sample", "t"): 60,
                ("acquisition", "t"): 30, ("process", "t"): 30}
TYPE_CODES = {"[f]": "n", "[t]": "t"}
ACCEPTED_STATUSES = ("predicted", "validated", "dubious", "discarded")
SUPPORTED_IMAGE_FORMATS = ("PNG", "JPEG", "GIF")
_CSV_FIELD_LIMIT = 131072  # the csv module's default, which EcoTaxa does not raise
ROW_BLOCK = 4096  # rows checked at a time (their images opened together, in parallel)
_BOM = b"\xef\xbb\xbf"
_DMS = re.compile(r"(-?\d+)°(\d+) (\d+)")
_DRIVE = re.compile(r"^[A-Za-z]:")
_TYPE_LIKE = re.compile(r"^\[\w*\]$")


@dataclass(frozen=True)
class Problem:
    """Something EcoTaxa would refuse (``level='error'``) or import wrongly (``'warning'``).

    ``row`` is the 1-based line of the table where the row starts (None: the whole file);
    ``rule`` a short name of the rule; ``object_id`` the object of the row, where there is one.
    """

    file: str
    row: int | None
    field: str
    message: str
    rule: str
    level: str = "error"
    object_id: str = ""

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file}, row {self.row}"
        col = f" [{self.field}]" if self.field else ""
        return f"{where}{col}: {self.message}" + (" (warning)" if self.level == "warning" else "")


def format_problems(problems, limit: int = 10) -> str:
    """The first ``limit`` problems, one a line, and how many more there are."""
    lines = [str(p) for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Values, as EcoTaxa reads them
# --------------------------------------------------------------------------------------------

def _clean(value, numeric: bool = False) -> str:
    if value is None:
        return ""
    value = value.strip()
    if numeric and value.lower() in ("nan", "na"):
        return ""
    return value


def ecotaxa_float(value: str) -> float | None:
    """The number EcoTaxa reads in a cleaned, non-empty cell, or None when it refuses it."""
    if value == "":
        return None
    try:
        f = float(value)
    except ValueError:
        return None
    return None if f == -math.inf else f


def is_ecotaxa_float(value) -> bool:
    """True when EcoTaxa accepts ``value`` in a number column (empty, ``nan`` and ``na`` included)."""
    v = _clean(value, numeric=True)
    return v == "" or ecotaxa_float(v) is not None


def _degrees(value: str) -> float | None:
    m = _DMS.search(value)
    if m:
        deg, minutes, seconds = (float(x) for x in m.group(1, 2, 3))
        return deg + (minutes + seconds / 60) / 60
    return ecotaxa_float(value)


def _date_ok(txt: str) -> bool:
    try:
        if txt[4:5] == txt[7:8] == "-":
            _date(txt[0:4], txt[5:7], txt[8:10])
        else:
            _date(txt[0:4], txt[4:6], txt[6:8])
        return True
    except ValueError:
        return False


def _date(y, m, d):
    import datetime

    return datetime.date(int(y), int(m), int(d))


def _time_ok(txt: str) -> bool:
    import datetime

    try:
        if txt[2:3] == txt[5:6] == ":":
            datetime.time(int(txt[0:2]), int(txt[3:5]), int(txt[6:8]))
            return True
        if len(txt) < 4:
            txt = "0" * (4 - len(txt)) + txt
        if len(txt) < 6:
            txt += "0" * (6 - len(txt))
        datetime.time(int(txt[0:2]), int(txt[2:4]), int(txt[4:6]))
        return True
    except ValueError:
        return False


def header_problem(name: str) -> str | None:
    """Why EcoTaxa refuses (or cannot store) a column of this name; None when it takes it."""
    clean = name.strip(" \t").lower()
    if clean in PREDEFINED_FIELDS or clean in DOUBLED_FIELDS:
        return None
    parts = clean.split("_", 1)
    if len(parts) != 2:
        return f"invalid column name {name!r}: EcoTaxa needs <table>_<field>, e.g. object_{clean or 'x'}"
    prefix = parts[0]
    if prefix in ID_PREFIXES:
        return None
    if prefix in _UNSTORED_PREFIXES:
        return (f"column {name!r}: EcoTaxa accepts the prefix {prefix!r} but never stores the values; "
                f"name it {_UNSTORED_PREFIXES[prefix]}_{parts[1]}")
    return (f"invalid column name {name!r}: unknown table prefix {prefix!r} "
            f"(EcoTaxa knows object_, sample_, acq_, process_ and a few img_ columns)")


def custom_table(name: str) -> str | None:
    """The table a custom (not predefined) column is stored in: object, sample, acquisition, process."""
    clean = name.strip(" \t").lower()
    if clean in PREDEFINED_FIELDS or clean in DOUBLED_FIELDS:
        return None
    return ID_PREFIXES.get(clean.split("_", 1)[0]) if "_" in clean else None


def _validate_image(data: bytes) -> str | None:
    """None when EcoTaxa reads the image (Pillow opens and loads it; PNG, JPEG or GIF), else why not."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                fmt = im.format
    except Image.DecompressionBombError:
        return "image too large (a decompression bomb for Pillow)"
    except Exception as e:  # what Pillow raises for a bad file varies: OSError, SyntaxError, ValueError ...
        return f"cannot be read as an image ({type(e).__name__}: {e})"
    if fmt not in SUPPORTED_IMAGE_FORMATS:
        return f"unsupported image format {fmt}: EcoTaxa takes PNG, JPEG or GIF"
    return None


# --------------------------------------------------------------------------------------------
# Where the files are: a folder or a zip
# --------------------------------------------------------------------------------------------

class _Folder:
    def __init__(self, root: Path):
        self.root = root

    def files(self) -> list[str]:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            rel = Path(dirpath).relative_to(self.root).as_posix()
            out += [f if rel == "." else f"{rel}/{f}" for f in filenames]
        return sorted(out)

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.root / rel)

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def show(self, rel: str) -> str:
        return str(self.root / rel)


class _Zip:
    def __init__(self, zf: zipfile.ZipFile, shown: str):
        self.zf = zf
        self.shown = shown
        self.lock = threading.Lock()
        self.members: dict[str, zipfile.ZipInfo] = {}
        self.dirs: set[str] = set()
        for info in zf.infolist():
            # extractall() drops drive letters, empty, '.' and '..' parts
            parts = [p for p in info.filename.split("/") if p not in ("", ".", "..")]
            if parts and _DRIVE.match(parts[0]):
                parts[0] = parts[0][2:] or "."
                parts = [p for p in parts if p not in ("", ".")]
            if not parts:
                continue
            name = "/".join(parts)
            for i in range(1, len(parts)):
                self.dirs.add("/".join(parts[:i]))
            if info.is_dir():
                self.dirs.add(name)
            else:
                self.members[name] = info

    def files(self) -> list[str]:
        return sorted(self.members)

    def exists(self, rel: str) -> bool:
        return rel in self.members or rel in self.dirs

    def read(self, rel: str) -> bytes:
        if rel not in self.members:
            raise IsADirectoryError(rel)
        with self.lock:
            return self.zf.read(self.members[rel])

    def show(self, rel: str) -> str:
        return f"{self.shown}!{rel}"


# --------------------------------------------------------------------------------------------
# The checker
# --------------------------------------------------------------------------------------------

class _Checker:
    """State shared by the tables of one bundle (EcoTaxa validates them with one diagnostic)."""

    def __init__(self, check_images: bool, threads: int):
        self.check_images = check_images
        self.threads = max(1, int(threads))
        self.problems: list[Problem] = []
        self.rows = 0
        self.unread = 0  # tables EcoTaxa fails to read at all
        self.custom: dict[str, tuple[str, str]] = {}  # custom column -> (table, kind), over the bundle
        self.counts: dict[tuple[str, str], int] = {}
        self.pairs: dict[tuple[str, str], tuple[str, int]] = {}  # (object_id, img_file_name) -> (table, row)
        self.acq_samples: dict[str, str] = {}  # acq_id -> its first sample_id
        self.images: dict[tuple[int, str], str | None] = {}  # (source id, path) -> problem or None

    def add(self, file, row, field, message, rule, level="error", object_id=""):
        self.problems.append(Problem(file, row, field, message, rule, level, object_id))

    # -- bundles ------------------------------------------------------------------------------

    def bundle(self, src, uvp6: bool = True) -> None:
        files = src.files()
        names = [(f, posixpath.basename(f)) for f in files]
        tables = [f for f, b in names if any(fnmatchcase(b, g) for g in TABLE_GLOBS)]
        subs = [f for f, b in names if fnmatchcase(b, UVP6_GLOB)] if uvp6 else []
        near = [f for f, b in names if f not in tables and b.lower().startswith("ecotaxa")
                and b.lower().endswith((".tsv", ".txt"))]
        for f in near:
            self.add(src.show(f), None, "", "EcoTaxa only imports tables named ecotaxa*.tsv or ecotaxa*.txt "
                     "(lower case): this one is ignored", "file_name", "warning")
        if len(tables) + len(subs) > MAX_FILES:
            self.add(src.show(""), None, "", f"{len(tables) + len(subs)} tables: EcoTaxa imports at most "
                     f"{MAX_FILES} files at once", "bundle")
        for f in subs:
            try:
                inner = zipfile.ZipFile(io.BytesIO(src.read(f)))
            except (zipfile.BadZipFile, OSError) as e:
                self.add(src.show(f), None, "", f"UVP6 sub-bundle is not a readable zip ({e})", "bundle")
                continue
            with inner:
                self.bundle(_Zip(inner, src.show(f)), uvp6=False)
        for f in tables:
            self.table(src, f)

    # -- one table ----------------------------------------------------------------------------

    def table(self, src, rel: str) -> None:
        shown = src.show(rel)
        folder = posixpath.dirname(rel)
        data = src.read(rel)
        text = self._decode(data, shown)
        if text is None:
            self.unread += 1
            return
        text = text.replace("\r\n", "\n").replace("\r", "\n")  # EcoTaxa opens the file with universal newlines
        # Two passes over the text, holding one record at a time (memory flat in the number of rows,
        # bench_predict_memory.py): the first finds what stops EcoTaxa's reader and the header and
        # type rows, the second checks the body block by block.
        rows = []  # the header and type rows: (first line, cells)
        long_cell = None
        try:
            for line, cells in _records(text):
                if len(rows) < 2:
                    rows.append((line, cells))
                if long_cell is None and any(len(c) > _CSV_FIELD_LIMIT for c in cells):
                    long_cell = line
        except csv.Error as e:
            self.add(shown, e.args[1] if len(e.args) > 1 else None, "",
                     f"EcoTaxa cannot read the table as tab-separated text ({e.args[0]})", "csv")
            self.unread += 1
            return
        if long_cell is not None:
            self.add(shown, long_cell, "", f"a cell is longer than {_CSV_FIELD_LIMIT} characters: "
                     "EcoTaxa's csv reader stops on it", "csv")
            self.unread += 1
            return
        if not rows:
            return  # an empty file: no object (counted at the end)

        header = rows[0][1]
        position = {raw: i for i, raw in enumerate(header)}  # a repeated name: the last one wins
        columns = [(raw, raw.strip(" \t").lower()) for raw in dict.fromkeys(header)]
        clean_pos = {clean: position[raw] for raw, clean in columns}
        type_row = rows[1] if len(rows) > 1 else None
        body = itertools.islice(_records(text), 2, None)
        types = {clean: (type_row[1][position[raw]] if position[raw] < len(type_row[1]) else None)
                 for raw, clean in columns} if type_row else {}
        if type_row is not None and not all(_TYPE_LIKE.match(c.strip()) for c in type_row[1] if c.strip()):
            oid = type_row[1][clean_pos["object_id"]] if "object_id" in clean_pos and \
                clean_pos["object_id"] < len(type_row[1]) else ""
            self.add(shown, type_row[0], "", "no type row: EcoTaxa always reads the second row as the "
                     "[t]/[f] type row, so the object on it is not imported and its values are taken as types",
                     "type_row", object_id=oid)
            types = None

        mapped = self._structure(shown, columns, types)
        if "img_file_name" not in clean_pos:
            self.add(shown, rows[0][0], "img_file_name", "no img_file_name column: EcoTaxa needs an image "
                     "for every row", "img_file_name")
        self._content(src, shown, folder, header, columns, clean_pos, mapped, body)

    def _decode(self, data: bytes, shown: str) -> str | None:
        if data.startswith(_BOM):
            try:
                text = data[3:].decode("utf-8")
            except UnicodeDecodeError as e:
                self.add(shown, _line_at(data, e.start + 3), "", "starts with a UTF-8 BOM but is not valid "
                         f"UTF-8 ({e.reason}): EcoTaxa fails to read it", "encoding")
                return None
        elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
            self.add(shown, None, "", "UTF-16 text: EcoTaxa reads tables as Latin-1, or UTF-8 with a BOM",
                     "encoding")
            return None
        else:
            text = data.decode("latin-1")
            if not data.isascii():
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError:
                    pass  # Latin-1 (or cp1252) indeed
                else:
                    i = next(i for i, b in enumerate(data) if b > 127)
                    line = data[:i].count(b"\n") + 1
                    word = data[max(0, data.rfind(b"\t", 0, i) + 1):i + 4].split(b"\t")[0].split(b"\n")[0]
                    self.add(shown, line, "", "UTF-8 text without a BOM: EcoTaxa reads such a table as "
                             f"Latin-1, so {word.decode('utf-8', 'replace')!r} would be imported as "
                             f"{word.decode('latin-1')!r}; write it as UTF-8 with a BOM (or in Latin-1)",
                             "encoding", "warning")
        if "\x00" in text:
            self.add(shown, text[:text.index("\x00")].count("\n") + 1, "", "contains a NUL byte: EcoTaxa's csv "
                     "reader stops on it", "csv")
            return None
        return text

    def _structure(self, shown, columns, types) -> dict[str, str]:
        """Header checks; return the columns EcoTaxa maps -> 'n' or 't' (how it checks their values)."""
        mapped: dict[str, str] = {}
        per_prefix: dict[str, set[str]] = {}
        for raw, clean in columns:
            parts = clean.split("_", 1)
            if len(parts) != 2:
                self.add(shown, 1, raw, f"invalid column name {raw!r}: EcoTaxa needs <table>_<field>", "header")
                continue
            prefix = parts[0]
            per_prefix.setdefault(prefix, set()).add(clean)
            if clean in PREDEFINED_FIELDS:
                mapped[clean] = PREDEFINED_FIELDS[clean]
                continue
            if clean in DOUBLED_FIELDS:
                mapped[clean] = DOUBLED_FIELDS[clean]
                continue
            if clean in self.custom:  # mapped by an earlier table of the bundle
                mapped[clean] = self.custom[clean][1]
                continue
            table = ID_PREFIXES.get(prefix)
            if table is None:
                if prefix in _UNSTORED_PREFIXES:
                    table = {"samples": "sample", "acquisitions": "acquisition"}[prefix]
                    self.add(shown, 1, raw, header_problem(raw), "header", "warning")
                else:
                    self.add(shown, 1, raw, header_problem(raw) + (
                        "; EcoTaxa fails on it" if prefix in _FAILING_PREFIXES else ""), "header")
                    continue
            if table == "object":
                if types is None:
                    continue  # no type row: said once
                code = types.get(clean)
                if code not in TYPE_CODES:
                    self.add(shown, 2, raw, f"invalid type {code or '(none)'!r}: a new object_ column needs [f] (number) "
                             "or [t] (text), exactly", "type")
                    continue
                kind = TYPE_CODES[code]
            else:
                kind = "t"  # EcoTaxa stores the custom columns of the other tables as text
            n = self.counts.get((table, kind), 0) + 1
            self.counts[(table, kind)] = n
            self.custom[clean] = (table, kind)
            if prefix in ID_PREFIXES:
                mapped[clean] = kind
            limit = FREE_COLUMNS[(table, kind)]
            if n > limit:
                what = "number" if kind == "n" else "text"
                self.add(shown, 1, raw, f"too many custom {table} {what} columns: EcoTaxa stores at most {limit} "
                         "per project (fewer if the project already has some)", "too_many_columns")
        for prefix, fields in per_prefix.items():
            if prefix in ID_PREFIXES and f"{prefix}_id" not in fields:
                self.add(shown, 1, f"{prefix}_id", f"{prefix}_id is mandatory next to the {prefix}_ columns "
                         f"{sorted(fields)}", "id_column")
        return mapped

    def _content(self, src, shown, folder, header, columns, clean_pos, mapped, body) -> None:
        seen_values: set[tuple[str, str]] = set()
        local: dict[tuple[str, str], int] = {}
        n_cols = len(header)

        def get(row, clean):
            i = clean_pos.get(clean)
            return None if i is None or i >= len(row) else row[i]

        has_images = "img_file_name" in clean_pos
        for block in _blocks(body, ROW_BLOCK):
            if has_images and self.check_images:  # open the block's images first (in parallel), report them row by row
                self.images.clear()  # only this block's: memory stays flat in the number of rows
                self._images(src, {p for p in (_image_path(folder, _clean(get(r, "img_file_name")))[0]
                                               for _, r in block) if p is not None})
            for line, row in block:
                self._row(src, shown, folder, line, row, columns, clean_pos, mapped, n_cols, seen_values, local,
                          has_images, get)
        for key, line in local.items():
            self.pairs.setdefault(key, (shown, line))

    def _row(self, src, shown, folder, line, row, columns, clean_pos, mapped, n_cols, seen_values, local,
             has_images, get) -> None:
        self.rows += 1
        oid = _clean(get(row, "object_id"))
        if len(row) > n_cols:
            self.add(shown, line, "", f"value(s) {row[n_cols:]} in a column without a header", "headerless_value",
                     object_id=oid)
        else:
            self._values(shown, line, row, columns, clean_pos, mapped, seen_values, oid)
        if oid == "":
            self.add(shown, line, "object_id", "missing object_id", "object_id")
        name = _clean(get(row, "img_file_name")) if has_images else None
        if name is not None:
            path, why = _image_path(folder, name)
            if why:
                self.add(shown, line, "img_file_name", why, "img_file_name", object_id=oid)
            elif self.check_images:
                r = self.images[(id(src), path)]
                if r == "missing":
                    self.add(shown, line, "img_file_name", f"missing image {name!r} (looked for {src.show(path)})",
                             "image_missing", object_id=oid)
                elif r:
                    self.add(shown, line, "img_file_name", f"image {name!r}: {r}", "image_unreadable",
                             object_id=oid)
        key = (oid, name if name is not None else "absent img_file_name")
        if key in local:
            self.add(shown, line, "object_id", f"(object {oid!r}, image {key[1]!r}) is already in this table, "
                     f"row {local[key]}", "duplicate", object_id=oid)
        elif key in self.pairs:
            self.add(shown, line, "object_id", f"(object {oid!r}, image {key[1]!r}) is already in "
                     f"{self.pairs[key][0]}, row {self.pairs[key][1]} of this bundle", "duplicate", object_id=oid)
        local[key] = line
        sample, acq = _clean(get(row, "sample_id")), _clean(get(row, "acq_id"))
        if sample and acq:
            first = self.acq_samples.setdefault(acq, sample)
            if first != sample:
                self.add(shown, line, "acq_id", f"acquisition {acq!r} is already in sample {first!r}: it cannot "
                         f"also be in sample {sample!r}", "acquisition_sample", object_id=oid)
        status = get(row, "object_annotation_status") or ""  # EcoTaxa tests the raw cell here
        if "object_annotation_category" in clean_pos:
            category = get(row, "object_annotation_category")
        else:
            category = get(row, "object_annotation_category_id") or ""
        if category is None:
            self.add(shown, line, "object_annotation_category", "the row stops before its "
                     "object_annotation_category cell: EcoTaxa's validation fails on it", "short_row",
                     object_id=oid)
            category = ""
        category = category.strip()
        if status != "" and not category:
            self.add(shown, line, "object_annotation_status", f"status {status!r} without a category",
                     "status_without_category", object_id=oid)
        if category != "" and status == "":
            self.add(shown, line, "object_annotation_category", f"category {category!r} without a status",
                     "category_without_status", object_id=oid)

    def _values(self, shown, line, row, columns, clean_pos, mapped, seen, oid) -> None:
        for raw, clean in columns:
            kind = mapped.get(clean)
            if kind is None:
                continue
            i = clean_pos[clean]
            raw_val = row[i] if i < len(row) else None
            if (clean, raw_val) in seen:
                continue  # EcoTaxa checks each distinct value of a column once: a bad one is reported once
            val = _clean(raw_val, kind == "n")
            if val == "":
                continue
            msg = rule = None
            if clean in ("object_lat", "object_lon"):
                lim = 90 if clean == "object_lat" else 180
                v = _degrees(val)
                if v is None or not -lim <= v <= lim:
                    msg, rule = f"invalid {'latitude' if lim == 90 else 'longitude'} {val!r}: range is " \
                                f"-{lim}/+{lim} degrees", clean[7:]
            elif kind == "n":
                if ecotaxa_float(val) is None:
                    msg, rule = f"invalid number {val!r}", "float"
            elif clean in ("object_date", "object_annotation_date"):
                if not _date_ok(val):
                    msg, rule = f"invalid date {val!r}: EcoTaxa reads YYYYMMDD or YYYY-MM-DD", "date"
            elif clean in ("object_time", "object_annotation_time"):
                if not _time_ok(val):
                    msg, rule = f"invalid time {val!r}: EcoTaxa reads HHMM, HHMMSS or HH:MM:SS", "time"
            elif clean == "object_annotation_status":
                if val != "noid" and val.lower() not in ACCEPTED_STATUSES:
                    msg, rule = f"invalid status {val!r}: EcoTaxa accepts {', '.join(ACCEPTED_STATUSES)} " \
                                "(or empty)", "status"
            if msg:
                # Only bad values are remembered (a good one is checked again: memory stays flat); EcoTaxa
                # forgets a bad latitude, and reports it on every row.
                if clean != "object_lat":
                    seen.add((clean, raw_val))
                self.add(shown, line, raw, msg, rule, object_id=oid)

    def _images(self, src, paths) -> None:
        """Open every image of ``paths`` not seen yet, as EcoTaxa does; remember why each fails (or None)."""
        todo = sorted(p for p in paths if (id(src), p) not in self.images)

        def check(path):
            if not src.exists(path):
                return "missing"
            try:
                data = src.read(path)
            except (OSError, zipfile.BadZipFile, RuntimeError, EOFError) as e:
                return f"cannot be read ({e})"
            return _validate_image(data)

        if self.threads > 1 and len(todo) > 1:
            with ThreadPoolExecutor(max_workers=self.threads) as pool:
                results = list(pool.map(check, todo))
        else:
            results = [check(p) for p in todo]
        self.images.update({(id(src), p): r for p, r in zip(todo, results)})


def _records(text: str):
    """``(first line, cells)`` of every record of a tab-separated ``text``, as EcoTaxa's DictReader
    sees them: blank lines (no cell) left out, except a blank first line, which is the header.

    A ``csv.Error`` is raised with the line after the last good record as its second argument.
    """
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quotechar='"')
    prev, first = 0, True
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise csv.Error(str(e), prev + 1) from None
        start, prev = prev + 1, reader.line_num
        if first or cells:
            first = False
            yield start, cells


def _blocks(iterable, n: int):
    """Lists of up to ``n`` items of ``iterable``."""
    it = iter(iterable)
    while block := list(itertools.islice(it, n)):
        yield block


def _image_path(folder: str, name: str) -> tuple[str | None, str | None]:
    """``(path of the image inside the bundle, None)``, or ``(None, why EcoTaxa cannot follow the name)``."""
    if name == "":
        return None, "empty img_file_name"
    if name.startswith("/") or _DRIVE.match(name):
        return None, f"absolute image path {name!r}: it must be relative to the folder of the table"
    path = posixpath.normpath(posixpath.join(folder, name) if folder else name)
    if path == ".." or path.startswith("../"):
        return None, f"image path {name!r} leads out of the bundle"
    return path, None


def _line_at(data: bytes, offset: int) -> int:
    return data[:offset].count(b"\n") + 1


def check_import_table(path_or_bundle, check_images: bool = True, threads: int = 1) -> list[Problem]:
    """Apply EcoTaxa's import checks to a table, a folder or a ``.zip`` bundle; return the problems.

    * a ``.tsv``/``.txt`` file: that table, its images relative to its folder; its name must be one
      EcoTaxa picks up (``ecotaxa*.tsv``/``ecotaxa*.txt``);
    * a folder or a ``.zip``: every table EcoTaxa would import from it, checked together as
      EcoTaxa does (duplicates and acquisitions across tables, custom columns counted once).

    ``check_images=False`` skips opening the images (for tables shipped without them). The list is
    empty when EcoTaxa would accept the import as it is (module docstring: what is not checked);
    ``level='warning'`` problems are accepted by EcoTaxa but lose or garble data.
    """
    path = Path(path_or_bundle)
    checker = _Checker(check_images, threads)
    if path.is_dir():
        checker.bundle(_Folder(path))
    elif path.suffix.lower() in (".tsv", ".txt"):
        if not any(fnmatchcase(path.name, g) for g in TABLE_GLOBS):
            checker.add(str(path), None, "", "EcoTaxa only imports tables named ecotaxa*.tsv or ecotaxa*.txt "
                        "(lower case): rename it", "file_name")
        checker.table(_Folder(path.parent), path.name)
    else:
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            return [Problem(str(path), None, "", f"not a readable zip file ({e})", "bundle")]
        with zf:
            checker.bundle(_Zip(zf, str(path)))
    if checker.rows == 0 and checker.unread == 0:
        checker.add(str(path), None, "", "no object to import: no table named ecotaxa*.tsv/.txt, or only "
                    "empty ones", "empty")
    return checker.problems
