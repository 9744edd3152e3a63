"""Rule compute_morphometrics: shape and grey-level descriptors of one shard of the original objects."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.morphometrics import compute_morphometrics

    compute_morphometrics(
        export_path=smk.input.export,
        balanced_path=smk.input.balanced,
        out_tsv=smk.output.table,
        shard=int(smk.wildcards.shard),
        threads=smk.threads,
        **dict(smk.params.items()),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
