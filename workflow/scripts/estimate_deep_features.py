"""Rule estimate_deep_features: repeated k-fold (and leave-one-group-out) estimate of a deep_features experiment."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.deep_features import estimate_deep_features

    estimate_deep_features(
        features_path=smk.input.features,
        index_path=smk.input.index,
        objects_path=smk.input.objects,
        split_path=smk.input.split,
        columns_path=smk.input.columns,
        classes=list(smk.params.classes),
        params=dict(smk.params.experiment),
        out_table=smk.output.table,
        out_json=smk.output.summary,
        split=dict(smk.params.split),
        threads=smk.threads,
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
