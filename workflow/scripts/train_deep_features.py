"""Rule train_deep_features: a scikit-learn classifier on a CNN's features and the descriptors, chosen on valid."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.deep_features import train_deep_features

    train_deep_features(
        features_path=smk.input.features,
        index_path=smk.input.index,
        objects_path=smk.input.objects,
        split_path=smk.input.split,
        classes=list(smk.params.classes),
        params=dict(smk.params.experiment),
        out_model=smk.output.model,
        out_classes=smk.output.classes,
        out_columns=smk.output.columns,
        out_grid=smk.output.grid,
        out_info=smk.output.info,
        out_valid=smk.output.valid,
        threads=smk.threads,
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
