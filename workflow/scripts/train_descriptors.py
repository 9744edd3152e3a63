"""Rule train_descriptors: a scikit-learn classifier on the descriptors, chosen on the valid split, refitted."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.descriptors import train_descriptors

    train_descriptors(
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
        morphometrics=list(smk.input.morphometrics),
        morpho_params=dict(smk.params.morphometrics),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
