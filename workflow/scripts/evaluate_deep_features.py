"""Rule evaluate_deep_features: the evaluate_model outputs for a deep_features experiment."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.deep_features import evaluate_deep_features

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


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
