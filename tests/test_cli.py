"""CLI tests: help, version, info, convert examples, verify, and the error boundary."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from click.testing import CliRunner

from datatools import ledger
from datatools.cli.main import cli
from tests.helpers import arange_volume

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"


def run(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def stack(tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = arange_volume((12, 20, 24), "uint16")
    folder = tmp_path / "tiffs"
    folder.mkdir()
    for z, plane in enumerate(data):
        tifffile.imwrite(folder / f"s{z}.tif", plane)
    return folder, data


@pytest.mark.parametrize(
    "command", [[], ["info"], ["convert"], ["verify"], ["patches"], ["instances"]]
)
def test_help(command: list[str]) -> None:
    code, out, _ = run(*command, "--help")
    assert code == 0, out
    assert "Usage:" in out
    if command:
        assert "datatools " + command[0] in out  # every command shows an example


def test_version() -> None:
    code, out, _ = run("--version")
    assert code == 0
    assert out.startswith("datatools, version ")


def test_info_sample_stack() -> None:
    code, out, _ = run("info", str(SAMPLE / "stack"))
    assert code == 0, out
    assert "32 x 256 x 256" in out
    assert "uint16" in out


def test_info_json() -> None:
    code, out, _ = run("info", str(SAMPLE / "stack"), "--json")
    assert code == 0, out
    info = json.loads(out)
    assert info["shape"] == [32, 256, 256]
    assert info["axes"] == "zyx"
    assert info["kind"] == "tiff-stack"
    assert info["status"] is None
    assert info["nbytes"] == 32 * 256 * 256 * 2


def test_user_error_is_one_line_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    code, out, err = run("info", str(missing))
    assert code == 2
    assert err == f"Error: {missing}: no such file or directory\n"
    assert "Traceback" not in out + err


def test_convert_folder_roi(tmp_path: Path, stack: tuple[Path, np.ndarray]) -> None:
    folder, data = stack
    out = tmp_path / "out.zarr"
    code, text, err = run(
        "convert",
        str(folder),
        str(out),
        "--z-start",
        "2",
        "--z-end",
        "10",
        "--y-start",
        "0",
        "--y-end",
        "16",
        "--chunks",
        "4",
        "--voxel-size",
        "40,8,8",
        "--unit",
        "nm",
    )
    assert code == 0, text + err
    assert "complete" in text
    np.testing.assert_array_equal(zarr.open_array(out / "0", mode="r")[:], data[2:10, 0:16])
    code, text, _ = run("verify", str(out), "--against", str(folder))
    assert code == 0, text
    info = json.loads(run("info", str(out), "--json")[1])
    assert info["status"]["complete"] is True
    assert info["voxel_size"] == [40.0, 8.0, 8.0]


def test_convert_glob_roi_and_stdin(tmp_path: Path, stack: tuple[Path, np.ndarray]) -> None:
    folder, data = stack
    out = tmp_path / "g.zarr"
    code, text, err = run(
        "convert",
        str(folder / "*.tif"),
        str(out),
        "--roi",
        "3:9,:,10:",
        "--voxel-size",
        "7.91",
        "--unit",
        "micrometer",
    )
    assert code == 0, text + err
    np.testing.assert_array_equal(zarr.open_array(out / "0", mode="r")[:], data[3:9, :, 10:])
    listing = "\n".join(str(folder / f"s{z}.tif") for z in range(12)) + "\n"
    out2 = tmp_path / "stdin.zarr"
    code, text, err = run("convert", "-", str(out2), input=listing)
    assert code == 0, text + err
    np.testing.assert_array_equal(zarr.open_array(out2 / "0", mode="r")[:], data)


def test_convert_hdf5_to_zarr2_and_tiff_to_hdf5(tmp_path: Path) -> None:
    data = arange_volume((6, 10, 12), "uint16")
    src = tmp_path / "volume.h5"
    with h5py.File(src, "w") as fh:
        fh["raw"] = data
    out = tmp_path / "v2.zarr"
    code, text, err = run(
        "convert", f"{src}:/raw", str(out), "--zarr-format", "2", "--codec", "blosc-lz4"
    )
    assert code == 0, text + err
    assert (out / ".zgroup").is_file()
    np.testing.assert_array_equal(zarr.open_array(out / "0", mode="r")[:], data)
    tif = tmp_path / "stack.ome.tif"
    tifffile.imwrite(tif, data, ome=True)
    h5 = tmp_path / "out.h5"
    code, text, err = run("convert", str(tif), str(h5), "--chunks", "3,5,6")
    assert code == 0, text + err
    with h5py.File(h5, "r") as fh:
        np.testing.assert_array_equal(fh["data"][:], data)
        assert fh["data"].chunks == (3, 5, 6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--roi", "0:99,:,:"], "lies outside the volume"),
        (["--chunks", "0"], "--chunks 0: every value must be > 0"),
        (["--chunks", "a"], "--chunks a: expected integers"),
        (["--shards", "3", "--chunks", "2"], "--shards 3,3,3: not a multiple of the chunks"),
        (["--dtype", "uint8"], "--dtype uint8:"),
        (["--task-index", "1"], "--task-index/--task-count: give both or neither"),
        (["--roi", "1:2,:,:", "--z-start", "1"], "give either --roi or the per-axis --z-start"),
        (["--memory-limit", "lots"], "--memory-limit lots: expected bytes"),
        (["--workers", "0"], "--workers 0: must be >= 1"),
        (["--workers", "-3"], "--workers -3: must be >= 1"),
        (["--class-names", "1=a"], "--class-names: only with --split-classes"),
        (["--levels", "9"], "--levels 9: level 6 would repeat level 5 (shape 1 x 1 x 1)"),
    ],
)
def test_convert_bad_options(
    tmp_path: Path, stack: tuple[Path, np.ndarray], args: list[str], message: str
) -> None:
    folder, _ = stack
    out = tmp_path / "bad.zarr"
    code, text, err = run("convert", str(folder), str(out), *args)
    assert code == 2, text + err
    assert err.startswith("Error: "), err
    assert message in err, err
    assert err.count("\n") == 1
    assert not ledger.is_complete(out)


def test_convert_refuses_foreign_target(tmp_path: Path, stack: tuple[Path, np.ndarray]) -> None:
    folder, _ = stack
    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    code, _, err = run("convert", str(folder), str(foreign), "--overwrite")
    assert code == 2
    assert err == (
        f"Error: {foreign}: exists and is a folder datatools did not create; datatools will "
        "not remove it\n"
    )
    assert (foreign / "keep.txt").read_text() == "x"


def test_verify_reports_mismatch_exit_1(tmp_path: Path, stack: tuple[Path, np.ndarray]) -> None:
    folder, data = stack
    out = tmp_path / "o.zarr"
    assert run("convert", str(folder), str(out))[0] == 0
    tifffile.imwrite(folder / "s5.tif", data[5] + 1)
    code, text, _ = run("verify", str(out), "--against", str(folder))
    assert code == 1
    first = data[5, 0, 0]
    assert f"(first at voxel (5, 0, 0): {first} != {first + 1})" in text


def test_four_task_processes_match_one(tmp_path: Path, stack: tuple[Path, np.ndarray]) -> None:
    folder, data = stack
    common = ["--chunks", "4", "--memory-limit", "40K", "--workers", "1", "-q"]
    single = tmp_path / "single.zarr"
    assert run("-q", "convert", str(folder), str(single), *common[:-1])[0] == 0
    shared = tmp_path / "shared.zarr"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "datatools",
                "convert",
                str(folder),
                str(shared),
                *common[:-1],
                "--task-index",
                str(i),
                "--task-count",
                "4",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    failed = "\n".join(f"task {i}: {err[-3000:]}" for i, (_, err) in enumerate(outputs) if err)
    assert [p.returncode for p in procs] == [0, 0, 0, 0], failed
    assert ledger.is_complete(shared)
    np.testing.assert_array_equal(zarr.open_array(shared / "0", mode="r")[:], data)
    files_single = sorted(p.relative_to(single) for p in (single / "0").rglob("*") if p.is_file())
    files_shared = sorted(p.relative_to(shared) for p in (shared / "0").rglob("*") if p.is_file())
    assert files_single == files_shared
    for rel in files_single:
        assert (single / rel).read_bytes() == (shared / rel).read_bytes()


def test_convert_levels_and_labels(tmp_path: Path, stack: tuple[Path, np.ndarray]) -> None:
    folder, _ = stack
    out = tmp_path / "img.zarr"
    code, text, err = run(
        "convert",
        str(folder),
        str(out),
        "--levels",
        "auto",
        "--chunks",
        "8",
        "--voxel-size",
        "4,2,2",
        "--unit",
        "nm",
    )
    assert code == 0, text + err
    labels = tmp_path / "labels.tif"
    tifffile.imwrite(labels, (arange_volume((12, 20, 24), "uint16") // 50).astype("uint16"))
    code, text, err = run("convert", str(labels), str(out), "--as-labels", "cells", "--chunks", "8")
    assert code == 0, text + err
    assert ledger.is_complete(out / "labels" / "cells")
    code, _, err = run(
        "convert", str(labels), str(out), "--as-labels", "more", "--downsample", "mean"
    )
    assert code == 2
    assert err == "Error: --downsample mean: label images take mode or nearest\n"


def test_ctrl_c_exits_130_with_one_line(
    tmp_path: Path, stack: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    from datatools import convert

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(convert, "convert", interrupted)
    folder, _ = stack
    result = CliRunner().invoke(cli, ["convert", str(folder), str(tmp_path / "o.zarr")])
    assert result.exit_code == 130
    assert result.stderr == "Interrupted; rerun the same command to resume.\n"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_an_output_that_is_or_holds_an_input_is_refused_and_nothing_changes(
    tmp_path: Path, stack: tuple[Path, np.ndarray]
) -> None:
    folder, data = stack
    image = tmp_path / "a.zarr"
    assert run("-q", "convert", str(folder), str(image), "--chunks", "8")[0] == 0
    labels = tmp_path / "labels.tif"
    tifffile.imwrite(labels, (data % 3).astype(np.uint16))
    before = snapshot(image), snapshot(folder), labels.read_bytes()
    cases = [
        (["convert", str(image), str(image), "--overwrite"], f"{image}: is also an input"),
        (["convert", str(image / "0"), str(image), "--overwrite"], f"{image}: holds the input"),
        (["convert", str(folder), str(folder), "--overwrite"], f"{folder}: holds the input"),
        (["patches", str(image), str(image), "--size", "8", "--overwrite"], f"{image}: is also"),
        (
            ["instances", str(image), str(labels), str(image), "--size", "4", "--overwrite"],
            f"{image}: is also an input",
        ),
        (["convert", str(labels), str(labels), "--split-classes"], f"{labels}: is also an input"),
    ]
    for args, message in cases:
        code, _, err = run(*args)
        assert code == 2, (args, err)
        assert err.startswith(f"Error: {message}"), err
        assert (snapshot(image), snapshot(folder), labels.read_bytes()) == before


def test_a_refused_label_image_leaves_the_image_as_it_was(
    tmp_path: Path, stack: tuple[Path, np.ndarray]
) -> None:
    folder, data = stack
    image = tmp_path / "img.zarr"
    assert run("-q", "convert", str(folder), str(image))[0] == 0
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, data[:4].astype(np.uint16), photometric="minisblack")
    before = snapshot(image)
    code, _, err = run("convert", str(small), str(image), "--as-labels", "cells")
    assert code == 2
    assert "level shapes" in err
    assert snapshot(image) == before


def test_ctrl_c_while_the_commands_load_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    from datatools.cli import run

    class Interrupt:
        def find_spec(self, name: str, *args: object) -> None:
            if name == "datatools.cli.main":
                raise KeyboardInterrupt

    monkeypatch.delitem(sys.modules, "datatools.cli.main")
    monkeypatch.setattr(sys, "meta_path", [Interrupt(), *sys.meta_path])
    with pytest.raises(SystemExit) as info:
        run()
    assert info.value.code == 130


def test_an_empty_target_folder_counts_as_no_output(
    tmp_path: Path, stack: tuple[Path, np.ndarray]
) -> None:
    folder, data = stack
    labels = tmp_path / "labels.tif"
    tifffile.imwrite(labels, (data % 3).astype(np.uint16))
    for name, command in (
        ("c.zarr", ["convert", str(folder)]),
        ("p.zarr", ["patches", str(folder), "--size", "4"]),
        ("i.zarr", ["instances", str(folder), str(labels), "--size", "4"]),
    ):
        out = tmp_path / name
        out.mkdir()  # as a job script's mkdir -p would
        code, _, err = run(*command, str(out))
        assert code == 0, err
        assert ledger.is_complete(out)
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "c.zarr" / "0", mode="r")[:], data)


def test_quiet_drops_warnings(
    tmp_path: Path, stack: tuple[Path, np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    folder, _ = stack
    with caplog.at_level(logging.WARNING):
        assert run("convert", str(folder), str(tmp_path / "a.zarr"))[0] == 0
        assert any("no voxel size" in m for m in caplog.messages)
        caplog.clear()
        assert run("-q", "convert", str(folder), str(tmp_path / "b.zarr"))[0] == 0
    assert caplog.messages == []
