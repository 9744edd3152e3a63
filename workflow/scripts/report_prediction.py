"""Rule report_prediction: the report page of one prediction job."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.prediction_report import report_prediction

    report_prediction(
        summary_path=smk.input.summary,
        bundle_path=smk.input.bundle,
        table_path=smk.input.table,
        out_html=smk.output.html,
        out_counts=smk.output.counts,
        out_examples=smk.output.examples,
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
