import os
import stat

import numpy as np
import pandas as pd
import pytest

from lokiml.io import atomic_path, save_npy, write_tsv


def test_atomic_write_leaves_no_partial_file_on_error(tmp_path):
    target = tmp_path / "out.tsv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_outputs_get_normal_permissions_not_private(tmp_path):
    old = os.umask(0o022)
    try:
        write_tsv(tmp_path / "t.tsv", pd.DataFrame({"a": [1]}))
        save_npy(tmp_path / "a.npy", np.zeros(3, np.uint8))
    finally:
        os.umask(old)
    for f in ["t.tsv", "a.npy"]:
        assert stat.S_IMODE((tmp_path / f).stat().st_mode) == 0o644


def test_unchanged_table_is_byte_identical(tmp_path):
    df = pd.DataFrame({"x": [0.1234567891, 2.0], "y": ["a", "b"]})
    write_tsv(tmp_path / "a.tsv", df)
    first = (tmp_path / "a.tsv").read_bytes()
    write_tsv(tmp_path / "a.tsv", df.copy())
    assert (tmp_path / "a.tsv").read_bytes() == first


def test_job_log_gets_native_output_and_ends_with_time_and_peak_memory(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    log = tmp_path / "logs" / "job.log"
    scripts = Path(__file__).resolve().parents[2] / "workflow" / "scripts"
    code = (f"import sys; sys.path.insert(0, {str(scripts)!r})\n"
            "from lokiml.logs import redirect_to_log\n"
            f"redirect_to_log({str(log)!r})\n"
            "import os, numpy as np\n"
            "os.write(2, b'native message\\n')\n"
            "a = np.ones(50 * 2**20 // 8); a += 1\n")
    # started by a parent that holds 400 MB, as Snakemake holds its DAG: the job's own peak is
    # reported, not the parent's (Linux keeps getrusage's ru_maxrss across fork and exec)
    parent = ("import subprocess, sys, numpy as np\n"
              "held = np.ones(400 * 2**20 // 8); held += 1\n"
              f"subprocess.run([sys.executable, '-c', {code!r}], check=True)\n")
    subprocess.run([sys.executable, "-c", parent], check=True, capture_output=True)
    lines = log.read_text().splitlines()
    assert "native message" in lines
    assert "job finished:" in lines[-1]
    peak = float(lines[-1].split("peak memory ")[1].split(" MB")[0])
    assert 50 <= peak < 300, peak


def _write_in_child(tmp_path, target, env):
    """Write ``target`` with lokiml.io.write_text in a child process (its own process group); return it."""
    import subprocess
    import sys
    from pathlib import Path

    scripts = Path(__file__).resolve().parents[2] / "workflow" / "scripts"
    code = (f"import sys; sys.path.insert(0, {str(scripts)!r})\n"
            "from lokiml.io import write_text\n"
            f"write_text({str(target)!r}, 'finished\\n')\n")
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, **env},
                          capture_output=True, text=True, start_new_session=True)


@pytest.mark.parametrize("mode", ["job", "power"])
def test_fault_hook_kills_after_the_temporary_file_is_written_before_the_rename(tmp_path, mode):
    import signal

    res = _write_in_child(tmp_path, "out/a.tsv", {"LOKIML_FAULT": "out/*.tsv", "LOKIML_FAULT_MODE": mode})
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert not (tmp_path / "out" / "a.tsv").exists()
    (left,) = (tmp_path / "out").iterdir()
    assert left.name.startswith(".a.tsv.") and left.read_text() == "finished\n"
    # the next write of the same target removes what the killed one left behind
    res = _write_in_child(tmp_path, "out/a.tsv", {"LOKIML_FAULT": ""})
    assert res.returncode == 0, res.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.tsv"]


def test_fault_hook_ignores_other_paths(tmp_path):
    res = _write_in_child(tmp_path, "out/b.json", {"LOKIML_FAULT": "out/*.tsv"})
    assert res.returncode == 0, res.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["b.json"]


def test_stale_temporaries_of_other_targets_are_kept(tmp_path):
    from lokiml.io import remove_stale_temps, write_text

    (tmp_path / ".a.tsv.abcd1234.tsv").write_text("a killed write of a.tsv")
    (tmp_path / ".b.tsv.abcd1234.tsv").write_text("a killed write of b.tsv")
    (tmp_path / ".a.tsv.notmine.tsv").write_text("not a name atomic_path gives")
    (tmp_path / ".demo.abcd_123").mkdir()
    write_text(tmp_path / "a.tsv", "x")
    remove_stale_temps(tmp_path / "demo")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.tsv.notmine.tsv", ".b.tsv.abcd1234.tsv", "a.tsv"]
