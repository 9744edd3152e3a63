"""Rule compute_base_features: the frozen base's pooled features of every image of the store, computed once."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])  # before TensorFlow is imported, so its messages land in the log
    from lokiml.base_features import compute_base_features
    from lokiml.runtime import job_settings

    settings = dict(smk.params.settings)
    compute_base_features(
        model=settings["model"],
        weights_path=smk.input.weights,
        image_size=settings["image_size"],
        store_npys=list(smk.input.npys),
        store_indexes=list(smk.input.indexes),
        out_features=smk.output.features,
        out_index=smk.output.index,
        batch_size=settings["batch_size"],
        threads=smk.threads,
        mixed_precision=settings["mixed_precision"],
        **{k: v for k, v in job_settings(smk).items() if k != "what"},  # the job's gpu resource, device.cpu_fallback
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
