"""Rule summarise_data: objects per class at each stage, the ledger's drop reasons, and the accounting."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.pipeline import summarise_data

    summarise_data(smk.input.ledger, smk.input.objects, smk.input.split, smk.output.summary, smk.params.classes,
                   accounting_out=smk.output.accounting, accounting_html_out=smk.output.accounting_html,
                   manifest_path=smk.input.manifest, store_indexes=list(smk.input.indexes),
                   polarity=smk.params.polarity)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
