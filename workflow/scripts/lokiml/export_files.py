"""Which files of an EcoTaxa export the workflow watches, decided without reading any of them.

Used by ``workflow/rules/common.smk`` at DAG-build time (so: standard library only, no pandas,
numpy or Pillow to import) and by the reader (:mod:`lokiml.ecotaxa`) and the image manifest
(:mod:`lokiml.manifest`), so that the workflow's inputs are exactly what the reader reads:

* :func:`find_tables`: the tables of a folder export, by the reader's one rule (:func:`pick_tables`);
* :func:`table_bytes`: how large they are, to size the reader's memory;
* :func:`export_state`: a token that changes when a file of the last image manifest changed on disk.
"""

from __future__ import annotations

import csv
import os
import posixpath
import stat
import zipfile
from pathlib import Path

from .config import params_hash

#: Names of the tables of an export (matched case-insensitively on the file name).
TABLE_PATTERNS = ("ecotaxa*.tsv", "ecotaxa*.txt")
#: Looked for only when no file matches :data:`TABLE_PATTERNS`.
FALLBACK_PATTERNS = ("*.tsv",)
#: Suffixes of archives that are never opened inside an export; the user must unpack them.
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".gz", ".bz2", ".xz", ".7z", ".rar")
TABLE_SUFFIXES = (".tsv", ".txt")

#: Columns of the image manifest (results/data/images.tsv), after its first line (``# lokiml image manifest ...``).
COLUMNS = ["kind", "image_ref", "size", "stamp", "key", "outcome", "detail", "width", "height", "min", "max",
           "border", "centre", "exact"]
#: Kinds of manifest rows: files that export_state checks at DAG-build time (relative to the export's
#: folder, or the zip's), and zip members (covered by the zip's own row).
FILE_KINDS = ("image", "table", "zip")
MANIFEST_HEADER = "# lokiml image manifest v1"


def matches(name: str, patterns) -> bool:
    """Case-insensitive match of a base name against glob-like ``prefix*suffix`` patterns."""
    low = name.lower()
    for pat in patterns:
        prefix, _, suffix = pat.lower().partition("*")
        if low.startswith(prefix) and low.endswith(suffix) and len(low) >= len(prefix) + len(suffix):
            return True
    return False


def is_junk(parts) -> bool:
    """Hidden files and folders, macOS resource forks: never tables."""
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def list_folder(root: Path) -> tuple[list[str], list[str]]:
    """Every file below ``root`` (POSIX paths relative to it, hidden ones left out), and the archives among them.

    A listing only (``os.walk``): nothing is opened, links to folders are not followed.
    """
    files, archives = [], []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        dirnames[:] = sorted(d for d in dirnames if not is_junk([d]))
        for name in filenames:
            if is_junk([name]):
                continue
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if is_archive(name):
                archives.append(rel)
            files.append(rel)
    return files, archives


def pick_tables(files) -> tuple[list[str], bool]:
    """The tables among ``files`` (POSIX paths inside an export), sorted, and whether the fallback chose them.

    The one rule of the reader and of the workflow's inputs: the files whose name matches
    :data:`TABLE_PATTERNS` (in any case, at any depth); when there is none, every file matching
    :data:`FALLBACK_PATTERNS`.
    """
    for patterns in (TABLE_PATTERNS, FALLBACK_PATTERNS):
        chosen = sorted(f for f in files if matches(posixpath.basename(f), patterns))
        if chosen:
            return chosen, patterns is FALLBACK_PATTERNS
    return [], False


def find_tables(path) -> list[str]:
    """The files an export's reader reads as tables: the inputs that make a data update rerun the reader.

    A folder: the tables :class:`Export` picks in it (:func:`pick_tables`: ``ecotaxa*.tsv`` and
    ``ecotaxa*.txt`` in any case and at any depth, else every ``.tsv``), as paths under ``path``; a
    table or a zip: the file itself; a path that does not exist: none (the reader then says so).
    Only the folder is listed: nothing is opened or read, so this is cheap at DAG-build time.
    """
    p = Path(path)
    if p.is_dir():
        files, _ = list_folder(p)
        return [str(p / rel) for rel in pick_tables(files)[0]]
    return [str(p)] if os.path.lexists(p) else []


def table_bytes(path) -> int:
    """Bytes of the tables an export's reader reads (a zip's: as declared inside it); 0 if none is found.

    For sizing the reader's memory before it runs: a listing and a zip's directory, nothing inflated.
    """
    p = Path(path)
    try:
        if p.is_dir():
            return sum(os.path.getsize(t) for t in find_tables(p) if os.path.isfile(t))
        if not p.is_file():  # missing, or a named pipe or device: never opened here
            return 0
        if zipfile.is_zipfile(p) and not p.name.lower().endswith(TABLE_SUFFIXES):
            with zipfile.ZipFile(p) as z:
                names = {member_name(i): i.file_size for i in z.infolist() if not i.is_dir()}
            return sum(names[n] for n in pick_tables([n for n in names if not is_junk(n.split("/"))])[0])
        return os.path.getsize(p)
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return 0


def member_name(info: zipfile.ZipInfo) -> str:
    """A zip member's name with '/' separators, decoded as UTF-8 even when the zip does not say so."""
    name = info.filename
    if not info.flag_bits & 0x800:
        try:  # zipfile decoded it as cp437; most tools actually write UTF-8
            name = name.encode("cp437").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    name = name.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name


# --------------------------------------------------------------------------- #
# The image manifest, as the workflow checks it
# --------------------------------------------------------------------------- #


def file_signature(path) -> tuple[int, str]:
    """``(size, stamp)`` of a file as :func:`export_state` compares it: cheap (one ``stat``), never opens it.

    ``(-1, "absent")`` when there is nothing at ``path``; a special file's stamp names its type.
    """
    try:
        st = os.stat(path)
    except OSError:
        return -1, "absent"
    if not stat.S_ISREG(st.st_mode):
        return -1, f"special:{stat.S_IFMT(st.st_mode):o}"
    return st.st_size, str(st.st_mtime_ns)


def export_root(export_path) -> Path:
    """The folder the manifest's files are relative to: the export folder, or the folder of a table or a zip."""
    p = Path(export_path)
    return p if p.is_dir() else p.parent


def export_state(export_path, manifest_path) -> str:
    """A token that changes when a file of the export changed on disk; for ``params:`` of read_export.

    Cheap enough for every DAG build: one ``stat`` per file of the last manifest (its images, its
    tables or its zip: 100 000 images take about 0.3 s), nothing opened. When every file still has
    the size and stamp recorded there, the token is the one recorded (the one that run was given:
    nothing reruns); else a digest of what they have now. An image replaced in place, one that
    appeared where a row named a missing one or went away, a table replaced by an older copy (which
    Snakemake's own check of modification times misses), all change it. No manifest yet: ``none``.
    """
    manifest = Path(manifest_path)
    if not manifest.is_file():
        return "none"
    recorded, rows = read_manifest(manifest, columns=("kind", "image_ref", "size", "stamp"), as_tuples=True)
    if recorded is None:
        return "none"
    root = str(export_root(export_path))
    files = [(ref, size, stamp) for kind, ref, size, stamp in rows if kind in FILE_KINDS]
    now = [(ref, *file_signature(os.path.join(root, ref))) for ref, _, _ in files]
    if all(str(n[1]) == size and n[2] == stamp for n, (_, size, stamp) in zip(now, files)):
        return recorded
    return "changed-" + params_hash(now)


def read_manifest(path, columns=None, as_tuples: bool = False) -> tuple[str | None, list]:
    """``(state, rows)`` of a manifest; ``(None, [])`` for a file that is not one.

    Rows as dicts of text (of ``columns``, default all), or with ``as_tuples`` as tuples of ``columns``.
    """
    try:
        with open(path, encoding="utf-8", newline="") as f:
            first = f.readline().rstrip("\n")
            if not first.startswith(MANIFEST_HEADER):
                return None, []
            state = first.split("state=", 1)[1] if "state=" in first else "none"
            reader = csv.reader(f, delimiter="\t")
            header = next(reader)
            columns = list(columns or header)
            pick = [header.index(c) for c in columns]
            if as_tuples:
                rows = [tuple(r[i] for i in pick) for r in reader]
            else:
                rows = [dict(zip(columns, (r[i] for i in pick))) for r in reader]
            return state, rows
    except (OSError, UnicodeDecodeError, csv.Error, ValueError, IndexError, StopIteration):
        return None, []
