"""Rule compare_classes: the F1 of every class in every experiment, side by side."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.per_class import compare_classes

    compare_classes(
        experiments=list(smk.params.experiments),
        test_reports=list(smk.input.test_reports),
        valid_reports=list(smk.input.valid_reports),
        valid_metrics=list(smk.input.valid_metrics),
        classes=list(smk.params.classes),
        out_figure=smk.output.figure,
        out_tsv=smk.output.tsv,
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
