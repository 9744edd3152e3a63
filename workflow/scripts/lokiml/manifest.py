"""The image manifest: every image the data stage looked at, tracked by content.

Rule ``read_export`` checks the images its rows name, and writes what it found to
``results/data/images.tsv``: one row per image with its size, its *stamp* (a file's modification
time in nanoseconds; a zip member's CRC-32 and compressed size), its *content key* (the SHA-1 of its
bytes), the outcome (``ok`` or the ledger's reason) and its grey-level statistics
(:class:`lokiml.images.ImageStats`); and one row per table of the export (or for its zip), with
their size and stamp. The first line records the state the run was given (:func:`export_state`).

Three things rest on it:

* **Data updates are never missed.** The workflow cannot list every image as an input (a
  100 000-image export would make a 100 000-file DAG), and a table's modification time says
  nothing of an image replaced in place. So ``common.smk`` gives ``read_export`` a parameter,
  :func:`export_state`, that changes when an image of the manifest changed on disk (size or
  modification time, or it appeared or went away). Snakemake reruns a job whose parameters changed;
  the run records the state it was given in the new manifest, so that an unchanged export gives the
  same state again and nothing reruns.
* **A data update reads and checks only new or changed images.** :class:`CheckCache` (under
  ``resources/cache/``, outside the outputs, which Snakemake deletes before a job runs) remembers
  each file's content key by its size and stamp, and each content's check by its key: an image
  whose file did not change is neither read nor decoded again; one whose file changed is read and
  hashed, and decoded only if its content is new. Normalisation finds its cached images by the same
  content key (``image_key`` in ``objects.tsv``), without reading the image either.
* **Ledger, accounting and training agree.** The check decodes each image as normalisation does
  (the same decoder and limits), so an image it lets through normalises, and one it drops
  (``unreadable_image``, ``image_too_large``, ``no_object``, ...) is counted in the ledger and the
  accounting, never silently skipped at training.

The statistics also hold the evidence for the polarity of the images (:func:`polarity_evidence`):
the share of images whose border is darker than their middle, high for light objects on a dark
background (UVP), low for dark ones on a light background (LOKI, ZooScan, FlowCam).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import images, memory
from .config import params_hash
from .ecotaxa import Export, FileInfo, ImageMissing, ImageRefused, InputError, UnsafePath
from .export_files import (  # the manifest's format, and the workflow's check of it
    COLUMNS,
    FILE_KINDS,
    MANIFEST_HEADER,
    export_root,
    export_state,
    file_signature,
    read_manifest,
)
from .io import atomic_path
from .logs import Progress

log = logging.getLogger(__name__)

__all__ = ["CheckParams", "ImageCheck", "CheckCache", "check_images", "export_state", "file_signature",
           "file_rows", "export_root", "write_manifest", "read_manifest", "polarity_evidence", "OK"]

OK = "ok"
#: Bump when the check of a content changes (its cached results are then made again).
CHECK_VERSION = 1
_STAT_FIELDS = ("min", "max", "border", "centre", "exact")


@dataclass(frozen=True)
class CheckParams:
    """What the check of an image's content depends on; ``threshold`` and ``polarity`` only decide ``no_object``."""

    max_pixels: int = 100_000_000
    max_bytes: int = 100_000_000
    bottom_crop: float = 0.0
    threshold: int = 245
    polarity: str = "dark"

    def content_key(self) -> str:
        """The key of the cached content checks: what the statistics themselves depend on."""
        return params_hash({"v": CHECK_VERSION, "max_pixels": self.max_pixels, "bottom_crop": self.bottom_crop})


@dataclass
class ImageCheck:
    """The outcome of one image: ``ok`` or a ledger reason, with what was learnt on the way."""

    ref: str
    kind: str = "image"  # image, member (of a zip), table, zip
    outcome: str = OK
    detail: str = ""
    size: int = -1
    stamp: str = ""
    key: str = ""
    width: int = 0
    height: int = 0
    stats: images.ImageStats | None = None


@dataclass
class _Content:
    """The check of one content (by key): a decoding failure, or its size and statistics."""

    reason: str = ""  # '' when it decodes
    detail: str = ""
    width: int = 0
    height: int = 0
    stats: images.ImageStats | None = None


# --------------------------------------------------------------------------- #
# Files as the workflow sees them at DAG-build time
# --------------------------------------------------------------------------- #


def file_rows(export: Export) -> list[ImageCheck]:
    """Manifest rows of the export's own files: its tables (a folder or a table), or the zip."""
    root = export_root(export.path)
    files = [(str(export.path), "zip")] if export.is_zip else [(t.source, "table") for t in export.tables]
    out = []
    for path, kind in files:
        try:
            rel = Path(path).relative_to(root).as_posix()
        except ValueError:
            continue
        size, stamp = file_signature(path)
        out.append(ImageCheck(ref=rel, kind=kind, outcome=kind, size=size, stamp=stamp))
    return out


# --------------------------------------------------------------------------- #
# The manifest file
# --------------------------------------------------------------------------- #


def write_manifest(path, checks: list[ImageCheck], state: str = "none") -> None:
    """Write the manifest: a first line with ``state`` (:func:`images_state` of the run's token), then one
    TSV row per image, sorted by reference."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(f"{MANIFEST_HEADER}\tstate={state}\n")
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(COLUMNS)
        for c in sorted(checks, key=lambda c: (c.kind not in ("table", "zip"), c.ref)):
            st = c.stats
            w.writerow([c.kind, c.ref, c.size, c.stamp, c.key, c.outcome, c.detail, c.width, c.height,
                        *(("", "", "", "", "") if st is None else
                          (st.min, st.max, f"{st.border:g}", f"{st.centre:g}", int(st.exact)))])


def _check_from_row(r: dict) -> ImageCheck:
    stats = None
    if r.get("min", "") != "":
        stats = images.ImageStats(min=int(r["min"]), max=int(r["max"]), border=float(r["border"]),
                                  centre=float(r["centre"]), exact=bool(int(r["exact"])))
    return ImageCheck(ref=r["image_ref"], kind=r.get("kind", "image"), outcome=r["outcome"], detail=r["detail"], size=int(r["size"]),
                      stamp=r["stamp"], key=r["key"], width=int(r["width"] or 0), height=int(r["height"] or 0),
                      stats=stats)


# --------------------------------------------------------------------------- #
# The cache of checks (outside the outputs)
# --------------------------------------------------------------------------- #


class _ContentChecks(dict):
    """Content checks by key; those of the last run are made from their manifest rows when first asked for."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, dict] = {}

    def get(self, key, default=None):
        if key in self:
            return self[key]
        r = self.rows.get(key)
        if r is None:
            return default
        try:
            c = _check_from_row(r)
        except (KeyError, ValueError):
            return default
        content = _Content(reason="" if c.outcome in (OK, "no_object") else c.outcome,
                           detail=c.detail if c.outcome not in (OK, "no_object") else "",
                           width=c.width, height=c.height, stats=c.stats)
        self[key] = content
        return content


# The outcomes that belong to a content (the same bytes give the same outcome), cached by key.
_CONTENT_OUTCOMES = {OK, "no_object", "unreadable_image", "image_too_large"}


class CheckCache:
    """Content keys by file (reference, size, stamp), and content checks by key, kept between runs.

    One file, ``{cache_dir}/images.tsv`` (a manifest): it is rewritten at the end of each run with
    the images of that run, so it does not grow with exports that are no longer used. Checks made
    under other :meth:`CheckParams.content_key` parameters (max_pixels, bottom_crop) are not reused;
    content keys by file are, for the same export.
    """

    def __init__(self, cache_dir, export_path, params: CheckParams):
        self.path = Path(cache_dir) / "images.tsv" if cache_dir else None
        # The export as the config names it (relative to the working directory): a copy of the whole
        # project, export and cache included, keeps its cache (the files' size and stamp still decide).
        self.export_scope = params_hash({"export": os.path.normpath(str(export_path))})
        self.content_scope = params.content_key()
        self.by_file: dict[tuple[str, int, str], str] = {}
        self.by_key = _ContentChecks()
        self._rows = self.by_key.rows
        if self.path is None or not self.path.is_file():
            return
        state, rows = read_manifest(self.path)
        if state is None:
            return
        parts = (state.split(",") + [""])[:2]
        same_export, same_content = parts[0] == self.export_scope, parts[1] == self.content_scope
        for r in rows:
            key = r.get("key", "")
            if not key:
                continue
            if same_export:
                self.by_file[(r["image_ref"], int(r["size"]), r["stamp"])] = key
            if same_content and r["outcome"] in _CONTENT_OUTCOMES:
                self._rows[key] = r  # made a _Content when asked for (most are never asked: kept files)
        log.info("check cache %s: %d file(s), %d content check(s) known from the last run", self.path,
                 len(self.by_file), len(self._rows))

    def save(self, checks: list[ImageCheck]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_manifest(self.path, [c for c in checks if c.key], state=f"{self.export_scope},{self.content_scope}")


# --------------------------------------------------------------------------- #
# Checking images
# --------------------------------------------------------------------------- #


def _reason_of(exc: images.ImageError) -> str:
    return "image_too_large" if exc.reason == "image too large" else "unreadable_image"


def check_content(data: bytes, name: str, params: CheckParams, exact: bool = False) -> _Content:
    """Decode ``data`` as normalisation does and return its size and statistics (or why it cannot be used).

    Not ``exact``: a JPEG is decoded at a reduced scale (1/2 to 1/8, Pillow's draft mode), which
    finds truncated or corrupt files as surely and costs a fraction of the time; its statistics are
    then marked inexact (:func:`lokiml.images.has_object_is_certain` says when that matters).
    """
    width, height = (images.header(data) or (0, 0))[:2]
    try:
        with memory.reserved(data, name, reduce_to=None if exact else 1):
            img = images.decode_grey(data, name, max_pixels=params.max_pixels, min_size=None if exact else 1)
            full = img.shape == (height, width)
            if params.bottom_crop:
                img = img[: max(1, int(round(img.shape[0] * (1.0 - params.bottom_crop))))]
            return _Content(width=width or img.shape[1], height=height or img.shape[0],
                            stats=images.image_stats(img, full))
    except images.ImageError as exc:
        return _Content(reason=_reason_of(exc), detail=str(exc.detail or exc.reason), width=width, height=height)


def check_images(export: Export, refs, params: CheckParams, cache: CheckCache | None = None,
                 threads: int = 1) -> dict[str, ImageCheck]:
    """Check every image of ``refs`` (canonical references inside ``export``): the outcome of each.

    Outcomes: ``ok``, or ``missing_image``, ``unsafe_image_path``, ``not_a_file``, ``file_too_large``,
    ``ambiguous_image``, ``unreadable_image``, ``image_too_large``, ``no_object``. A file is read
    only when the cache does not know its content by its size and stamp, and decoded only when the
    cache does not know that content; the count of each is logged.
    """
    cache = cache or CheckCache(None, export.path, params)
    refs = sorted(set(refs))
    checks: dict[str, ImageCheck] = {}
    todo = []
    kind = "member" if export.is_zip else "image"
    for ref in refs:
        c = checks[ref] = ImageCheck(ref=ref, kind=kind)
        try:
            info: FileInfo = export.image_info(ref, max_bytes=params.max_bytes)
        except InputError as e:
            c.outcome, c.detail = _refusal(e)
            if export.root is not None:  # what export_state will compare: the file as it is, or its absence
                c.size, c.stamp = file_signature(export.root / ref)
            continue
        c.size, c.stamp = info.size, info.stamp  # for a file: what file_signature gives
        c.key = cache.by_file.get((ref, c.size, c.stamp), "")
        content = cache.by_key.get(c.key) if c.key else None
        if content is not None and _decide(c, content, params):
            continue
        todo.append(c)

    counts = {"read": 0, "decoded": 0, "decoded_full": 0}

    def work(c: ImageCheck) -> None:
        try:
            data = export.read_image_by_ref(c.ref, max_bytes=params.max_bytes)
        except InputError as e:
            c.outcome, c.detail = _refusal(e)
            return
        counts["read"] += 1
        c.key = hashlib.sha1(data).hexdigest()
        content = cache.by_key.get(c.key)
        if content is None:
            counts["decoded"] += 1
            content = check_content(data, c.ref, params)
        if not _decide(c, content, params):
            counts["decoded_full"] += 1
            content = check_content(data, c.ref, params, exact=True)
            _decide(c, content, params)
        cache.by_key[c.key] = content

    if todo:
        progress = Progress(len(todo), "check images", log)
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            for _ in pool.map(work, todo):
                progress.update()
    log.info("images: %d named, %d read (new or changed files), %d decoded (new contents), %d of them again at "
             "full resolution; the others known from the last run", len(refs), counts["read"], counts["decoded"],
             counts["decoded_full"])
    return checks


def _refusal(e: InputError) -> tuple[str, str]:
    """The ledger reason and detail of an image the export would not give."""
    if isinstance(e, ImageMissing):
        return "missing_image", e.problem
    if isinstance(e, UnsafePath):
        return "unsafe_image_path", e.problem
    if isinstance(e, ImageRefused):
        return e.reason, e.problem
    return "unreadable_image", e.problem


def _decide(c: ImageCheck, content: _Content, params: CheckParams) -> bool:
    """Set ``c``'s outcome from its content check; False when that needs the full-resolution statistics."""
    c.width, c.height = content.width, content.height
    c.stats = content.stats
    if content.reason:
        c.outcome, c.detail = content.reason, content.detail
        return True
    if not images.has_object_is_certain(content.stats, params.threshold, params.polarity):
        return False
    if images.has_object(content.stats, params.threshold, params.polarity):
        c.outcome, c.detail = OK, ""
    else:
        st = content.stats
        c.outcome = "no_object"
        c.detail = (f"uniform: grey levels {st.min} to {st.max}" if st.max - st.min <= images.UNIFORM_CONTRAST else
                    f"no pixel is an object at threshold {params.threshold} and polarity {params.polarity} "
                    f"(grey levels {st.min} to {st.max})")
    return True


# --------------------------------------------------------------------------- #
# Polarity
# --------------------------------------------------------------------------- #


@dataclass
class PolarityEvidence:
    """How many usable images have a border darker than their middle, and what it says of the setting."""

    images: int
    border_darker: int
    polarity: str
    contradicts: bool = False
    auto_light: int = 0  # with polarity auto: images taken as light objects on a dark background

    @property
    def share(self) -> float:
        return self.border_darker / self.images if self.images else 0.0

    def sentence(self) -> str:
        if not self.images:
            return "polarity: no usable image to judge it by"
        s = (f"polarity: {self.border_darker} of {self.images} usable images ({100 * self.share:.0f} %) have a border "
             f"darker than their middle (light objects on a dark background, as UVP's); normalise.polarity is "
             f"{self.polarity!r}")
        if self.polarity == "auto":
            s += f" and takes {self.auto_light} of them as light objects on a dark background"
        if self.contradicts:
            other = "light" if self.polarity == "dark" else "dark"
            s += (f": most images contradict it; if the objects are {'light on a dark' if other == 'light' else 'dark on a light'} "
                  f"background, set normalise.polarity to {other!r} (or 'auto'), or the whole frame is taken as the object")
        return s


def polarity_evidence(checks, polarity: str) -> PolarityEvidence:
    """The evidence for the polarity of the usable images of ``checks`` (:class:`ImageCheck` or manifest rows)."""
    stats = []
    for c in checks:
        if isinstance(c, dict):
            if c.get("outcome") == OK and c.get("min", "") != "":
                stats.append(_check_from_row(c).stats)
        elif c.outcome == OK and c.stats is not None:
            stats.append(c.stats)
    darker = sum(images.border_darker_than_centre(s) for s in stats)
    ev = PolarityEvidence(images=len(stats), border_darker=darker, polarity=polarity)
    if polarity == "auto":
        ev.auto_light = sum(images.stats_polarity(s, "auto") == "light" for s in stats)
    elif stats:
        ev.contradicts = ev.share > 0.5 if polarity == "dark" else ev.share < 0.5
    return ev


__all__ += ["PolarityEvidence", "check_content"]
