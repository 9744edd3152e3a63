"""Write a copy of an EcoTaxa export zip with every JPEG inverted (light objects on a dark background).

A stand-in for light-on-dark instruments (UVP) made of real images: the ZooScan export of
../shared/data/ecotaxa, read back with ``normalise.polarity: light`` (benchmarks/real_data/zooscan_light.yaml).

    .venv/bin/python benchmarks/real_data/invert_export.py \\
        ../shared/data/ecotaxa/zooscan_export_13539/export_13539_20240728_0803.zip \\
        resources/zooscan_light/export_light.zip
"""

import io
import sys
import zipfile
from pathlib import Path

from PIL import Image, ImageOps


def invert_export(src, dest) -> int:
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name.lower().endswith((".jpg", ".jpeg")):
                img = ImageOps.invert(Image.open(io.BytesIO(data)).convert("L"))
                buf = io.BytesIO()
                img.save(buf, "JPEG", quality=92)
                data = buf.getvalue()
                n += 1
            zout.writestr(name, data)
    return n


if __name__ == "__main__":
    print(f"{invert_export(sys.argv[1], sys.argv[2])} images inverted")
