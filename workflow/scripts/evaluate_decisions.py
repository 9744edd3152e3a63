"""Rule evaluate_decisions: trust thresholds, natural-frequency evaluation, abundances and unknowns."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.decision_report import evaluate_decisions

    d = dict(smk.params.decisions)
    evaluate_decisions(
        classes_path=smk.input.classes,
        valid_predictions=smk.input.valid_predictions,
        valid_probabilities=smk.input.valid_probabilities,
        test_predictions=smk.input.test_predictions,
        test_probabilities=smk.input.test_probabilities,
        extra_predictions=smk.input.extra_predictions,
        extra_probabilities=smk.input.extra_probabilities,
        extra_objects_path=smk.input.extra_objects,
        counts_path=smk.input.counts,
        objects_path=smk.input.objects,
        outputs=dict(smk.output.items()),
        experiment=smk.wildcards.experiment,
        target_precision=d["target_precision"],
        class_precision=dict(d["class_precision"] or {}),
        confidence=d["confidence"],
        abundance_by=d["abundance_by"],
        lineage=d["lineage"],
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
