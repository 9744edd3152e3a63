"""Which columns of an objects table are image descriptors, and their values as numbers.

Used by the descriptor and deep-features experiments (:mod:`lokiml.descriptors`,
:mod:`lokiml.deep_features`). Each column gets one reason, written with it to ``columns.tsv``.
A column is a feature (reason ``used``) when all of these hold:

1. it is a descriptor: an ``object_*`` column of the export, or a ``morpho_*`` column measured on the
   images (:mod:`lokiml.morphometrics`), as the experiment's ``features`` setting asks
   (``not_a_descriptor_column``: ``sample_*``, ``acq_*``, ``process_*``, ``img_*`` and the workflow's own
   columns; ``not_selected_by_features``: a descriptor of the other source);
2. it is not listed in ``exclude_columns`` (``excluded_by_config``);
3. it is not metadata (:func:`metadata_reason`): identifiers, labels, positions, dates and times, depths,
   the sampling event (cruise, station, haul, ...) or the water around the object (temperature, salinity,
   conductivity, oxygen, fluorescence, ...). Metadata describe *where and when* an object was taken,
   not what it looks like: on a random split they let a classifier recognise the haul (LOKI's
   ``object_haul`` and sensor columns raised the score by about 0.03 while adding nothing on a new haul),
   and a label column leaks the answer;
4. at least one of its values is a number (``non_numeric``);
5. at most ``max_missing`` of the training objects miss it (``mostly_missing``). Missing: empty,
   ``nan``, ``na``, ``n/a``, ``null``, ``none``, infinite, **and text cells** in a numeric column:
   a single ``n.d.`` or ``#VALUE!`` no longer drops a whole column; such cells are counted
   (``text_cells``) and treated as missing;
6. it takes at least two values among the training objects (``constant``).

``include_columns`` names columns to use on purpose although rule 1 or 3 would leave them out (a
``sample_*`` depth, a temperature): they still have to pass rules 4 to 6. Statistics 5 and 6 are computed
on the training objects only; remaining missing values are passed as NaN (both classifiers take them).
"""

from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd

from .errors import InputError

log = logging.getLogger(__name__)

DESCRIPTOR_PREFIXES = {"export": "object_", "morphometrics": "morpho_"}
MISSING = {"", "nan", "na", "n/a", "null", "none", "-nan", "+nan"}

REASONS = {
    "used": "a feature",
    "included_by_config": "listed in include_columns (used on purpose)",
    "not_a_descriptor_column": "not an object_* column of the export nor a morpho_* one measured on the images",
    "not_selected_by_features": "a descriptor of the source the experiment's `features` does not use",
    "excluded_by_config": "listed in exclude_columns",
    "identifier": "metadata: an identifier, index, file name or link",
    "label": "metadata: a label, annotation, prediction or score (would leak the answer)",
    "position": "metadata: a position in the frame or on Earth (x/y, latitude/longitude)",
    "date_or_time": "metadata: a date or time",
    "depth": "metadata: a depth or pressure",
    "sampling_event": "metadata: the sampling event (cruise, ship, station, haul, cast, net, sample, ...)",
    "environment": "metadata: the water or the instrument around the object (temperature, salinity, "
                   "conductivity, oxygen, fluorescence, ...)",
    "non_numeric": "no value is a number",
    "mostly_missing": "missing (or text) for more than max_missing of the training objects",
    "constant": "fewer than two distinct values among the training objects",
}
METADATA_REASONS = ("identifier", "label", "position", "date_or_time", "depth", "sampling_event", "environment")

# Metadata, by the name after the object_ prefix, split into words at every character that is not a
# letter or digit (object_Dr._Haardt_fluorescence_channel_A -> dr haardt fluorescence channel a).
# Whole names first (short names that are words of descriptors elsewhere: x in object_xm_mean), then
# any word. Real names seen: EcoTaxa (object_lat, object_depth_min, object_annotation_*, object_link),
# ZooProcess (object_x, object_bx, object_xstart, object_xmg5, object_tag), LOKI (object_index,
# object_cruise, object_station, object_haul, object_pressure, object_salinity, object_conductivity,
# object_oxygen_*, object_temperature_oxsens, object_Dr._Haardt_fluorescence_channel_A,
# object_manual_classification, object_posx, object_milliseconds, object_timestamp,
# object_zoomie_state, object_vessel_name), UVP (object_depth_*, object_ctd_*, object_frame_nb).
_WHOLE = {
    "position": {"x", "y", "z", "xm", "ym", "bx", "by", "cx", "cy", "xc", "yc", "xstart", "ystart", "xend", "yend",
                 "posx", "posy", "xmg5", "ymg5", "x_center", "y_center", "centroid_x", "centroid_y",
                 "bbox_x", "bbox_y", "pos_x", "pos_y", "lat_end", "lon_end"},
    "identifier": {"id", "link", "url", "name", "file", "filename", "file_name", "img", "image", "orig_id",
                   "original_id", "frame", "frame_nb", "frame_number", "rank", "img_rank", "number", "nb"},
}
_FRAME_WORDS = {"capture", "image", "img", "pos", "position", "bbox", "box", "centroid", "center", "centre", "frame",
                "src", "source", "start", "end", "stage"}
_WORDS = {
    "identifier": {"id", "index", "idx", "uuid", "link", "url", "filename", "path", "serial"},
    "label": {"annotation", "category", "classification", "classif", "taxon", "taxo", "taxonomy", "label",
              "prediction", "predicted", "score", "prob", "probability", "status", "validated", "person",
              "annotator"},
    "position": {"lat", "lon", "lng", "latitude", "longitude", "posx", "posy"},
    "date_or_time": {"date", "time", "datetime", "timestamp", "milliseconds", "millisecond", "msec", "seconds",
                     "year", "month", "day", "hour", "minute", "julian", "doy", "utc", "gmt", "epoch"},
    "depth": {"depth", "pressure", "dbar", "decibar", "altitude", "zmin", "zmax", "bottomdepth"},
    "sampling_event": {"cruise", "ship", "vessel", "station", "stationid", "haul", "cast", "profile", "tow",
                       "net", "sample", "transect", "campaign", "project", "deployment", "leg", "site", "mission",
                       "operator", "program", "programme"},
    "environment": {"temperature", "temp", "salinity", "sal", "psal", "conductivity", "cond", "oxygen", "o2",
                    "oxsens", "fluorescence", "fluo", "fluor", "chla", "chl", "chlorophyll", "turbidity", "par",
                    "ph", "nitrate", "ctd", "sound", "state", "battery", "voltage", "heading", "pitch", "roll",
                    "speed", "calibration", "camera"},
}


def words(column: str) -> list[str]:
    """The words of a column name after its ``object_`` (or ``morpho_``) prefix, lower case."""
    name = column.lower()
    for prefix in DESCRIPTOR_PREFIXES.values():
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    return [w for w in re.split(r"[^a-z0-9]+", name) if w]


def metadata_reason(column: str) -> str | None:
    """The metadata reason of ``column`` (a key of :data:`METADATA_REASONS`), or None for a descriptor.

    >>> metadata_reason("object_haul"), metadata_reason("object_Dr._Haardt_fluorescence_channel_A")
    ('sampling_event', 'environment')
    >>> metadata_reason("object_area"), metadata_reason("object_xm_mean"), metadata_reason("object_long_axis")
    (None, None, None)
    """
    if column.lower().startswith(DESCRIPTOR_PREFIXES["morphometrics"]):
        return None  # measured on the image by lokiml.morphometrics: descriptors by construction
    ws = words(column)
    whole = "_".join(ws)
    for reason, names in _WHOLE.items():
        if whole in names:
            return reason
    if ws and ws[-1] == "id":
        return "identifier"
    if len(ws) == 2 and ws[1] in ("x", "y") and ws[0] in _FRAME_WORDS:  # FlowCam's capture_x, image_y, ...
        return "position"
    for reason in METADATA_REASONS:
        if any(w in _WORDS.get(reason, ()) for w in ws):
            return reason
    return None


def is_metadata(column: str) -> bool:
    return metadata_reason(column) is not None


def to_numbers(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(floats with NaN for missing and text, mask of the cells that are text: present but not numbers)."""
    text = values.astype(str).str.strip()
    missing = text.str.lower().isin(MISSING)
    nums = pd.to_numeric(text.where(~missing), errors="coerce").to_numpy(dtype=np.float64, copy=True)
    bad = np.isnan(nums) & ~missing.to_numpy()
    nums[~np.isfinite(nums)] = np.nan
    return nums, bad


def source_of(column: str) -> str | None:
    """``export`` for an ``object_*`` column, ``morphometrics`` for a measured ``morpho_*`` one, else None."""
    from .morphometrics import FEATURES

    if column in FEATURES:
        return "morphometrics"
    if column.startswith(DESCRIPTOR_PREFIXES["export"]):
        return "export"
    return None


TABLE_COLUMNS = ["column", "used", "reason", "missing_share", "text_cells", "distinct_values"]


def select_columns(objects: pd.DataFrame, max_missing: float = 0.5, exclude_columns=(), include_columns=(),
                   sources=("export", "morphometrics")) -> pd.DataFrame:
    """One row per column of ``objects``: ``column, used, reason, missing_share, text_cells, distinct_values``.

    ``objects`` should hold the training objects only (the statistics are computed on them); ``sources``
    the descriptor sources the experiment uses (``export``, ``morphometrics``).
    """
    exclude, include = set(exclude_columns), set(include_columns)
    rows = []
    n = len(objects)
    for col in objects.columns:
        row = {"column": col, "used": 0, "reason": "", "missing_share": float("nan"), "text_cells": 0,
               "distinct_values": -1}
        src = source_of(col)
        if col in exclude:
            row["reason"] = "excluded_by_config"
        elif col not in include and src is None:
            row["reason"] = "not_a_descriptor_column"
        elif col not in include and src not in sources:
            row["reason"] = "not_selected_by_features"
        elif col not in include and is_metadata(col):
            row["reason"] = metadata_reason(col)
        else:
            nums, bad = to_numbers(objects[col])
            present = nums[~np.isnan(nums)]
            row["missing_share"] = float(np.isnan(nums).mean()) if n else 1.0
            row["text_cells"] = int(bad.sum())
            row["distinct_values"] = int(len(np.unique(present)))
            if n and not present.size and bad.any():
                row["reason"] = "non_numeric"
            elif not n or row["missing_share"] > max_missing:
                row["reason"] = "mostly_missing"
            elif row["distinct_values"] < 2:
                row["reason"] = "constant"
            else:
                row["used"] = 1
                row["reason"] = "included_by_config" if col in include else "used"
                if bad.any():
                    first = objects[col][bad].iloc[0]
                    log.warning("column %s: %d text cell(s) among the training objects (first %r) taken as missing",
                                col, int(bad.sum()), first)
        rows.append(row)
    unknown = sorted(include - set(objects.columns))
    if unknown:
        log.warning("include_columns: %s not in the objects table", ", ".join(unknown))
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def used_columns(table: pd.DataFrame) -> list[str]:
    """The columns a ``columns.tsv`` table marks as used (in its order)."""
    return table.loc[table["used"].astype(int) == 1, "column"].tolist()


def explain_unused(table: pd.DataFrame, examples: int = 4) -> str:
    """Why no column is used, in one line: the count of columns per reason, a few names each."""
    parts = []
    for reason, group in table.groupby("reason", sort=False):
        names = group["column"].tolist()
        more = f", ... {len(names) - examples} more" if len(names) > examples else ""
        parts.append(f"{len(names)} {reason} ({', '.join(names[:examples])}{more})")
    return "; ".join(parts) or "the table has no column"


def feature_matrix(objects: pd.DataFrame, columns, source: str = "objects.tsv") -> np.ndarray:
    """The ``columns`` of ``objects`` as floats; missing values and text cells are NaN (text cells are logged)."""
    missing = [c for c in columns if c not in objects.columns]
    if missing:
        raise InputError(source, f"missing descriptor column(s) {missing}",
                         hint="the objects table and the trained model come from different exports or settings; "
                              "rerun the workflow")
    x = np.empty((len(objects), len(columns)), dtype=np.float64)
    for j, c in enumerate(columns):
        x[:, j], bad = to_numbers(objects[c])
        if bad.any():
            log.warning("%s, column %s: %d text cell(s) (first %r) taken as missing", source, c, int(bad.sum()),
                        objects[c][bad].iloc[0])
    return x
