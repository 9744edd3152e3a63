"""Rule record_normalisation: write how a trained experiment's images were normalised, next to its model."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.predict import record_normalisation

    p = dict(smk.params.normalisation)
    record_normalisation(
        model_path=smk.input.model,
        classes_path=smk.input.classes,
        columns_path=smk.input.get("columns"),
        cnn_model_path=smk.input.get("cnn_model"),
        objects_path=smk.input.objects,
        out=smk.output.record,
        experiment=smk.wildcards.experiment,
        **p,
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
