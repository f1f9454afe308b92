"""Start-up: what ``datatools`` imports before it does any work (behaviour, not timing).

Each case runs ``python -X importtime -m datatools ...`` with this interpreter and this checkout
first on ``PYTHONPATH``, and reads the modules it imported from ``-X importtime``'s report.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import h5py
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

import datatools
from datatools.cli.main import COMMANDS, cli
from datatools.errors import UnsupportedInputError
from datatools.sources import open_volume
from datatools.sources.hdf5 import has_signature

ROOT = Path(datatools.__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"
HEAVY = ("SimpleITK", "h5py", "torch", "dask", "distributed", "scipy")
"""Libraries no start-up path and no TIFF input needs."""


def python(*args: str) -> tuple[int, set[str], str]:
    """Run ``python -X importtime ARGS``: its exit status, what it imported (each top-level
    package, and datatools' own modules by their full names), and its standard output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    names = {
        line.split("|")[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    modules = {name.split(".")[0] for name in names} | {
        name for name in names if name.startswith("datatools.")
    }
    return result.returncode, modules, result.stdout


def imported(*args: str) -> tuple[set[str], str]:
    """What ``datatools ARGS`` imports (as :func:`python`), and its standard output."""
    code, modules, out = python("-m", "datatools", *args)
    assert code == 0, out
    return modules, out


def test_importing_the_cli_imports_no_library() -> None:
    _, modules, _ = python("-c", "import datatools.cli, datatools.cli.main")
    assert not modules & {*HEAVY, "zarr", "numpy", "tifffile"}


@pytest.mark.parametrize(
    ("option", "start"), [("--version", "datatools, version"), ("--help", "Usage:")]
)
def test_version_and_help_import_no_command(option: str, start: str) -> None:
    modules, out = imported(option)
    assert out.startswith(start), out
    assert not modules & {*HEAVY, "zarr", "numpy", "tifffile"}
    assert {m for m in modules if m.startswith("datatools.")} <= {
        "datatools.cli",
        "datatools.cli.main",
        "datatools.cli.verbosity",
        "datatools.errors",
    }


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_help_imports_no_heavy_library(command: str) -> None:
    modules, out = imported(command, "--help")
    assert f"datatools {command}" in out
    assert not modules & set(HEAVY)


def test_info_on_a_tiff_imports_no_other_reader(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    data = np.arange(4 * 8 * 8, dtype=np.uint16).reshape(4, 8, 8)
    tifffile.imwrite(path, data, photometric="minisblack")
    for spec in (path, SAMPLE / "stack"):
        modules, out = imported("info", str(spec))
        assert "uint16" in out
        assert not modules & {*HEAVY, "zarr"}, spec


def test_info_on_a_compressed_tiff_imports_no_hdf5_or_itk_reader() -> None:
    # tifffile decodes compressed strips through a Zarr store, so zarr loads here
    modules, out = imported("info", str(SAMPLE / "mask.tif"))
    assert "tiff-file" in out
    assert not modules & set(HEAVY)


def test_help_lists_what_each_command_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "commands", {})  # none loaded yet, as in a fresh process
    lazy = CliRunner().invoke(cli, ["--help"], prog_name="datatools")
    assert lazy.exit_code == 0, lazy.output
    assert not cli.commands
    context = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(context, name)
        assert command is not None
        for limit in (45, 63, 1000):
            summary = click.Command(name, help=COMMANDS[name][1])
            assert summary.get_short_help_str(limit) == command.get_short_help_str(limit), name
    loaded = CliRunner().invoke(cli, ["--help"], prog_name="datatools")
    assert lazy.stdout == loaded.stdout


def test_a_mistyped_command_gets_a_suggestion() -> None:
    result = CliRunner().invoke(cli, ["convrt"], prog_name="datatools")
    assert result.exit_code == 2
    assert "No such command 'convrt'. Did you mean 'convert'?" in result.stderr


def test_an_unknown_input_names_every_kind_tried(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not an image")
    with pytest.raises(UnsupportedInputError) as info:
        open_volume(str(path))
    assert str(info.value) == (
        f"{path}: not a volume datatools can open (tried: zarr, tiff-stack, hdf5, tiff-file, itk)"
    )


@pytest.mark.parametrize("userblock", [0, 512, 4096])
def test_hdf5_is_recognised_by_its_signature_as_h5py_does(tmp_path: Path, userblock: int) -> None:
    path = tmp_path / "volume.data"  # no HDF5 suffix: only the signature tells
    with h5py.File(path, "w", userblock_size=userblock) as fh:
        fh["raw"] = np.zeros((2, 3, 4), np.uint8)
    head = path.read_bytes()[userblock : userblock + 8]
    shifted = tmp_path / "shifted.data"  # the signature at 768: not where HDF5 looks
    shifted.write_bytes(b"\0" * 768 + head + b"\0" * 2048)
    for candidate in (path, shifted, tmp_path / "empty.data"):
        candidate.touch()
        assert has_signature(candidate) == h5py.is_hdf5(candidate), candidate
    assert has_signature(path)
    assert not has_signature(shifted)
