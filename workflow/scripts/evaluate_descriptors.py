"""Rule evaluate_descriptors: the evaluate_model outputs for a descriptors experiment."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.descriptors import evaluate_descriptors, load_model
    from lokiml.extra_objects import predict_extra_descriptors
    from lokiml.predictors import used_columns

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
        export_path=smk.input.export,
        images=dict(smk.params.images),
    )
    # the objects training never saw, for the decisions (rule evaluate_decisions)
    predict_extra_descriptors(load_model(smk.input.model), used_columns(smk.input.columns),
                              smk.input.extra_objects, _classes(smk.input.classes), smk.output.extra_predictions,
                              smk.output.extra_probabilities)


def _classes(path):
    with open(path, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
