"""Rule collect_extra_objects: the objects training never saw (capped out, of no configured class)."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.extra_objects import collect_extra_objects

    collect_extra_objects(
        export_path=smk.input.export,
        ledger_path=smk.input.ledger,
        objects_path=smk.input.objects,
        split_path=smk.input.split,
        out_objects=smk.output.extra,
        out_counts=smk.output.counts,
        max_per_class=smk.params.max_per_class,
        max_unknowns=smk.params.max_unknowns,
        seed=smk.params.seed,
        group_by=smk.params.group_by,
        holdout=dict(smk.params.holdout) if smk.params.holdout else None,
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
