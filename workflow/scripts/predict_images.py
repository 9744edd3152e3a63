"""Rule predict_images: classify new objects with a trained experiment of any kind; EcoTaxa import table + zip
bundle, each object trusted or to check by the experiment's per-class thresholds, most worth a look first."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])  # before TensorFlow is imported, so its messages land in the log
    from lokiml.predict import predict_job
    from lokiml.runtime import configure, job_settings

    # Threads, the device check (the job's gpu resource, config device.cpu_fallback), float32 inference.
    configure(smk.threads, {"mixed_precision": False}, **job_settings(smk))

    job = dict(smk.params.job)
    predict_job(
        input_path=smk.input.images,
        model_path=smk.input.model,
        record_path=smk.input.record,
        name=smk.wildcards.prediction,
        out_table=smk.output.table,
        out_zip=smk.output.bundle,
        out_top3=smk.output.top3,
        out_summary=smk.output.summary,
        threshold=job["threshold"],
        statuses_to_keep=job["statuses_to_keep"],
        batch_size=job["batch_size"],
        threads=smk.threads,
        decisions_path=smk.input.decisions,
        out_trusted=smk.output.trusted,
        out_to_check=smk.output.to_check,
        cnn_model_path=smk.input.get("cnn_model"),
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
