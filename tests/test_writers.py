"""Buffered writers: lockstep appends, whole-chunk flushes, crash safety, append, positional fill.

Rows are arange-encoded: row ``i`` of ``patches`` holds ``20 i .. 20 i + 19`` and row ``i`` of
``origins`` holds ``3 i .. 3 i + 2``, so a lost, doubled or misplaced row shows.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import pytest
import zarr
from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.core.metadata import ArrayV3Metadata
from zarr.storage import LocalStore, WrapperStore

from datatools import ledger
from datatools.errors import InputError, OptionError, ResumeMismatchError, TargetError, WriteError
from datatools.options import OutputOptions
from datatools.writers import (
    ArraySpec,
    ArrayWriter,
    RunRecord,
    StoredRun,
    open_writer,
    read_run,
)
from tests.helpers import attrs_of, child_array

ARRAYS: dict[str, Any] = {"patches": ((4, 5), "uint16"), "origins": ((3,), "int64")}
FORMATS = [("zarr", 3), ("zarr", 2), ("hdf5", 3)]
IDS = ["zarr3", "zarr2", "hdf5"]


def patches(start: int, n: int) -> np.ndarray:
    return np.arange(start * 20, (start + n) * 20, dtype=np.uint16).reshape(n, 4, 5)


def origins(start: int, n: int) -> np.ndarray:
    return np.arange(start * 3, (start + n) * 3, dtype=np.int64).reshape(n, 3)


def out_path(tmp_path: Path, kind: str) -> Path:
    return tmp_path / ("out.h5" if kind == "hdf5" else "out.zarr")


def read_back(path: Path, name: str) -> np.ndarray:
    """The whole array ``name`` as plain zarr / h5py loaders read it."""
    if path.suffix == ".h5" or path.name.endswith(ledger.PARTIAL_SUFFIX):
        with h5py.File(path, "r") as file:
            return np.asarray(file[name][:])
    return np.asarray(zarr.open_array(str(path / name), mode="r")[:])


def hdf5_meta(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r") as file:
        meta: dict[str, Any] = json.loads(file.attrs["datatools"])
    return meta


def assert_rows(path: Path, n: int) -> None:
    np.testing.assert_array_equal(read_back(path, "patches"), patches(0, n))
    np.testing.assert_array_equal(read_back(path, "origins"), origins(0, n))


@pytest.mark.parametrize(("kind", "zarr_format"), FORMATS, ids=IDS)
def test_random_batches_equal_the_concatenation(
    tmp_path: Path, rng: np.random.Generator, kind: str, zarr_format: Literal[2, 3]
) -> None:
    path = out_path(tmp_path, kind)
    sizes = [int(n) for n in rng.integers(0, 20, size=12)] + [0, 8, 1, 17]
    total = sum(sizes)
    with open_writer(path, ARRAYS, chunk_rows=8, zarr_format=zarr_format) as writer:
        done = 0
        for n in sizes:
            writer.append(patches=patches(done, n), origins=origins(done, n))
            done += n
            assert writer.rows == done
            assert writer.flushed_rows == done - done % 8
    assert total % 8 != 0
    assert writer.rows == writer.flushed_rows == total
    assert_rows(path, total)
    if kind == "hdf5":
        assert not Path(f"{path}{ledger.PARTIAL_SUFFIX}").exists()
        with h5py.File(path, "r") as file:
            assert file["patches"].chunks == (8, 4, 5)
            assert file["patches"].maxshape == (None, 4, 5)
            assert file["origins"].chunks == (8, 3)
            assert file["patches"].compression == "gzip"
        meta = hdf5_meta(path)
        assert (meta["rows"], meta["complete"], meta["command"]) == (total, True, "write")
    else:
        group = zarr.open_group(str(path), mode="r")
        assert sorted(group.array_keys()) == ["origins", "patches"]
        assert child_array(group, "patches").chunks == (8, 4, 5)
        assert child_array(group, "origins").chunks == (8, 3)
        assert group.attrs["datatools"] == {"rows": total, "chunk_rows": 8, "complete": True}
        assert ledger.is_complete(path)
        assert ledger.open_ledger(path).read_state() == {"rows": total}


@pytest.mark.parametrize(("kind", "zarr_format"), FORMATS, ids=IDS)
@pytest.mark.parametrize("total", [0, 16])
def test_empty_and_chunk_multiple_row_counts(
    tmp_path: Path, kind: str, zarr_format: Literal[2, 3], total: int
) -> None:
    path = out_path(tmp_path, kind)
    with open_writer(path, ARRAYS, chunk_rows=8, zarr_format=zarr_format) as writer:
        writer.append(patches=patches(0, total), origins=origins(0, total))
    assert read_back(path, "patches").shape == (total, 4, 5)
    assert read_back(path, "origins").shape == (total, 3)
    assert_rows(path, total)


def test_zarr_chunk_files_are_what_zarr_writes(tmp_path: Path) -> None:
    path = tmp_path / "out.zarr"
    with open_writer(path, ARRAYS, chunk_rows=8, codec="blosc-zstd") as writer:
        writer.append(patches=patches(0, 19), origins=origins(0, 19))
    reference = zarr.open_array(str(path / "patches"), mode="r")
    copy = zarr.create_array(
        str(tmp_path / "copy"),
        shape=reference.shape,
        chunks=reference.chunks,
        dtype=reference.dtype,
        compressors=reference.compressors,
        fill_value=0,
    )
    copy[:] = patches(0, 19)
    for key in ("c/0/0/0", "c/2/0/0"):
        assert (path / "patches" / key).read_bytes() == (tmp_path / "copy" / key).read_bytes()


def test_single_array_form_takes_a_positional_batch(tmp_path: Path) -> None:
    path = tmp_path / "ids.zarr"
    with open_writer(path, ((), "int32"), chunk_rows=4) as writer:
        writer.append(np.arange(3, dtype=np.int32))
        writer.append(np.arange(3, 10, dtype=np.int16))
    assert writer.names == ("data",)
    np.testing.assert_array_equal(read_back(path, "data"), np.arange(10))


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_item_chunks_and_dims(tmp_path: Path, zarr_format: Literal[2, 3]) -> None:
    path = tmp_path / "out.zarr"
    spec = ArraySpec((4, 5), "uint16", item_chunks=(3, 3), dims=("i", "y", "x"))
    with open_writer(path, {"patches": spec}, chunk_rows=8, zarr_format=zarr_format) as writer:
        writer.append(patches=patches(0, 11))
    array = zarr.open_array(str(path / "patches"), mode="r")
    assert array.chunks == (8, 3, 3)
    np.testing.assert_array_equal(array[:], patches(0, 11))
    if zarr_format == 3:
        assert isinstance(array.metadata, ArrayV3Metadata)
        assert array.metadata.dimension_names == ("i", "y", "x")
    else:
        assert array.attrs["_ARRAY_DIMENSIONS"] == ["i", "y", "x"]


class KeyRecorder(WrapperStore[LocalStore]):
    """A store that records every key read, to count the chunks a loader touches."""

    def __init__(self, store: LocalStore) -> None:
        super().__init__(store)
        self.keys: list[str] = []

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        self.keys.append(key)
        return await super().get(key, prototype, byte_range)


@pytest.mark.parametrize(
    ("zarr_format", "expected"),
    [(3, ["origins/c/2/0", "patches/c/2/0/0"]), (2, ["origins/2.0", "patches/2.0.0"])],
)
def test_a_loader_batch_reads_one_chunk_per_array(
    tmp_path: Path, zarr_format: Literal[2, 3], expected: list[str]
) -> None:
    path = tmp_path / "out.zarr"
    with open_writer(path, ARRAYS, chunk_rows=8, zarr_format=zarr_format) as writer:
        writer.append(patches=patches(0, 30), origins=origins(0, 30))
    store = KeyRecorder(LocalStore(str(path), read_only=True))
    group = zarr.open_group(store, mode="r", zarr_format=zarr_format)
    arrays = {name: child_array(group, name) for name in ("patches", "origins")}
    store.keys.clear()
    batch = {name: np.asarray(array[16:24]) for name, array in arrays.items()}
    assert sorted(store.keys) == expected
    np.testing.assert_array_equal(batch["patches"], patches(16, 8))
    np.testing.assert_array_equal(batch["origins"], origins(16, 8))


@pytest.mark.parametrize(
    ("batches", "problem"),
    [
        (
            {"patches": patches(0, 3), "origins": origins(0, 2)},
            "append got 3 rows for patches, 2 rows for origins (arrays grow in lockstep; give "
            "every array the same number of rows)",
        ),
        (
            {"patches": patches(0, 3)},
            "append got no rows for origins (arrays grow in lockstep; give rows to patches, "
            "origins)",
        ),
        (
            {"patches": patches(0, 1), "origins": origins(0, 1), "labels": patches(0, 1)},
            "append got unknown array labels (the writer holds patches, origins)",
        ),
        (
            {"patches": patches(0, 1)[0], "origins": origins(0, 1)},
            "append got patches rows of shape (4, 5), expected (n, 4, 5) (a single row is "
            "rows[None])",
        ),
        (
            {"patches": patches(0, 2).astype(np.int32), "origins": origins(0, 2)},
            "append got patches rows of dtype int32, the array holds uint16 (cast with "
            ".astype('uint16') if the values fit)",
        ),
    ],
    ids=["lockstep", "missing", "unknown", "item-shape", "dtype"],
)
def test_bad_batches_are_refused(tmp_path: Path, batches: dict[str, Any], problem: str) -> None:
    path = tmp_path / "out.zarr"
    with open_writer(path, ARRAYS, chunk_rows=8) as writer:
        writer.append(patches=patches(0, 5), origins=origins(0, 5))
        with pytest.raises(InputError) as info:
            writer.append(**batches)
        assert str(info.value) == f"{path}: {problem}"
        with pytest.raises(InputError, match="got an unnamed batch but the writer holds arrays"):
            writer.append(patches(5, 1))
        writer.append(patches=patches(5, 4), origins=origins(5, 4))
    assert_rows(path, 9)


@pytest.mark.parametrize(
    ("arrays", "options", "problem"),
    [
        ({"a b": ((2,), "uint8")}, {}, "arrays: name 'a b' is not usable"),
        ({".x": ((2,), "uint8")}, {}, "arrays: name '.x' is not usable"),
        ({"a": ((2, 0), "uint8")}, {}, "arrays: a item_shape (2, 0) must have positive sizes"),
        ({"a": ((2,), "U4")}, {}, "arrays: a dtype <U4 is not supported (bool, int or float)"),
        ({"a": ((2,), "uint8")}, {"chunk_rows": 0}, "chunk_rows 0: must be a positive number"),
        ({}, {}, "arrays: give at least one array"),
        ({"a": ((2,), "uint8")}, {"codec": "lzf"}, "--codec lzf: unknown for Zarr outputs"),
        ({"a": ((2,), "uint8")}, {"zarr_format": 4}, "zarr_format 4: choose 2 or 3"),
        (
            {"a": ArraySpec((2,), "uint8", dims=("y",))},
            {},
            "arrays: a dims ('y',) must name the row axis and each item axis (2 names)",
        ),
        (
            {"a": ArraySpec((2, 3), "uint8", item_chunks=(2,))},
            {},
            "arrays: a item_chunks (2,) must have one size per item axis (2, 3)",
        ),
    ],
)
def test_bad_options_are_refused(
    tmp_path: Path, arrays: dict[str, Any], options: dict[str, Any], problem: str
) -> None:
    with pytest.raises(OptionError) as info:
        open_writer(tmp_path / "out.zarr", arrays, **options)
    assert str(info.value).startswith(problem)
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize(("kind", "zarr_format"), FORMATS, ids=IDS)
def test_append_after_close_continues_the_tail_chunk(
    tmp_path: Path, kind: str, zarr_format: Literal[2, 3]
) -> None:
    path = out_path(tmp_path, kind)
    options: dict[str, Any] = {"chunk_rows": 8, "zarr_format": zarr_format}
    with open_writer(path, ARRAYS, **options) as writer:
        writer.append(patches=patches(0, 13), origins=origins(0, 13))
    with open_writer(path, ARRAYS, append=True, **options) as writer:
        assert (writer.rows, writer.flushed_rows) == (13, 13)
        writer.append(patches=patches(13, 2), origins=origins(13, 2))
        writer.append(patches=patches(15, 20), origins=origins(15, 20))
    assert writer.rows == 35
    assert_rows(path, 35)
    with open_writer(path, ARRAYS, append=True, **options) as writer:
        assert writer.rows == 35
    assert_rows(path, 35)


def interrupted(path: Path, rows: int, **options: Any) -> ArrayWriter:
    """A writer left by Ctrl-C after ``rows`` rows were appended."""
    with (
        contextlib.suppress(KeyboardInterrupt),
        open_writer(path, ARRAYS, chunk_rows=8, **options) as writer,
    ):
        writer.append(patches=patches(0, rows), origins=origins(0, rows))
        raise KeyboardInterrupt
    return writer


@pytest.mark.parametrize(("kind", "zarr_format"), FORMATS, ids=IDS)
def test_an_exception_keeps_the_flushed_rows(
    tmp_path: Path, kind: str, zarr_format: Literal[2, 3]
) -> None:
    path = out_path(tmp_path, kind)
    writer = interrupted(path, 21, zarr_format=zarr_format)
    assert writer.rows == writer.flushed_rows == 16
    if kind == "hdf5":
        partial = Path(f"{path}{ledger.PARTIAL_SUFFIX}")
        assert not path.exists()
        assert_rows(partial, 16)
        assert (hdf5_meta(partial)["rows"], hdf5_meta(partial)["complete"]) == (16, False)
    else:
        assert_rows(path, 16)
        assert not ledger.is_complete(path)
        assert attrs_of(path)["datatools"]["complete"] is False
    with pytest.raises(WriteError, match="the writer is closed"):
        writer.append(patches=patches(16, 1), origins=origins(16, 1))
    with open_writer(path, ARRAYS, chunk_rows=8, zarr_format=zarr_format, append=True) as writer:
        writer.append(patches=patches(16, 9), origins=origins(16, 9))
    assert_rows(path, 25)


CHILD = """
import sys
import numpy as np
from datatools.writers import open_writer

path, rows = sys.argv[1], int(sys.argv[2])
arrays = {"patches": ((4, 5), "uint16"), "origins": ((3,), "int64")}
writer = open_writer(path, arrays, chunk_rows=8, append=True)
start = writer.rows
p = np.arange(start * 20, (start + rows) * 20, dtype=np.uint16).reshape(rows, 4, 5)
o = np.arange(start * 3, (start + rows) * 3, dtype=np.int64).reshape(rows, 3)
for first in range(0, rows, 5):
    writer.append(patches=p[first : first + 5], origins=o[first : first + 5])
print(writer.flushed_rows, flush=True)
sys.stdin.readline()
"""


def run_and_kill(path: Path, rows: int) -> int:
    """Append ``rows`` rows in a child process, kill -9 it once they are given; its flushed rows."""
    command = [sys.executable, "-c", CHILD, str(path), str(rows)]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        assert child.stderr is not None
        line = child.stdout.readline()
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert line, child.stderr.read()
    assert child.returncode == -signal.SIGKILL
    return int(line)


@pytest.mark.parametrize("kind", ["zarr", "hdf5"])
def test_a_killed_run_keeps_its_flushed_rows_and_append_continues(
    tmp_path: Path, kind: str
) -> None:
    path = out_path(tmp_path, kind)
    assert run_and_kill(path, 19) == 16
    if kind == "hdf5":
        partial = Path(f"{path}{ledger.PARTIAL_SUFFIX}")
        assert not path.exists()
        assert_rows(partial, 16)
        assert (hdf5_meta(partial)["rows"], hdf5_meta(partial)["complete"]) == (16, False)
    else:
        assert_rows(path, 16)
        status = ledger.status(path)
        assert status is not None
        assert (status.complete, status.state) == (False, {"rows": 16})
    assert run_and_kill(path, 13) == 24
    assert_rows(Path(f"{path}{ledger.PARTIAL_SUFFIX}") if kind == "hdf5" else path, 24)
    with open_writer(path, ARRAYS, chunk_rows=8, append=True) as writer:
        assert writer.rows == 24
        writer.append(patches=patches(24, 3), origins=origins(24, 3))
    assert_rows(path, 27)


@pytest.mark.parametrize("kind", ["zarr", "hdf5"])
def test_an_existing_target_is_refused_without_append(tmp_path: Path, kind: str) -> None:
    path = out_path(tmp_path, kind)
    with open_writer(path, ARRAYS, chunk_rows=8) as writer:
        writer.append(patches=patches(0, 3), origins=origins(0, 3))
    with pytest.raises(TargetError) as info:
        open_writer(path, ARRAYS, chunk_rows=8)
    assert str(info.value) == (
        f"{path}: exists (append to continue it, or --overwrite to replace it)"
    )
    with pytest.raises(OptionError, match="append=True and overwrite=True exclude each other"):
        open_writer(path, ARRAYS, chunk_rows=8, append=True, overwrite=True)
    assert_rows(path, 3)
    with open_writer(path, ARRAYS, chunk_rows=4, overwrite=True) as writer:
        writer.append(patches=patches(0, 2), origins=origins(0, 2))
    assert_rows(path, 2)


def test_an_unfinished_hdf5_file_is_refused_without_append(tmp_path: Path) -> None:
    path = tmp_path / "out.h5"
    interrupted(path, 0)
    with pytest.raises(TargetError) as info:
        open_writer(path, ARRAYS, chunk_rows=8)
    assert str(info.value) == (
        f"{path}: exists as the unfinished out.h5{ledger.PARTIAL_SUFFIX} (append to continue it, "
        "or --overwrite to replace it)"
    )


def test_an_unreadable_partial_hdf5_file_is_replaced_only_on_request(tmp_path: Path) -> None:
    path = tmp_path / "out.h5"
    partial = Path(f"{path}{ledger.PARTIAL_SUFFIX}")
    partial.write_bytes(b"\x89HDF\r\n\x1a\n truncated by kill -9")
    with pytest.raises(TargetError) as info:
        open_writer(path, ARRAYS, append=True)
    assert str(info.value) == (
        f"{partial}: unfinished file that HDF5 cannot read, left by a run killed while "
        "flushing (--overwrite replaces it)"
    )
    with open_writer(path, ARRAYS, overwrite=True) as writer:
        writer.append(patches=patches(0, 2), origins=origins(0, 2))
    assert_rows(path, 2)
    assert not partial.exists()


def test_an_hdf5_overwrite_keeps_the_finished_file_until_the_new_one_is_whole(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out.h5"
    partial = Path(f"{path}{ledger.PARTIAL_SUFFIX}")
    with open_writer(path, ARRAYS, chunk_rows=8) as writer:
        writer.append(patches=patches(0, 3), origins=origins(0, 3))
    interrupted(path, 9, overwrite=True)
    assert_rows(path, 3)
    assert_rows(partial, 8)
    assert not ledger.is_complete(path)  # the partial file is the run under way
    with open_writer(path, ARRAYS, chunk_rows=8, append=True) as writer:
        assert writer.rows == 8
        writer.append(patches=patches(8, 1), origins=origins(8, 1))
    assert_rows(path, 9)
    assert not partial.exists()


@pytest.mark.parametrize("name", ["out.zarr", "out.h5"])
def test_foreign_targets_are_never_replaced(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".h5"):
        with h5py.File(path, "w") as file:
            file["x"] = np.arange(3)
    else:
        path.mkdir()
        (path / "notes.txt").write_text("mine")
    choices: list[dict[str, Any]] = [{}, {"append": True}, {"overwrite": True}]
    for options in choices:
        with pytest.raises(TargetError, match=r"not a datatools output|datatools did not create"):
            open_writer(path, ARRAYS, **options)
    if name.endswith(".h5"):
        with h5py.File(path, "r") as file:
            np.testing.assert_array_equal(file["x"][:], np.arange(3))
    else:
        assert (path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("kind", ["zarr", "hdf5"])
@pytest.mark.parametrize(
    ("arrays", "options", "difference"),
    [
        ({**ARRAYS, "patches": ((4, 5), "uint8")}, {}, 'patches dtype was "uint16", now "uint8"'),
        ({**ARRAYS, "origins": ((2,), "int64")}, {}, "origins item_shape was [3], now [2]"),
        (ARRAYS, {"chunk_rows": 4}, "chunk_rows was 8, now 4"),
        (ARRAYS, {"codec": "none"}, "codec was"),
        ({"patches": ARRAYS["patches"]}, {}, 'arrays were ["origins", "patches"], now ["patches"]'),
    ],
    ids=["dtype", "item-shape", "chunk-rows", "codec", "arrays"],
)
def test_append_with_another_layout_names_the_difference(
    tmp_path: Path, kind: str, arrays: dict[str, Any], options: dict[str, Any], difference: str
) -> None:
    path = out_path(tmp_path, kind)
    with open_writer(path, ARRAYS, chunk_rows=8) as writer:
        writer.append(patches=patches(0, 3), origins=origins(0, 3))
    with pytest.raises(ResumeMismatchError) as info:
        open_writer(path, arrays, **{"chunk_rows": 8, **options}, append=True)
    message = str(info.value)
    assert message.startswith(f"{path}: cannot append, {difference}")
    assert message.endswith(
        "(append with the same arrays, chunk_rows and codec, or --overwrite to replace it)"
    )
    assert_rows(path, 3)


def test_append_refuses_an_output_of_another_command(tmp_path: Path) -> None:
    path = tmp_path / "out.zarr"
    ledger.claim(path, ledger.RunRecord("convert", {}), overwrite=False, populate=lambda p: None)
    with pytest.raises(TargetError) as info:
        open_writer(path, ARRAYS, append=True)
    assert str(info.value) == (
        f"{path}: was made by datatools convert, not by a writer (choose another target)"
    )


@pytest.mark.parametrize(("kind", "zarr_format"), FORMATS, ids=IDS)
def test_positional_fill_in_any_order(
    tmp_path: Path, kind: str, zarr_format: Literal[2, 3]
) -> None:
    path = out_path(tmp_path, kind)
    options: dict[str, Any] = {"chunk_rows": 8, "total_rows": 21, "zarr_format": zarr_format}
    writer = open_writer(path, ARRAYS, **options)
    writer.write_rows(16, patches=patches(16, 5), origins=origins(16, 5))
    writer.write_rows(0, patches=patches(0, 8), origins=origins(0, 8))
    assert (writer.done, writer.flushed_rows) == (frozenset({0, 2}), 13)
    if kind == "zarr":
        other = open_writer(path, ARRAYS, append=True, **options)
        writer.close()
        assert not ledger.is_complete(path)
        other.write_rows(8, patches=patches(8, 8), origins=origins(8, 8))
        other.close()
        assert ledger.is_complete(path)
        status = ledger.status(path)
        assert status is not None
        assert status.units_done == status.units_total == 3
    else:
        writer.write_rows(8, patches=patches(8, 8), origins=origins(8, 8))
        writer.close()
        assert hdf5_meta(path)["complete"] is True
    assert_rows(path, 21)


def test_positional_fill_resumes_and_completes_later(tmp_path: Path) -> None:
    path = tmp_path / "out.zarr"
    options: dict[str, Any] = {"chunk_rows": 8, "total_rows": 16}
    with open_writer(path, ARRAYS, **options) as writer:
        writer.write_rows(8, patches=patches(8, 8), origins=origins(8, 8))
    assert not ledger.is_complete(path)
    np.testing.assert_array_equal(read_back(path, "patches")[:8], 0)
    with open_writer(path, ARRAYS, append=True, **options) as writer:
        assert writer.done == frozenset({1})
        writer.write_rows(0, patches=patches(0, 8), origins=origins(0, 8))
    assert ledger.is_complete(path)
    assert_rows(path, 16)


@pytest.mark.parametrize(
    ("start", "rows"), [(4, 8), (0, 5), (16, 8), (-8, 8)], ids=["start", "end", "past", "neg"]
)
def test_positional_fill_refuses_partial_chunk_rows(tmp_path: Path, start: int, rows: int) -> None:
    path = tmp_path / "out.zarr"
    with open_writer(path, ARRAYS, chunk_rows=8, total_rows=21) as writer:
        with pytest.raises(InputError) as info:
            writer.write_rows(start, patches=patches(0, rows), origins=origins(0, rows))
        assert str(info.value) == (
            f"{path}: write_rows of rows [{start}, {start + rows}) does not cover whole chunk "
            "rows (start and end must be multiples of 8, the end may be total_rows 21)"
        )
        with pytest.raises(OptionError, match="append needs a growing writer"):
            writer.append(patches=patches(0, 1), origins=origins(0, 1))
    with (
        open_writer(tmp_path / "grow.zarr", ARRAYS) as writer,
        pytest.raises(OptionError, match="write_rows needs total_rows"),
    ):
        writer.write_rows(0, patches=patches(0, 1), origins=origins(0, 1))


# --- command, params, attributes, groups, per-array chunk rows ---------------------------------


def group_attrs(path: Path, group: str = "") -> dict[str, Any]:
    """Attributes of a group as loaders see them (HDF5 values as h5py returns them)."""
    if path.suffix == ".h5" or path.name.endswith(ledger.PARTIAL_SUFFIX):
        with h5py.File(path, "r") as file:
            return dict(file[group or "/"].attrs)
    return dict(zarr.open_group(str(path / group), mode="r").attrs.asdict())


@pytest.mark.parametrize(("kind", "zarr_format"), FORMATS, ids=IDS)
def test_command_params_and_attributes_are_recorded_from_the_start(
    tmp_path: Path, kind: str, zarr_format: Literal[2, 3]
) -> None:
    path = out_path(tmp_path, kind)
    options: dict[str, Any] = {
        "chunk_rows": 8,
        "zarr_format": zarr_format,
        "record": RunRecord("patches", {"size": (4, 5), "seed": None}),
    }
    attributes = {"edge": "symmetric", "size": [4, 5], "counts": {"a": 1}, "seed": None}
    with (
        contextlib.suppress(KeyboardInterrupt),
        open_writer(path, ARRAYS, attributes=attributes, **options) as writer,
    ):
        writer.append(patches=patches(0, 3), origins=origins(0, 3))
        raise KeyboardInterrupt
    assert read_run(path) == StoredRun("patches", {"size": [4, 5], "seed": None}, False)
    stored = group_attrs(Path(f"{path}{ledger.PARTIAL_SUFFIX}") if kind == "hdf5" else path)
    if kind == "hdf5":
        assert hdf5_meta(Path(f"{path}{ledger.PARTIAL_SUFFIX}"))["command"] == "patches"
        assert stored["edge"] == "symmetric"
        np.testing.assert_array_equal(stored["size"], [4, 5])
        assert json.loads(stored["counts"]) == {"a": 1}
        assert json.loads(stored["seed"]) is None
    else:
        status = ledger.status(path)
        assert status is not None
        assert status.record is not None
        assert status.record.command == "patches"
        assert stored == {
            **attributes,
            "datatools": {"rows": 0, "chunk_rows": 8, "complete": False},
        }
    with open_writer(path, ARRAYS, append=True, attributes={"edge": "other"}, **options) as writer:
        writer.append(patches=patches(0, 9), origins=origins(0, 9))
    assert read_run(path) == StoredRun("patches", {"size": [4, 5], "seed": None}, True)
    assert group_attrs(path)["edge"] == "symmetric"  # an append keeps the stored attributes
    assert_rows(path, 9)


@pytest.mark.parametrize("kind", ["zarr", "hdf5"])
def test_append_checks_command_and_params(tmp_path: Path, kind: str) -> None:
    path = out_path(tmp_path, kind)
    with open_writer(path, ARRAYS, record=RunRecord("patches", {"size": [64, 64]})) as writer:
        writer.append(patches=patches(0, 3), origins=origins(0, 3))
    with pytest.raises(ResumeMismatchError) as info:
        open_writer(path, ARRAYS, record=RunRecord("patches", {"size": [32, 32]}), append=True)
    assert str(info.value) == (
        f"{path}: cannot append, size was [64, 64], now [32, 32] (append with the same "
        "options, or --overwrite to replace it)"
    )
    with pytest.raises(TargetError) as refused:
        open_writer(path, ARRAYS, record=RunRecord("instances", {"size": [64, 64]}), append=True)
    assert str(refused.value) == (
        f"{path}: was made by datatools patches, not by datatools instances (choose another target)"
    )
    assert_rows(path, 3)


def test_read_run_of_missing_and_foreign_targets(tmp_path: Path) -> None:
    assert read_run(tmp_path / "none.zarr") is None
    assert read_run(tmp_path / "none.h5") is None
    (tmp_path / "mine.zarr").mkdir()
    assert read_run(tmp_path / "mine.zarr") is None
    with h5py.File(tmp_path / "mine.h5", "w") as file:
        file["x"] = np.arange(3)
    assert read_run(tmp_path / "mine.h5") is None
    ledger.claim(
        tmp_path / "c.zarr",
        ledger.RunRecord("convert", {}),
        overwrite=False,
        populate=lambda p: None,
    )
    assert read_run(tmp_path / "c.zarr") == StoredRun("convert", {}, False)


@pytest.mark.parametrize(("kind", "zarr_format"), FORMATS, ids=IDS)
def test_groups_grow_on_their_own_in_one_output(
    tmp_path: Path, kind: str, zarr_format: Literal[2, 3]
) -> None:
    path = out_path(tmp_path, kind)
    groups = {"class_1": {"class_value": 1}, "class_7": {"class_value": 7}}
    options: dict[str, Any] = {"chunk_rows": 4, "zarr_format": zarr_format, "groups": groups}
    with (
        contextlib.suppress(KeyboardInterrupt),
        open_writer(path, ARRAYS, attributes={"counts": [6, 11]}, **options) as writer,
    ):
        assert writer.groups == ("class_1", "class_7")
        writer.group("class_7").append(patches=patches(0, 9), origins=origins(0, 9))
        writer.group("class_1").append(patches=patches(100, 6), origins=origins(100, 6))
        with pytest.raises(OptionError, match="the arrays are in groups class_1, class_7"):
            writer.append(patches=patches(0, 1), origins=origins(0, 1))
        with pytest.raises(OptionError, match="no group 'class_2'"):
            writer.group("class_2")
        raise KeyboardInterrupt
    assert (writer.rows, writer.flushed_rows) == (12, 12)
    with open_writer(path, ARRAYS, append=True, **options) as writer:
        one, seven = writer.group("class_1"), writer.group("class_7")
        assert (one.rows, seven.rows) == (4, 8)
        one.append(patches=patches(104, 2), origins=origins(104, 2))
        seven.append(patches=patches(8, 3), origins=origins(8, 3))
    np.testing.assert_array_equal(read_back(path, "class_1/patches"), patches(100, 6))
    np.testing.assert_array_equal(read_back(path, "class_1/origins"), origins(100, 6))
    np.testing.assert_array_equal(read_back(path, "class_7/patches"), patches(0, 11))
    if kind == "hdf5":
        assert group_attrs(path, "class_7")["class_value"] == 7
        meta = hdf5_meta(path)
        assert (meta["rows"], meta["group_rows"]) == (17, {"class_1": 6, "class_7": 11})
    else:
        assert group_attrs(path, "class_7") == {"class_value": 7}
        assert ledger.open_ledger(path).read_state() == {
            "rows": 17,
            "group_rows": {"class_1": 6, "class_7": 11},
        }
        names = [name for name, _ in zarr.open_group(str(path), mode="r").members(max_depth=None)]
        assert ".datatools" in names
        assert not [name for name in names if name.endswith("/.datatools")]  # one marker
    np.testing.assert_array_equal(group_attrs(path)["counts"], [6, 11])


@pytest.mark.parametrize(("kind", "zarr_format"), FORMATS, ids=IDS)
def test_arrays_with_their_own_chunk_rows_flush_on_their_own(
    tmp_path: Path, kind: str, zarr_format: Literal[2, 3]
) -> None:
    path = out_path(tmp_path, kind)
    arrays = {"patches": ARRAYS["patches"], "origins": ArraySpec((3,), "int64", chunk_rows=16)}
    options: dict[str, Any] = {"chunk_rows": 4, "zarr_format": zarr_format}
    with (
        contextlib.suppress(KeyboardInterrupt),
        open_writer(path, arrays, **options) as writer,
    ):
        for first in range(0, 15, 5):
            writer.append(patches=patches(first, 5), origins=origins(first, 5))
            assert writer.flushed_rows == 0  # origins has no whole chunk row yet
        writer.append(patches=patches(15, 6), origins=origins(15, 6))
        assert writer.flushed_rows == 16  # patches holds 20 rows, origins 16
        raise KeyboardInterrupt
    with open_writer(path, arrays, append=True, **options) as writer:
        assert writer.rows == 16
        writer.append(patches=patches(16, 21), origins=origins(16, 21))
    assert_rows(path, 37)
    if kind == "hdf5":
        with h5py.File(path, "r") as file:
            assert (file["patches"].chunks, file["origins"].chunks) == ((4, 4, 5), (16, 3))
    else:
        group = zarr.open_group(str(path), mode="r")
        assert (child_array(group, "patches").chunks, child_array(group, "origins").chunks) == (
            (4, 4, 5),
            (16, 3),
        )
    with pytest.raises(ResumeMismatchError, match="origins chunk_rows was 16, now 4"):
        open_writer(path, ARRAYS, append=True, **options)


@pytest.mark.parametrize(("kind", "zarr_format"), FORMATS, ids=IDS)
def test_positional_fill_writes_a_table_of_larger_chunks_on_its_own(
    tmp_path: Path, kind: str, zarr_format: Literal[2, 3]
) -> None:
    path = out_path(tmp_path, kind)
    table = ArraySpec((3,), "int64", chunk_rows=32)
    arrays = {**ARRAYS, "labels": ARRAYS["patches"], "origins": table}
    options: dict[str, Any] = {"chunk_rows": 8, "total_rows": 21, "zarr_format": zarr_format}
    with open_writer(path, arrays, **options) as writer:
        writer.write_rows(8, patches=patches(8, 8), labels=patches(8, 8))
        assert writer.done == frozenset()  # its origins are not written yet
        with pytest.raises(InputError) as info:
            writer.write_rows(0, origins=origins(0, 16))
        assert str(info.value) == (
            f"{path}: write_rows of rows [0, 16) does not cover whole chunk rows (start and end "
            "must be multiples of 32, the end may be total_rows 21)"
        )
        with pytest.raises(InputError) as info:
            writer.write_rows(0, patches=patches(0, 8))
        assert str(info.value) == (
            f"{path}: write_rows got no rows for labels (arrays with the same chunk rows are "
            "written together; give rows to patches, labels)"
        )
        writer.write_rows(0, origins=origins(0, 21))
        assert (writer.done, writer.flushed_rows) == (frozenset({1}), 8)
        writer.write_rows(0, patches=patches(0, 8), labels=patches(0, 8))
    assert read_run(path) == StoredRun("write", {}, False)
    with open_writer(path, arrays, append=True, **options) as writer:
        assert writer.done == frozenset({0, 1})
        writer.write_rows(16, patches=patches(16, 5), labels=patches(16, 5))
    assert_rows(path, 21)
    np.testing.assert_array_equal(read_back(path, "labels"), patches(0, 21))
    if kind == "zarr":
        status = ledger.status(path)
        assert status is not None
        assert status.units_done == status.units_total == 4


def test_all_zero_chunks_are_not_stored(tmp_path: Path) -> None:
    path = tmp_path / "out.zarr"
    zeros = np.zeros((8, 4, 5), np.uint16)
    with open_writer(path, ARRAYS, chunk_rows=8) as writer:
        writer.append(patches=zeros, origins=origins(0, 8))
        writer.append(patches=patches(8, 3), origins=origins(8, 3))
    assert not (path / "patches" / "c" / "0" / "0" / "0").exists()
    assert (path / "patches" / "c" / "1" / "0" / "0").is_file()
    got = read_back(path, "patches")
    np.testing.assert_array_equal(got[:8], 0)
    np.testing.assert_array_equal(got[8:], patches(8, 3))


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"attributes": {"datatools": 1}}, "attributes: the key 'datatools' is the writer's"),
        ({"attributes": {"x": object()}}, "attributes: not storable as JSON"),
        ({"record": RunRecord("write", {"x": {1, 2}})}, "params: not storable as JSON"),
        ({"record": RunRecord("", {})}, "command '': must be a non-empty name"),
        ({"groups": ["a/b"]}, "groups: name 'a/b' is not usable"),
        ({"groups": ["a", "a"]}, "groups: ['a', 'a'] must name at least one group, each once"),
        ({"groups": "a"}, "groups: give a list of names, not the text 'a'"),
        ({"groups": ["a"], "total_rows": 4}, "groups: positional fill (total_rows) writes"),
        (
            {"arrays": {"a": ArraySpec((2,), "uint8", chunk_rows=0)}},
            "a chunk_rows 0: must be a positive number of rows",
        ),
    ],
)
def test_bad_new_options_are_refused(tmp_path: Path, options: dict[str, Any], problem: str) -> None:
    arrays = options.pop("arrays", ARRAYS)
    with pytest.raises(OptionError) as info:
        open_writer(tmp_path / "out.zarr", arrays, **options)
    assert str(info.value).startswith(problem)
    assert not (tmp_path / "out.zarr").exists()


def stored_bytes(path: Path) -> dict[str, bytes]:
    """Every file of an output (a Zarr folder or an HDF5 file) by its path inside it."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {
        file.relative_to(path).as_posix(): file.read_bytes()
        for file in sorted(path.rglob("*"))
        if file.is_file()
    }


def write_some(path: Path, options: OutputOptions | None = None, **overrides: Any) -> None:
    """21 rows (two whole chunk rows of 8 and a tail) through ``open_writer``."""
    with open_writer(path, ARRAYS, options, **overrides) as writer:
        writer.append(patches=patches(0, 21), origins=origins(0, 21))


@pytest.mark.parametrize(("kind", "zarr_format"), FORMATS, ids=IDS)
def test_output_options_and_flat_overrides_write_the_same_bytes(
    tmp_path: Path, kind: str, zarr_format: Literal[2, 3]
) -> None:
    codec = "gzip" if kind == "hdf5" else "blosc-zstd"
    flat, given, mixed = (out_path(tmp_path / name, kind) for name in ("flat", "given", "mixed"))
    for path in (flat, given, mixed):
        path.parent.mkdir()
    write_some(flat, chunk_rows=8, codec=codec, codec_level=5, zarr_format=zarr_format)
    options = OutputOptions(chunk_rows=8, codec=codec, codec_level=5, zarr_format=zarr_format)
    write_some(given, options)
    other = OutputOptions(chunk_rows=4, codec="none")
    write_some(mixed, other, chunk_rows=8, codec=codec, codec_level=5, zarr_format=zarr_format)
    expected = stored_bytes(flat)
    assert expected
    assert stored_bytes(given) == expected
    assert stored_bytes(mixed) == expected  # flat overrides win over the options object
    assert_rows(given, 21)
    record = ledger.status(given)
    assert record is not None
    assert record.record is not None
    assert (record.record.params["codec"], record.record.params["level"]) == (codec, 5)
    assert record.record.params["chunk_rows"] == 8


def test_overwrite_comes_from_the_options_or_flat(tmp_path: Path) -> None:
    path = tmp_path / "out.zarr"
    write_some(path, OutputOptions(chunk_rows=8))
    with pytest.raises(TargetError, match="exists"):
        write_some(path, OutputOptions(chunk_rows=8))
    write_some(path, OutputOptions(chunk_rows=8, overwrite=True))
    write_some(path, OutputOptions(chunk_rows=8), overwrite=True)
    assert_rows(path, 21)
    with pytest.raises(OptionError, match="append=True and overwrite=True exclude each other"):
        open_writer(path, ARRAYS, OutputOptions(overwrite=True), append=True)


@pytest.mark.parametrize("kind", ["zarr", "hdf5"])
def test_the_deprecated_level_keyword_still_sets_the_codec_level(tmp_path: Path, kind: str) -> None:
    old, new = (out_path(tmp_path / name, kind) for name in ("old", "new"))
    old.parent.mkdir()
    new.parent.mkdir()
    with pytest.warns(DeprecationWarning, match="level= is deprecated: use codec_level=") as seen:
        write_some(old, chunk_rows=8, codec="gzip", level=7)
    assert [Path(w.filename).name for w in seen] == [Path(__file__).name]  # the caller's line
    write_some(new, chunk_rows=8, codec="gzip", codec_level=7)
    assert stored_bytes(old) == stored_bytes(new)
    status = ledger.status(old)
    assert status is not None
    assert status.record is not None
    assert status.record.params["level"] == 7


def test_the_deprecated_command_and_params_keywords_still_make_the_record(
    tmp_path: Path,
) -> None:
    old, new = tmp_path / "old.zarr", tmp_path / "new.zarr"
    message = "command= and params= are deprecated: use record=RunRecord"
    with pytest.warns(DeprecationWarning, match=message) as seen:
        open_writer(old, ARRAYS, command="patches", params={"size": [4, 5]}).close()
    assert [Path(w.filename).name for w in seen] == [Path(__file__).name]
    open_writer(new, ARRAYS, record=RunRecord("patches", {"size": [4, 5]})).close()
    assert read_run(old) == read_run(new) == StoredRun("patches", {"size": [4, 5]}, True)
    assert stored_bytes(old) == stored_bytes(new)
    with pytest.raises(OptionError, match=r"command: give them in record= only"):
        open_writer(tmp_path / "both.zarr", ARRAYS, record=RunRecord("a", {}), command="b")


@pytest.mark.parametrize(
    ("options", "overrides", "problem"),
    [
        (OutputOptions(chunks=32), {}, "chunks 32: a row writer takes chunk_rows along axis 0"),
        (None, {"chunks": (1, 2)}, "chunks (1, 2): a row writer takes chunk_rows"),
        (OutputOptions(shards=64), {}, "shards 64: row outputs are not sharded"),
        (OutputOptions(chunk_rows=0), {}, "chunk_rows 0: must be a positive number"),
        (OutputOptions(codec="lzf"), {}, "--codec lzf: unknown for Zarr outputs"),
        (None, {"chunk_row": 8}, "OutputOptions: unknown option 'chunk_row'"),
    ],
)
def test_storage_settings_a_row_writer_cannot_use_are_refused(
    tmp_path: Path, options: OutputOptions | None, overrides: dict[str, Any], problem: str
) -> None:
    with pytest.raises(OptionError) as info:
        open_writer(tmp_path / "out.zarr", ARRAYS, options, **overrides)
    assert str(info.value).startswith(problem)
    assert not (tmp_path / "out.zarr").exists()
