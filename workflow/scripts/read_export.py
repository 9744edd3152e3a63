"""Rule read_export: EcoTaxa export -> clean objects table + ledger of every input row."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.pipeline import read_export

    read_export(
        export_path=smk.input.export,
        mapping_path=smk.input.mapping[0] if smk.input.mapping else None,
        objects_out=smk.output.objects,
        ledger_out=smk.output.ledger,
        classes=smk.params.classes,
        statuses=smk.params.statuses,
        img_rank=smk.params.img_rank,
        max_pixels=smk.params.max_pixels,
        threads=smk.threads,
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
