"""File-level steps of the data-preparation stage: read inputs, call the library, write outputs.

One function per rule; the rule's script only unpacks the ``snakemake`` object.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .balance import balance
from .ecotaxa import open_export
from .errors import InputError
from .io import read_tsv, write_text, write_tsv
from .objects import REASONS, USED, read_mapping, select_objects
from .split import SPLITS, split_items
from .store import NormParams, normalise_shard, shard_of

log = logging.getLogger(__name__)


def read_export(export_path, objects_out, ledger_out, classes, statuses=("validated",), mapping_path=None,
                img_rank=0, max_pixels=100_000_000, threads=1):
    mapping = read_mapping(mapping_path, classes) if mapping_path else None
    with open_export(export_path) as export:
        log.info("export %s: %d table(s)", export_path, len(export.tables))
        sel = select_objects(export, classes, statuses=statuses, mapping=mapping, img_rank=img_rank,
                             max_pixels=max_pixels, threads=threads)
    assert len(sel.ledger) == sum(1 for _ in sel.ledger.itertuples()), "ledger rows"
    write_tsv(objects_out, sel.objects)
    write_tsv(ledger_out, sel.ledger)
    return sel


def balance_classes(objects_path, balanced_out, classes, cap=1000, augment=True, seed=1, flip=True,
                    rotation=180.0, shift=0.1):
    objects = read_tsv(objects_path)
    table = balance(objects, classes, cap=cap, augment=augment, seed=seed, flip=flip, rotation=rotation,
                    shift=shift, source=str(objects_path))
    write_tsv(balanced_out, table, float_format="%.4f")
    return table


def split_dataset(balanced_path, objects_path, split_out, train=0.6, valid=0.2, test=0.2, seed=3,
                  group_by=None, holdout=None):
    balanced = read_tsv(balanced_path)
    objects = read_tsv(objects_path)
    out = split_items(balanced, objects, train=train, valid=valid, test=test, seed=seed, group_by=group_by,
                      holdout=dict(holdout) if holdout else None, source=str(balanced_path))
    write_tsv(split_out, out, float_format="%.4f")
    return out


def normalise_images(export_path, balanced_path, out_npy, out_index, size, shard, shards, threshold=245,
                     polarity="dark", bottom_crop=0.0, max_pixels=100_000_000, threads=1, cache_dir=None,
                     canvas=None):
    balanced = read_tsv(balanced_path)
    mine = balanced[[shard_of(i, shards) == shard for i in balanced["item_id"]]]
    log.info("shard %d/%d at %d px: %d of %d items", shard, shards, size, len(mine), len(balanced))
    params = NormParams(size=size, threshold=threshold, polarity=polarity, bottom_crop=bottom_crop,
                        max_pixels=max_pixels, canvas=int(canvas) if canvas else None)
    with open_export(export_path) as export:
        return normalise_shard(mine, export.read_image_by_ref, params, out_npy, out_index, threads=threads,
                               cache_dir=cache_dir)


NO_CLASS = "(no class)"
NO_CATEGORY = "(no category)"
#: The accounting's reason for an object that read_export used but the balancing cap left out.
CAPPED = "capped_by_balance"
CAPPED_MEANING = "a usable object left out by the balancing cap (balance.cap)"


def accounting(ledger: pd.DataFrame, split: pd.DataFrame, classes, source: str = "split.tsv") -> pd.DataFrame:
    """Every row of the export, per EcoTaxa category and the class it maps to: used, or dropped and why.

    One row per (``category`` as written in ``object_annotation_category``,
    ``class_name`` it maps to: a configured class or ``(no class)``), rows of
    the configured classes first (in their order), then ``(no class)``, each by
    category; the last row, ``TOTAL``, sums them. Columns:

    * ``export_rows``: rows of the export (one per image of an object: see ``img_rank``);
    * ``used``: objects in the train, valid or test split (their augmented copies are not rows of the
      export and are not counted);
    * ``dropped_<reason>``: one column per ledger reason that occurs (:data:`lokiml.objects.REASONS`),
      then ``dropped_capped_by_balance``: usable objects that the balancing cap left out;
    * ``check``: ``ok`` when ``export_rows`` = ``used`` + the ``dropped_*`` columns.

    ``split`` is the split (or balanced) table: its ``augmented == 0`` items are the objects used.
    Raises :class:`InputError` when the split holds an object that the ledger did not use (files of
    different runs).
    """
    led = pd.DataFrame({
        "category": ledger["category"].astype(str).replace("", NO_CATEGORY),
        "class_name": ledger["class_name"].astype(str).replace("", NO_CLASS),
        "outcome": ledger["outcome"].astype(str),
    })
    kept = set(split.loc[split["augmented"].astype(int) == 0, "object_id"].astype(str))
    used_rows = (led["outcome"] == USED).to_numpy()
    in_split = ledger["object_id"].astype(str).isin(kept).to_numpy()
    led.loc[used_rows & ~in_split, "outcome"] = CAPPED
    n_used = int((used_rows & in_split).sum())
    if n_used != len(kept):
        raise InputError(source, f"holds {len(kept)} objects but the ledger used only {n_used} of them",
                         hint="the files under results/data come from different runs: delete them and run again")
    counts = led.groupby(["category", "class_name", "outcome"]).size().unstack("outcome", fill_value=0)
    table = pd.DataFrame(index=counts.index)
    table["export_rows"] = counts.sum(axis=1)
    table["used"] = counts[USED] if USED in counts.columns else 0
    for reason in [r for r in REASONS if r in counts.columns] + [CAPPED]:
        table[f"dropped_{reason}"] = counts[reason] if reason in counts.columns else 0
    table = table.astype(int).reset_index()
    rank = {c: i for i, c in enumerate(list(classes) + [NO_CLASS])}
    table["_rank"] = table["class_name"].map(rank).fillna(len(rank)).astype(int)
    table = table.sort_values(["_rank", "class_name", "category"], kind="stable").drop(columns="_rank")
    total = table.drop(columns=["category", "class_name"]).sum()
    table.loc[len(table)] = {"category": "TOTAL", "class_name": "", **total.to_dict()}
    dropped = table[[c for c in table.columns if c.startswith("dropped_")]].sum(axis=1)
    good = table["export_rows"] == table["used"] + dropped
    table["check"] = np.where(good, "ok", "MISMATCH")
    if not good.all():  # cannot happen: every row of the ledger has exactly one outcome
        raise AssertionError(f"accounting does not add up:\n{table[~good].to_string()}")
    return table.reset_index(drop=True)


def accounting_html(table: pd.DataFrame) -> str:
    """The accounting table as an HTML page for the report, every column explained."""
    from .evaluate import html_page, html_table

    heads = {"category": "object_annotation_category as written in the export",
             "class_name": "the configured class it maps to (exact name, lineage or class_mapping)",
             "export_rows": "rows of the export (one per image of an object)",
             "used": "objects in the train, valid or test split (augmented copies not counted)",
             "check": "ok: rows of the export = used + dropped"}
    meanings = dict(REASONS, **{CAPPED: CAPPED_MEANING})
    for c in table.columns:
        if c.startswith("dropped_"):
            heads[c] = meanings.get(c[len("dropped_"):], "")
    labels = {c: c.replace("dropped_", "dropped: ").replace("_", " ") for c in table.columns}
    labels.update({"class_name": "class", "export_rows": "rows of the export"})
    body = ('<p class="note">Every row of the export, per EcoTaxa category and the class it maps to: '
            'rows of the export = used + dropped (by reason). "used" counts the objects in the train, valid '
            'or test split; "dropped: capped by balance" the usable objects that balance.cap left out. Hover '
            'over a column name for its meaning; results/data/ledger.tsv says what happened to every single '
            'row, and results/data/accounting.tsv holds this table.</p>')
    return html_page("Data: accounting of every row of the export",
                     body + html_table(table, headers=heads, total_rows=("TOTAL",), labels=labels))


def summarise_data(ledger_path, objects_path, split_path, summary_out, classes, accounting_out=None,
                   accounting_html_out=None):
    """Per class: rows in the export, used, dropped by reason, kept after balancing, augmented, per split.

    Rows that map to no configured class are counted under '(no class)'. The
    last row holds the totals; ``export_rows`` = ``used`` + the ``dropped_*`` columns.
    With ``accounting_out`` (and ``accounting_html_out``), also the :func:`accounting` table.
    """
    ledger = read_tsv(ledger_path)
    split = read_tsv(split_path)
    if accounting_out or accounting_html_out:
        acc = accounting(ledger, split, classes, source=str(split_path))
        if accounting_out:
            write_tsv(accounting_out, acc)
        if accounting_html_out:
            write_text(accounting_html_out, accounting_html(acc))
        for line in acc.to_string(index=False).splitlines():
            log.info("%s", line)
    ledger["class_name"] = ledger["class_name"].replace("", "(no class)")
    order = list(classes) + ["(no class)"]
    table = pd.DataFrame(index=pd.Index(order, name="class_name"))
    table["export_rows"] = ledger.groupby("class_name").size()
    table["used"] = ledger[ledger["outcome"] == USED].groupby("class_name").size()
    for reason in [r for r in REASONS if r in set(ledger["outcome"])]:
        table[f"dropped_{reason}"] = ledger[ledger["outcome"] == reason].groupby("class_name").size()
    aug = split["augmented"].astype(int)
    table["balanced_originals"] = split[aug == 0].groupby("class_name").size()
    table["augmented_copies"] = split[aug == 1].groupby("class_name").size()
    for s in SPLITS:
        table[s] = split[split["split"] == s].groupby("class_name").size()
    table = table.fillna(0).astype(int)
    table.loc["TOTAL"] = table.sum()
    dropped = table[[c for c in table.columns if c.startswith("dropped_")]].sum(axis=1)
    if not (table["export_rows"] == table["used"] + dropped).all():
        raise AssertionError("ledger does not add up")  # cannot happen: every row has one outcome
    table = table.reset_index()
    write_tsv(summary_out, table)
    for line in table.to_string(index=False).splitlines():
        log.info("%s", line)
    return table
