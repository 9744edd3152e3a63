"""Rule extract_deep_features: penultimate-layer features of a CNN experiment for every original object."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])  # before TensorFlow is imported, so its messages land in the log
    from lokiml.deep_features import extract_deep_features
    from lokiml.runtime import job_settings

    device = job_settings(smk)  # the job's gpu resource and config device.cpu_fallback

    extract_deep_features(
        model_path=smk.input.model,
        split_path=smk.input.split,
        store_npys=list(smk.input.npys),
        store_indexes=list(smk.input.indexes),
        out_features=smk.output.features,
        out_index=smk.output.index,
        batch_size=smk.params.batch_size,
        threads=smk.threads,
        gpu_request=device["gpu_request"],
        cpu_fallback=device["cpu_fallback"],
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
