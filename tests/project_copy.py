"""A copy of the project in a temporary folder, for tests that run Snakemake (results never mix with a user's)."""

import os
import shutil

COPY = ["Snakefile", "config", "workflow", "profiles", "tests/workflow/tiny.yaml"]


def make_copy(root, dest):
    """Copy what a run needs from ``root`` into ``dest``; the .venv is used where it is (sys.executable)."""
    for item in COPY:
        src = root / item
        target = dest / os.path.basename(item)
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, target)
    return dest
