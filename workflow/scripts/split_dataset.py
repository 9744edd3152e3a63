"""Rule split_dataset: train/valid/test per class; augmented copies follow their original."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.pipeline import split_dataset

    split_dataset(smk.input.balanced, smk.input.objects, smk.output.split, **{k: v for k, v in smk.params.items() if k != "code"})


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
