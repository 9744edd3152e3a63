"""Shared pytest set-up: the importable library on sys.path, and the shared real EcoTaxa data."""

import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))  # shared test helpers (project_copy)


@pytest.fixture(scope="session")
def project_root() -> pathlib.Path:
    return ROOT


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """../shared/data/ecotaxa: real EcoTaxa files. Skipped when absent, except under CI (CI=true)."""
    path = ROOT.parent / "shared" / "data" / "ecotaxa"
    if not path.is_dir():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but the shared EcoTaxa data is missing at {path}")
        pytest.skip(f"shared EcoTaxa data not found at {path} (a fresh clone without ../shared)")
    return path
