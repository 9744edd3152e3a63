"""Rule evaluate_deep_features: the evaluate_model outputs for a deep_features experiment."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.deep_features import evaluate_deep_features
    from lokiml.descriptors import load_model
    from lokiml.extra_objects import predict_extra_deep_features
    from lokiml.predictors import used_columns

    evaluate_deep_features(
        model_path=smk.input.model,
        classes_path=smk.input.classes,
        columns_path=smk.input.columns,
        grid_path=smk.input.grid,
        info_path=smk.input.info,
        features_path=smk.input.features,
        index_path=smk.input.index,
        objects_path=smk.input.objects,
        split_path=smk.input.split,
        classes=list(smk.params.classes),
        outputs=dict(smk.output.items()),
        experiment=smk.wildcards.experiment,
        ece_bins=smk.params.ece_bins,
        store_npys=list(smk.input.npys),
        store_indexes=list(smk.input.indexes),
        cnn=dict(smk.params.cnn),
        valid_path=smk.input.valid,
        estimate_path=smk.input.get("estimate"),
    )
    # the objects training never saw, for the decisions (rule evaluate_decisions)
    predict_extra_deep_features(load_model(smk.input.model), smk.input.extra_features,
                                smk.input.extra_features_index, smk.input.extra_objects,
                                used_columns(smk.input.columns), _classes(smk.input.classes),
                                smk.output.extra_predictions, smk.output.extra_probabilities)


def _classes(path):
    with open(path, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
