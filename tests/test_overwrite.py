"""``--overwrite`` removes an output whole or not at all: never the working directory, never a
folder it cannot empty, and never the marker before the data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import tifffile
from click.testing import CliRunner

from datatools import ledger
from datatools.cli.main import cli
from tests.helpers import arange_volume


@pytest.fixture
def output(tmp_path: Path) -> Path:
    tifffile.imwrite(tmp_path / "v.tif", arange_volume((8, 16, 16)), photometric="minisblack")
    out = tmp_path / "out.zarr"
    result = CliRunner().invoke(
        cli, ["convert", str(tmp_path / "v.tif"), str(out), "--chunks", "8"]
    )
    assert result.exit_code == 0, result.output
    return out


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_overwrite_from_inside_the_output_is_refused_and_removes_nothing(
    output: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = files(output)
    monkeypatch.chdir(output)
    result = CliRunner().invoke(cli, ["convert", "../v.tif", ".", "--overwrite"])
    assert result.exit_code == 2
    assert "is the working directory or holds it; datatools will not remove it" in result.output
    assert files(output) == before
    assert ledger.is_complete(output)


def test_a_folder_that_cannot_be_emptied_stops_the_overwrite_before_anything_goes(
    output: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = output / "0"
    plain = os.access

    def access(name: str | os.PathLike[str], mode: int) -> bool:
        return Path(name) != locked and plain(name, mode)

    before = files(output)
    monkeypatch.setattr(os, "access", access)
    result = CliRunner().invoke(
        cli, ["convert", str(output.parent / "v.tif"), str(output), "--overwrite"]
    )
    assert result.exit_code == 2
    assert f"cannot remove it whole: {locked} is not writable (nothing was removed" in (
        result.output
    )
    assert files(output) == before
    assert ledger.is_ours(output)


def test_overwrite_replaces_the_output_and_leaves_no_sibling(output: Path) -> None:
    result = CliRunner().invoke(
        cli, ["convert", str(output.parent / "v.tif"), str(output), "--overwrite", "--chunks", "4"]
    )
    assert result.exit_code == 0, result.output
    assert ledger.is_complete(output)
    assert sorted(p.name for p in output.parent.iterdir()) == ["out.zarr", "v.tif"]


def test_a_removal_that_fails_half_way_names_what_is_left(
    output: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(path: str | os.PathLike[str], *args: object, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("datatools.ledger.zarr_folder.shutil.rmtree", refuse)
    result = CliRunner().invoke(
        cli, ["convert", str(output.parent / "v.tif"), str(output), "--overwrite"]
    )
    assert result.exit_code == 2
    assert "but not removed whole (Operation not permitted); remove" in result.output
    [aside] = [p for p in output.parent.iterdir() if p.name.endswith(".datatools-partial")]
    assert ledger.is_ours(aside)  # the marker stays with its data
    assert not output.exists()
