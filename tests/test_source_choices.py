"""A resume from another series or level of the input is refused by every command that writes
from a source (the series would otherwise be mixed in one output)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from datatools import ledger
from datatools.convert import convert
from datatools.errors import InputError, ResumeMismatchError
from datatools.executor import TaskSlice
from datatools.instances import extract_instances
from datatools.patches import extract_patches
from datatools.sources import ArrayVolume, OpenOptions
from tests.helpers import values


@pytest.fixture
def two_series(tmp_path: Path) -> str:
    """A TIFF file of two series of the same shape: zeros, then nines."""
    path = tmp_path / "two.tif"
    with tifffile.TiffWriter(path) as writer:
        writer.write(np.zeros((8, 16, 16), np.uint8), photometric="minisblack")
        writer.write(np.full((8, 16, 16), 9, np.uint8), photometric="minisblack")
    return str(path)


def test_convert_task_of_another_series_is_refused(tmp_path: Path, two_series: str) -> None:
    out = tmp_path / "o.zarr"
    first = convert(
        two_series, out, chunks=4, task=TaskSlice(0, 2), open_options=OpenOptions(series=0)
    )
    assert not first.complete
    with pytest.raises(ResumeMismatchError, match="series was 0, now 1"):
        convert(two_series, out, chunks=4, task=TaskSlice(1, 2), open_options=OpenOptions(series=1))
    done = convert(
        two_series, out, chunks=4, task=TaskSlice(1, 2), open_options=OpenOptions(series=0)
    )
    assert done.complete


def test_no_choice_is_recorded_as_level_and_series_0(tmp_path: Path, two_series: str) -> None:
    out = tmp_path / "o.zarr"
    result = convert(two_series, out, chunks=4, task=TaskSlice(0, 2))
    assert (result.params["source_level"], result.params["series"]) == (0, 0)
    done = convert(
        two_series, out, chunks=4, task=TaskSlice(1, 2), open_options=OpenOptions(series=0)
    )
    assert done.complete  # --series 0 is the default: the same data


def test_records_of_earlier_versions_still_resume(tmp_path: Path, two_series: str) -> None:
    # an output started before source_level / series were recorded, with a voxel size in
    # nanometres that differs from today's in its last digits
    out = tmp_path / "o.zarr"
    convert(two_series, out, chunks=4, task=TaskSlice(0, 2), voxel_size=(4000, 4000, 4000))
    record = ledger.read_record(out)
    assert record is not None
    params = {k: v for k, v in record.params.items() if k not in ("source_level", "series")}
    params["voxel_size"] = [3999.9999999999995] * 3
    ledger.ZarrLedger(out)._update_attrs(run=ledger.RunRecord(record.command, params).to_dict())
    done = convert(two_series, out, chunks=4, task=TaskSlice(1, 2), voxel_size=(4000, 4000, 4000))
    assert done.complete


def test_patches_and_instances_resume_only_the_same_series(tmp_path: Path, two_series: str) -> None:
    labels = tmp_path / "labels.zarr"
    ids = zarr.create_array(labels, shape=(8, 16, 16), chunks=(8, 16, 16), dtype="uint16")
    ids[2:5, 3:7, 3:7] = 1
    ids[4:7, 9:13, 8:12] = 2
    patches = tmp_path / "p.zarr"
    extract_patches(two_series, patches, size=4, open_options=OpenOptions(series=0))
    with pytest.raises(ResumeMismatchError, match="series was 0, now 1"):
        extract_patches(two_series, patches, size=4, open_options=OpenOptions(series=1))
    crops = tmp_path / "i.zarr"
    extract_instances(two_series, str(labels), crops, size=4, open_options=OpenOptions(series=0))
    with pytest.raises(ResumeMismatchError, match="series was 0, now 1"):
        extract_instances(
            two_series, str(labels), crops, size=4, open_options=OpenOptions(series=1)
        )


def test_labels_with_one_series_go_with_any_series_of_the_image(
    tmp_path: Path, two_series: str
) -> None:
    labels = tmp_path / "labels.tif"
    ids = np.zeros((8, 16, 16), np.uint16)
    ids[2:5, 3:7, 3:7] = 1
    tifffile.imwrite(labels, ids)
    out = tmp_path / "i.zarr"
    extract_instances(two_series, str(labels), out, size=4, open_options=OpenOptions(series=1))
    crops = values(zarr.open_array(out / "images"))
    assert crops.shape == (1, 1, 4, 4, 4)
    assert (crops == 9).all()  # series 1 of the image; the labels' only series


def test_plain_labels_go_with_a_level_of_an_ome_zarr_image(tmp_path: Path) -> None:
    image = tmp_path / "image.zarr"
    data = np.arange(8 * 16 * 16, dtype=np.uint16).reshape(8, 16, 16)
    convert(ArrayVolume(data), image, chunks=4, levels=2)
    labels = tmp_path / "labels.zarr"
    ids = zarr.create_array(labels, shape=(4, 8, 8), chunks=(4, 8, 8), dtype="uint8")
    ids[1:3, 2:5, 2:5] = 1  # drawn on level 1
    out = tmp_path / "i.zarr"
    extract_instances(str(image), str(labels), out, size=2, open_options=OpenOptions(level=1))
    level1 = values(zarr.open_array(image / "1"))
    np.testing.assert_array_equal(zarr.open_array(out / "images")[0, 0], level1[1:3, 2:4, 2:4])


def test_an_unfinished_output_is_refused_as_an_input(tmp_path: Path) -> None:
    data = np.arange(16 * 16 * 16, dtype=np.uint16).reshape(16, 16, 16)
    out = tmp_path / "r.zarr"

    def stop(index: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(ArrayVolume(data), out, chunks=4, memory_limit=2**12 * 6, on_unit_done=stop)
    for spec, where in [(out, ""), (out / "0", f"inside {out}, ")]:
        with pytest.raises(InputError, match=re.escape(f"{spec}: {where}a datatools output th")):
            convert(str(spec), tmp_path / "next.zarr")
    with pytest.raises(InputError, match="1/2 units done"):
        extract_patches(str(out / "0"), tmp_path / "p.zarr", size=4)
    assert not (tmp_path / "next.zarr").exists()
    convert(ArrayVolume(data), out, chunks=4, memory_limit=2**12 * 6)
    assert convert(str(out), tmp_path / "next.zarr").complete  # finished: an input like any
