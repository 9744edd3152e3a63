"""A copy of the project in a temporary folder, for tests that run Snakemake (results never mix with a user's)."""

import os
import shutil
import tempfile

COPY = ["config", "workflow", "profiles", "tests/workflow/tiny.yaml"]  # Snakemake finds workflow/Snakefile


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


_SHIM = []


def local_env(**extra):
    """The environment of a local (not SLURM) Snakemake run in the tests.

    Snakemake's SLURM executor plugin runs `scontrol show config` whenever Snakemake starts; where
    SLURM is installed but no controller answers (CI, after tests/slurm stopped its cluster) that
    waits 9-10 s per call. A stand-in `scontrol` that fails at once, first on PATH, keeps local runs
    at their own speed. Fault injection (LOKIML_FAULT*) is never inherited.
    """
    if not _SHIM:
        shim = tempfile.mkdtemp(prefix="lokiml-shim-")
        with open(os.path.join(shim, "scontrol"), "w") as f:
            f.write("#!/bin/sh\nexit 1\n")
        os.chmod(os.path.join(shim, "scontrol"), 0o755)
        _SHIM.append(shim)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOKIML_FAULT")}
    return dict(env, PYTHONHASHSEED="0", PATH=f"{_SHIM[0]}{os.pathsep}{env.get('PATH', '')}", **extra)
