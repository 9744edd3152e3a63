"""Rule evaluate_model: predict the valid and test splits with the best checkpoint; tables, figures, summary."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])  # before TensorFlow is imported, so its messages land in the log
    from lokiml.evaluate import evaluate_experiment, load_classifier
    from lokiml.extra_objects import predict_extra_cnn
    from lokiml.runtime import configure, job_settings

    # Threads, the device check (the job's gpu resource, config device.cpu_fallback), float32 inference;
    # before the model is loaded.
    configure(smk.threads, {"mixed_precision": False}, **job_settings(smk))
    model = load_classifier(smk.input.model)
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
        model=model,
        # the frozen base's features, computed once (rule compute_base_features), where they apply
        base_features=(smk.input.base_features, smk.input.base_index) if "base_features" in smk.input.keys() else None,
    )
    # the objects training never saw, for the decisions (rule evaluate_decisions)
    predict_extra_cnn(model, smk.input.extra_objects, smk.input.extra_npy, smk.input.extra_index,
                      _classes(smk.input.classes),
                      smk.output.extra_predictions, smk.output.extra_probabilities,
                      batch_size=smk.params.batch_size)


def _classes(path):
    with open(path, encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
