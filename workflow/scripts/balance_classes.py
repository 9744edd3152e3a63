"""Rule balance_classes: cap large classes evenly over time, fill small ones with augmented copies."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.pipeline import balance_classes

    p = dict(smk.params.items())
    balance_classes(smk.input.objects, smk.output.balanced, **p)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
