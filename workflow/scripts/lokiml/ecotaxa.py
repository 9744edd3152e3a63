"""Reading EcoTaxa tables and the images they name.

An EcoTaxa *export* (or *import bundle*) is a tab-separated table -- one per
sample or one for the whole project -- plus the image files that its
``img_file_name`` column names, relative to the folder of the table. It comes
as a single ``.tsv``/``.txt`` file, a folder, or a ``.zip``.

Two layers:

* :func:`parse_table` turns the bytes of one table into a :class:`Table`: every
  cell as text, the optional ``[t]``/``[f]`` type row split off, and the
  physical line number of every row kept for error messages. It copes with
  what real files contain: UTF-8 with or without BOM, Latin-1/cp1252, LF, CRLF
  or CR line endings, quoted or unquoted cells.
* :class:`Export` (open it with :func:`open_export`) finds the tables of an
  export and reads the images they name, refusing any path that would leave
  the export (absolute paths, ``..``, zip-slip members, symlinks out of the
  folder).

The format follows what EcoTaxa itself accepts: the Python ``csv`` dialect
with a tab delimiter, ``"`` as quote character and ``""`` as an escaped quote
inside a quoted cell; a quote that does not open a cell is literal text.
"""

from __future__ import annotations

import csv
import errno
import functools
import io
import logging
import lzma
import os
import posixpath
import re
import stat
import sys
import threading
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lokiml.errors import InputError
from lokiml.export_files import (  # the reader's own rules, shared with the workflow's inputs
    ARCHIVE_SUFFIXES,
    FALLBACK_PATTERNS,
    TABLE_PATTERNS,
    TABLE_SUFFIXES,
    find_tables,
    is_archive,
    is_junk,
    list_folder,
    matches,
    member_name,
    pick_tables,
    table_bytes,
)

# The names this module had before they moved to lokiml.export_files (lokiml.predict imports two).
_ARCHIVE_SUFFIXES, _TABLE_SUFFIXES = ARCHIVE_SUFFIXES, TABLE_SUFFIXES
_matches, _is_junk, _is_archive, _list_folder = matches, is_junk, is_archive, list_folder

log = logging.getLogger(__name__)

__all__ = [
    "Table",
    "Export",
    "ImageMissing",
    "ImageRefused",
    "UnsafePath",
    "FileInfo",
    "find_tables",
    "table_bytes",
    "pick_tables",
    "read_regular_file",
    "parse_table",
    "open_export",
    "TABLE_PATTERNS",
    "FALLBACK_PATTERNS",
]

_TYPE_CODE = re.compile(r"^\[[tfn]\]$")
# A cell that looks like an attempt at a type code (``[H]``, ``[T]``, ``[]``).
_TYPE_LIKE = re.compile(r"^\[\w*\]$")
_DRIVE = re.compile(r"^[A-Za-z]:")


class ImageMissing(InputError):
    """An image named by a table is not in the export."""


class UnsafePath(InputError):
    """A path would lead outside the export (absolute, ``..``, zip-slip, symlink out)."""


@dataclass
class Table:
    """One EcoTaxa table, all cells as text.

    ``lines[i]`` is the 1-based physical line in the file where row ``i`` of
    ``df`` starts; use it, never the index, in messages to the user.
    """

    source: str  # display name: "path/export.zip!0/ecotaxa_0.tsv" or a file path
    folder: str  # POSIX folder of the table inside the export ('' for its root)
    df: pd.DataFrame  # every column as str, missing -> '', names stripped, no type row
    types: dict[str, str] | None  # column -> '[t]'/'[f]'/'[n]' ('' where blank) if a type row was present
    lines: list[int]  # 1-based physical line number of each df row
    short_rows: list[int] = field(default_factory=list)  # lines of rows with fewer cells than the header (padded)
    encoding: str = "utf-8"  # how the bytes were decoded: utf-8, utf-8-sig, utf-16(-le/-be), utf-32(-le/-be), cp1252, latin-1, or mixed
    header_line: int = 1  # physical line of the header

    def line_of(self, index: int) -> int:
        """Physical line of the row at position ``index`` of ``df``."""
        return self.lines[index]


# --------------------------------------------------------------------------- #
# Parsing one table
# --------------------------------------------------------------------------- #


def parse_table(data: bytes, source: str) -> Table:
    """Parse the bytes of one EcoTaxa table.

    Raises :class:`InputError` naming ``source`` (and the row where there is
    one) for an empty file, a binary file, a file without header, duplicate
    column names, a row with more cells than the header, an unclosed quote, or
    a type row with unknown codes. A header-only table gives zero rows. Rows
    with fewer cells than the header are padded with '' and listed in
    ``Table.short_rows``. Blank lines are skipped.

    Speed: pandas' C parser builds the frame. The structure (where each record
    starts, how many cells it has) comes from counting tabs per line when the
    text has no quote character at all, else from one pass of the ``csv``
    module, which also handles quoted cells that span lines.
    """
    if len(data) == 0:
        raise InputError(source, "file is empty", hint="export the table again from EcoTaxa")
    text, encoding = _decode(data, source)
    text = text.replace("\r\n", "\n").replace("\r", "\n")

    records = _structure(text, source)  # [(line, n_cells)] of non-blank records
    if not records:
        raise InputError(source, "no header: the file holds only blank lines", hint="export the table again from EcoTaxa")
    header_line, n_cols = records[0]
    for line, n in records[1:]:
        if n > n_cols:
            raise InputError(
                source,
                f"row has {n} cells but the header (row {header_line}) has {n_cols}",
                row=line,
                hint="a value contains a tab, or a column name is missing from the header",
            )

    raw = _frame(text, n_cols, len(records), source)
    header = [str(c).strip() for c in raw.iloc[0].tolist()]
    body = raw.iloc[1:]
    body_records = records[1:]

    # Type row: the row under the header, made only of [t]/[f]/[n] codes.
    types = None
    if body_records and _is_type_row(body.iloc[0].tolist(), header, source, body_records[0][0]):
        types = {name: str(code).strip().lower() for name, code in zip(header, body.iloc[0].tolist())}
        body = body.iloc[1:]
        body_records = body_records[1:]

    body = body.reset_index(drop=True)
    body.columns = range(n_cols)
    keep = _check_header(header, body, body_records, header_line, source)
    if len(keep) < n_cols:
        body = body.iloc[:, keep]
    names = [header[i] for i in keep]
    body.columns = names
    if types is not None:
        types = {name: types.get(name, "") for name in names}

    # A row is short when it stops before the last named column.
    needed = keep[-1] + 1
    short_rows = [line for line, n in body_records if n < needed]
    if short_rows:
        # Not an error (EcoTaxa itself writes rows without their trailing empty cells), but the user
        # should know: a row cut short loses its last values, and may then be dropped for lack of them.
        shown = ", ".join(str(line) for line in short_rows[:5]) + (" ..." if len(short_rows) > 5 else "")
        log.warning("%s: %d row(s) with fewer cells than the header (rows %s): the missing cells are read as empty",
                    source, len(short_rows), shown)
    return Table(
        source=source,
        folder="",
        df=body,
        types=types,
        lines=[line for line, _ in body_records],
        short_rows=short_rows,
        encoding=encoding,
        header_line=header_line,
    )


def _decode(data: bytes, source: str) -> tuple[str, str]:
    """Decode table bytes: UTF-8 (BOM or not), UTF-16 with BOM, else cp1252/Latin-1.

    A file that is mostly UTF-8 but has a few lines typed in another encoding
    is decoded line by line, so that neither part turns into mojibake.
    """
    wide = _wide_encoding(data)
    if wide:
        encoding, bom = wide
        try:
            text = data[len(bom):].decode(encoding)
        except UnicodeDecodeError as e:
            raise InputError(source, f"looks like {encoding.upper()} text{' (by its byte-order mark)' if bom else ''} "
                                     f"but is not valid {encoding.upper()} ({e.reason} at byte {e.start + len(bom)})",
                             hint="save the table again as UTF-8") from None
        if not bom:
            log.warning("%s: %s text without a byte-order mark: read as %s", source, encoding.upper(), encoding.upper())
        return text, encoding.rsplit("-", 1)[0] if bom else encoding  # "utf-16" with a mark, "utf-16-le" without
    if b"\x00" in data[:65536]:
        raise InputError(
            source, "looks like a binary file, not a text table", hint="an EcoTaxa table is tab-separated text"
        )
    if data.startswith(b"\xef\xbb\xbf"):
        try:
            return data[3:].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError:
            data = data[3:]
    else:
        try:
            return data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            pass
    # Not UTF-8 throughout: decode each line on its own.
    parts = []
    used = set()
    for chunk in data.split(b"\n"):
        try:
            s = chunk.decode("utf-8")
            if not chunk.isascii():
                used.add("utf-8")
        except UnicodeDecodeError:
            try:
                s = chunk.decode("cp1252")
                used.add("cp1252")
            except UnicodeDecodeError:  # bytes cp1252 leaves undefined (0x81, 0x8d, ...)
                s = chunk.decode("latin-1")
                used.add("latin-1")
        parts.append(s)
    legacy = sorted(used - {"utf-8"}, reverse=True)
    if "utf-8" in used:
        encoding = "mixed utf-8/" + "/".join(legacy)
        log.warning("%s: mixes UTF-8 lines with %s lines; each line decoded on its own", source, "/".join(legacy))
    else:
        encoding = "latin-1" if legacy == ["latin-1"] else legacy[0] if legacy else "utf-8"
        log.info("%s: not UTF-8, read as %s", source, encoding)
    return "\n".join(parts), encoding


_BOMS = ((b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xff\xfe\x00\x00", "utf-32-le"),
         (b"\xfe\xff", "utf-16-be"), (b"\xff\xfe", "utf-16-le"))


def _wide_encoding(data: bytes) -> tuple[str, bytes] | None:
    """``(encoding, bom)`` for UTF-16/UTF-32 text, with or without a byte-order mark; None otherwise.

    Without a mark, the zero bytes give it away: in UTF-16 text that is mostly ASCII (the column
    names and most values of an EcoTaxa table) every other byte is zero, in UTF-32 three of four.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding, bom
    head = data[:65536]
    n = len(head) - len(head) % 4
    if n < 8 or b"\x00" not in head:
        return None
    # share of zero bytes at each position modulo 4
    zeros = [head[i:n:4].count(0) / (n // 4) for i in range(4)]
    if min(zeros[1:]) > 0.9 and zeros[0] < 0.5:
        return "utf-32-le", b""
    if min(zeros[:3]) > 0.9 and zeros[3] < 0.5:
        return "utf-32-be", b""
    even, odd = (zeros[0] + zeros[2]) / 2, (zeros[1] + zeros[3]) / 2
    if odd > 0.6 and even < 0.2:
        return "utf-16-le", b""
    if even > 0.6 and odd < 0.2:
        return "utf-16-be", b""
    return None


def _structure(text: str, source: str) -> list[tuple[int, int]]:
    """Return ``(line, n_cells)`` for every non-blank record of ``text`` (newlines normalised).

    ``line`` is the 1-based physical line where the record starts. A record is
    blank when all its cells are whitespace.
    """
    if '"' not in text:
        # No quoting anywhere: one line is one record and tabs separate cells.
        return [(i, line.count("\t") + 1) for i, line in enumerate(text.split("\n"), 1) if line.strip()]

    _raise_csv_field_limit()
    reader = csv.reader(io.StringIO(text), delimiter="\t", quotechar='"', doublequote=True, strict=False)
    records = []
    prev = 0
    for row in reader:
        start = prev + 1
        prev = reader.line_num
        if any(cell.strip() for cell in row):
            records.append((start, len(row)))
    # The csv module (non-strict) silently runs an unclosed quote to the end of
    # the file; find out if that happened to the last record.
    if records and prev > records[-1][0]:
        tail = "\n".join(text.split("\n")[records[-1][0] - 1 :])
        try:
            list(csv.reader(io.StringIO(tail), delimiter="\t", quotechar='"', doublequote=True, strict=True))
        except csv.Error as e:
            if "unexpected end of data" in str(e):
                raise InputError(
                    source,
                    'a quoted cell that starts on this row is never closed: it runs to the end of the file',
                    row=records[-1][0],
                    hint='a cell that starts with " must end with "; write a quote inside it as ""',
                ) from None
    return records


def _raise_csv_field_limit() -> None:
    """Allow big cells (the csv module refuses cells over 128 kB by default)."""
    limit = sys.maxsize
    while limit > csv.field_size_limit():
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:
            limit //= 2


def _frame(text: str, n_cols: int, n_records: int, source: str) -> pd.DataFrame:
    """All non-blank records of ``text`` (header included) as a frame of ``n_cols`` str columns.

    pandas' C parser does the work; if it disagrees with the structure found
    by :func:`_structure` (exotic blank lines), the ``csv`` module builds the
    frame instead, so the result always matches the recorded line numbers.
    """
    df = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            df = pd.read_csv(
                io.BytesIO(text.encode("utf-8")),
                sep="\t",
                header=None,
                names=list(range(n_cols)),
                index_col=False,
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                quoting=csv.QUOTE_MINIMAL,
                quotechar='"',
                doublequote=True,
                skip_blank_lines=True,
                engine="c",
                encoding="utf-8",
            )
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError) as e:
        log.debug("%s: pandas could not parse (%s); using the csv module", source, e)
    if df is not None:
        df = _drop_blank_rows(df)
        if len(df) != n_records:
            log.debug("%s: pandas found %d records, expected %d; using the csv module", source, len(df), n_records)
            df = None
    if df is None:
        df = _frame_csv(text, n_cols)
    return df


def _drop_blank_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Drop rows whose cells are all whitespace (cheap: only rows blank in column 0 are checked)."""
    if df.empty:
        return df
    first_blank = df[0].str.strip() == ""
    if not first_blank.any():
        return df.reset_index(drop=True)
    cand = df[first_blank]
    blank = pd.Series(True, index=cand.index)
    for col in cand.columns[1:]:
        blank &= cand[col].str.strip() == ""
    return df.drop(index=blank[blank].index).reset_index(drop=True)


def _frame_csv(text: str, n_cols: int) -> pd.DataFrame:
    """Slow, exact path: build the frame with the ``csv`` module."""
    _raise_csv_field_limit()
    rows = []
    for row in csv.reader(io.StringIO(text), delimiter="\t", quotechar='"', doublequote=True, strict=False):
        if any(cell.strip() for cell in row):
            rows.append(row + [""] * (n_cols - len(row)) if len(row) < n_cols else row[:n_cols])
    return pd.DataFrame(rows, columns=list(range(n_cols)), dtype=str)


def _is_type_row(cells: list, header: list[str], source: str, line: int) -> bool:
    """True if ``cells`` (the row under the header) is an EcoTaxa type row.

    A row whose non-empty cells all look like codes (``[x]``) but include codes
    other than ``[t]``, ``[f]``, ``[n]`` is refused rather than read as data.
    """
    values = [str(c).strip() for c in cells]
    filled = [(i, v) for i, v in enumerate(values) if v]
    if not filled:
        return False
    if all(_TYPE_CODE.match(v.lower()) for _, v in filled):
        return True
    if all(_TYPE_LIKE.match(v) for _, v in filled):
        bad = [(i, v) for i, v in filled if not _TYPE_CODE.match(v.lower())]
        shown = ", ".join(f"{v} in column {header[i] or i + 1!r}" for i, v in bad[:5])
        raise InputError(
            source,
            f"the type row has unknown code(s): {shown}",
            row=line,
            hint="each cell of the row under the header must be [t] (text), [f] (number), [n] or empty",
        )
    return False


def _check_header(
    header: list[str], body: pd.DataFrame, records: list[tuple[int, int]], header_line: int, source: str
) -> list[int]:
    """Validate column names; return the positions of the columns to keep.

    Columns without a name are dropped when they hold no data (the usual
    trailing tab); if one holds data the table is refused.
    """
    keep = []
    for i, name in enumerate(header):
        if name:
            keep.append(i)
            continue
        filled = body[i].str.strip() != ""
        if filled.any():
            first = int(filled.to_numpy().nonzero()[0][0])
            raise InputError(
                source,
                f"column {i + 1} has no name in the header (row {header_line}) but holds data",
                row=records[first][0],
                hint="name the column or remove it",
            )
    if not keep:
        raise InputError(source, "no header: the first row has no column names", row=header_line)
    seen: dict[str, int] = {}
    dups = []
    for i in keep:
        if header[i] in seen:
            dups.append(f"{header[i]!r} (columns {seen[header[i]] + 1} and {i + 1})")
        else:
            seen[header[i]] = i
    if dups:
        raise InputError(
            source,
            "duplicate column name(s): " + ", ".join(dups),
            row=header_line,
            hint="every column needs its own name",
        )
    return keep

# --------------------------------------------------------------------------- #
# Exports
# --------------------------------------------------------------------------- #

#: A zip member that would inflate to more than this many times its compressed size (and to over
#: a mebibyte) is refused before it is inflated: a zip bomb. Image formats are compressed already
#: (JPEG, PNG: about 1x); even an uncompressed BMP or TIFF of a plankton vignette stays far below.
MAX_ZIP_RATIO = 200
_RATIO_MIN_BYTES = 1 << 20
#: The compression methods Python's zipfile inflates.
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
# What a broken member raises while it is inflated (bad CRC, bad data, truncated archive, ...).
_ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, OSError, EOFError, RuntimeError,
                    NotImplementedError, ValueError)


class ImageRefused(InputError):
    """An image that is in the export but is not read. ``reason`` is its ledger reason:
    ``not_a_file`` (a named pipe, a device, a socket, a folder), ``file_too_large`` (over the byte
    limit, or a zip member that would inflate suspiciously far), ``unreadable_image`` (an encrypted
    or corrupt zip member, or one compressed in a way zipfile cannot inflate) or ``ambiguous_image``
    (a zip holding two different members of that name)."""

    def __init__(self, path, problem: str, reason: str, hint: str | None = None):
        super().__init__(path, problem, hint=hint)
        self.reason = reason


@dataclass(frozen=True)
class FileInfo:
    """What an image's file says about itself without being read.

    ``size``: bytes (for a zip member, its declared uncompressed size); ``stamp``: changes whenever
    the content may have (a file's modification time in ns; a zip member's CRC-32 and compressed size).
    """

    size: int
    stamp: str


def file_kind(mode: int) -> str:
    """Words for a file type that is not a regular file (for messages)."""
    for test, words in ((stat.S_ISFIFO, "named pipe"), (stat.S_ISCHR, "character device"),
                        (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder")):
        if test(mode):
            return words
    return "special file"


def read_regular_file(path, max_bytes: int | None = None, source=None) -> bytes:
    """The bytes of the file at ``path``, refusing what could block or exhaust memory.

    Opened without blocking (``O_NONBLOCK``: opening a named pipe with no writer would wait for
    ever), then checked on the open file: anything but a regular file raises :class:`ImageRefused`
    ``not_a_file``; a file over ``max_bytes`` raises ``file_too_large`` and is never read (nor one
    that grows past it while being read). ``source`` names the file in messages (default: ``path``).
    """
    shown = source if source is not None else str(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        raise ImageMissing(shown, "not found") from None
    except OSError as e:
        if e.errno == errno.ENXIO:  # a socket (or a device with no driver)
            raise ImageRefused(shown, "is a socket or a device, not a file", "not_a_file",
                               hint="remove it from the export") from None
        raise InputError(shown, f"cannot be opened ({e.strerror or e})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ImageRefused(shown, f"is a {file_kind(st.st_mode)}, not a file", "not_a_file",
                               hint="remove it from the export, or replace it by the file itself")
        if max_bytes is not None and st.st_size > max_bytes:
            raise ImageRefused(shown, f"is {st.st_size} bytes, over the limit of {max_bytes}", "file_too_large",
                               hint="raise normalise.max_bytes if the file is a genuine image")
        try:
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
        except OSError as e:
            raise InputError(shown, f"cannot be read ({e.strerror or e})") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageRefused(shown, f"grew over the limit of {max_bytes} bytes while it was read", "file_too_large")
    return data


def _unsafe_member(name: str) -> bool:
    """True for a zip member name that is absolute or climbs with ``..`` (zip-slip)."""
    return name.startswith("/") or bool(_DRIVE.match(name)) or ".." in name.split("/") or "\x00" in name


class Export:
    """An EcoTaxa export or import bundle: a .tsv/.txt file, a folder, or a .zip.

    ``tables`` holds every EcoTaxa table found, sorted by their path inside
    the export: the files are found when the export is opened (which fails if
    there is none) and parsed on first access to ``tables``. Images are named
    by a table's ``img_file_name``, relative to the folder of that table.
    Reading from a zip is safe from several threads. Use as a context
    manager, or call :meth:`close`.

    Nothing can block or exhaust memory: a named pipe, a device or a socket is never read (a table
    that is one is refused, an image is :class:`ImageRefused`); an image is read only up to a byte
    limit (``max_bytes`` of :meth:`image_info` and :meth:`read_image_by_ref`); a zip member is
    checked by its declared size, compression ratio, encryption and method before it is inflated.
    A zip holding two different members of one name refuses that name (``ambiguous_image``).
    """

    def __init__(self, path):
        self.path = Path(path)
        self._found: list[tuple[str, str, object]] = []  # (source, folder, () -> bytes) of each table
        self._tables: list[Table] | None = None
        self._tables_lock = threading.Lock()
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, zipfile.ZipInfo] = {}  # safe member name (POSIX) -> info (the first of that name)
        self._unsafe: set[str] = set()  # member names never followed
        self._ambiguous: dict[str, int] = {}  # member name -> how many different members carry it
        self._lock = threading.Lock()
        self._root: Path | None = None  # folder the refs are relative to (file and folder exports)
        self._real_root: str | None = None
        self._real_dirs: dict[str, str] = {}  # folder of refs -> its real path

        try:
            self._open()
        except BaseException:
            self.close()
            raise
        shown = ", ".join(src for src, _, _ in self._found[:5]) + (" ..." if len(self._found) > 5 else "")
        log.info("%s: %d table(s): %s", self.path, len(self._found), shown)

    @property
    def tables(self) -> list[Table]:
        """Every table of the export, parsed on first use (sorted by path inside the export).

        Parsing is deferred so that jobs that only read images by reference do
        not pay for parsing a large table; a broken table raises here.
        """
        with self._tables_lock:
            if self._tables is None:
                tables = []
                for source, folder, load in self._found:
                    table = parse_table(load(), source)
                    table.folder = folder
                    tables.append(table)
                self._tables = tables
                log.info("%s: %d row(s) in %d table(s)", self.path, sum(len(t.df) for t in tables), len(tables))
            return self._tables

    @property
    def root(self) -> Path | None:
        """The folder image references are relative to (None for a zip)."""
        return self._root

    @property
    def is_zip(self) -> bool:
        return self._zip is not None

    # -- opening --------------------------------------------------------------

    def _open(self) -> None:
        p = self.path
        if not os.path.lexists(p):
            raise InputError(p, "does not exist", hint="give a .tsv/.txt table, a folder or a .zip export")
        try:
            st = os.stat(p)
        except OSError as e:
            raise InputError(p, f"cannot be read ({e.strerror or e})",
                             hint="a link to nowhere? give the export itself") from None
        if stat.S_ISDIR(st.st_mode):
            self._open_folder(p)
        elif not stat.S_ISREG(st.st_mode):
            raise InputError(p, f"is a {file_kind(st.st_mode)}, not an export",
                             hint="give a .tsv/.txt table, a folder or a .zip export")
        elif p.suffix.lower() == ".zip" or (not p.name.lower().endswith(_TABLE_SUFFIXES) and zipfile.is_zipfile(p)):
            self._open_zip(p)
        elif p.name.lower().endswith(_TABLE_SUFFIXES):
            self._set_root(p.parent)
            self._found = [(str(p), "", functools.partial(self._read_table_file, str(p), str(p)))]
        elif _is_archive(p.name):
            raise InputError(p, "this kind of archive cannot be read directly", hint="unpack it, or zip it as a .zip")
        else:
            raise InputError(p, "is not an EcoTaxa export", hint="give a .tsv/.txt table, a folder or a .zip export")

    @staticmethod
    def _read_table_file(real: str, source: str) -> bytes:
        try:
            return read_regular_file(real, source=source)
        except ImageRefused as e:
            raise InputError(source, f"{e.problem}: a table must be a regular file",
                             hint="remove it from the export folder, or replace it by the table itself") from None

    def _set_root(self, root: Path) -> None:
        self._root = root
        self._real_root = os.path.realpath(root)

    def _open_folder(self, root: Path) -> None:
        self._set_root(root)
        files, archives = _list_folder(root)
        for rel in self._choose(files, archives):
            full = root / rel
            real = os.path.realpath(full)
            if not self._inside_root(real):
                raise UnsafePath(full, f"is a link to {real}, outside the export folder {root}",
                                 hint="copy the table into the export folder instead of linking to it")
            folder = posixpath.dirname(rel)
            self._found.append((str(full), folder, functools.partial(self._read_table_file, real, str(full))))

    def _open_zip(self, path: Path) -> None:
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise InputError(path, f"is not a readable zip file ({e})", hint="download the export again") from None
        files = []
        archives = []
        for info in self._zip.infolist():
            if info.is_dir():
                continue
            name = self._member_name(info)
            if _unsafe_member(name) or stat.S_ISLNK(info.external_attr >> 16):
                log.warning("%s: zip member %r is absolute, climbs out with '..' or is a link: ignored", path, name)
                self._unsafe.add(name)
                continue
            name = posixpath.normpath(name)
            first = self._members.get(name)
            if first is not None:
                if (first.CRC, first.file_size) == (info.CRC, info.file_size):
                    log.warning("%s: zip member %r is there twice, with the same content: the first is used",
                                path, name)
                else:
                    self._ambiguous[name] = self._ambiguous.get(name, 1) + 1
                    log.warning("%s: zip member %r is there %d times, with different contents: rows naming it "
                                "are dropped as ambiguous_image", path, name, self._ambiguous[name])
                continue
            self._members[name] = info
            if _is_junk(name.split("/")):
                continue
            if _is_archive(name):
                archives.append(name)
            files.append(name)
        for name in self._choose(files, archives):
            source = f"{path}!{name}"
            if name in self._ambiguous:
                raise InputError(source, f"the zip holds {self._ambiguous[name]} different tables of this name",
                                 hint="unzip the export, keep the right table, and give the folder")
            self._check_member(self._members[name], source, max_bytes=None, table=True)
            self._found.append((source, posixpath.dirname(name), functools.partial(self._read_member, name)))

    _member_name = staticmethod(member_name)

    def _choose(self, files: list[str], archives: list[str]) -> list[str]:
        """Pick the tables among ``files`` (POSIX relative paths), sorted; raise if there are none."""
        chosen, fallback = pick_tables(files)
        if chosen:
            if fallback:
                log.warning("%s: no ecotaxa*.tsv/.txt table; reading every .tsv: %s", self.path, chosen)
            if archives:
                log.warning("%s: archive(s) inside the export are not opened: %s", self.path, sorted(archives))
            return chosen
        looked = ", ".join(TABLE_PATTERNS) + ", then " + ", ".join(FALLBACK_PATTERNS)
        problem = f"no EcoTaxa table found (looked for {looked})"
        if archives:
            shown = ", ".join(sorted(archives)[:5]) + (" ..." if len(archives) > 5 else "")
            raise InputError(
                self.path,
                f"{problem}; it holds archive(s) that are not opened: {shown}",
                hint="unpack the inner archive(s) and give the unpacked folder"
                if self._zip is not None
                else "give the .zip itself, or unpack it and give the unpacked folder",
            )
        raise InputError(self.path, problem, hint="give the .tsv/.txt table, the folder or the .zip that EcoTaxa exported")

    # -- images ---------------------------------------------------------------

    def image_ref(self, table: Table, img_file_name: str) -> str:
        """Canonical POSIX path of an image inside the export, e.g. ``"0/m106_1.jpg"``.

        ``img_file_name`` is relative to the table's folder; backslashes count
        as separators. Raises :class:`UnsafePath` for absolute paths and paths
        that climb out of the export, :class:`ImageMissing` for an empty name.
        """
        name = str(img_file_name)
        if not name.strip():
            raise ImageMissing(table.source, "img_file_name is empty")
        name = name.replace("\\", "/")
        if name.startswith("/") or _DRIVE.match(name) or "\x00" in name:
            raise UnsafePath(
                table.source,
                f"img_file_name {img_file_name!r} is an absolute path",
                hint="image paths must be relative to the folder of the table",
            )
        ref = posixpath.normpath(posixpath.join(table.folder, name) if table.folder else name)
        if ref == ".." or ref.startswith("../"):
            raise UnsafePath(
                table.source,
                f"img_file_name {img_file_name!r} points outside the export",
                hint="image paths must stay inside the export",
            )
        if ref == ".":
            raise ImageMissing(table.source, f"img_file_name {img_file_name!r} names a folder, not an image")
        return ref

    def image_exists(self, table: Table, img_file_name: str) -> bool:
        """True if the image exists in the export; raises :class:`UnsafePath` for unsafe names."""
        try:
            ref = self.image_ref(table, img_file_name)
        except ImageMissing:
            return False
        if self._zip is not None:
            if ref in self._unsafe:
                raise UnsafePath(table.source, f"zip member {ref!r} is a link, not an image")
            return ref in self._members
        real = self._real_path(ref, table.source)
        return os.path.isfile(real)

    def image_info(self, ref: str, max_bytes: int | None = None) -> FileInfo:
        """Size and stamp of the image with canonical reference ``ref``, without reading it.

        Raises :class:`ImageMissing`, :class:`UnsafePath`, or :class:`ImageRefused` (with its ledger
        reason) for an image that is not a regular file, is over ``max_bytes``, or is a zip member
        that cannot or must not be inflated.
        """
        ref = self._canonical(ref)
        if self._zip is not None:
            info = self._member_info(ref, str(self.path))
            self._check_member(info, self._shown(ref), max_bytes)
            return FileInfo(info.file_size, f"crc{info.CRC:08x}:{info.compress_size}")
        real = self._real_path(ref, str(self.path))
        try:
            st = os.stat(real)
        except (FileNotFoundError, NotADirectoryError):
            raise ImageMissing(str(self.path), f"image {ref!r} not found (looked for {self._root / ref})") from None
        except OSError as e:
            raise InputError(self._shown(ref), f"cannot be read ({e.strerror or e})") from None
        if not stat.S_ISREG(st.st_mode):
            raise ImageRefused(self._shown(ref), f"is a {file_kind(st.st_mode)}, not an image file", "not_a_file",
                               hint="remove it from the export, or replace it by the image itself")
        if max_bytes is not None and st.st_size > max_bytes:
            raise ImageRefused(self._shown(ref), f"is {st.st_size} bytes, over normalise.max_bytes ({max_bytes})",
                               "file_too_large", hint="raise normalise.max_bytes if it is a genuine image")
        return FileInfo(st.st_size, str(st.st_mtime_ns))

    def read_image(self, table: Table, img_file_name: str, max_bytes: int | None = None) -> bytes:
        """Bytes of the image named ``img_file_name`` in ``table``.

        Raises :class:`ImageMissing` (naming the table) if it is not there,
        :class:`UnsafePath` if the name leads outside the export, :class:`ImageRefused` as
        :meth:`read_image_by_ref`.
        """
        ref = self.image_ref(table, img_file_name)
        return self._read_ref(ref, table.source, img_file_name, max_bytes)

    def read_image_by_ref(self, ref: str, max_bytes: int | None = None) -> bytes:
        """Bytes of the image with canonical reference ``ref`` (see :meth:`image_ref`).

        Never blocks and never holds more than ``max_bytes``: see :class:`ImageRefused`.
        """
        ref = self._canonical(ref)
        return self._read_ref(ref, str(self.path), ref, max_bytes)

    def _canonical(self, ref) -> str:
        ref = str(ref)
        if not ref or "\\" in ref or ref == "." or ref != posixpath.normpath(ref) or _unsafe_member(ref):
            raise UnsafePath(self.path, f"{ref!r} is not a canonical image reference inside the export")
        return ref

    def _shown(self, ref: str) -> str:
        """How an image is named in messages: ``export.zip!0/a.jpg`` or the path of the file."""
        return f"{self.path}!{ref}" if self._zip is not None else str(self._root / ref)

    def _member_info(self, ref: str, source: str) -> zipfile.ZipInfo:
        if ref in self._unsafe:
            raise UnsafePath(source, f"zip member {ref!r} is a link, not an image")
        info = self._members.get(ref)
        if info is None:
            raise ImageMissing(source, f"image {ref!r} not found in {self.path} (looked for member {ref!r})")
        if ref in self._ambiguous:
            raise ImageRefused(f"{self.path}!{ref}", f"the zip holds {self._ambiguous[ref]} different members "
                               "of this name", "ambiguous_image",
                               hint="unzip the export, keep the right image, and zip it again")
        return info

    @staticmethod
    def _check_member(info: zipfile.ZipInfo, source: str, max_bytes: int | None, table: bool = False) -> None:
        """Refuse a member before inflating it: encrypted, an unknown method, over ``max_bytes``, a bomb."""
        what = "table" if table else "image"
        if info.flag_bits & 0x1:
            raise ImageRefused(source, "is encrypted (the zip needs a password)", "unreadable_image",
                               hint=f"unzip it with its password and give the unpacked {what} or folder")
        if info.compress_type not in _ZIP_METHODS:
            raise ImageRefused(source, f"is compressed with method {info.compress_type}, which cannot be inflated here "
                               "(stored, deflate, bzip2 and lzma can)", "unreadable_image",
                               hint="unzip it with a tool that knows the method, and zip it again with deflate")
        if max_bytes is not None and info.file_size > max_bytes:
            raise ImageRefused(source, f"would inflate to {info.file_size} bytes, over normalise.max_bytes "
                               f"({max_bytes}); not inflated", "file_too_large",
                               hint="raise normalise.max_bytes if it is a genuine image")
        ratio = info.file_size / max(info.compress_size, 1)
        if not table and info.file_size > _RATIO_MIN_BYTES and ratio > MAX_ZIP_RATIO:
            raise ImageRefused(source, f"would inflate {ratio:.0f} times ({info.compress_size} to {info.file_size} "
                               f"bytes): a zip bomb, not inflated", "file_too_large",
                               hint=f"no image compresses over {MAX_ZIP_RATIO} times; check where the zip comes from")

    def _read_ref(self, ref: str, source: str, shown: str, max_bytes: int | None = None) -> bytes:
        if self._zip is not None:
            if ref in self._unsafe:
                raise UnsafePath(source, f"zip member {ref!r} is a link, not an image")
            if ref not in self._members:
                raise ImageMissing(source, f"image {shown!r} not found in {self.path} (looked for member {ref!r})")
            return self._read_member(ref, max_bytes, image=True)
        real = self._real_path(ref, source)
        try:
            return read_regular_file(real, max_bytes, source=self._shown(ref))
        except ImageMissing:
            raise ImageMissing(source, f"image {shown!r} not found (looked for {self._root / ref})") from None

    def _read_member(self, name: str, max_bytes: int | None = None, image: bool = False) -> bytes:
        source = f"{self.path}!{name}"
        info = self._member_info(name, source) if image else self._members[name]
        self._check_member(info, source, max_bytes, table=not image)
        try:
            with self._lock, self._zip.open(info) as f:
                # zipfile stops at the declared size (and then checks the CRC), so this never holds more
                return f.read()
        except _ZIP_READ_ERRORS as e:
            raise ImageRefused(source, f"cannot be read from the zip: corrupt or truncated ({type(e).__name__}: {e})",
                               "unreadable_image", hint="download the export again") from None

    def _real_path(self, ref: str, source: str) -> str:
        """Real path of ``ref`` under the root folder; refuse symlinks that lead out of it.

        The real path of each folder is resolved once (an export of 100 000 images in a few folders
        costs one ``lstat`` per image, not a walk of every component of every path).
        """
        folder, name = posixpath.split(ref)
        real_dir = self._real_dirs.get(folder)
        if real_dir is None:
            real_dir = self._real_dirs[folder] = os.path.realpath(self._root / folder) if folder else self._real_root
        real = os.path.join(real_dir, name)
        try:
            is_link = stat.S_ISLNK(os.lstat(real).st_mode)
        except OSError:
            is_link = False  # not there: the caller says so
        if is_link:
            real = os.path.realpath(real)
        if not self._inside_root(real):
            raise UnsafePath(source, f"image {ref!r} is a link to {real}, outside the export folder {self._root}")
        return real

    def _inside_root(self, real: str) -> bool:
        return real == self._real_root or real.startswith(self._real_root.rstrip(os.sep) + os.sep)

    # -- lifetime -------------------------------------------------------------

    def close(self) -> None:
        """Release the zip file, if any. Safe to call twice."""
        with self._lock:
            if self._zip is not None:
                self._zip.close()

    def __enter__(self) -> Export:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Export({str(self.path)!r}, tables={len(self._found)})"


def open_export(path) -> Export:
    """Open an EcoTaxa export (a .tsv/.txt table, a folder or a .zip); see :class:`Export`."""
    return Export(path)
