"""Rule balance_classes: cap large classes evenly over time, fill small ones with augmented copies."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.pipeline import balance_classes

    p = {k: v for k, v in smk.params.items() if k != "code"}  # code: the library digest (common.smk)
    balance_classes(smk.input.objects, smk.output.balanced, **p)


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
