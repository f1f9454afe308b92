"""HDF5 outputs under faults: a full disk or the file size limit stops a run with one line and
the rerun resumes it; an unfinished (partial) file says so in ``info`` and ``verify``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from datatools.cli.main import cli
from datatools.convert import convert
from datatools.info import inspect
from datatools.interrupts import ignored_file_size_signal
from datatools.sources import ArrayVolume
from tests.helpers import arange_volume

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import signal, sys
if sys.argv[1] == "default-sigxfsz":  # as in a program embedding Python
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
if sys.argv[1] == "no-allocation":  # a file system that cannot allocate ahead
    import datatools.ledger.hdf5_file
    datatools.ledger.hdf5_file.allocate = lambda *args: False
sys.argv[:2] = ["datatools"]
from datatools.cli import run
run()
"""
"""A child running the command line: ``python -c CHILD MODE ARGS...``."""
RESUME_HINT = r" \(raise the limit, then rerun the same command to resume\)"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def limited(kib: int, *args: str, mode: str = "python") -> subprocess.CompletedProcess[str]:
    """The command line in a child process whose files may not pass ``kib`` KiB
    (``ulimit -f``)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    shell = ["bash", "-c", f'ulimit -f {kib}; exec "$@"', "bash"]
    return subprocess.run(
        [*shell, sys.executable, "-c", CHILD, mode, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"},
    )


@pytest.fixture
def noise_tif(tmp_path: Path) -> Path:
    """A 4 MiB uint16 TIFF of random values (incompressible, so sizes are predictable)."""
    data = np.random.default_rng(5).integers(0, 2**16, (64, 128, 256), dtype=np.uint16)
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, data)
    return path


def arrays_and_attrs(path: Path) -> dict[str, Any]:
    """Every dataset's values and attributes of an HDF5 file (the record attribute aside)."""
    found: dict[str, Any] = {}
    with h5py.File(path, "r") as fh:

        def collect(name: str, node: object) -> None:
            if isinstance(node, h5py.Dataset):
                found[name] = (node[()], {k: np.asarray(v).tolist() for k, v in node.attrs.items()})

        fh.visititems(collect)
    return found


def assert_same_files(a: Path, b: Path) -> None:
    got, expected = arrays_and_attrs(a), arrays_and_attrs(b)
    assert sorted(got) == sorted(expected)
    for name, (values, attrs) in expected.items():
        np.testing.assert_array_equal(got[name][0], values, err_msg=name)
        assert got[name][1] == attrs, name


@pytest.mark.parametrize("mode", ["python", "default-sigxfsz"])
def test_convert_to_hdf5_past_the_file_size_limit_stops_with_one_line_and_resumes(
    tmp_path: Path, noise_tif: Path, mode: str
) -> None:
    out = tmp_path / "out.h5"
    partial = tmp_path / "out.h5.datatools-partial"
    args = ["-q", "convert", str(noise_tif), str(out), "--chunks", "32", "--memory-limit", "1M"]
    child = limited(2500, *args, mode=mode)
    assert child.returncode == 2, child.stderr
    assert re.fullmatch(
        rf"Error: {re.escape(str(partial))}: file too large: up to [\d.]+ MiB more would pass "
        rf"the file size limit of 2\.4 MiB set by ulimit -f{RESUME_HINT}\n",
        child.stderr,
    ), child.stderr
    status = inspect(str(out))["status"]
    assert status["complete"] is False
    assert 0 < status["units_done"] < status["units_total"], status
    code, text, err = run(*args)  # no limit now
    assert code == 0, err
    assert f"{status['units_done']} already done" in text
    assert not partial.exists()
    assert run(*args[:3], str(tmp_path / "clean.h5"), *args[4:])[0] == 0
    assert_same_files(out, tmp_path / "clean.h5")
    code, text, err = run("verify", str(out), "--against", str(noise_tif))
    assert code == 0, text + err


def test_patches_to_hdf5_past_the_file_size_limit_stops_with_one_line_and_resumes(
    tmp_path: Path, noise_tif: Path
) -> None:
    out = tmp_path / "p.h5"
    partial = tmp_path / "p.h5.datatools-partial"
    args = ["-q", "patches", str(noise_tif), str(out), "--size", "16", "--memory-limit", "2M"]
    child = limited(3500, *args)
    assert child.returncode == 2, child.stderr
    assert re.fullmatch(
        rf"Error: {re.escape(str(partial))}: file too large: up to [\d.]+ MiB more would pass "
        rf"the file size limit of 3\.4 MiB set by ulimit -f{RESUME_HINT}\n",
        child.stderr,
    ), child.stderr
    status = inspect(str(out))["status"]
    assert status["complete"] is False
    assert 0 < status["state"]["rows"] < 512, status  # of 4 x 8 x 16 patches
    code, text, err = run(*args)
    assert code == 0, err
    assert f"{status['state']['rows']} already done" in text
    assert run(*args[:3], str(tmp_path / "clean.h5"), *args[4:])[0] == 0
    assert_same_files(out, tmp_path / "clean.h5")


def test_a_write_hdf5_itself_fails_ends_in_one_line_not_a_crash(
    tmp_path: Path, noise_tif: Path
) -> None:
    out = tmp_path / "out.h5"
    args = ["-q", "convert", str(noise_tif), str(out), "--chunks", "32", "--memory-limit", "1M"]
    child = limited(2500, *args, mode="no-allocation")  # HDF5 meets the limit itself
    assert child.returncode == 2, child.stderr
    lines = child.stderr.splitlines()
    assert len(lines) == 1, child.stderr
    assert lines[0].startswith(f"Error: {out}.datatools-partial: file too large"), lines[0]
    assert lines[0].endswith("it resumes, or says that HDF5 left the file unreadable)")


def test_the_file_size_signal_is_ignored_while_writing_then_restored() -> None:
    before = signal.getsignal(signal.SIGXFSZ)
    with ignored_file_size_signal():
        assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGXFSZ) == before


def test_info_and_verify_on_the_partial_file_report_its_progress(tmp_path: Path) -> None:
    data = arange_volume((16, 16, 16), "uint16")
    out = tmp_path / "o.h5"
    partial = tmp_path / "o.h5.datatools-partial"

    def stop(index: int) -> None:
        if index == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(ArrayVolume(data), out, chunks=4, memory_limit=4096, workers=1, on_unit_done=stop)
    total = inspect(str(out))["status"]["units_total"]
    for spec in (str(partial), f"{partial}:/data"):
        code, text, err = run("info", spec)
        assert code == 0, err
        assert text.splitlines()[0] == f"status       INCOMPLETE (2/{total} units done) (convert)"
    code, text, err = run("info", "--json", f"{partial}:/data")
    assert '"complete": false' in text
    code, text, err = run("verify", str(partial))
    assert code == 2
    assert err == (
        f"Error: {partial}: unfinished (2/{total} units done); rerun the command that makes "
        "o.h5 to finish it, then verify o.h5\n"
    )
    assert "Traceback" not in text + err
