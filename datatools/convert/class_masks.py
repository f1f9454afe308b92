"""``convert --split-classes``: one 0/1 uint8 multiscale image per label value.

The layout class-mask loaders such as cellmap-data expect: ``target.zarr/<class>/0, 1, ...``,
each ``<class>`` an OME-Zarr image (NGFF 0.5 on Zarr v3, 0.4 on Zarr v2) whose voxels are 1
where the labels equal the class value, with its voxel count in the ``datatools`` attribute
(and in level 0's ``class_counts``, where cellmap-data looks before counting the whole level).
Scales are written in nanometres when the unit is a length.

Two steps, both streaming in bounded memory: a counting pass over the labels (which values occur,
how often), then :func:`datatools.convert.convert_many` over lazy ``labels == value`` views, one
OME-Zarr image per class, so every class is resumable on its own and shares convert's pyramid,
ledger and metadata. Each unit of the labels is read once for all classes (the views share the
reading thread's last box), so the labels are read twice in all; memory is that of ``convert``
plus one labels unit per reading thread.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from datatools import ledger
from datatools.convert import ConvertResult, convert_many
from datatools.convert.options import ConvertOptions
from datatools.errors import InputError, OptionError
from datatools.executor import check_overwrite
from datatools.geometry import Box, resolve_roi, tile_box
from datatools.inputs import open_input
from datatools.progress import counted, progress_bar
from datatools.sources import (
    SourceSpec,
    Volume,
    check_source_options,
    source_choices,
    spec_text,
)
from datatools.stores import NODE_NAME
from datatools.units import normalize_unit, to_nanometers

COUNT_BLOCK_BYTES = 64 * 2**20
MAX_CLASSES = 256
"""Classes written without ``class_names`` at most (more: probably not a label image)."""
BINCOUNT_LIMIT = 1 << 20
"""Label values below this are counted with a histogram (8 MiB of counts at most)."""


def _placed(volume: Volume) -> dict[str, Any]:
    """``volume``'s placement and chunks, as keyword arguments of :class:`Volume`."""
    return {
        "voxel_size": volume.voxel_size,
        "unit": volume.unit,
        "translation": volume.translation,
        "chunks": volume.chunks,
    }


class SharedReads(Volume):
    """``volume`` with each thread's last box kept: views of it asked for the same box on one
    thread, one after the other (the class masks of a unit), read it once. The array returned
    is that kept one, read-only.

    Memory: one box per reading thread.
    """

    kind = "shared-reads"

    def __init__(self, volume: Volume) -> None:
        super().__init__(volume.spec, volume.shape, volume.dtype, volume.axes, **_placed(volume))
        self.volume = volume
        self._last = threading.local()

    def files(self) -> tuple[Path, ...]:
        return self.volume.files()

    def files_in(self, box: Box) -> tuple[Path, ...]:
        return self.volume.files_in(box)

    def _read(self, box: Box) -> np.ndarray[Any, Any]:
        last: tuple[Box, np.ndarray[Any, Any]] | None = getattr(self._last, "box", None)
        if last is None or last[0] != box:
            data = self.volume.read(box)
            data.setflags(write=False)  # shared by the next reader of the box
            last = self._last.box = (box, data)
        return last[1]


class ClassMask(Volume):
    """A lazy 0/1 uint8 view of ``labels == value`` (same shape, axes and placement)."""

    kind = "class-mask"

    def __init__(self, labels: Volume, value: int) -> None:
        spec = f"{labels.spec}=={value}"
        super().__init__(spec, labels.shape, "uint8", labels.axes, **_placed(labels))
        self.labels = labels
        self.value = value

    def files(self) -> tuple[Path, ...]:
        return self.labels.files()

    def files_in(self, box: Box) -> tuple[Path, ...]:
        return self.labels.files_in(box)

    def read(self, box: Box, out: np.ndarray[Any, Any] | None = None) -> np.ndarray[Any, Any]:
        """The 0/1 mask of ``box``, computed straight into ``out`` when given."""
        labels = self.labels.read(box)
        if out is None:
            out = np.empty(box.shape, np.uint8)
        np.equal(labels, self.value, out=out.view(bool))
        return out

    def _read(self, box: Box) -> np.ndarray[Any, Any]:
        return self.read(box)


@dataclass(frozen=True)
class SplitResult:
    """What :func:`split_classes` wrote: per class name, its value, voxel count and result."""

    target: Path
    classes: dict[str, tuple[int, int, ConvertResult]]

    @property
    def complete(self) -> bool:
        return all(result.complete for _, _, result in self.classes.values())

    def summary(self) -> str:
        lines = [f"{self.target}: {counted(len(self.classes), 'class mask')}"]
        for name, (value, count, result) in self.classes.items():
            state = "complete" if result.complete else "INCOMPLETE"
            levels = counted(result.levels, "level")
            lines.append(f"  {name}: label {value}, {counted(count, 'voxel')}, {levels}, {state}")
        return "\n".join(lines)


def parse_class_names(text: str | None) -> dict[int, str] | None:
    """``1=mito,2=er`` -> ``{1: "mito", 2: "er"}``.

    Raises:
        OptionError: a part is not ``value=name``, a name is not a plain name, or a value or
            a name comes twice.
    """
    if text is None:
        return None
    names: dict[int, str] = {}
    for part in text.split(","):
        value, sep, name = part.partition("=")
        if not sep or not NODE_NAME.match(name.strip()):
            raise OptionError(f"--class-names {text}: '{part}' is not value=name (e.g. 1=mito)")
        try:
            number = int(value)
        except ValueError as exc:
            raise OptionError(f"--class-names {text}: '{value}' is not an integer") from exc
        if number in names:
            raise OptionError(f"--class-names {text}: value {number} is named twice")
        if name.strip() in names.values():
            raise OptionError(f"--class-names {text}: name '{name.strip()}' is given twice")
        names[number] = name.strip()
    return names


def count_classes(labels: Volume, box: Box, *, progress: bool = False) -> dict[int, int]:
    """Voxel count of every non-zero label value inside ``box``, in bounded memory.

    Memory: one block of about 64 MiB of labels plus its ``np.unique``.
    """
    per_voxel = labels.dtype.itemsize
    tile = list(box.shape)
    for ax in range(len(tile)):
        rest = per_voxel * int(np.prod(tile[ax + 1 :], dtype=np.int64))
        tile[ax] = max(1, min(tile[ax], COUNT_BLOCK_BYTES // max(rest, 1)))
        if tile[ax] < box.shape[ax]:
            break
    counts: dict[int, int] = {}
    blocks = list(tile_box(box, tile))
    with progress_bar(len(blocks), f"count {Path(labels.spec).name}", enabled=progress) as bar:
        for block in blocks:
            for value, count in _value_counts(labels.read(block)):
                counts[value] = counts.get(value, 0) + count
            bar.update(1)
    counts.pop(0, None)
    return counts


def _value_counts(data: np.ndarray[Any, Any]) -> list[tuple[int, int]]:
    """``(value, count)`` of every value in ``data``: a histogram when the values are small
    non-negative integers (linear time), else a sort."""
    if data.size and data.dtype.kind in "biu":
        low, high = int(data.min()), int(data.max())
        if low >= 0 and high < BINCOUNT_LIMIT:
            n = np.bincount(data.ravel().astype(np.intp, copy=False), minlength=high + 1)
            found = np.flatnonzero(n)
            return list(zip(found.tolist(), n[found].tolist(), strict=True))
    values, n = np.unique(data, return_counts=True)
    return [(int(v), int(c)) for v, c in zip(values.tolist(), n.tolist(), strict=True)]


def split_classes(
    source: SourceSpec,
    target_path: str | Path,
    options: ConvertOptions | None = None,
    *,
    class_names: Mapping[int, str] | None = None,
    progress: bool = False,
    **overrides: Any,
) -> SplitResult:
    """Write one 0/1 uint8 multiscale image per label value of ``source`` under ``target``.

    Args:
        source: an integer label volume (anything :func:`datatools.sources.open_volume` opens).
        target_path: the output group; class images go to ``<target>/<name>``.
        options, overrides: as :func:`datatools.convert.convert`; ``roi``, ``chunks``,
            ``levels``, ``downsample`` (mode (default), nearest or max), ``factors``,
            ``zarr_format``, ``codec``, ``codec_level``, ``voxel_size``, ``unit``,
            ``open_options``, ``workers``, ``memory_limit``, ``task`` and ``overwrite`` apply.
        class_names: value -> name; only these classes are written (default: every non-zero
            value found, named by its value).
        progress: show progress bars on stderr.

    Raises:
        InputError: the labels are not integers, hold no non-zero value, or (without
            ``class_names``) more than :data:`MAX_CLASSES` values.
        OptionError: a named class does not occur, or an invalid option.
        TargetError, ResumeMismatchError: as :func:`datatools.convert.convert`.
    """
    options = (options or ConvertOptions()).with_overrides(**overrides)
    downsample = options.downsample or "mode"
    if downsample not in ("mode", "nearest", "max"):
        raise OptionError(f"--downsample {downsample}: class masks take mode, nearest or max")
    open_options, overwrite = options.open_options, options.output.overwrite
    check_overwrite(options.run.task, overwrite)
    path = Path(target_path)
    labels = open_input(source, open_options)
    try:
        if labels.dtype.kind not in "biu":
            raise InputError(f"{labels.spec}: labels must be integers, not {labels.dtype}")
        check_source_options(labels, open_options)
        ledger.check_not_input(path, labels.files())
        ledger.check_folder_name(path)
        box = resolve_roi(options.roi, labels.shape, labels.axes)
        counts = count_classes(labels, box, progress=progress)
        if not counts:
            raise InputError(f"{labels.spec}: holds no non-zero label in {box.to_text()}")
        if class_names is None and len(counts) > MAX_CLASSES:
            raise InputError(
                f"{labels.spec}: holds {len(counts)} distinct non-zero values, one image each "
                f"(is it a label image? give --class-names to choose at most {MAX_CLASSES})"
            )
        names = {v: str(v) for v in sorted(counts)} if class_names is None else dict(class_names)
        missing = sorted(set(names) - set(counts))
        if missing:
            raise OptionError(
                f"--class-names: label values {missing} do not occur in {labels.spec} "
                f"(present: {sorted(counts)[:20]})"
            )
        size, length_unit = _nanometers(labels, options.voxel_size, options.unit)
        params = {
            "source": spec_text(labels.spec),
            "roi": box.to_text(),
            "classes": {str(v): n for v, n in sorted(names.items())},
            "counts": {str(v): counts[v] for v in sorted(names)},
            **source_choices(open_options),
        }
        zarr_format = options.output.zarr_format
        ledger.claim(
            path,
            ledger.RunRecord("split-classes", params),
            overwrite=overwrite,
            populate=lambda folder: _populate(folder, zarr_format, params),
        )
        classes = sorted(names.items())
        shared = SharedReads(labels)
        done = convert_many(
            [ClassMask(shared, value) for value, _ in classes],
            [path / name for _, name in classes],
            options.with_overrides(
                roi=box,
                downsample=downsample,
                voxel_size=None if size is None else tuple(size),
                unit=length_unit,
                overwrite=False,
            ),
            names=[name for _, name in classes],
            progress=progress,
        )
        results: dict[str, tuple[int, int, ConvertResult]] = {}
        for (value, name), result in zip(classes, done, strict=True):
            results[name] = (value, counts[value], result)
    finally:
        labels.close()
    # with --task-count, another task may have finished a class this task saw incomplete: the
    # group is complete once every class is, and whichever task sees that last marks it
    for name, (value, count, result) in results.items():
        if result.complete or ledger.is_complete(path / name):
            _record_class(path / name, value, count)
            results[name] = (value, count, replace(result, complete=True))
    if all(r.complete for _, _, r in results.values()):
        grace = 0.0 if options.run.task is None else ledger.STRAY_GRACE_SECONDS
        ledger.clean_stray_files(path, older_than=grace)  # the group's own, beside it too
        ledger.mark_complete(path)
    return SplitResult(path, results)


def _record_class(folder: Path, value: int, count: int) -> None:
    """Add the class value and voxel count to a finished class image's ``datatools`` attribute,
    and the count as cellmap-data caches it, ``class_counts`` ``{<class>: count}`` on level 0
    (each file replaced atomically: several tasks may finish classes at once)."""
    import zarr

    info: dict[str, Any] = json.loads(
        json.dumps(zarr.open_group(folder, mode="r").attrs["datatools"])
    )
    info.update(class_value=value, voxel_count=count)
    ledger.update_attributes(folder / "0", {"class_counts": {folder.name: count}})
    ledger.update_attributes(folder, {"datatools": info})


def _populate(folder: Path, zarr_format: int, params: dict[str, Any]) -> None:
    import zarr

    group = zarr.create_group(folder, zarr_format=zarr_format)  # type: ignore[arg-type]
    group.attrs.update({"datatools": {"command": "split-classes", **params}})


def _nanometers(
    labels: Volume, voxel_size: Sequence[float] | None, unit: str | None
) -> tuple[Sequence[float] | None, str | None]:
    """Voxel size (and unit) in nanometres when the unit is a length, else as given."""
    size = voxel_size if voxel_size is not None else labels.voxel_size
    name = normalize_unit(unit) if unit is not None else normalize_unit(labels.unit)
    if size is None or name is None:
        return voxel_size, unit
    return to_nanometers(size, name), "nanometer"
