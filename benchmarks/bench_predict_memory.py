"""Prediction at cruise scale: peak memory and throughput of the predict job at N = 10 000 and 100 000.

    .venv/bin/python benchmarks/bench_predict_memory.py [--sizes 10000 100000 --size 64 --model mobilenetv2]
    .venv/bin/python benchmarks/bench_predict_memory.py --smoke    # tiny sizes, seconds (run by the tests)

For each N it writes a plain folder of N synthetic JPEGs (``--images loki``, the default: LOKI-sized,
300-1500 px sides, copies of a pool of distinct benchmarks/loki_like.py images, each with its own
bytes; ``--images small``: 60-140 px ellipses, which stand for the per-object costs only: tables,
zip directory, import check), saves an untrained classifier (lokiml.models.build_model: the
cost, not the accuracy, is measured) with its normalisation record, and runs the whole predict
job (:func:`lokiml.predict.predict_job`: listing, chunked threaded decoding and normalisation,
batched prediction, the EcoTaxa import table, the top-3 CSV, the zip bundle with all N images,
and the check of the bundle against EcoTaxa's import rules) in a fresh child process, whose peak
resident memory (``VmHWM``) is reported. Memory is bounded by the chunk of
normalised images (at most 1024 images or 256 MB, two chunks at a time), the block of output rows
(lokiml.predict.BLOCK), the model and TensorFlow; what grows with N is the object list, the
probabilities and the zip's directory (a few hundred bytes per object). The figure to look at is
the difference between the two peaks.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))


SMOKE = ["--sizes", "40", "80", "--size", "32", "--batch", "16", "--images", "small"]


def write_images(folder: Path, n: int, kind: str) -> None:
    from loki_like import image_maker

    image = image_maker(kind)
    folder.mkdir(parents=True, exist_ok=True)

    def write(i):
        (folder / f"{i:07d}.jpg").write_bytes(image(i))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(n)))


def child(workdir: Path, threads: int, batch: int) -> None:
    """Run one predict job on workdir/images; print a JSON line with the figures."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    from lokiml.logs import peak_rss_mb
    from lokiml.predict import predict_job

    out = workdir / "out"
    t = time.perf_counter()
    summary = predict_job(workdir / "images", workdir / "model.keras", workdir / "normalisation.json", "bench",
                          out / "ecotaxa_bench.tsv", out / "ecotaxa_bench.zip", out / "top3.csv", out / "summary.json",
                          threshold=0.0, batch_size=batch, threads=threads)
    wall = time.perf_counter() - t
    peak = peak_rss_mb()  # VmHWM: ru_maxrss would include this bench's own size at the fork
    print(json.dumps({"wall_s": wall, "peak_mb": peak, "counts": summary["counts"],
                      "zip_mb": (out / "ecotaxa_bench.zip").stat().st_size / 2**20}))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--size", type=int, default=64, help="image size of the classifier (px)")
    ap.add_argument("--model", default="mobilenetv2")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--images", choices=["loki", "small"], default="loki",
                    help="LOKI-sized JPEGs (default) or small ones that stand for the per-object costs only")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: " + " ".join(SMOKE))
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.smoke:
        args = ap.parse_args([*SMOKE, *(argv if argv is not None else sys.argv[1:])])
    if args.child:
        return child(args.child, args.threads, args.batch)

    from lokiml import models
    from lokiml.predict import record_normalisation

    peaks = {}
    for n in args.sizes:
        wd = Path(tempfile.mkdtemp(prefix=f"lokiml-predict-{n}-"))
        try:
            t = time.perf_counter()
            write_images(wd / "images", n, args.images)
            print(f"[{n}] {n} JPEGs ({args.images}) written in {time.perf_counter() - t:.1f} s")
            model, _ = models.build_model(args.model, 7, args.size)
            model.save(wd / "model.keras")
            (wd / "classes.txt").write_text("".join(f"class{k}\n" for k in range(7)))
            record_normalisation(wd / "model.keras", wd / "classes.txt", None, wd / "normalisation.json", "bench",
                                 image_size=args.size, threshold=245, polarity="dark", bottom_crop=0.0,
                                 max_pixels=10**8)
            proc = subprocess.run([sys.executable, __file__, "--child", str(wd), "--threads", str(args.threads),
                                   "--batch", str(args.batch)], capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"predict job failed:\n{proc.stderr[-4000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            progress = [line for line in proc.stderr.splitlines() if "predict bench" in line]
            peaks[n] = r["peak_mb"]
            print(f"[{n}] predict job ({args.model} {args.size} px, batch {args.batch}, {args.threads} threads): "
                  f"{r['wall_s']:.1f} s, {n / r['wall_s']:.0f} images/s end to end (import table, top-3 CSV and a "
                  f"{r['zip_mb']:.0f} MB zip bundle included); peak RSS {r['peak_mb']:.0f} MB; "
                  f"{r['counts']['predicted']} predicted, {r['counts']['unreadable']} unreadable; "
                  f"{len(progress)} progress lines in the log")
        finally:
            shutil.rmtree(wd, ignore_errors=True)
    if len(peaks) > 1:
        (n0, p0), (n1, p1) = sorted(peaks.items())[0], sorted(peaks.items())[-1]
        print(f"peak RSS at {n1} images vs {n0}: {p1:.0f} MB vs {p0:.0f} MB "
              f"({p1 - p0:+.0f} MB for {n1 - n0} more images, {(p1 - p0) * 2**20 / (n1 - n0):.0f} bytes per image)")


if __name__ == "__main__":
    main()
