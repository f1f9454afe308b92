"""Outputs written by the previous release (version 0.1.0 before the package reorganisation,
commit db71912) still resume and still pass ``verify``.

What that release wrote, found by running it and this code on the same calls and comparing
every Zarr metadata file and HDF5 attribute: the same files, chunks, done units and state,
except one key. Since then the run record and the provenance attributes of convert,
split-classes and patches hold ``options`` (the command's options object, for the reader,
never compared on resume: :data:`datatools.ledger.record.PROVENANCE_PARAMS`):

- convert, each class image of split-classes (Zarr): ``.datatools`` ``run.params.options``
  and the root attribute ``datatools.options``; HDF5: the root attribute ``datatools``
  (JSON) ``params.options``. The split-classes root record has none.
- patches: ``run.params.options.options`` (``run.params.options`` itself, the writer's
  record of the caller's params, is old) and ``params.options`` of the root and of each
  class group, in Zarr attributes or HDF5 attributes (JSON).
- instances and the row writers: nothing changed.

And the run record of convert, patches and instances holds the fingerprint of the input files
(``source_files``, :mod:`datatools.ledger.fingerprint`), beside ``options`` wherever the
record is copied (the provenance attributes, and instances' ``instances`` attribute); the
row writers' records have none.

So each output here is made by this code, left interrupted where the command resumes, and
taken back to the previous format by :func:`to_previous_release`, which removes exactly those
keys (and checks that no recorded options object is left). The same command of this code
then finishes it, equal array by array to an uninterrupted run, and a finished one it leaves
as it is. The previous release ran patches with one worker; this one resumes them with its
default, one per core.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from datatools import ledger
from datatools.cli.main import cli
from datatools.convert import convert
from datatools.convert.class_masks import split_classes
from datatools.geometry import Box
from datatools.instances import extract_instances
from datatools.instances.crops import Cropper
from datatools.ledger.zarr_folder import ZarrLedger
from datatools.patches import extract_patches
from datatools.sources import Volume, open_volume
from datatools.verify import verify
from datatools.writers import RunRecord, open_writer
from tests.helpers import arange_volume, stop_after

Drop = tuple[str, str]
"""A key the previous release did not write: the node inside the output (``""`` for the
root) and the key path, ``attribute/key/...`` (an HDF5 attribute holds a JSON document)."""

FILES = "source_files"
"""The key of the inputs' fingerprint, which the previous release never wrote."""


def both(node: str, keys: str) -> tuple[Drop, ...]:
    """``keys`` (ending in ``options``) of ``node``, and the fingerprint beside it."""
    return ((node, keys), (node, keys.removesuffix("options") + FILES))


CONVERT_ZARR: tuple[Drop, ...] = both("", "datatools/options") + both(
    ".datatools", "run/params/options"
)
CONVERT_HDF5: tuple[Drop, ...] = both("", "datatools/params/options")
PATCHES_ZARR: tuple[Drop, ...] = (
    *both("", "params/options"),
    (".datatools", "run/params/options/options"),
    (".datatools", f"run/params/options/{FILES}"),
)
PATCHES_HDF5: tuple[Drop, ...] = (
    *both("", "params/options"),
    ("", "datatools/params/options/options"),
    ("", f"datatools/params/options/{FILES}"),
)
INSTANCES_ZARR: tuple[Drop, ...] = (
    ("", f"instances/{FILES}"),
    (".datatools", f"run/params/options/{FILES}"),
)
INSTANCES_HDF5: tuple[Drop, ...] = (
    ("", f"instances/{FILES}"),
    ("", f"datatools/params/options/{FILES}"),
)
CLASSES = (0, 1, 2)
"""The label values of the ``classes`` volume."""
PATCH_CLASSES: tuple[Drop, ...] = tuple(
    drop for v in CLASSES for drop in both(f"class_{v}", "params/options")
)
NEW_KEY = "codec_level"
"""A name every recorded options object holds and the previous release never wrote."""

CONVERT: dict[str, Any] = {"chunks": 4, "memory_limit": 2 * 4 * 4 * 16 * 2}
"""Several units on a 16^3 volume: 8 for Zarr (both levels), 64 for HDF5."""
PATCHES: dict[str, Any] = {"size": (4, 4, 4), "stride": 4, "memory_limit": 10_000, "chunk_rows": 4}
INSTANCES: dict[str, Any] = {"size": (4, 4, 4), "chunk_rows": 1}
ROWS: dict[str, Any] = {"patches": ((4, 4), "uint16"), "origins": ((2,), "int64")}


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """An arange-encoded 16^3 uint16 Zarr array."""
    return write_zarr(tmp_path / "raw.zarr", arange_volume((16, 16, 16), "uint16"))


@pytest.fixture
def classes(tmp_path: Path) -> Path:
    """Labels 0, 1 and 2 mixed in every 4^3 window, as a uint8 Zarr array."""
    data = arange_volume((16, 16, 16), "uint16") // 7 % 3
    return write_zarr(tmp_path / "classes.zarr", data.astype(np.uint8))


@pytest.fixture
def cells(tmp_path: Path) -> Path:
    """Four instances (ids 1, 2, 7, 9), one at the border, as a uint16 Zarr array."""
    labels = np.zeros((16, 16, 16), np.uint16)
    labels[2:5, 2:5, 2:5] = 1
    labels[8:11, 3:6, 9:12] = 2
    labels[10:13, 10:14, 2:5] = 7
    labels[13:16, 11:14, 11:14] = 9
    return write_zarr(tmp_path / "cell_labels.zarr", labels)


def write_zarr(path: Path, data: np.ndarray) -> Path:
    array = zarr.create_array(str(path), shape=data.shape, dtype=data.dtype, chunks=(8, 8, 8))
    array[...] = data
    return path


def to_previous_release(output: Path, drops: Sequence[Drop]) -> None:
    """Rewrite the output at ``output`` (its unfinished file, if that is where it is) as the
    previous release wrote it: remove every key of ``drops``, each of which must be there.

    Raises:
        AssertionError: a key is missing (this release no longer writes it: update the
            list), or a recorded options object is left (a key is missing from the list).
    """
    where = ledger.open_ledger(output).location()
    if where.is_dir():
        for node, keys in drops:
            file = where / node / "zarr.json"
            if file.is_file():
                doc = json.loads(file.read_text())
                _drop(doc["attributes"], keys)
            else:
                file = where / node / ".zattrs"
                doc = json.loads(file.read_text())
                _drop(doc, keys)
            file.write_text(json.dumps(doc, indent=2))
    else:
        with h5py.File(where, "r+") as fh:
            for node, keys in drops:
                attrs = fh[node or "/"].attrs
                name, _, rest = keys.partition("/")
                doc = json.loads(attrs[name])
                _drop(doc, rest)
                attrs[name] = json.dumps(doc)
    assert NEW_KEY not in json.dumps(metadata(output)), (
        f"{output}: a recorded options object is left"
    )
    assert FILES not in json.dumps(metadata(output)), f"{output}: a fingerprint is left"


def _drop(doc: dict[str, Any], keys: str) -> None:
    *parents, last = keys.split("/")
    for key in parents:
        doc = doc[key]
    del doc[last]


def metadata(output: Path) -> dict[str, Any]:
    """Every Zarr metadata file (parsed), or every HDF5 attribute, of the output."""
    where = ledger.open_ledger(output).location()
    if where.is_dir():
        names = {"zarr.json", ".zattrs", ".zarray", ".zgroup"}
        files = sorted(p for p in where.rglob("*") if p.name in names)
        return {str(p.relative_to(where)): json.loads(p.read_text()) for p in files}
    found: dict[str, Any] = {}
    with h5py.File(where, "r") as fh:

        def collect(name: str, node: Any) -> None:
            found.update({f"{name}.{key}": str(value) for key, value in node.attrs.items()})

        collect("/", fh)
        fh.visititems(collect)
    return found


def arrays_of(output: Path) -> dict[str, np.ndarray]:
    """Every array of a finished output, by its path inside it (the ledger's own left out)."""
    own = ledger.open_ledger(output).is_own_node
    found: dict[str, np.ndarray] = {}
    if output.is_dir():
        for name, node in zarr.open_group(output, mode="r").members(max_depth=None):
            if isinstance(node, zarr.Array) and not own(name):
                found[name] = np.asarray(node[...])
    else:
        with h5py.File(output, "r") as fh:

            def collect(name: str, node: Any) -> None:
                if isinstance(node, h5py.Dataset) and not own(name):
                    found[name] = node[()]

            fh.visititems(collect)
    return found


def assert_same_arrays(got: Path, want: Path) -> None:
    a, b = arrays_of(got), arrays_of(want)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def assert_verifies(output: Path, against: Path) -> None:
    """``verify`` and ``datatools verify`` pass, every level-0 voxel equal to ``against``."""
    result = verify(output, against=against)
    assert result.ok, result.summary()
    assert result.compared_voxels == 16**3
    cli_result = CliRunner().invoke(cli, ["verify", str(output), "--against", str(against)])
    assert cli_result.exit_code == 0, cli_result.output
    assert cli_result.stdout.startswith(f"{output}: OK"), cli_result.stdout


def interrupt_after(
    monkeypatch: pytest.MonkeyPatch, owner: type[Any], name: str, calls: int
) -> None:
    """Make the method ``owner.name`` raise ``KeyboardInterrupt`` from its ``calls + 1``-th
    call on, as when a run is killed there (``monkeypatch.undo()`` puts it back)."""
    method = getattr(owner, name)
    left = calls

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        nonlocal left
        if left == 0:
            raise KeyboardInterrupt
        left -= 1
        return method(*args, **kwargs)

    monkeypatch.setattr(owner, name, interrupted)


@contextlib.contextmanager
def failing_reads(spec: Path, reads: int) -> Iterator[Volume]:
    """``spec`` opened as the command opens it, its reads interrupted after ``reads``."""
    with open_volume(spec) as volume:
        plain = volume.read
        left = reads

        def read(box: Box, out: np.ndarray | None = None) -> np.ndarray:
            nonlocal left
            if left == 0:
                raise KeyboardInterrupt
            left -= 1
            return plain(box, out)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(volume, "read", read)
            yield volume


CONVERT_KINDS: dict[str, tuple[dict[str, Any], tuple[Drop, ...]]] = {
    "v3.zarr": ({"levels": 2}, CONVERT_ZARR),
    "v2.zarr": ({"levels": 2, "zarr_format": 2}, CONVERT_ZARR),
    "out.h5": ({}, CONVERT_HDF5),
}


@pytest.mark.parametrize("name", list(CONVERT_KINDS))
def test_interrupted_convert_output_resumes_and_verifies(
    tmp_path: Path, source: Path, name: str
) -> None:
    options, drops = CONVERT_KINDS[name]
    out = tmp_path / name
    with pytest.raises(KeyboardInterrupt):
        convert(source, out, on_unit_done=stop_after(3), workers=1, **CONVERT, **options)
    to_previous_release(out, drops)
    status = ledger.status(out)  # what datatools info shows
    assert status is not None
    assert (status.complete, status.units_done) == (False, 3)
    resumed = convert(source, out, **CONVERT, **options)
    assert (resumed.units_skipped, resumed.units_written) == (3, resumed.units_total - 3)
    assert resumed.complete
    record = ledger.read_record(out)
    assert record is not None
    assert "options" not in record.params  # the record it resumed stays as it was
    fresh = convert(source, tmp_path / f"fresh_{name}", **CONVERT, **options)
    assert_same_arrays(out, fresh.target)
    assert_verifies(out, source)


@pytest.mark.parametrize("name", list(CONVERT_KINDS))
def test_finished_convert_output_is_left_as_it_is(tmp_path: Path, source: Path, name: str) -> None:
    options, drops = CONVERT_KINDS[name]
    out = tmp_path / name
    convert(source, out, **CONVERT, **options)
    to_previous_release(out, drops)
    before = metadata(out)
    again = convert(source, out, **CONVERT, **options)
    assert (again.units_written, again.complete) == (0, True)
    assert metadata(out) == before
    assert_verifies(out, source)


SPLIT: dict[str, Any] = {"chunks": 4, "levels": 2, "memory_limit": 2 * 4 * 4 * 16 * 2}
SPLIT_DROPS = tuple(
    drop
    for name in ("1", "2")  # label 0 is the background: no class image
    for drop in both(name, "datatools/options") + both(f"{name}/.datatools", "run/params/options")
)


@pytest.mark.parametrize("interrupted", [True, False], ids=["interrupted", "finished"])
def test_split_classes_output_resumes_and_verifies(
    tmp_path: Path, classes: Path, monkeypatch: pytest.MonkeyPatch, interrupted: bool
) -> None:
    out = tmp_path / "split.zarr"
    if interrupted:
        interrupt_after(monkeypatch, ZarrLedger, "mark_done", 3)
        with pytest.raises(KeyboardInterrupt):
            split_classes(classes, out, workers=1, **SPLIT)
        monkeypatch.undo()
        assert not ledger.is_complete(out)
    else:
        split_classes(classes, out, **SPLIT)
    to_previous_release(out, SPLIT_DROPS)
    before = metadata(out)
    again = split_classes(classes, out, **SPLIT)
    assert again.complete
    written = sum(result.units_written for _, _, result in again.classes.values())
    if interrupted:
        assert 0 < written < sum(r.units_total for _, _, r in again.classes.values())
    else:
        assert written == 0
        assert metadata(out) == before
    assert_same_arrays(out, split_classes(classes, tmp_path / "fresh.zarr", **SPLIT).target)
    for name in ("1", "2"):
        assert_verifies(out / name, classes)


PATCH_KINDS: dict[str, tuple[bool, tuple[Drop, ...]]] = {
    "p.zarr": (False, PATCHES_ZARR),
    "p.h5": (False, PATCHES_HDF5),
    "c.zarr": (True, PATCHES_ZARR + PATCH_CLASSES),
    "c.h5": (True, PATCHES_HDF5 + PATCH_CLASSES),
}


@pytest.mark.parametrize("interrupted", [True, False], ids=["interrupted", "finished"])
@pytest.mark.parametrize("name", list(PATCH_KINDS))
def test_patches_output_resumes(
    tmp_path: Path, source: Path, classes: Path, name: str, interrupted: bool
) -> None:
    per_class, drops = PATCH_KINDS[name]
    options: dict[str, Any] = dict(PATCHES)
    if per_class:
        options.update(labels=classes, per_class=True)
    out = tmp_path / name
    fresh = extract_patches(source, tmp_path / f"fresh_{name}", **options)
    if interrupted:
        with pytest.raises(KeyboardInterrupt), failing_reads(source, 3) as volume:
            extract_patches(volume, out, workers=1, **options)  # that release's default
    else:
        extract_patches(source, out, workers=1, **options)
    to_previous_release(out, drops)
    status = ledger.status(out)
    assert status is not None
    assert status.complete is not interrupted
    assert 0 < status.state["rows"] <= fresh.total
    before = metadata(out)
    again = extract_patches(source, out, **options)
    assert again.written == fresh.total - status.state["rows"]
    assert (again.written > 0) is interrupted
    if not interrupted:
        assert metadata(out) == before
    assert ledger.is_complete(out)
    assert_same_arrays(out, fresh.target)


@pytest.mark.parametrize("interrupted", [True, False], ids=["interrupted", "finished"])
@pytest.mark.parametrize("name", ["crops.zarr", "crops.h5"])
def test_instances_output_resumes(
    tmp_path: Path,
    source: Path,
    cells: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    interrupted: bool,
) -> None:
    out = tmp_path / name
    fresh = extract_instances(source, cells, tmp_path / f"fresh_{name}", **INSTANCES)
    if interrupted:
        interrupt_after(monkeypatch, Cropper, "_write", 1)  # one chunk row of crops written
        with pytest.raises(KeyboardInterrupt):
            extract_instances(source, cells, out, workers=1, **INSTANCES)
        monkeypatch.undo()
    else:
        extract_instances(source, cells, out, workers=1, **INSTANCES)
    # its record never held the options object
    to_previous_release(out, INSTANCES_HDF5 if name.endswith(".h5") else INSTANCES_ZARR)
    before = metadata(out)
    again = extract_instances(source, cells, out, **INSTANCES)
    assert again.complete
    assert (again.rows_skipped, again.rows_written) == ((1, 3) if interrupted else (4, 0))
    assert fresh.count == 4
    if not interrupted:
        assert metadata(out) == before
    assert_same_arrays(out, fresh.target)


def rows(start: int, stop: int) -> dict[str, np.ndarray]:
    """Rows ``start`` to ``stop`` of the arrays of :data:`ROWS`, arange-encoded."""
    n = stop - start
    return {
        "patches": arange_volume((stop, 4, 4), "uint16")[start:],
        "origins": np.arange(2 * start, 2 * stop, dtype=np.int64).reshape(n, 2),
    }


@pytest.mark.parametrize("interrupted", [True, False], ids=["interrupted", "finished"])
@pytest.mark.parametrize(("name", "zarr_format"), [("r.zarr", 3), ("r2.zarr", 2), ("r.h5", 3)])
def test_row_writer_output_appends(
    tmp_path: Path, name: str, zarr_format: int, interrupted: bool
) -> None:
    out = tmp_path / name
    record = RunRecord("write", {"k": 1})
    options: dict[str, Any] = {"chunk_rows": 8, "zarr_format": zarr_format, "record": record}
    with contextlib.suppress(KeyboardInterrupt), open_writer(out, ROWS, **options) as writer:
        writer.append(**rows(0, 21))
        if interrupted:
            raise KeyboardInterrupt  # the 5 rows not flushed are lost
    to_previous_release(out, ())  # unchanged: the writers' format is the same
    kept = 16 if interrupted else 21
    assert ledger.is_complete(out) is not interrupted
    with open_writer(out, ROWS, append=True, **options) as writer:
        assert (writer.rows, writer.flushed_rows) == (kept, kept)
        writer.append(**rows(kept, 30))
    with open_writer(tmp_path / f"fresh_{name}", ROWS, **options) as writer:
        writer.append(**rows(0, 30))
    assert ledger.is_complete(out)
    assert_same_arrays(out, tmp_path / f"fresh_{name}")
