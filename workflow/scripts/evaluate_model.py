"""Rule evaluate_model: predict the valid and test splits with the best checkpoint; tables, figures, summary."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])  # before TensorFlow is imported, so its messages land in the log
    from lokiml.evaluate import evaluate_experiment
    from lokiml.runtime import configure, job_settings

    # Threads, the device check (the job's gpu resource, config device.cpu_fallback), float32 inference.
    configure(smk.threads, {"mixed_precision": False}, **job_settings(smk))

    evaluate_experiment(
        model_path=smk.input.model,
        classes_path=smk.input.classes,
        history_path=smk.input.history,
        info_path=smk.input.info,
        split_path=smk.input.split,
        store_npys=list(smk.input.npys),
        store_indexes=list(smk.input.indexes),
        classes=list(smk.params.classes),
        outputs=dict(smk.output.items()),
        experiment=smk.wildcards.experiment,
        params=dict(smk.params.experiment),
        include_augmented=smk.params.include_augmented,
        batch_size=smk.params.batch_size,
        ece_bins=smk.params.ece_bins,
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
