"""Rule read_export: EcoTaxa export -> clean objects table, ledger of every input row, image manifest."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.pipeline import read_export

    read_export(
        export_path=smk.input.export,
        mapping_path=smk.input.mapping[0] if smk.input.mapping else None,
        objects_out=smk.output.objects,
        ledger_out=smk.output.ledger,
        manifest_out=smk.output.manifest,
        threads=smk.threads,
        mem_mb=smk.resources.get("mem_mb"),
        **{k: v for k, v in smk.params.items() if k != "code"},  # code: the library digest (common.smk)
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
