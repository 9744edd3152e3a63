"""From EcoTaxa tables to a clean objects table and a ledger of every input row.

Every row of every table in the export ends up in the ledger exactly once,
with ``outcome`` either ``used`` or the reason it was dropped. The objects
table holds the used rows, with the training class they map to and a stable
reference to their image inside the export.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .balance import is_augmented_id
from .ecotaxa import Export, InputError

log = logging.getLogger(__name__)

# Ledger outcomes, in the order the checks are made.
USED = "used"
#: The values of object_annotation_status that EcoTaxa writes ('' is an unclassified object).
KNOWN_STATUSES = ("validated", "predicted", "dubious", "")
REASONS = {
    "other_image_rank": "a second image of an object (img_rank other than the configured one)",
    "unknown_status": "object_annotation_status is none of validated, predicted, dubious or empty",
    "status_not_selected": "object_annotation_status not in the configured statuses",
    "no_category": "object_annotation_category is empty",
    "unmapped_category": "category maps to none of the configured classes",
    "dropped_by_mapping": "the class mapping table says drop",
    "no_object_id": "object_id is empty",
    "reserved_object_id": "object_id has the form of an augmented copy's id (<object_id>#aug<number>)",
    "duplicate_object_id": "object_id seen before in the export (the first one is used)",
    "no_image_name": "img_file_name is empty",
    "unsafe_image_path": "img_file_name is absolute or climbs out of the export's folder",
    "missing_image": "the image file named in img_file_name is not in the export",
    "not_a_file": "img_file_name names a named pipe, a device, a socket or a folder, not a file",
    "ambiguous_image": "the zip holds two different members of the image's name",
    "file_too_large": "the image file is over normalise.max_bytes, or a zip member would inflate beyond it "
                      "(or more than 200-fold)",
    "unreadable_image": "the image cannot be decoded (corrupt, truncated, encrypted or not an image)",
    "image_too_large": "the image header claims more pixels than normalise.max_pixels",
    "no_object": "the image shows no object: uniform (all white, all black, flat grey) or no pixel passes "
                 "normalise.threshold with normalise.polarity",
}
#: Reasons of an image (the rows naming it all get it): their detail is in the ledger and the manifest.
IMAGE_REASONS = ("unsafe_image_path", "missing_image", "not_a_file", "ambiguous_image", "file_too_large",
                 "unreadable_image", "image_too_large", "no_object")

LEDGER_COLUMNS = ["source", "line", "object_id", "img_file_name", "status", "category", "class_name", "outcome",
                  "detail"]
FIXED_COLUMNS = ["object_id", "class_name", "category", "image_ref", "image_key", "source", "line"]


class ClassMatcher:
    """Map an EcoTaxa category (and lineage) to one training class, by exact names only.

    A row matches class C when its category equals C, or one node of its lineage
    equals C; the deepest matching node wins. Lineage comes from
    ``object_annotation_hierarchy`` ('>'-separated, root first) when present,
    else from the category itself when it carries its parents EcoTaxa-style
    ('Noctiluca scintillans<Noctiluca<Noctilucaceae', deepest first).
    A mapping table (source node -> class or 'drop') is consulted at each node
    before the class names, so it can merge, rename or drop.
    """

    DROP = object()

    def __init__(self, classes, mapping: dict[str, str] | None = None):
        self.classes = list(classes)
        self._targets: dict[str, object] = {c: c for c in self.classes}
        for src, dst in (mapping or {}).items():
            self._targets[src] = self.DROP if dst == "drop" else dst
        self._cache: dict[tuple[str, str], object] = {}

    @staticmethod
    def lineage(category: str, hierarchy: str = "") -> list[str]:
        """Nodes from deepest to root, starting with the category as written."""
        nodes = [category.strip()]
        if "<" in category:
            nodes += [p.strip() for p in category.split("<")]
        if hierarchy:
            nodes += [p.strip() for p in reversed(hierarchy.split(">"))]
        out, seen = [], set()
        for n in nodes:
            if n and n not in seen:
                seen.add(n)
                out.append(n)
        return out

    def match(self, category: str, hierarchy: str = ""):
        """Return the class name, :attr:`DROP`, or None when nothing matches."""
        key = (category, hierarchy)
        if key not in self._cache:
            result = None
            for node in self.lineage(category, hierarchy):
                if node in self._targets:
                    result = self._targets[node]
                    break
            self._cache[key] = result
        return self._cache[key]


def read_mapping(path, classes) -> dict[str, str]:
    """Read a class mapping TSV with columns ``source`` and ``class`` (``drop`` drops)."""
    from .ecotaxa import parse_table

    with open(path, "rb") as fh:
        table = parse_table(fh.read(), str(path))
    missing = {"source", "class"} - set(table.df.columns)
    if missing:
        raise InputError(path, f"missing column(s) {sorted(missing)}", hint="a mapping table has the columns source and class")
    mapping: dict[str, str] = {}
    for line, src, dst in zip(table.lines, table.df["source"], table.df["class"]):
        src, dst = src.strip(), dst.strip()
        if not src:
            raise InputError(path, "empty source", row=line)
        if dst != "drop" and dst not in classes:
            raise InputError(path, f"class {dst!r} is not among the configured classes", row=line,
                             hint="use a configured class name or 'drop'")
        if src in mapping and mapping[src] != dst:
            raise InputError(path, f"source {src!r} is mapped twice ({mapping[src]!r} and {dst!r})", row=line)
        mapping[src] = dst
    return mapping


def verify_image(data: bytes, name: str, max_pixels: int) -> str | None:
    """Return None when the image decodes, else a ledger reason. Cheap: JPEGs decode at 1/8 scale.

    The same decoder as normalisation (:func:`lokiml.images.decode_grey`, with
    the same pixel limit), so an image that passes here normalises later: no
    Pillow warning or limit of its own, every mode and format it accepts.
    """
    from .images import ImageError, decode_grey

    try:
        decode_grey(data, name, max_pixels=max_pixels, min_size=1)
    except ImageError as exc:
        return "image_too_large" if exc.reason == "image too large" else "unreadable_image"
    return None


@dataclass
class Selection:
    objects: pd.DataFrame
    ledger: pd.DataFrame
    #: what was found of each image looked at (reference -> :class:`lokiml.manifest.ImageCheck`)
    checks: dict = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        return self.ledger.groupby("outcome").size().rename("rows").reset_index()


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    if name in df.columns:
        return df[name].astype(str).str.strip()
    return pd.Series([""] * len(df), index=df.index, dtype=object)


def select_objects(
    export: Export,
    classes,
    statuses=("validated",),
    mapping: dict[str, str] | None = None,
    img_rank: int = 0,
    max_pixels: int = 100_000_000,
    threads: int = 1,
    check_images: bool = True,
    max_bytes: int = 100_000_000,
    threshold: int = 245,
    polarity: str = "dark",
    bottom_crop: float = 0.0,
    cache_dir=None,
    images: bool | str = True,
) -> Selection:
    """Select, map and check the rows of every table in ``export``.

    ``images``: ``"required"`` (or True: a CNN experiment is configured, every object needs its image),
    ``"optional"`` (descriptors that use the images when there are any: a table without an
    ``img_file_name`` column gives objects without images, a table with one is checked as when
    required) or ``"ignored"`` (or False: descriptors of the export only; no image is looked at).
    Every image a usable row names is checked once per content
    (:func:`lokiml.manifest.check_images`: present, a regular file within ``max_bytes``, decodable
    within ``max_pixels``, showing an object at ``threshold`` and ``polarity`` after
    ``bottom_crop``); ``check_images=False`` checks only that the file is there and may be read.
    ``cache_dir`` keeps the checks for the next run (a data update then reads only new images).
    """
    from .manifest import CheckCache, CheckParams
    from .manifest import check_images as run_checks

    mode = {True: "required", False: "ignored"}.get(images, images)
    if mode not in ("required", "optional", "ignored"):
        raise ValueError(f"images must be required, optional or ignored, not {images!r}")
    matcher = ClassMatcher(classes, mapping)
    statuses = set(statuses)
    seen_ids: set[str] = set()
    parts = []  # per table: (table, outcome, class_name, image_ref, object_id, img_name, status, category)
    need: dict[str, list[tuple[int, int]]] = {}  # image ref -> [(table number, row)]
    for t_no, table in enumerate(export.tables):
        df = table.df
        required = ["object_id"] + (["img_file_name"] if mode == "required" else [])
        table_images = mode == "required" or (mode == "optional" and "img_file_name" in df.columns)
        if mode == "optional" and not table_images and len(df):
            log.info("%s: no img_file_name column: its objects have no images (the descriptor experiments need "
                     "none)", table.source)
        if any(c not in df.columns for c in required):
            missing = [c for c in required if c not in df.columns]
            raise InputError(table.source, f"missing required column(s) {missing}", row=table.header_line,
                             hint="an EcoTaxa export names each object's object_id and img_file_name; "
                                  "export the project again with its images, or add the column(s)")
        n = len(df)
        if n == 0:
            log.warning("%s: a header but no rows: no object read from this table", table.source)
        for col, what in (("object_annotation_status", "every row counts as unclassified (status '')"),
                          ("object_annotation_category", "every row counts as having no category")):
            if n and col not in df.columns:
                log.warning("%s: no %s column: %s", table.source, col, what)
        object_id = _col(df, "object_id")
        img_name = df["img_file_name"].astype(str) if "img_file_name" in df.columns else pd.Series([""] * n, dtype=object)
        status = _col(df, "object_annotation_status")
        category = _col(df, "object_annotation_category")
        hierarchy = _col(df, "object_annotation_hierarchy")
        rank_raw = _col(df, "img_rank")
        outcome = np.full(n, USED, dtype=object)
        class_name = np.full(n, "", dtype=object)

        rank = pd.to_numeric(rank_raw.replace({"": "0", "nan": "0", "NaN": "0"}), errors="coerce")
        bad_rank = rank.isna().to_numpy()
        if bad_rank.any():
            i = int(np.flatnonzero(bad_rank)[0])
            raise InputError(table.source, f"img_rank {rank_raw.iloc[i]!r} is not a number", row=table.lines[i],
                             hint="img_rank is the image's number within its object: 0, 1, ...")
        outcome[(rank != img_rank).to_numpy()] = "other_image_rank"
        pending = outcome == USED
        unknown = pending & ~status.isin(set(KNOWN_STATUSES) | statuses).to_numpy()
        if unknown.any():
            outcome[unknown] = "unknown_status"
            values = sorted(set(status[unknown]))
            log.warning("%s: %d row(s) with an object_annotation_status EcoTaxa does not write (%s; first at row %d): "
                        "dropped as unknown_status; EcoTaxa's are validated, predicted, dubious or empty",
                        table.source, int(unknown.sum()), ", ".join(repr(v) for v in values[:5]),
                        table.lines[int(np.flatnonzero(unknown)[0])])
        pending = outcome == USED
        outcome[pending & ~status.isin(statuses).to_numpy()] = "status_not_selected"
        pending = outcome == USED
        no_cat = category.isin(["", "nan", "NaN"]).to_numpy()
        outcome[pending & no_cat] = "no_category"
        # The class is looked up for every labelled row, so that the ledger can
        # account per class even for rows dropped for another reason.
        cat_values, hier_values = category.to_numpy(dtype=object), hierarchy.to_numpy(dtype=object)
        for i in np.flatnonzero(~no_cat):
            m = matcher.match(cat_values[i], hier_values[i] if hier_values[i] not in ("nan", "NaN") else "")
            if m is not None and m is not ClassMatcher.DROP:
                class_name[i] = m
            if outcome[i] != USED:
                continue
            if m is None:
                outcome[i] = "unmapped_category"
            elif m is ClassMatcher.DROP:
                outcome[i] = "dropped_by_mapping"
        id_values = object_id.to_numpy(dtype=object)
        for i in np.flatnonzero(outcome == USED):
            oid = id_values[i]
            if oid == "":
                outcome[i] = "no_object_id"
            elif is_augmented_id(oid):
                outcome[i] = "reserved_object_id"
            elif oid in seen_ids:
                outcome[i] = "duplicate_object_id"
            else:
                seen_ids.add(oid)

        image_ref = np.full(n, "", dtype=object)
        detail = np.full(n, "", dtype=object)
        if table_images:
            name_values = img_name.to_numpy(dtype=object)
            for i in np.flatnonzero(outcome == USED):
                name = name_values[i].strip()
                if not name or name in ("nan", "NaN"):
                    outcome[i] = "no_image_name"
                    continue
                try:
                    image_ref[i] = export.image_ref(table, name)
                except InputError as e:
                    outcome[i], detail[i] = "unsafe_image_path", e.problem
                    continue
                need.setdefault(image_ref[i], []).append((t_no, int(i)))
        parts.append((table, outcome, class_name, image_ref, detail, object_id, img_name, status, category))

    checks = {}
    image_key = [np.full(len(p[0].df), "", dtype=object) for p in parts]
    if need:
        params = CheckParams(max_pixels=max_pixels, max_bytes=max_bytes, bottom_crop=bottom_crop,
                             threshold=threshold, polarity=polarity)
        cache = CheckCache(cache_dir, export.path, params)
        if check_images:
            checks = run_checks(export, list(need), params, cache, threads=threads)
            cache.save(list(checks.values()))
        else:
            checks = _exist_checks(export, list(need), max_bytes)
        for ref, rows in need.items():
            c = checks[ref]
            for t_no, i in rows:
                image_key[t_no][i] = c.key
                if c.outcome != "ok":
                    parts[t_no][1][i] = c.outcome
                    parts[t_no][4][i] = c.detail

    ledgers, objects = [], []
    for (table, outcome, class_name, image_ref, detail, object_id, img_name, status, category), keys in zip(parts,
                                                                                                           image_key):
        df = table.df
        ledgers.append(pd.DataFrame({
            "source": table.source,
            "line": table.lines,
            "object_id": object_id.to_numpy(),
            "img_file_name": img_name.to_numpy(),
            "status": status.to_numpy(),
            "category": category.to_numpy(),
            "class_name": class_name,
            "outcome": outcome,
            "detail": detail,
        }, columns=LEDGER_COLUMNS))
        used = outcome == USED
        if used.any():
            clash = [c for c in FIXED_COLUMNS if c in df.columns and c != "object_id"]
            if clash:
                log.warning("%s: column(s) %s have the names of the objects table's own columns: left out of it",
                            table.source, clash)
            obj = df.loc[used].drop(columns=[c for c in FIXED_COLUMNS if c in df.columns])
            for name, values in (("line", np.asarray(table.lines)[used]), ("source", table.source),
                                 ("image_key", keys[used]), ("image_ref", image_ref[used]),
                                 ("category", category[used].to_numpy()), ("class_name", class_name[used]),
                                 ("object_id", object_id[used].to_numpy())):
                obj.insert(0, name, values)
            objects.append(obj)

    ledger = pd.concat(ledgers, ignore_index=True) if ledgers else pd.DataFrame(columns=LEDGER_COLUMNS)
    if ledger.empty:
        raise InputError(export.path, "holds no objects: its table(s) have a header but no rows",
                         hint="export the project again from EcoTaxa, with its objects")
    if objects:
        objects_df = pd.concat(objects, ignore_index=True).fillna("")
    else:
        objects_df = pd.DataFrame(columns=FIXED_COLUMNS)
    objects_df = objects_df.sort_values(["class_name", "object_id"], kind="stable").reset_index(drop=True)
    sel = Selection(objects_df, ledger, checks)
    _log_summary(sel, classes)
    if checks and check_images:
        from .manifest import polarity_evidence

        ev = polarity_evidence(checks.values(), polarity)
        (log.warning if ev.contradicts else log.info)("%s", ev.sentence())
    return sel


def _exist_checks(export: Export, refs, max_bytes: int) -> dict:
    """Checks of the files only (there, a regular file, within ``max_bytes``): nothing read or decoded."""
    from .ecotaxa import ImageMissing, ImageRefused, UnsafePath
    from .manifest import ImageCheck

    out = {}
    for ref in refs:
        c = out[ref] = ImageCheck(ref=ref)
        try:
            info = export.image_info(ref, max_bytes=max_bytes)
            c.size, c.stamp = info.size, info.stamp
        except ImageMissing:
            c.outcome, c.detail = "missing_image", "not in the export"
        except UnsafePath as e:
            c.outcome, c.detail = "unsafe_image_path", e.problem
        except ImageRefused as e:
            c.outcome, c.detail = e.reason, e.problem
        except InputError as e:
            c.outcome, c.detail = "unreadable_image", e.problem
    return out


# Reasons that concern many rows by design (the selection itself); the others are problems of the
# input, and the first rows of each are logged as examples.
_SELECTION_REASONS = {"other_image_rank", "status_not_selected", "no_category", "unmapped_category",
                      "dropped_by_mapping"}
_EXAMPLES = 3


def _log_summary(sel: Selection, classes) -> None:
    counts = Counter(sel.ledger["outcome"])
    log.info("ledger: %d input rows", len(sel.ledger))
    for outcome, n in sorted(counts.items(), key=lambda kv: (kv[0] != USED, kv[0])):
        log.info("  %-22s %8d  %s", outcome, n, REASONS.get(outcome, "kept for training"))
    for outcome in [r for r in REASONS if r in counts and r not in _SELECTION_REASONS]:
        rows = sel.ledger[sel.ledger["outcome"] == outcome]
        for r in rows.head(_EXAMPLES).itertuples():
            log.warning("%s, row %s: object %s, image %r: dropped as %s (%s)%s", r.source, r.line, r.object_id,
                        r.img_file_name, outcome, REASONS[outcome], f": {r.detail}" if r.detail else "")
        if len(rows) > _EXAMPLES:
            log.warning("... and %d more row(s) dropped as %s: see the ledger", len(rows) - _EXAMPLES, outcome)
    per_class = sel.objects["class_name"].value_counts()
    for c in classes:
        log.info("  class %-30s %8d objects", c, int(per_class.get(c, 0)))
