"""``datatools verify``: is a converted output complete, well-formed, readable and equal to its
source?

Checks, in order: completion (ledger and marker), OME-NGFF metadata structure (axes, datasets,
transformations against the arrays), every chunk of every level decodes, every voxel of a
pyramid level equals the level above merged with the recorded method and the factors of the
metadata's scales, and with ``against`` every level-0 voxel equals the source ROI recorded in
the output, the source opened at the level and series the output was converted from (unless
``open_options`` chooses them). Memory: one block of about ``block_bytes`` (64 MiB by default)
from each side at a time (a level's blocks are smaller by its factors, so the block of the
level above it read to merge is that size).

A complete Zarr output holding what killed runs left (temporaries, empty done records,
unfinished sibling folders: :mod:`datatools.ledger.leftovers`) gets a problem line naming them;
a rerun of the convert command removes them. An unfinished output is reported as such (a run
may be writing its temporaries right now).

Missing chunk files are not findings: convert stores no chunk whose voxels are all the fill
value (0), and zarr-python reads a missing chunk as that value.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from datatools.convert.class_masks import ClassMask
from datatools.downsample import downsample
from datatools.dtypes import cast
from datatools.errors import InputError, InputNotFoundError
from datatools.geometry import Box, RoiSpec, resolve_roi, tile_box
from datatools.inputs import open_input
from datatools.ledger import Hdf5Ledger, find_stray_files, open_ledger
from datatools.ngff import parse_image, validate_image
from datatools.progress import progress_bar
from datatools.sources import OpenOptions, SourceSpec, Volume
from datatools.zarr_tasks import settle

DEFAULT_BLOCK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`.

    Attributes:
        target: the checked output.
        problems: one line per problem found; empty when everything agrees.
        first_mismatch: the first block (output voxels) that differs from the source.
        compared_voxels: voxels compared with the source (0 without ``against``).
        cast_to: the output dtype when it differs from the source's (the source was cast as
            convert casts it before comparing), else ``None``.
    """

    target: Path
    problems: list[str] = field(default_factory=list)
    first_mismatch: Box | None = None
    compared_voxels: int = 0
    cast_to: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            cast = f" cast to {self.cast_to}" if self.cast_to else ""
            extra = (
                f", {self.compared_voxels} voxels equal the source{cast}"
                if self.compared_voxels
                else ""
            )
            return f"{self.target}: OK (complete, metadata valid, all chunks readable{extra})"
        return "\n".join(f"{self.target}: {p}" for p in self.problems)


def verify(
    target_path: str | Path,
    *,
    against: SourceSpec | None = None,
    open_options: OpenOptions | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    progress: bool = False,
) -> VerifyResult:
    """Check a ``convert`` output; see the module docstring for what is checked.

    Raises:
        InputNotFoundError: ``target_path`` does not exist.
        InputError: it is not an output datatools can verify.
    """
    path = Path(target_path)
    if path.is_symlink():  # a link to an output is checked as the output
        path = Path(os.path.realpath(path))
    output = open_ledger(path)
    where = output.location()
    if where != path:
        raise InputError(
            f"{path}: unfinished (still {where.name}); rerun the convert command to finish it"
        )
    if output.path != path and path.exists():  # the partial name of an unfinished HDF5 file
        status = output.status()
        done = (
            f" ({status.units_done}/{status.units_total} units done)"
            if status is not None and status.units_total
            else ""
        )
        raise InputError(
            f"{path}: unfinished{done}; rerun the command that makes {output.path.name} to "
            f"finish it, then verify {output.path.name}"
        )
    if not path.exists():
        raise InputNotFoundError(f"{path}: no such file or directory")
    with contextlib.ExitStack() as opened:
        return _verify(path, opened, against, open_options, block_bytes, progress)


def _verify(
    path: Path,
    opened: contextlib.ExitStack,
    against: SourceSpec | None,
    open_options: OpenOptions | None,
    block_bytes: int,
    progress: bool,
) -> VerifyResult:
    """:func:`verify` with the files it opens closed by ``opened``."""
    problems: list[str] = []
    factors: list[tuple[int, ...]] = []
    if path.is_file():
        arrays, params = _open_hdf5(path, opened)
    else:
        arrays, params, factors = _open_zarr(path, problems)
    method = str(params.get("downsample") or "mean")
    source_box: Box | None = None
    volume: Volume | None = None
    chosen: OpenOptions | None = None
    if against is not None:
        chosen = _recorded(open_options, params) if _same_source(against, params) else open_options
        volume = opened.enter_context(open_input(against, chosen))
        value = _class_value(params)
        if value is not None:  # a class image of split-classes: compare with labels == value
            volume = ClassMask(volume, value)
        roi_text = params.get("roi")
        roi = RoiSpec.parse(roi_text) if isinstance(roi_text, str) else None
        source_box = resolve_roi(
            None if roi is None else Box(*_bounds(roi)), volume.shape, volume.axes
        )
        if source_box.shape != tuple(arrays[0].shape):
            problems.append(
                f"shape {tuple(arrays[0].shape)} differs from the source ROI "
                f"{source_box.to_text()} of {volume.spec}"
            )
            volume = None
    first_mismatch: Box | None = None
    compared = 0
    plans = [
        (
            level,
            array,
            _blocks(
                array.shape,
                array.chunks,
                array.dtype.itemsize,
                block_bytes // math.prod(factors[level - 1])
                if 0 < level <= len(factors)
                else block_bytes,
            ),
        )
        for level, array in enumerate(arrays)
    ]
    with progress_bar(
        sum(len(blocks) for *_, blocks in plans), f"verify {path.name}", enabled=progress
    ) as bar:
        for level, array, blocks in plans:
            unreadable, first_unreadable = 0, ""
            merged_ok = 0 < level <= len(factors)
            for block in blocks:
                bar.update(1)
                try:
                    data = _read(array, block)
                    if merged_ok:
                        found = _merge_mismatch(
                            data, arrays[level - 1], block, factors[level - 1], method
                        )
                        if found:
                            problems.append(f"level {level} {found}")
                            merged_ok = False
                except Exception as exc:  # a codec or I/O failure is a finding, not a crash
                    unreadable += 1
                    if unreadable == 1:
                        first_unreadable = (
                            f"level {level} block {block.to_text()} is unreadable ({exc})"
                        )
                    continue
                if level or volume is None or source_box is None or first_mismatch is not None:
                    continue
                box = block.shift(source_box.start)
                # the cast convert made: rounded and clipped where --allow-lossy-cast was
                expected = cast(volume.read(box), data.dtype, True, volume.spec, box)
                difference = _first_difference(data, expected, block)
                if not difference:
                    compared += block.size
                    continue
                first_mismatch = block
                problems.append(
                    f"differs from {volume.spec} in block {block.to_text()} ({difference})"
                    + _other_part(chosen, params)
                )
            if unreadable > 1:
                first_unreadable += f"; so are {unreadable - 1} more of its {len(blocks)} blocks"
            if unreadable:
                problems.append(first_unreadable)
    cast_to = None
    if volume is not None and arrays and volume.dtype != arrays[0].dtype:
        cast_to = str(arrays[0].dtype)
    return VerifyResult(path, problems, first_mismatch, compared, cast_to)


def _merge_mismatch(
    data: np.ndarray[Any, Any], above: Any, block: Box, factors: tuple[int, ...], method: str
) -> str:
    """Where ``data`` (``block`` of a level) differs from the level ``above`` merged by
    ``factors`` with ``method``, as a message; empty when they agree.

    Raises:
        Exception: as :func:`_read`, for the block of the level above.
    """
    source = Box(
        tuple(a * f for a, f in zip(block.start, factors, strict=True)),
        tuple(min(b * f, n) for b, f, n in zip(block.stop, factors, above.shape, strict=True)),
    )
    difference = _first_difference(data, downsample(_read(above, source), factors, method), block)
    if not difference:
        return ""
    return f"block {block.to_text()} differs from the level above merged by {method} ({difference})"


def _first_difference(
    data: np.ndarray[Any, Any], expected: np.ndarray[Any, Any], block: Box
) -> str:
    """``first at voxel (z, y, x): found != expected`` for the first voxel of ``block`` where
    ``data`` and ``expected`` differ (NaN equals NaN); empty when they agree."""
    same = data == expected
    if data.dtype.kind in "fc":
        same |= np.isnan(data) & np.isnan(expected)
    if same.all():
        return ""
    where = tuple(int(i) for i in np.argwhere(~same)[0])
    voxel = tuple(a + w for a, w in zip(block.start, where, strict=True))
    return f"first at voxel {voxel}: {data[where].item()!r} != {expected[where].item()!r}"


def _level_factors(attrs: dict[str, Any], path: Path) -> list[tuple[int, ...]]:
    """Per level below the first, its factors over the level above, from the ratios of the
    multiscales' scales; empty when the metadata does not give them (reported elsewhere)."""
    try:
        image = parse_image(attrs, str(path))
    except InputError:
        return []
    if image is None or any(d.scale is None for d in image.datasets):
        return []
    scales = [d.scale for d in image.datasets if d.scale is not None]
    try:
        return [
            tuple(max(1, round(b / a)) for a, b in zip(upper, lower, strict=True))
            for upper, lower in itertools.pairwise(scales)
        ]
    except (ValueError, OverflowError, ZeroDivisionError):
        return []


def _other_part(chosen: OpenOptions | None, params: dict[str, Any]) -> str:
    """A hint when the source was opened at another level or series than the output was
    converted from (the user's ``--level`` / ``--series``), else empty."""
    if chosen is None:
        return ""
    parts = [
        f"--{word} {given}, but the output was converted from {word} {recorded}"
        for word, given, recorded in (
            ("level", chosen.level, params.get("source_level")),
            ("series", chosen.series, params.get("series")),
        )
        if given is not None and recorded is not None and (given or 0) != recorded
    ]
    return f"; {'; '.join(parts)}" if parts else ""


def _same_source(against: SourceSpec, params: dict[str, Any]) -> bool:
    """Whether ``against`` names the input the output was converted from (same path)."""
    recorded = params.get("source")
    if not isinstance(against, str | Path) or not isinstance(recorded, str):
        return False
    return Path(against).absolute().resolve() == Path(recorded).absolute().resolve()


def _recorded(options: OpenOptions | None, params: dict[str, Any]) -> OpenOptions | None:
    """``options`` with the source level and series the output was converted from filling the
    choices the user left unset (``None``)."""
    level, series = params.get("source_level"), params.get("series")
    if level is None and series is None:
        return options
    chosen = options or OpenOptions()
    return replace(
        chosen,
        level=level if chosen.level is None else chosen.level,
        series=series if chosen.series is None else chosen.series,
    )


def _read(array: Any, block: Box) -> np.ndarray[Any, Any]:
    """``block`` of ``array`` (a Zarr array or an HDF5 dataset) read into memory.

    Raises:
        Exception: whatever the codec or the store raised, for a Zarr array only once the
            chunk reads zarr-python left running had finished.
    """
    try:
        return np.asarray(array[block.slices()])
    except Exception:
        if isinstance(array, zarr.Array):
            # zarr-python reads the chunks in tasks on its event loop and raises at the first
            # failure while the others still run; left so, the ones still pending at exit are
            # destroyed with "Task was destroyed but it is pending!" and "Event loop is closed"
            settle(SETTLE_SECONDS)
        raise


SETTLE_SECONDS = 60.0
"""How long a failed block read waits at most for zarr's other chunk reads."""


def _bounds(roi: RoiSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    starts = tuple(0 if a is None else a for a, _ in roi.bounds)
    stops = tuple(0 if b is None else b for _, b in roi.bounds)
    return starts, stops


def _blocks(
    shape: tuple[int, ...], chunks: tuple[int, ...], itemsize: int, block_bytes: int
) -> list[Box]:
    tile = list(chunks)
    for ax in reversed(range(len(shape))):
        per = itemsize * math.prod(tile[:ax] + tile[ax + 1 :])
        fit = max(chunks[ax], (block_bytes // per) // chunks[ax] * chunks[ax])
        tile[ax] = min(fit, -(-shape[ax] // chunks[ax]) * chunks[ax])
        if tile[ax] < shape[ax]:
            break
    return list(tile_box(Box.from_shape(shape), tile))


def _class_value(params: dict[str, Any]) -> int | None:
    """The label value of a split-classes class image (its source spec ends in ``==value``)."""
    found = re.search(r"==(-?\d+)$", str(params.get("source", "")))
    return None if found is None else int(found.group(1))


def _open_hdf5(path: Path, opened: contextlib.ExitStack) -> tuple[list[Any], dict[str, Any]]:
    import h5py

    try:
        fh = opened.enter_context(h5py.File(path, "r"))
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc})") from exc
    record = Hdf5Ledger(path).read_record()
    if record is None:
        raise InputError(f"{path}: not an output of datatools convert (no datatools record)")
    if record.command != "convert":
        raise InputError(
            f"{path}: a datatools {record.command} output (verify checks convert outputs)"
        )
    datasets: list[str] = []

    def collect(name: str, node: object) -> None:
        if isinstance(node, h5py.Dataset):
            datasets.append(name)

    fh.visititems(collect)  # --dataset may have put it in a group
    if not datasets:
        raise InputError(f"{path}: holds no dataset")
    return [fh[datasets[0]]], record.params


def _open_zarr(
    path: Path, problems: list[str]
) -> tuple[list[Any], dict[str, Any], list[tuple[int, ...]]]:
    status = open_ledger(path).status()
    if status is None or status.record is None:
        raise InputError(f"{path}: not an output of datatools convert (no .datatools record)")
    command = status.record.command
    if command != "convert":
        hint = f"; verify each class image, {path}/<class>" if command == "split-classes" else ""
        raise InputError(
            f"{path}: a datatools {command} output (verify checks convert outputs{hint})"
        )
    if not status.complete:
        problems.append(
            f"incomplete: {status.units_done}/{status.units_total} units done (rerun the "
            "convert command to finish it)"
        )
    levels = status.record.params.get("levels") or [None]
    try:
        group = zarr.open_group(path, mode="r")
        arrays = [group[str(k)] for k in range(len(levels))]
    except Exception as exc:
        raise InputError(f"{path}: not a readable OME-Zarr image ({exc})") from exc
    factors: list[tuple[int, ...]] = []
    if status.complete:
        problems.extend(_leftovers(path))
        attrs = group.attrs.asdict()
        found = validate_image(attrs, lambda name: _ndim(group, name))
        problems.extend(found)
        if not found:
            factors = _level_factors(attrs, path)
    return arrays, status.record.params, factors


def _leftovers(path: Path) -> list[str]:
    """A problem line naming what killed runs left in or beside the complete output ``path``
    (:func:`datatools.ledger.find_stray_files`), when they left anything."""
    found = [str(p.relative_to(path.parent)) for p in find_stray_files(path)]
    if not found:
        return []
    more = f" and {len(found) - LISTED_LEFTOVERS} more" if len(found) > LISTED_LEFTOVERS else ""
    return [
        f"leftovers of a killed run: {', '.join(found[:LISTED_LEFTOVERS])}{more} (rerun the "
        "convert command to remove them)"
    ]


LISTED_LEFTOVERS = 3
"""Leftovers named in the problem line; the others are counted."""


def _ndim(group: zarr.Group, name: str) -> int | None:
    """The number of dimensions of the array ``name`` in ``group``, ``None`` when there is no
    array by that name."""
    try:
        node = group[name]
    except (KeyError, OSError, ValueError):
        return None
    return node.ndim if isinstance(node, zarr.Array) else None
