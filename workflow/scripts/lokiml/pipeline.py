"""File-level steps of the data-preparation stage: read inputs, call the library, write outputs.

One function per rule; the rule's script only unpacks the ``snakemake`` object.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .balance import balance
from .ecotaxa import open_export
from .io import read_tsv, write_tsv
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
                     polarity="dark", bottom_crop=0.0, max_pixels=100_000_000, threads=1, cache_dir=None):
    balanced = read_tsv(balanced_path)
    mine = balanced[[shard_of(i, shards) == shard for i in balanced["item_id"]]]
    log.info("shard %d/%d at %d px: %d of %d items", shard, shards, size, len(mine), len(balanced))
    params = NormParams(size=size, threshold=threshold, polarity=polarity, bottom_crop=bottom_crop,
                        max_pixels=max_pixels)
    with open_export(export_path) as export:
        return normalise_shard(mine, export.read_image_by_ref, params, out_npy, out_index, threads=threads,
                               cache_dir=cache_dir)


def summarise_data(ledger_path, objects_path, split_path, summary_out, classes):
    """Per class: rows in the export, used, dropped by reason, kept after balancing, augmented, per split.

    Rows that map to no configured class are counted under '(no class)'. The
    last row holds the totals; ``export_rows`` = ``used`` + the ``dropped_*`` columns.
    """
    ledger = read_tsv(ledger_path)
    split = read_tsv(split_path)
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
