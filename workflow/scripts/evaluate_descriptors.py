"""Rule evaluate_descriptors: the evaluate_model outputs for a descriptors experiment."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.descriptors import evaluate_descriptors

    evaluate_descriptors(
        model_path=smk.input.model,
        classes_path=smk.input.classes,
        columns_path=smk.input.columns,
        grid_path=smk.input.grid,
        info_path=smk.input.info,
        objects_path=smk.input.objects,
        split_path=smk.input.split,
        classes=list(smk.params.classes),
        outputs=dict(smk.output.items()),
        experiment=smk.wildcards.experiment,
        ece_bins=smk.params.ece_bins,
        valid_path=smk.input.valid,
        estimate_path=smk.input.get("estimate"),
        morphometrics=list(smk.input.morphometrics),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
