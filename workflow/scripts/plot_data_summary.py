"""Rule plot_data_summary: figures and an HTML table of the data stage, for the report."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.evaluate import plot_data_summary

    plot_data_summary(
        summary_path=smk.input.summary,
        split_path=smk.input.split,
        out_objects=smk.output.objects,
        out_dropped=smk.output.dropped,
        out_splits=smk.output.splits,
        out_html=smk.output.table,
        classes=list(smk.params.classes),
        cap=smk.params.cap,
        manifest_path=smk.input.manifest,
        polarity=smk.params.polarity,
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
