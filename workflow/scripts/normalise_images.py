"""Rule normalise_images: crop, centre on a square canvas and resize one shard of the balanced items."""

from lokiml.logs import redirect_to_log


def main(smk):
    redirect_to_log(smk.log[0])
    from lokiml.pipeline import normalise_images

    normalise_images(
        export_path=smk.input.export,
        balanced_path=smk.input.balanced,
        out_npy=smk.output.npy,
        out_index=smk.output.index,
        size=int(smk.wildcards.size),
        shard=int(smk.wildcards.shard),
        threads=smk.threads,
        mem_mb=smk.resources.get("mem_mb"),
        **{k: v for k, v in smk.params.items() if k != "code"},  # code: the library digest (common.smk)
    )


if __name__ == "__main__":
    main(snakemake)  # noqa: F821
