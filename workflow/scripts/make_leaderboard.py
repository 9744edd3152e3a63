"""Rule make_leaderboard: one row per experiment, sorted by test macro F1."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.evaluate import leaderboard

    leaderboard(
        experiments=list(smk.params.experiments),
        test_metrics=list(smk.input.test_metrics),
        valid_metrics=list(smk.input.valid_metrics),
        infos=list(smk.input.infos),
        settings=dict(smk.params.settings),
        estimates=dict(zip(smk.params.estimated, smk.input.estimates, strict=True)),
        out_tsv=smk.output.tsv,
        out_html=smk.output.html,
        out_figure=smk.output.figure,
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
