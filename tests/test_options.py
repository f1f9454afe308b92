"""Options objects: round trips, keyword overrides, and the CLI building one per command."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr
from click.testing import CliRunner

from datatools.cli.main import cli
from datatools.convert import ConvertOptions, convert
from datatools.errors import OptionError
from datatools.executor import TaskSlice
from datatools.geometry import Box, RoiSpec
from datatools.instances import InstanceOptions
from datatools.options import OutputOptions, RunOptions
from datatools.patches import PatchOptions
from datatools.sources import ArrayVolume, OpenOptions
from tests.helpers import attrs_of

FULL_CONVERT = ConvertOptions(
    roi=RoiSpec(((1, 5), (None, 8)), "zy"),
    open_options=OpenOptions(level=1, series=2, allow_gaps=True),
    dtype="uint8",
    allow_lossy_cast=True,
    voxel_size=(40.0, 8.0, 8.0),
    unit="nm",
    levels="auto",
    downsample="mode",
    factors=(1, 2, 2),
    as_labels="cells",
    name="img",
    dataset="raw",
    output=OutputOptions(
        chunks=(32, 64, 64), shards=128, codec="gzip", codec_level=5, zarr_format=2
    ),
    run=RunOptions(workers=3, memory_limit=2**26, task=TaskSlice(1, 4)),
)


@pytest.mark.parametrize(
    "options",
    [
        ConvertOptions(),
        FULL_CONVERT,
        ConvertOptions(roi=Box((0, 2, 3), (4, 5, 6)), levels=3),
        PatchOptions(),
        PatchOptions(
            size=(8, 16, 16),
            stride=4,
            edge="constant",
            fill=7.5,
            min_fraction=0.25,
            per_class=True,
            class_rule="any",
            max_per_class=10,
            sampler="blue-noise",
            count=100,
            min_distance=3.5,
            max_patches=50,
            roi=RoiSpec(((None, 10), (2, None), (None, None))),
            output=OutputOptions(chunk_rows=16, overwrite=True),
        ),
        InstanceOptions(),
        InstanceOptions(
            size=(8, 16, 16),
            masks=True,
            zero_others=True,
            edge="reflect",
            ids=(3, 17),
            min_voxels=4,
            max_voxels=400,
            exclude_border=True,
            channels=(1, 0),
            run=RunOptions(workers=1),
        ),
    ],
)
def test_options_round_trip_through_json(options: Any) -> None:
    data = json.loads(json.dumps(options.to_dict()))
    again = type(options).from_dict(data)
    assert again == options
    assert hash(again) == hash(options)  # frozen and tuple-valued: usable as a cache key


def test_overrides_reach_nested_options_by_their_flat_name() -> None:
    options = ConvertOptions().with_overrides(
        chunks=[32, 64, 64], codec="gzip", workers=2, memory_limit=1000, levels="auto"
    )
    assert options.output == OutputOptions(chunks=(32, 64, 64), codec="gzip")
    assert options.run == RunOptions(workers=2, memory_limit=1000)
    assert options.levels == "auto"
    assert options.chunks == (32, 64, 64)
    assert ConvertOptions().chunks == 64


def test_unknown_override_names_the_option() -> None:
    with pytest.raises(OptionError, match=r"^ConvertOptions: unknown option 'chunk_size'$"):
        ConvertOptions().with_overrides(chunk_size=32)
    with pytest.raises(OptionError, match=r"^PatchOptions: unknown option 'colour'$"):
        PatchOptions.from_dict({"colour": 1})


def test_old_level_keyword_is_the_codec_level_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="level= is deprecated: use codec_level="):
        options = PatchOptions().with_overrides(level=7)
    assert options.output.codec_level == 7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": 0}, "--workers 0: must be >= 1"),
        ({"memory_limit": -1}, "--memory-limit -1: must be > 0"),
        ({"zarr_format": 4}, "--zarr-format 4: must be 2 or 3"),
    ],
)
def test_shared_options_are_checked_when_built(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionError, match=f"^{message}$"):
        ConvertOptions().with_overrides(**kwargs)


def test_convert_records_its_options_and_takes_an_options_object(tmp_path: Path) -> None:
    data = np.arange(6 * 10 * 12, dtype=np.uint16).reshape(6, 10, 12)
    options = ConvertOptions(output=OutputOptions(chunks=4), levels=2)
    result = convert(ArrayVolume(data), tmp_path / "a.zarr", options, workers=1)
    assert result.complete
    assert result.chunks == (4, 4, 4)
    recorded = result.params["options"]
    assert ConvertOptions.from_dict(recorded) == options.with_overrides(name="a", downsample="mean")
    assert "run" not in recorded  # workers do not change the output
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "a.zarr" / "0")[:], data)
    again = convert(ArrayVolume(data), tmp_path / "a.zarr", options, workers=2)
    assert (again.units_written, again.complete) == (0, True)  # resumed, other workers


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    path = tmp_path / "v.tif"
    data = np.arange(4 * 16 * 16, dtype=np.uint16).reshape(4, 16, 16)
    tifffile.imwrite(path, data, photometric="minisblack")
    return path


def test_cli_codec_level_and_the_deprecated_level(
    stack: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runner = CliRunner()
    out = tmp_path / "a.zarr"
    result = runner.invoke(cli, ["convert", str(stack), str(out), "--codec-level", "9"])
    assert result.exit_code == 0, result.output
    assert attrs_of(out)["datatools"]["codec"] == {"name": "zstd", "level": 9}
    old = tmp_path / "b.zarr"
    with caplog.at_level(logging.WARNING, logger="datatools"):
        result = runner.invoke(cli, ["convert", str(stack), str(old), "--level", "9"])
    assert result.exit_code == 0, result.output
    assert "--level is deprecated for the compression level: use --codec-level 9" in caplog.text
    assert attrs_of(old)["datatools"]["codec"] == {"name": "zstd", "level": 9}
    both = runner.invoke(
        cli, ["convert", str(stack), str(tmp_path / "c.zarr"), "--level", "1", "--codec-level", "2"]
    )
    assert both.exit_code == 2
    assert "Error: --level: give --codec-level only" in both.output


@pytest.mark.parametrize("command", ["convert", "patches", "instances"])
def test_cli_workers_has_one_meaning(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "--workers INTEGER Threads working on units at once (reading, decoding, encoding)" in (
        text
    )
    assert "--codec-level INTEGER" in text
    assert " --level " not in text  # the old spelling of --codec-level is hidden


def test_cli_quiet_after_the_command(stack: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "a.zarr"
    result = runner.invoke(cli, ["convert", str(stack), str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert logging.getLogger("datatools").level == logging.ERROR
    verbose = runner.invoke(cli, ["convert", str(stack), str(tmp_path / "b.zarr"), "-v"])
    assert verbose.exit_code == 0, verbose.output
    assert logging.getLogger("datatools").level == logging.INFO


def test_cli_bad_value_names_the_option(stack: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    target = str(tmp_path / "a.zarr")
    result = runner.invoke(cli, ["convert", str(stack), target, "--chunks", "6x"])
    assert result.exit_code == 2
    assert "Error: --chunks 6x: expected integers separated by commas" in result.output
    result = runner.invoke(cli, ["convert", str(stack), target, "--memory-limit", "lots"])
    assert result.exit_code == 2
    assert "Error: --memory-limit lots: expected bytes such as 2G or 512M" in result.output
    result = runner.invoke(cli, ["convert", str(stack), target, "--workers", "0"])
    assert result.exit_code == 2
    assert "Error: --workers 0: must be >= 1" in result.output
    assert not Path(target).exists()
