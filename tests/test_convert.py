from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from ome_zarr_models.v04.image import Image as Image04
from ome_zarr_models.v05.image import Image as Image05

from datatools import ledger
from datatools.convert import convert
from datatools.convert import job as convert_job
from datatools.convert.plan import plan_units
from datatools.downsample import downsample
from datatools.errors import (
    InputError,
    OptionError,
    ResumeMismatchError,
    RoiError,
    TargetError,
    WriteError,
)
from datatools.executor import TaskSlice
from datatools.geometry import Box, RoiSpec
from datatools.info import format_info, inspect
from datatools.sources import ArrayVolume, open_volume
from datatools.verify import verify
from tests.helpers import arange_volume, attrs_of


def read_level0(path: Path) -> np.ndarray:
    return np.asarray(zarr.open_array(path / "0", mode="r")[:])


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize(
    ("shape", "chunks", "roi"),
    [
        ((20, 30, 40), (8, 16, 16), "2:19,:,5:"),
        ((9, 13, 17), (4, 5, 6), ":,12:,:1"),
        ((9, 13, 17), 64, None),
        ((33, 47), (10, 9), "3:,:46"),
        ((3, 9, 10, 11), (1, 4, 4, 4), "1:8,2:,:"),
    ],
)
def test_roundtrip_equals_source_roi(
    tmp_path: Path,
    zarr_format: Literal[2, 3],
    shape: tuple[int, ...],
    chunks: int | tuple[int, ...],
    roi: str | None,
) -> None:
    data = arange_volume(shape, "uint16")
    volume = ArrayVolume(data, voxel_size=(2.0,) * min(3, len(shape)), unit="nm")
    spec = None if roi is None else RoiSpec.parse(roi)
    out = tmp_path / "out.zarr"
    # a small memory limit forces many units
    limit = None if isinstance(chunks, int) else 8 * 2 * int(np.prod(chunks))
    result = convert(
        volume,
        out,
        roi=spec,
        chunks=chunks,
        zarr_format=zarr_format,
        workers=2,
        memory_limit=limit,
    )
    box = Box.from_shape(shape) if spec is None else _resolve(spec, volume)
    assert result.complete
    assert result.units_total > 1 or limit is None or box.size * 2 <= limit
    np.testing.assert_array_equal(read_level0(out), data[box.slices()])
    group = zarr.open_group(out, mode="r")
    model = Image05 if zarr_format == 3 else Image04
    model.from_zarr(group)
    assert verify(out, against=None).ok


def _resolve(spec: RoiSpec, volume: ArrayVolume) -> Box:
    from datatools.geometry import resolve_roi

    return resolve_roi(spec, volume.shape, volume.axes)


def test_metadata_scale_translation_and_provenance(tmp_path: Path) -> None:
    data = arange_volume((10, 12, 14))
    volume = ArrayVolume(data, voxel_size=(40.0, 8.0, 4.0), unit="nm", translation=(1, 2, 3))
    out = tmp_path / "img.zarr"
    convert(volume, out, roi=RoiSpec.parse("2:,3:9,:"), chunks=4)
    attrs = json.loads((out / "zarr.json").read_text())["attributes"]
    ms = attrs["ome"]["multiscales"][0]
    assert attrs["ome"]["version"] == "0.5"
    assert [a["unit"] for a in ms["axes"]] == ["nanometer"] * 3
    scale, translation = ms["datasets"][0]["coordinateTransformations"]
    assert scale["scale"] == [40.0, 8.0, 4.0]
    assert translation["translation"] == [1 + 2 * 40.0, 2 + 3 * 8.0, 3.0]
    assert attrs["datatools"]["roi"] == "2:10,3:9,0:14"
    assert attrs["datatools"]["complete"] is True
    array = json.loads((out / "0" / "zarr.json").read_text())
    assert array["dimension_names"] == ["z", "y", "x"]


def test_channel_axis_metadata(tmp_path: Path) -> None:
    data = arange_volume((2, 4, 6, 8), "uint8")
    out = tmp_path / "c.zarr"
    convert(ArrayVolume(data, voxel_size=(1, 1, 1), unit="um"), out, chunks=4)
    ms = attrs_of(out)["ome"]["multiscales"][0]
    assert [a["type"] for a in ms["axes"]] == ["channel", "space", "space", "space"]
    assert zarr.open_array(out / "0", mode="r").chunks == (1, 4, 4, 4)


def test_zarr_v2_uses_slash_separator(tmp_path: Path) -> None:
    out = tmp_path / "v2.zarr"
    convert(ArrayVolume(arange_volume((5, 6, 7))), out, chunks=4, zarr_format=2)
    meta = json.loads((out / "0" / ".zarray").read_text())
    assert meta["dimension_separator"] == "/"
    assert (out / "0" / "1" / "1" / "1").is_file()
    assert attrs_of(out)["multiscales"][0]["version"] == "0.4"


@pytest.mark.parametrize("codec", ["zstd", "blosc-zstd", "blosc-lz4", "gzip", "none"])
def test_codecs_roundtrip(tmp_path: Path, codec: str) -> None:
    data = arange_volume((6, 10, 12), "uint16")
    out = tmp_path / f"{codec}.zarr"
    convert(ArrayVolume(data), out, chunks=(3, 4, 5), codec=codec)
    np.testing.assert_array_equal(read_level0(out), data)


def test_shards(tmp_path: Path) -> None:
    data = arange_volume((12, 20, 20), "uint16")
    out = tmp_path / "s.zarr"
    convert(ArrayVolume(data), out, chunks=(2, 5, 5), shards=(4, 10, 10), workers=2)
    array = zarr.open_array(out / "0", mode="r")
    assert array.shards == (4, 10, 10)
    np.testing.assert_array_equal(array[:], data)
    with pytest.raises(OptionError, match="not a multiple of the chunks 2,5,5"):
        convert(ArrayVolume(data), tmp_path / "t.zarr", chunks=(2, 5, 5), shards=(3, 10, 10))


def test_shards_on_a_volume_thinner_than_the_chunks(tmp_path: Path) -> None:
    data = arange_volume((3, 20, 20), "uint16")
    out = tmp_path / "s.zarr"
    convert(ArrayVolume(data), out, chunks=4, shards=8)  # z chunks clipped to 3; shards too
    array = zarr.open_array(out / "0", mode="r")
    assert (array.chunks, array.shards) == ((3, 4, 4), (3, 8, 8))
    np.testing.assert_array_equal(array[:], data)


def test_hdf5_target(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = arange_volume((7, 9, 11), "uint16")
    out = tmp_path / "out.h5"
    result = convert(
        ArrayVolume(data, voxel_size=(3, 2, 1), unit="um"),
        out,
        chunks=4,
        memory_limit=4 * 2 * 128 * 2,
    )
    assert result.complete
    assert result.units_total > 1
    with h5py.File(out, "r") as fh:
        assert list(fh.keys()) == ["data"]
        np.testing.assert_array_equal(fh["data"][:], data)
        assert list(fh["data"].attrs["voxel_size"]) == [3, 2, 1]
        assert fh["data"].compression == "gzip"
    assert not (tmp_path / ("out.h5" + ledger.PARTIAL_SUFFIX)).exists()
    assert verify(out, against=None).ok
    with pytest.raises(OptionError, match="--codec zstd: unknown for HDF5 outputs"):
        convert(ArrayVolume(data), tmp_path / "zstd.h5", codec="zstd")
    assert not list(tmp_path.glob("zstd.h5*"))
    nested = tmp_path / "nested.h5"
    assert convert(ArrayVolume(data), nested, dataset="/group/raw").complete
    tifffile.imwrite(tmp_path / "src.tif", data, photometric="minisblack")
    checked = verify(nested, against=str(tmp_path / "src.tif"))
    assert checked.ok
    assert checked.compared_voxels == data.size
    caplog.clear()
    with caplog.at_level(logging.WARNING), open_volume(str(nested)) as reopened:
        assert reopened.unit is None  # written without a unit: no warning about it either
    assert not caplog.records


def test_dtype_casts(tmp_path: Path) -> None:
    data = arange_volume((4, 8, 10), "uint16")
    convert(ArrayVolume(data), tmp_path / "a.zarr", dtype="uint32")
    assert read_level0(tmp_path / "a.zarr").dtype == np.uint32
    for name in ("b.zarr", "b.h5"):
        with pytest.raises(OptionError, match=r"--dtype uint8: <array> holds 256 at output"):
            convert(ArrayVolume(data), tmp_path / name, dtype="uint8", memory_limit=2**14)
        # the output this call made is gone, so the corrected command needs no --overwrite
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(name)] == []
        assert convert(ArrayVolume(data), tmp_path / name).complete
    convert(ArrayVolume(data), tmp_path / "c.zarr", dtype="uint8", allow_lossy_cast=True)
    np.testing.assert_array_equal(read_level0(tmp_path / "c.zarr"), np.clip(data, 0, 255))


def test_resume_after_interruption(tmp_path: Path) -> None:
    data = arange_volume((16, 16, 16), "uint16")
    out = tmp_path / "r.zarr"
    kwargs: dict[str, Any] = {"chunks": 4, "memory_limit": 2 * 4 * 4 * 16 * 2, "workers": 1}
    seen: list[int] = []

    def stop_at_3(index: int) -> None:
        seen.append(index)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(ArrayVolume(data), out, on_unit_done=stop_at_3, **kwargs)
    info = inspect(str(out))
    assert info["status"]["complete"] is False
    assert info["status"]["units_done"] == 3
    assert not verify(out).ok
    (out / "0" / "c" / ".stray.123.tmp").parent.mkdir(parents=True, exist_ok=True)
    (out / "0" / "c" / ".stray.123.tmp").write_bytes(b"x")
    torn = out / "0" / "c" / "3" / "3" / "3"  # in the last unit, not recorded: written in place
    torn.parent.mkdir(parents=True, exist_ok=True)
    torn.write_bytes(b"torn")
    result = convert(ArrayVolume(data), out, **kwargs)
    assert result.units_skipped == 3
    assert result.units_written == result.units_total - 3
    assert result.complete
    assert not (out / "0" / "c" / ".stray.123.tmp").exists()
    np.testing.assert_array_equal(read_level0(out), data)
    fresh = tmp_path / "fresh.zarr"
    convert(ArrayVolume(data), fresh, **kwargs)
    for p in sorted((fresh / "0").rglob("*")):
        if p.is_file():
            assert p.read_bytes() == (out / p.relative_to(fresh)).read_bytes()


def test_rerun_with_other_options_is_refused(tmp_path: Path) -> None:
    data = arange_volume((4, 8, 8))
    out = tmp_path / "o.zarr"
    convert(ArrayVolume(data), out, chunks=4)
    with pytest.raises(ResumeMismatchError, match=r"chunks was \[4, 4, 4\], now \[2, 2, 2\]"):
        convert(ArrayVolume(data), out, chunks=2)
    result = convert(ArrayVolume(data), out, chunks=2, overwrite=True)
    assert result.chunks == (2, 2, 2)


def test_tasks_share_one_output(tmp_path: Path) -> None:
    data = arange_volume((16, 12, 12), "uint16")
    kwargs: dict[str, Any] = {"chunks": 4, "memory_limit": 2 * 4 * 12 * 12 * 2}
    out = tmp_path / "t.zarr"
    results = [convert(ArrayVolume(data), out, task=TaskSlice(i, 4), **kwargs) for i in range(4)]
    assert [r.complete for r in results] == [False, False, False, True]
    assert sum(r.units_written for r in results) == results[0].units_total
    np.testing.assert_array_equal(read_level0(out), data)


def test_task_slices_are_disjoint_and_cover() -> None:
    for n in (1, 7, 16, 100):
        covered = [i for t in range(4) for i in TaskSlice(t, 4).select(n)]
        assert covered == list(range(n))
    with pytest.raises(OptionError, match=r"--task-index 4: must be in 0\.\.3"):
        TaskSlice(4, 4)


def test_foreign_target_is_never_touched(tmp_path: Path) -> None:
    data = arange_volume((4, 4, 4))
    foreign = tmp_path / "mine.zarr"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep")
    for overwrite in (False, True):
        with pytest.raises(TargetError, match="folder datatools did not create"):
            convert(ArrayVolume(data), foreign, overwrite=overwrite)
    assert (foreign / "precious.txt").read_text() == "keep"
    a_file = tmp_path / "file.zarr"
    a_file.write_text("x")
    with pytest.raises(TargetError, match="exists and is a file"):
        convert(ArrayVolume(data), a_file)
    with pytest.raises(TargetError, match=r"parent folder .* does not exist"):
        convert(ArrayVolume(data), tmp_path / "missing" / "o.zarr")
    h5 = tmp_path / "other.h5"
    with h5py.File(h5, "w") as fh:
        fh["x"] = np.zeros(3)
    with pytest.raises(TargetError, match="not an output of datatools"):
        convert(ArrayVolume(data), h5, overwrite=True)
    assert h5.is_file()


def test_symlinked_target_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.zarr"
    convert(ArrayVolume(arange_volume((4, 4, 4))), real)
    link = tmp_path / "link.zarr"
    link.symlink_to(real)
    with pytest.raises(TargetError, match="symbolic link"):
        convert(ArrayVolume(arange_volume((4, 4, 4))), link, overwrite=True)
    assert ledger.is_complete(real)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"roi": RoiSpec.parse("0:5,:,:")}, RoiError, "lies outside the volume"),
        ({"roi": RoiSpec.parse("2:2,:,:")}, RoiError, "empty region"),
        ({"roi": RoiSpec.parse("3:1,:,:")}, RoiError, "start 3 >= end 1"),
        ({"chunks": 0}, OptionError, "--chunks 0: every value must be > 0"),
        (
            {"chunks": (1, 2, 3, 4)},
            OptionError,
            "4 values for a volume with axes z,y,x (give 1 or 3)",
        ),
        ({"codec": "lz5"}, OptionError, "--codec lz5: unknown for Zarr outputs"),
        ({"shards": (4, 4, 4), "zarr_format": 2}, OptionError, "sharding needs a Zarr v3"),
        ({"unit": "parsecs!"}, OptionError, "--unit parsecs!: not an OME-NGFF length unit"),
        ({"voxel_size": (1, 2)}, OptionError, "give 1 or 3 positive values"),
        ({"dtype": "complex64"}, OptionError, "--dtype complex64: datatools writes"),
        ({"memory_limit": 10}, OptionError, "--memory-limit 10: too small"),
        ({"chunks": (5, 5)}, OptionError, "--chunks 5,5: 2 values for a volume with axes z,y,x"),
    ],
)
def test_bad_options(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    out = tmp_path / "o.zarr"
    with pytest.raises(error, match=None) as info:
        convert(ArrayVolume(arange_volume((4, 8, 8))), out, **kwargs)
    assert message in str(info.value)
    assert not out.exists()


def test_plan_respects_source_strips() -> None:
    shape = (128, 2048, 2048)
    whole = plan_units(
        shape, (64, 64, 64), itemsize=2, unit_bytes=64 * 2**20, granule=(64, 2048, 2048)
    )
    assert whole == (64, 2048, 2048)
    bands = plan_units(
        shape, (64, 64, 64), itemsize=2, unit_bytes=64 * 2**20, granule=(64, 64, 2048)
    )
    assert bands == (64, 256, 2048)


def test_source_chunks_that_do_not_nest_do_not_grow_the_units(tmp_path: Path) -> None:
    # source chunks of 50 against output chunks of 32: whole source chunks would need steps of
    # 800 (the whole 130-voxel volume, 2 MiB) but the limit allows 1 MiB units
    data = (arange_volume((130, 130, 130), "uint16") % 251).astype(np.uint8)
    source = tmp_path / "src.zarr"
    zarr.create_array(source, shape=data.shape, chunks=(50, 50, 50), dtype=data.dtype)[:] = data
    result = convert(str(source), tmp_path / "o.zarr", chunks=32, memory_limit=6 * 2**20)
    assert np.prod(result.params["unit_shapes"][0]) <= 2**20
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "o.zarr" / "0")[:], data)


def test_level_units_read_at_most_the_unit_size_from_the_level_above(tmp_path: Path) -> None:
    data = (arange_volume((128, 128, 128), "uint16") % 251).astype(np.uint8)
    result = convert(
        ArrayVolume(data), tmp_path / "o.zarr", chunks=16, levels=3, memory_limit=6 * 2**15
    )
    unit_bytes = 2**15
    base, level2 = result.params["unit_shapes"]
    assert np.prod(base) <= unit_bytes
    assert np.prod(level2) * 8 <= unit_bytes
    written = zarr.open_array(tmp_path / "o.zarr" / "2")[:]
    level1 = downsample(data, (2, 2, 2), "mean")
    np.testing.assert_array_equal(written, downsample(level1, (2, 2, 2), "mean"))


def test_verify_finds_mismatch(tmp_path: Path) -> None:
    data = arange_volume((8, 8, 8), "uint16")
    out = tmp_path / "v.zarr"
    convert(ArrayVolume(data), out, chunks=4)
    source = tmp_path / "src.zarr"
    arr = zarr.create_array(source, shape=data.shape, chunks=(4, 4, 4), dtype=data.dtype)
    arr[:] = data
    assert verify(out, against=str(source)).ok
    changed = data.copy()
    changed[5, 6, 7] += 1
    arr[:] = changed
    result = verify(out, against=str(source), block_bytes=4 * 4 * 4 * 2)
    assert not result.ok
    assert result.first_mismatch == Box((4, 4, 4), (8, 8, 8))
    assert "first at voxel (5, 6, 7)" in result.problems[0]


def _write_source(kind: str, folder: Path, data: np.ndarray) -> str:
    """Write ``data`` (z, y, x) as a source of ``kind``; return its spec."""
    import SimpleITK as sitk  # noqa: N813
    import tifffile

    if kind == "tiff-folder":
        (folder / "slices").mkdir()
        for z, plane in enumerate(data):
            tifffile.imwrite(
                folder / "slices" / f"img_{z}.tif", plane, compression="zlib", rowsperstrip=3
            )
        return str(folder / "slices")
    if kind == "tiff-multipage":
        tifffile.imwrite(folder / "vol.tif", data, tile=(16, 16))
        return str(folder / "vol.tif")
    if kind == "hdf5":
        with h5py.File(folder / "vol.h5", "w") as fh:
            fh.create_dataset("g/raw", data=data, chunks=(2, 5, 7))
        return f"{folder / 'vol.h5'}:/g/raw"
    if kind in ("zarr2", "zarr3"):
        arr = zarr.create_array(
            folder / f"{kind}.zarr",
            shape=data.shape,
            chunks=(3, 4, 5),
            dtype=data.dtype,
            zarr_format=2 if kind == "zarr2" else 3,
        )
        arr[:] = data
        return str(folder / f"{kind}.zarr")
    if kind == "ome-zarr":
        convert(ArrayVolume(data), folder / "ome.zarr", chunks=(4, 8, 8))
        return str(folder / "ome.zarr")
    image = sitk.GetImageFromArray(data)
    sitk.WriteImage(image, str(folder / "vol.mha"))
    return str(folder / "vol.mha")


@pytest.mark.parametrize(
    "kind", ["tiff-folder", "tiff-multipage", "hdf5", "zarr2", "zarr3", "ome-zarr", "itk"]
)
def test_every_source_kind(tmp_path: Path, kind: str) -> None:
    data = arange_volume((9, 21, 26), "uint16")
    spec = _write_source(kind, tmp_path, data)
    out = tmp_path / "out.zarr"
    result = convert(
        spec,
        out,
        roi=RoiSpec.parse("1:8,3:,:25"),
        chunks=(4, 8, 8),
        memory_limit=6 * 2 * 4 * 8 * 8 * 2,
        workers=2,
    )
    assert result.units_total > 1
    np.testing.assert_array_equal(read_level0(out), data[1:8, 3:, :25])
    assert verify(out, against=spec).ok


def test_write_failure_is_clean_and_resumable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = arange_volume((8, 8, 8), "uint16")
    out = tmp_path / "full.zarr"
    real_write = os.write
    calls = {"n": 0}

    def failing_write(fd: int, payload: bytes) -> int:
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, payload)

    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(WriteError, match="write failed \\(No space left on device\\); rerun"):
        convert(ArrayVolume(data), out, chunks=2, workers=1, memory_limit=6 * 2 * 2 * 8 * 8 * 2)
    monkeypatch.setattr(os, "write", real_write)
    assert inspect(str(out))["status"]["complete"] is False
    result = convert(
        ArrayVolume(data), out, chunks=2, workers=1, memory_limit=6 * 2 * 2 * 8 * 8 * 2
    )
    assert result.complete
    np.testing.assert_array_equal(read_level0(out), data)


def test_disk_full_while_finalizing_is_a_write_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = arange_volume((8, 8, 8), "uint16")
    out = tmp_path / "full.zarr"

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ledger, "update_attributes", full)
    with pytest.raises(WriteError, match="write failed \\(No space left on device\\); rerun"):
        convert(ArrayVolume(data), out, chunks=4)
    monkeypatch.undo()
    assert inspect(str(out))["status"]["complete"] is False
    assert convert(ArrayVolume(data), out, chunks=4).complete


def test_parent_that_refuses_a_folder_is_a_write_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*args: object, **kwargs: object) -> str:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "mkdir", refused)
    with pytest.raises(WriteError, match=r"o\.zarr: cannot create output \(Permission denied\)"):
        convert(ArrayVolume(arange_volume((4, 4, 4))), tmp_path / "o.zarr")


KILL_CHILD = """
import sys
import numpy as np
from datatools.convert import convert
from datatools.sources import ArrayVolume
data = (np.arange(16 * 16 * 16) % 65536).astype("uint16").reshape(16, 16, 16)
def hook(index):
    if hook.count == 2:
        print("ready", flush=True)
        sys.stdin.readline()
    hook.count += 1
hook.count = 0
convert(ArrayVolume(data), sys.argv[1], chunks=4, workers=1, memory_limit=6 * 4 * 16 * 16 * 2,
        on_unit_done=hook)
"""


def test_resume_after_kill_9(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    out = tmp_path / "killed.zarr"
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_CHILD, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)
    status = inspect(str(out))["status"]
    assert status["complete"] is False
    assert status["units_done"] == 3
    data = arange_volume((16, 16, 16), "uint16")
    result = convert(ArrayVolume(data), out, chunks=4, workers=1, memory_limit=6 * 4 * 16 * 16 * 2)
    assert result.units_skipped == 3
    assert result.complete
    np.testing.assert_array_equal(read_level0(out), data)


def test_tiny_chunks_get_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(convert_job, "SMALL_CHUNK_COUNT", 100)
    volume = ArrayVolume(np.zeros((4, 8, 8), np.uint16), voxel_size=(1, 1, 1))
    with caplog.at_level(logging.WARNING):
        convert(volume, tmp_path / "fine.zarr", chunks=4)
        assert not caplog.records
        convert(volume, tmp_path / "tiny.zarr", chunks=(1, 1, 2))
    assert [r.getMessage() for r in caplog.records] == [
        "<array>: chunks 1 x 1 x 2 hold 4 bytes each, 128 chunk files in all (give larger "
        "--chunks: loaders read chunks of 64 KiB to a few MiB best)"
    ]


def test_info_reports_an_unfinished_hdf5_output(tmp_path: Path) -> None:
    data = arange_volume((8, 9, 11), "uint16")
    out = tmp_path / "out.h5"

    def stop(index: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(ArrayVolume(data), out, chunks=4, memory_limit=4 * 2 * 128 * 2, on_unit_done=stop)
    info = inspect(out)
    assert info["status"]["complete"] is False
    assert info["status"]["units_done"] == 1
    assert info["status"]["units_total"] > 1
    assert list(info["arrays"]) == ["data"]
    assert convert(ArrayVolume(data), out, chunks=4, memory_limit=4 * 2 * 128 * 2).complete
    assert inspect(out)["status"]["complete"] is True


def test_a_corrupt_slice_found_mid_run_keeps_the_output_resumable(tmp_path: Path) -> None:
    data = arange_volume((16, 8, 8), "uint16")
    folder = tmp_path / "slices"
    folder.mkdir()
    for z, plane in enumerate(data):
        tifffile.imwrite(folder / f"s{z:02d}.tif", plane, compression="zlib")
    last = folder / "s15.tif"
    good = last.read_bytes()
    with tifffile.TiffFile(last) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    last.write_bytes(good[:offset] + bytes(count) + good[offset + count :])
    out = tmp_path / "o.zarr"
    with pytest.raises(InputError, match=r"s15\.tif"):
        convert(str(folder), out, chunks=4, memory_limit=4 * 2 * 4 * 8 * 8 * 2, workers=1)
    status = ledger.status(out)
    assert status is not None
    assert status.units_total is not None
    assert 0 < status.units_done < status.units_total  # kept: fix the slice and rerun
    last.write_bytes(good)
    again = convert(str(folder), out, chunks=4, memory_limit=4 * 2 * 4 * 8 * 8 * 2, workers=1)
    assert again.complete
    assert again.units_skipped == status.units_done
    np.testing.assert_array_equal(read_level0(out), data)


def test_nan_survives_a_float_cast_and_verify(tmp_path: Path) -> None:
    data = arange_volume((6, 8, 8), "float64")
    data[2, 3, 4] = np.nan  # whole numbers and NaN: float32 holds every value exactly
    zarr.create_array(tmp_path / "n.zarr", shape=data.shape, dtype="float64")[:] = data
    out = tmp_path / "o.zarr"
    convert(str(tmp_path / "n.zarr"), out, chunks=4, dtype="float32")
    assert np.isnan(zarr.open_array(out / "0")[2, 3, 4])
    result = verify(out, against=str(tmp_path / "n.zarr"))
    assert result.ok, result.problems


def test_verify_accepts_a_lossy_cast_as_convert_made_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = np.linspace(-20.4, 300.6, 6 * 8 * 8).reshape(6, 8, 8)
    source = tmp_path / "f.zarr"
    zarr.create_array(source, shape=data.shape, chunks=(6, 8, 8), dtype=data.dtype)[:] = data
    out = tmp_path / "o.zarr"
    with caplog.at_level(logging.WARNING):
        convert(str(source), out, chunks=4, dtype="uint8", allow_lossy_cast=True)
    written = zarr.open_array(out / "0")[:]
    np.testing.assert_array_equal(written, np.clip(np.rint(data), 0, 255))
    changed = int(np.count_nonzero(written != data))
    assert caplog.messages[-1] == (
        f"{source}: --allow-lossy-cast changed {changed} voxels (rounded, clipped to the uint8 "
        "range, or NaN set to 0)"
    )
    result = verify(out, against=str(source))
    assert result.ok, result.problems
    assert result.summary().endswith(f"{data.size} voxels equal the source cast to uint8)")


def test_outputs_take_the_mode_the_umask_gives(tmp_path: Path) -> None:
    # shared cluster folders: colleagues must read the output (not 0700 / 0600 as tempfile makes)
    old = os.umask(0o022)
    try:
        out = tmp_path / "o.zarr"
        convert(ArrayVolume(arange_volume((4, 8, 8))), out, chunks=4)
    finally:
        os.umask(old)
    modes = {p.relative_to(out).as_posix(): p.stat().st_mode & 0o777 for p in out.rglob("*")}
    modes["."] = out.stat().st_mode & 0o777
    assert {m for p, m in modes.items() if (out / p).is_dir()} == {0o755}
    assert {m for p, m in modes.items() if (out / p).is_file()} == {0o644}
    assert "zarr.json" in modes
    assert ".datatools/zarr.json" in modes


def test_hdf5_rerun_with_another_dataset_is_refused(tmp_path: Path) -> None:
    data = arange_volume((4, 6, 8), "uint16")
    out = tmp_path / "p.h5"
    convert(ArrayVolume(data), out)
    with pytest.raises(ResumeMismatchError, match='dataset was "data", now "other"'):
        convert(ArrayVolume(data), out, dataset="other")
    assert convert(ArrayVolume(data), out).units_written == 0  # the same command: done


def test_hdf5_partial_torn_by_a_kill_is_replaced_only_with_overwrite(tmp_path: Path) -> None:
    data = arange_volume((4, 6, 8), "uint16")
    out = tmp_path / "k.h5"
    torn = tmp_path / "k.h5.datatools-partial"
    torn.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))  # an HDF5 signature, then nothing
    with pytest.raises(TargetError, match=r"k\.h5\.datatools-partial: unfinished file that HDF5"):
        convert(ArrayVolume(data), out)
    assert torn.exists()
    assert convert(ArrayVolume(data), out, overwrite=True).complete
    assert not torn.exists()
    with h5py.File(out, "r") as fh:
        np.testing.assert_array_equal(fh["data"][:], data)


def test_a_shard_as_long_as_its_axis_and_a_one_value_chunk_list(tmp_path: Path) -> None:
    data = arange_volume((10, 16, 16), "uint16")
    out = tmp_path / "s.zarr"
    convert(ArrayVolume(data), out, chunks=(8,), shards=(10, 16, 16))
    array = zarr.open_array(out / "0", mode="r")
    assert (array.chunks, array.shards) == ((8, 8, 8), (16, 16, 16))
    np.testing.assert_array_equal(array[:], data)


def test_a_task_that_finished_its_share_says_so_not_rerun(tmp_path: Path) -> None:
    data = arange_volume((16, 16, 16), "uint16")
    kwargs: dict[str, Any] = {"chunks": 4, "memory_limit": 2 * 4 * 4 * 16 * 2}
    first = convert(ArrayVolume(data), tmp_path / "o.zarr", task=TaskSlice(0, 2), **kwargs)
    assert not first.complete
    assert "this task's share is done; the output is complete once every task" in first.summary()
    assert "rerun" not in first.summary()
    last = convert(ArrayVolume(data), tmp_path / "o.zarr", task=TaskSlice(1, 2), **kwargs)
    assert last.complete


def test_hdf5_partial_cut_short_is_not_taken_for_a_locked_file(tmp_path: Path) -> None:
    data = arange_volume((4, 6, 8), "uint16")
    out = tmp_path / "k.h5"
    convert(ArrayVolume(data), tmp_path / "whole.h5")
    torn = tmp_path / "k.h5.datatools-partial"
    torn.write_bytes((tmp_path / "whole.h5").read_bytes()[:96])  # killed in its first second
    with pytest.raises(TargetError, match="unfinished file that HDF5 cannot read"):
        convert(ArrayVolume(data), out)
    assert convert(ArrayVolume(data), out, overwrite=True).complete


def test_hdf5_overwrite_keeps_the_finished_file_until_the_new_one_is_whole(
    tmp_path: Path,
) -> None:
    old = arange_volume((8, 6, 8), "uint16")
    out = tmp_path / "o.h5"
    convert(ArrayVolume(old), out, chunks=2)

    def stop(index: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(ArrayVolume(old + 1), out, chunks=2, overwrite=True, on_unit_done=stop)
    with h5py.File(out, "r") as fh:  # still the finished file
        np.testing.assert_array_equal(fh["data"][:], old)
    convert(ArrayVolume(old + 1), out, chunks=2, overwrite=True)
    with h5py.File(out, "r") as fh:
        np.testing.assert_array_equal(fh["data"][:], old + 1)


def test_a_lossy_integer_cast_turns_nan_into_0_and_clips_infinities(tmp_path: Path) -> None:
    data = np.zeros((2, 4, 4))
    data[0, 0, :3] = [np.nan, np.inf, -np.inf]
    out = tmp_path / "o.zarr"
    convert(ArrayVolume(data), out, dtype="uint8", allow_lossy_cast=True)  # no RuntimeWarning
    np.testing.assert_array_equal(zarr.open_array(out / "0")[0, 0, :3], [0, 255, 0])


def test_info_names_a_torn_hdf5_partial_file(tmp_path: Path) -> None:
    (tmp_path / "t.h5.datatools-partial").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(40))
    shown = format_info(inspect(str(tmp_path / "t.h5"))).splitlines()[0]
    assert shown == (
        "status       INCOMPLETE (unreadable: killed while HDF5 wrote it; rerun with "
        "--overwrite to start again)"
    )
