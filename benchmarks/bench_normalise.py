"""Benchmark: normalisation throughput per core, lokiml's store against the seed's image-by-image JPEG loop.

    .venv/bin/python benchmarks/bench_normalise.py [--n 200 --sizes 1000,1530,299]
    .venv/bin/python benchmarks/bench_normalise.py --smoke     # tiny sizes, seconds (run by the tests)

Writes ``--n`` LOKI-like JPEGs (benchmarks/loki_like.py: 300-1500 px sides, varied aspect ratios,
a dark organism on a near-white noisy background, three equal channels like the LOKI JPEGs the
seed read) into a temporary folder, then normalises the same images to each of ``--sizes``, in
this process, one core each:

* seed: what the seed's scripts did (o2a-data/o2a-data-ml). Step 2
  (example-scripts/preprocessing_lokiDataset_deepLearning_step2_imagePreparation.py) as written:
  ``skimage.io.imread`` every image, keep channel 0, crop to the pixels darker than 245
  (``img[np.ix_(mask.any(1), mask.any(0))]``), paste each crop centred on a white square canvas
  whose side is the *largest crop of the dataset*, save one JPEG per image with PIL. Then the
  scaling to the experiment's size: the seed's 1000 px experiments read a folder
  ``Trainingsdatensatz_cropped_scaled`` made by a step that is not in its repository; it is
  reconstructed here as ``skimage.io.imread``, ``skimage.transform.resize`` (its defaults:
  bilinear, anti-aliasing, float64), ``skimage.io.imsave`` one JPEG per image. Step 2 is timed
  once and counted in every size (normalising to a size from scratch needs it).
* seed at its cheapest: the same steps in one pass, each crop on its own square, the resize
  done by PIL (LANCZOS on uint8) and one JPEG saved: the least the seed's approach could cost
  if its missing scaling step had been written that way. A lower bound, not what the seed did.
* lokiml: :func:`lokiml.store.normalise_shard`, which rule ``normalise_images`` runs (through
  :func:`lokiml.pipeline.normalise_images`, which only adds reading the balanced table and
  opening the export), with ``threads=1`` and no cache: decode to grey, crop at 245, centre on a
  square of the border's median grey, resize (LANCZOS down, BILINEAR up), one uint8 ``.npy`` shard.

Rates are images per CPU-second of this process (one thread each, so per core; the machine may
be shared, which inflates wall time but hardly CPU time); wall-clock rates are printed too. Each
method is warmed up on a few images first. The mean absolute difference between lokiml's images
and the one-pass seed's (decoded) JPEGs is printed as a check that both did the same work; it is
not 0: the canvas grey (border median vs white), resampling filters and JPEG compression differ.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "workflow" / "scripts"))
sys.path.insert(0, str(HERE))

TOLERANCE = 245  # the seed's cropImageTolerance
LOKIML = "lokiml normalise_shard (uint8 store)"
SMOKE = ["--n", "4", "--sizes", "64"]


def _timed(fn, *args) -> tuple[float, float]:
    """(CPU s, wall s) of ``fn(*args)``."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn(*args)
    return time.process_time() - c0, time.perf_counter() - t0


def seed_step2(paths, out_dir: Path) -> tuple[float, float]:
    """The seed's step 2 as written (seed_baseline.step2): crops on a canvas of the dataset's largest crop."""
    from seed_baseline import step2

    return _timed(step2, paths, out_dir)


def seed_scale(paths, step2_dir: Path, out_dir: Path, size: int) -> tuple[float, float]:
    """The missing scaling step, reconstructed with scikit-image (seed_baseline.scale_step)."""
    from seed_baseline import scale_step

    return _timed(scale_step, paths, step2_dir, out_dir, size)


def seed_cheapest(paths, out_dir: Path, size: int) -> tuple[float, float]:
    """The seed's steps in one pass, PIL's resize (seed_baseline.prepare_cheapest): a lower bound of its cost."""
    from seed_baseline import prepare_cheapest

    return _timed(prepare_cheapest, paths, out_dir, size)


def run_lokiml(paths, out_dir: Path, size: int) -> tuple[float, float, np.ndarray]:
    from lokiml.store import NormParams, normalise_shard

    out_dir.mkdir(parents=True, exist_ok=True)
    folder = paths[0].parent
    items = pd.DataFrame({"item_id": [p.stem for p in paths], "image_ref": [p.name for p in paths],
                          "flip": 0, "angle": 0.0, "dx": 0.0, "dy": 0.0})
    c0, t0 = time.process_time(), time.perf_counter()
    index = normalise_shard(items, lambda ref: (folder / ref).read_bytes(), NormParams(size=size, threshold=TOLERANCE),
                            out_dir / "shard0.npy", out_dir / "shard0.tsv", threads=1, cache_dir=None)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    assert (index["status"] == "ok").all(), index[index["status"] != "ok"]
    return cpu, wall, np.load(out_dir / "shard0.npy", mmap_mode="r")


def mean_abs_diff(store: np.ndarray, seed_dir: Path, paths) -> float:
    from PIL import Image

    diffs = [np.abs(store[i].astype(np.int16) - np.asarray(Image.open(seed_dir / p.name).convert("L"), np.int16)).mean()
             for i, p in enumerate(paths)]  # the store is sorted by item_id = file stem, like paths
    return float(np.mean(diffs))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="number of images (default 200)")
    ap.add_argument("--sizes", default="1000,1530,299",
                    help="target sizes in px, comma-separated (default 1000,1530,299: the seed's two and a small one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", help="keep images and outputs here (default: a temporary folder)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, seconds: " + " ".join(SMOKE))
    args = ap.parse_args(argv)
    if args.smoke:
        args = ap.parse_args([*SMOKE, *(argv if argv is not None else sys.argv[1:])])
    logging.basicConfig(level=logging.WARNING)
    import loki_like
    import PIL
    import skimage
    from PIL import Image

    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.workdir or tmp)
        t0 = time.perf_counter()
        paths = loki_like.write_images(root / "src", args.n, seed=args.seed)
        pixels = np.mean([np.prod(Image.open(p).size) for p in paths]) / 1e6
        print(f"{len(paths)} LOKI-like JPEGs, mean {pixels:.2f} Mpixel, written in {time.perf_counter() - t0:.1f} s; "
              f"scikit-image {skimage.__version__}, Pillow {PIL.__version__}, 1 thread each")
        warm = paths[:3]  # warm-ups, not timed
        seed_step2(warm, root / "warm")
        step2 = seed_step2(paths, root / "seed_step2")
        print(f"seed step 2 (read, crop, paste on a {Image.open(root / 'seed_step2' / paths[0].name).size[0]} px "
              f"canvas, JPEG): {len(paths) / step2[0]:.1f} images/s per core, counted in every size below")
        for size in sizes:
            seed_scale(warm, root / "warm", root / "warm_scaled", size)
            seed_cheapest(warm, root / "warm", size)
            run_lokiml(warm, root / "warm_lokiml", size)

            scale = seed_scale(paths, root / "seed_step2", root / f"seed_{size}", size)
            results = {
                "seed (step 2 + skimage scaling step)": (step2[0] + scale[0], step2[1] + scale[1]),
                "seed at its cheapest (one pass, PIL resize)": seed_cheapest(paths, root / f"cheap_{size}", size),
            }
            cpu, wall, store = run_lokiml(paths, root / f"lokiml_{size}", size)
            results[LOKIML] = (cpu, wall)
            diff = mean_abs_diff(store, root / f"cheap_{size}", paths)

            n = len(paths)
            print(f"\n{size} px{'':<42s}images/s per core   (wall)   lokiml is")
            for name, (cpu, wall) in results.items():
                ratio = "" if name.startswith("lokiml") else f"{cpu / results[LOKIML][0]:5.1f}x faster"
                print(f"  {name:<46s} {n / cpu:8.1f}        ({n / wall:6.1f})   {ratio}")
            print(f"  mean |lokiml - seed at its cheapest| per pixel: {diff:.1f} grey levels (same crop and centring; "
                  "canvas grey, filters and JPEG differ)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
