"""Atomic, stable writing of tables and arrays.

Outputs are written to a temporary name in the same folder and renamed into
place, so that a killed job never leaves a half-written file that looks
finished. Tables are written sorted by the caller and with fixed formatting,
so that an unchanged result is byte-identical.

Temporary names are ``.<name>.<8 random characters><suffix>`` next to the target:
hidden, and never matched by an output pattern (every wildcard is constrained in
common.smk and none may start with a dot). A temporary file left behind by a
killed job is removed the next time its target is written.

Fault injection, for tests only (tests/workflow/test_faults.py): with
``LOKIML_FAULT=<glob>`` set, a write whose target path (relative to the working
directory, matched with fnmatch) matches the glob dies by SIGKILL at the worst
moment: the temporary file fully written, not yet renamed. ``LOKIML_FAULT_MODE=job``
(the default) kills this process only (a crashed or OOM-killed job); ``power``
kills its whole process group, Snakemake included (a power loss or node failure,
which leaves Snakemake's incomplete marker behind). Unset, it costs one lookup.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import re
import signal
import sys
import tempfile
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None):
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    ``suffix`` defaults to the target's own suffix, so that libraries that pick
    a format from the file name (Keras, numpy) still do the right thing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes) or ".tmp"
    remove_stale_temps(path, suffix)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp makes the file private (0600); give it the permissions a plain
    # open() would, so that outputs are readable by a group on a shared cluster.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        if tmp.is_file():
            # On disk before the rename, so that after a real power loss a renamed file has its content.
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fault_point(path)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            if tmp.is_dir():
                import shutil

                shutil.rmtree(tmp)
            else:
                tmp.unlink()
        raise


def remove_stale_temps(path, suffix: str = "") -> None:
    """Remove what a killed writer of ``path`` left behind: the temporary names atomic_path (or a
    ``tempfile.mkdtemp(prefix=f".{name}.")`` of a folder, with ``suffix=""``) gives that target."""
    path = Path(path)
    stale = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}" + re.escape(suffix))
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(path.parent):
            if stale.fullmatch(entry.name):
                logging.getLogger(__name__).warning("removing %s, left behind by an interrupted write",
                                                    entry.path)
                if entry.is_dir(follow_symlinks=False):
                    import shutil

                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)


FAULT_ENV = "LOKIML_FAULT"
FAULT_MODE_ENV = "LOKIML_FAULT_MODE"


def fault_point(path) -> None:
    """Tests only: die by SIGKILL here when ``path`` matches ``$LOKIML_FAULT`` (see the module's docstring).

    Called between writing a temporary file completely and renaming it onto ``path``.
    """
    pattern = os.environ.get(FAULT_ENV)
    if not pattern:
        return
    rel = os.path.relpath(os.path.abspath(path))
    if not fnmatch.fnmatchcase(rel, pattern):
        return
    mode = os.environ.get(FAULT_MODE_ENV, "job")
    if mode not in ("job", "power"):
        raise ValueError(f"{FAULT_MODE_ENV}={mode!r}: use 'job' or 'power'")
    logging.getLogger(__name__).warning("%s=%s: SIGKILL (%s) before renaming the finished temporary file onto %s",
                                        FAULT_ENV, pattern, "this job" if mode == "job" else
                                        "the process group, Snakemake included", rel)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    if mode == "power":
        os.killpg(os.getpgid(0), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_tsv(path, df, float_format: str = "%.6g") -> None:
    """Write a pandas DataFrame as a TSV with stable formatting (no index)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format=float_format, lineterminator="\n")


def read_tsv(path, **kw):
    """Read a TSV written by :func:`write_tsv`, keeping every column as text unless told."""
    import pandas as pd

    kw.setdefault("dtype", str)
    kw.setdefault("keep_default_na", False)
    return pd.read_csv(path, sep="\t", **kw)


def save_npy(path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array, allow_pickle=False)
