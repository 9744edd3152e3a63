"""The report's page of one prediction job (rule report_prediction): what was classified, into what, and
how it looks.

From the job's ``summary.json`` and its EcoTaxa bundle (the import table and the images in the zip):

- ``summary.html``: every input row accounted for (predicted, below the threshold, kept, unreadable, ...),
  objects per predicted class with their mean score, the accuracy on objects that already had a
  validated label, and where the files to upload are;
- ``predicted_classes.svg``: objects per predicted class, and those left unclassified;
- ``examples.jpg``: for each predicted class, its most and its least confident objects (above the
  threshold), as imported: what EcoTaxa will show under that name, to judge the threshold by eye.
"""

from __future__ import annotations

import html
import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .gallery import STYLE, pyplot, shorten, wrap
from .io import write_text

log = logging.getLogger(__name__)

EXAMPLES = 3  # most and least confident objects shown per class


def read_bundle_table(zip_path) -> pd.DataFrame:
    """The import table of an EcoTaxa bundle written by rule predict_images (its type row dropped)."""
    with zipfile.ZipFile(zip_path) as z:
        names = [n for n in z.namelist() if n.rsplit("/", 1)[-1].startswith("ecotaxa") and n.endswith((".tsv", ".txt"))]
        if not names:
            raise InputError(str(zip_path), "no ecotaxa*.tsv import table in the bundle")
        with z.open(names[0]) as fh:
            table = pd.read_csv(io.TextIOWrapper(fh, encoding="utf-8-sig"), sep="\t", dtype=str,
                                keep_default_na=False)
    if len(table) and str(table.iloc[0].get("object_id", "")).startswith("["):
        table = table.iloc[1:].reset_index(drop=True)  # the [t]/[f] type row
    return table


def predicted_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Objects per predicted category (status `predicted`), with their mean and lowest score."""
    if "object_annotation_status" not in table.columns:
        return pd.DataFrame(columns=["category", "objects", "mean_score", "lowest_score"])
    pred = table[table["object_annotation_status"] == "predicted"].copy()
    pred["score"] = pd.to_numeric(pred.get("object_score", pd.Series(dtype=str)), errors="coerce")
    out = (pred.groupby("object_annotation_category")["score"].agg(["size", "mean", "min"]).reset_index()
           .rename(columns={"object_annotation_category": "category", "size": "objects", "mean": "mean_score",
                            "min": "lowest_score"}))
    return out.sort_values(["objects", "category"], ascending=[False, True], kind="stable").reset_index(drop=True)


def _rows(pairs) -> str:
    return "".join(f'<tr><td class="key">{html.escape(str(k))}</td><td class="num">{html.escape(str(v))}</td></tr>'
                   for k, v in pairs)


def summary_page(summary: dict, counts: pd.DataFrame, bundle: str, table: str) -> str:
    from .evaluate import html_page, html_table

    c = summary.get("counts", {})
    labels = {"rows": "rows of the input", "predicted": "predicted (status predicted, category set)",
              "below_threshold": f"below the threshold {summary.get('threshold')} (left unclassified)",
              "kept": f"kept as they were ({'/'.join(summary.get('statuses_to_keep', [])) or '-'})",
              "unreadable": "unreadable image (left out)", "missing_image": "image missing (left out)",
              "missing_object_id": "no object_id (left out)", "other_image_rank": "another image of an object",
              "duplicate_object_id": "object_id seen before (left out)"}
    body = [f'<p class="note">Prediction <b>{html.escape(str(summary.get("name", "")))}</b>: the images of '
            f'<code>{html.escape(str(summary.get("input", "")))}</code> classified by '
            f'<code>{html.escape(str(summary.get("model", "")))}</code>. Upload <code>{html.escape(bundle)}</code> '
            f'to EcoTaxa (Import); the same table without images: <code>{html.escape(table)}</code>.</p>',
            "<h2>Every input row</h2><table><tbody>",
            _rows((labels.get(k, k), c[k]) for k in [*labels, *sorted(set(c) - set(labels))] if k in c),
            "</tbody></table>"]
    v = summary.get("validated") or {}
    if v.get("validated_in_classes"):
        body.append(f'<p class="note">Objects already validated in EcoTaxa as one of the classes: '
                    f'{v["validated_in_classes"]}; the model agrees on {v.get("correct", 0)} '
                    f'(accuracy {v["accuracy"]:.3f}). Kept objects keep their label in the table.</p>')
    body.append("<h2>Predicted objects per class</h2>")
    if len(counts):
        body.append(html_table(counts, floats={"mean_score": "{:.3f}", "lowest_score": "{:.3f}"},
                               labels={"mean_score": "mean score", "lowest_score": "lowest score"}))
    else:
        body.append('<p class="note">No object was predicted.</p>')
    dropped = summary.get("columns_not_carried") or {}
    if dropped:
        body.append('<h2>Input columns not carried over</h2><table><tbody>'
                    + _rows(dropped.items() if isinstance(dropped, dict) else [(d, "") for d in dropped])
                    + "</tbody></table>")
    return html_page(f"Prediction {summary.get('name', '')}", "".join(body))


def plot_counts(counts: pd.DataFrame, below: int, path, title: str = "") -> None:
    from .evaluate import save_figure

    plt = pyplot()
    names = [wrap(c, 30, 2) for c in counts["category"]] + ["(below threshold: unclassified)"]
    values = counts["objects"].astype(int).tolist() + [int(below)]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(8.0, max(2.0, 0.38 * len(values) + 1.2)))
        y = np.arange(len(values))[::-1]
        ax.barh(y, values, color=["#4c72b0"] * (len(values) - 1) + ["#aaaaaa"], height=0.65)
        top = max(values + [1])
        for yi, val in zip(y, values):
            ax.text(val + top * 0.01, yi, str(val), va="center", fontsize=8)
        ax.set_yticks(y)
        ax.set_yticklabels(names, fontsize=8)
        ax.set_xlim(0, top * 1.12)
        ax.set_xlabel("objects")
        ax.xaxis.get_major_locator().set_params(integer=True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        if title:
            ax.set_title(title, fontsize=10)
        save_figure(fig, path)


def choose_examples(table: pd.DataFrame, per_end: int = EXAMPLES) -> pd.DataFrame:
    """Per predicted category: its ``per_end`` most confident and ``per_end`` least confident objects."""
    if "object_annotation_status" not in table.columns:
        return table.head(0)
    pred = table[table["object_annotation_status"] == "predicted"].copy()
    pred["score"] = pd.to_numeric(pred.get("object_score", pd.Series(dtype=str)), errors="coerce").fillna(0.0)
    out = []
    for cat, rows in pred.groupby("object_annotation_category", sort=True):
        rows = rows.sort_values(["score", "object_id"], ascending=[False, True], kind="stable")
        picked = rows if len(rows) <= 2 * per_end else pd.concat([rows.head(per_end), rows.tail(per_end)])
        out.append(picked)
    return pd.concat(out, ignore_index=True) if out else pred.head(0)


def plot_examples(examples: pd.DataFrame, zip_path, path, title: str = "", per_row: int = 2 * EXAMPLES) -> None:
    from PIL import Image

    from .evaluate import save_figure
    from .images import ImageError, decode_grey

    plt = pyplot()
    cats = list(dict.fromkeys(examples["object_annotation_category"])) if len(examples) else []
    with plt.rc_context(STYLE):
        if not cats:
            fig, ax = plt.subplots(figsize=(6.0, 1.0))
            ax.axis("off")
            ax.text(0.5, 0.5, "no object was predicted", ha="center", va="center")
            save_figure(fig, path, dpi=100)
            return
        fig, axes = plt.subplots(len(cats), per_row, squeeze=False,
                                 figsize=(1.25 * per_row + 1.8, 1.75 * len(cats) + 0.9))
        for ax in axes.ravel():
            ax.axis("off")
        with zipfile.ZipFile(zip_path) as z:
            members = set(z.namelist())
            for r, cat in enumerate(cats):
                axes[r, 0].text(-0.1, 0.5, wrap(cat, 16, 3), transform=axes[r, 0].transAxes, ha="right",
                                va="center", fontsize=9, fontweight="bold")
                rows = examples[examples["object_annotation_category"] == cat]
                for k, (_, row) in enumerate(rows.head(per_row).iterrows()):
                    ax = axes[r, k]
                    name = row.get("img_file_name", "")
                    try:
                        if name not in members:
                            raise ImageError(f"{name} is not in the bundle")
                        img = decode_grey(z.read(name), name)
                        img = np.asarray(Image.fromarray(img, "L").copy().reduce(max(1, max(img.shape) // 192)))
                        ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
                    except (ImageError, ValueError, OSError, KeyError) as exc:
                        ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=7)
                        log.warning("%s: not shown (%s)", name, exc)
                    ax.set_title(f"{shorten(row['object_id'], 16)}\nscore {row['score']:.2f}", fontsize=6.5)
        fig.subplots_adjust(left=1.7 / fig.get_figwidth(), wspace=0.1, hspace=0.55,
                            top=1 - 0.9 / fig.get_figheight())
        if title:
            fig.suptitle(title, fontsize=10)
        save_figure(fig, path, dpi=100)


def report_prediction(summary_path, bundle_path, table_path, out_html, out_counts, out_examples) -> dict:
    """Rule report_prediction: the three files of the module docstring."""
    summary = json.loads(Path(summary_path).read_text(encoding="utf-8"))
    table = read_bundle_table(bundle_path)
    counts = predicted_counts(table)
    write_text(out_html, summary_page(summary, counts, str(bundle_path), str(table_path)))
    below = int(summary.get("counts", {}).get("below_threshold", 0))
    name = summary.get("name", "")
    plot_counts(counts, below, out_counts, title=f"Prediction {name}: objects per predicted class "
                                                 f"(threshold {summary.get('threshold')})")
    plot_examples(choose_examples(table), bundle_path, out_examples,
                  title=f"Prediction {name}: the {EXAMPLES} most and {EXAMPLES} least confident objects of each "
                        "predicted class (as uploaded)")
    log.info("prediction %s: %d objects predicted in %d classes", name, int(counts["objects"].sum()) if len(counts)
             else 0, len(counts))
    return summary
