"""Rule train_model: train one experiment on the normalised, split data."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])  # before TensorFlow is imported, so its messages land in the log
    from lokiml.runtime import job_settings
    from lokiml.train import train_experiment

    device = job_settings(smk)  # the job's gpu resource and config device.cpu_fallback

    train_experiment(
        split_path=smk.input.split,
        store_npys=list(smk.input.npys),
        store_indexes=list(smk.input.indexes),
        classes=list(smk.params.classes),
        out_model=smk.output.model,
        out_best=smk.output.best,
        out_classes=smk.output.classes,
        out_history=smk.output.history,
        out_summary=smk.output.summary,
        out_info=smk.output.info,
        state_dir=smk.params.state_dir,
        params=dict(smk.params.experiment),
        weights_path=smk.input.get("weights"),
        threads=smk.threads,
        # the frozen base's features, computed once (rule compute_base_features), where they apply
        base_features=(smk.input.base_features, smk.input.base_index) if "base_features" in smk.input.keys() else None,
        gpu_request=device["gpu_request"],
        cpu_fallback=device["cpu_fallback"],
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
