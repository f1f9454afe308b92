"""A checked conversion: options checked against the source, output dtype, physical placement,
pyramid levels, the plan of units (:mod:`datatools.convert.plan`) and the run record; and the
read of one base unit, cast to the output dtype.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datatools import ledger
from datatools.convert import plan as planning
from datatools.convert.options import ConvertOptions
from datatools.convert.plan import ConvertPlan
from datatools.downsample import centred, pyramid_shapes
from datatools.dtypes import cast, lossy_cast
from datatools.errors import OptionError
from datatools.executor import default_workers
from datatools.geometry import Box, resolve_roi, spatial_axes
from datatools.ledger.hdf5_file import check_dataset_name
from datatools.ngff import Placement
from datatools.sinks.codecs import Codec, parse_codec
from datatools.sources import Volume, source_choices, spec_text
from datatools.units import normalize_unit

log = logging.getLogger(__name__)

SMALL_CHUNK_BYTES = 4096
SMALL_CHUNK_COUNT = 10_000
"""Chunks smaller than ``SMALL_CHUNK_BYTES`` get a warning when there are more than this many."""

Array = np.ndarray[Any, Any]


@dataclass
class ConvertJob:
    """A checked conversion: the source, the output's form, the plan and the run record.

    Build it with :meth:`prepare`; :meth:`read_unit` gives a base unit's data.
    """

    volume: Volume
    plan: ConvertPlan
    codec: Codec
    out_dtype: np.dtype[Any]
    allow_lossy_cast: bool
    zarr_format: int
    placement: Placement
    method: str
    name: str
    workers: int
    record: ledger.RunRecord
    image_label: bool = False
    lossy_changed: int = 0
    """Voxels ``--allow-lossy-cast`` changed (rounded, clipped, NaN set to 0) in this call."""
    _lossy_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def prepare(
        cls,
        volume: Volume,
        options: ConvertOptions,
        *,
        is_hdf5: bool,
        existing_unit_shapes: Sequence[Sequence[int]] | None,
        translation: Sequence[float] | None = None,
        warn: bool = True,
        fingerprint: dict[str, Any] | None = None,
    ) -> ConvertJob:
        """Check every option against the source and plan the units.

        ``options.name`` names the image (the caller fills in the target's stem).
        ``existing_unit_shapes``: the unit shapes of the run that created the output, kept on
        resume. ``translation`` (per spatial axis) replaces the computed placement's
        translation, for label images that must sit exactly on their image. ``warn``: log the
        warnings about the options (no voxel size, tiny chunks); off for the second and later
        of several like jobs. The level and series the source was opened at are recorded with
        the options, so that a resume from another part of the input is refused; so is the
        HDF5 dataset path, and the source's files (:mod:`datatools.ledger.fingerprint`), so
        that a resume from a changed source is refused; ``fingerprint``: theirs, when already
        taken for another job over the same files.

        Raises:
            OptionError, RoiError: an option does not fit the source or the output format
                (an HDF5 dataset path that is not a name, or is the ledger's).
            InputError: a source file cannot be examined; or the source cannot be converted
                within the memory limit: one of its chunks, strips or tiles decodes to more
                than the limit, or its units are too many to keep track of
                (:mod:`datatools.convert.plan`).
        """
        out_opts, run = options.output, options.run
        as_labels, zarr_format = options.as_labels, out_opts.zarr_format
        levels = 1 if options.levels is None else options.levels
        downsample = options.downsample or "mean"
        default_codec = "gzip" if is_hdf5 else "zstd"
        codec = parse_codec(out_opts.codec or default_codec, out_opts.codec_level, hdf5=is_hdf5)
        roi, shards = options.roi, out_opts.shards
        box = resolve_roi(roi, volume.shape, volume.axes)
        chunk_shape = planning.chunk_shape(options.chunks, box.shape, volume.axes)
        shard_shape = None
        if shards is not None:
            if is_hdf5:
                raise OptionError("--shards: sharding needs a Zarr v3 target, not HDF5")
            if zarr_format == 2:
                raise OptionError("--shards: sharding needs a Zarr v3 target (--zarr-format 3)")
            shard_shape = planning.shard_shape(shards, chunk_shape, box.shape, volume.axes)
        if is_hdf5 and levels != 1:
            raise OptionError("--levels: pyramids need an OME-Zarr target (.zarr)")
        if is_hdf5:
            check_dataset_name(options.dataset)
        out_dtype = volume.dtype if options.dtype is None else _out_dtype(options.dtype)
        if warn:
            _warn_small_chunks(chunk_shape, box.shape, out_dtype.itemsize, volume.spec)
        base = _placement(volume, options.voxel_size, options.unit, warn=warn)
        placement = base.shifted(
            [s for s, a in zip(box.start, volume.axes, strict=True) if a in "zyx"]
        )
        if translation is not None:
            placement = Placement(placement.voxel_size, tuple(translation), placement.unit)
        if as_labels is not None and out_dtype.kind not in "biu":
            raise OptionError(
                f"--as-labels {as_labels}: {volume.spec} holds {out_dtype} data; label images "
                "need integers (give --dtype with an integer type if the values are whole)"
            )
        centred(downsample)
        spatial = [a in "zyx" for a in volume.axes]
        level_shapes = pyramid_shapes(
            box.shape,
            chunk_shape,
            placement.voxel_size,
            levels=levels,
            factors=options.factors,
            spatial=spatial,
        )
        itemsize = max(volume.dtype.itemsize, out_dtype.itemsize)
        unit_bytes = planning.unit_bytes(run.memory_limit, shard_shape or chunk_shape, itemsize)
        planning.check_source_pieces(
            volume.spec, volume.chunks, volume.dtype.itemsize, run.memory_limit
        )
        plan = planning.make_plan(
            box,
            chunk_shape,
            shard_shape,
            tuple(level_shapes),
            itemsize=itemsize,
            unit_bytes=unit_bytes,
            source_chunks=volume.chunks,
            existing=existing_unit_shapes,
        )
        planning.check_unit_count(volume.spec, plan, itemsize, run.memory_limit)
        params: dict[str, Any] = {
            "source": spec_text(volume.spec),
            "roi": box.to_text(),
            "chunks": list(chunk_shape),
            "shards": None if shard_shape is None else list(shard_shape),
            "codec": codec.to_dict(),
            "format": "hdf5" if is_hdf5 else f"zarr{zarr_format}",
            "dtype": str(out_dtype),
            "voxel_size": list(placement.voxel_size),
            "translation": list(placement.translation),
            "unit": placement.unit,
            "name": options.name,
            "levels": [list(shape) for shape, _ in level_shapes],
            "downsample": downsample if len(level_shapes) > 1 else None,
            "as_labels": as_labels,
            "unit_shapes": plan.unit_shapes(),
            "units_total": plan.n_units,
            **source_choices(options.open_options),
            **({"dataset": options.dataset} if is_hdf5 else {}),
            ledger.SOURCE_FILES: (
                ledger.fingerprint_files(volume.files()) if fingerprint is None else fingerprint
            ),
            "options": options.recorded(),
        }
        return cls(
            volume=volume,
            plan=plan,
            codec=codec,
            out_dtype=out_dtype,
            allow_lossy_cast=options.allow_lossy_cast,
            zarr_format=zarr_format,
            placement=placement,
            method=downsample,
            name=options.name or volume.spec,
            workers=run.workers or default_workers(),
            record=ledger.RunRecord("convert", params),
            image_label=as_labels is not None,
        )

    @property
    def axes(self) -> str:
        return self.volume.axes

    def check_changed_inputs(self, path: Path) -> None:
        """Refuse to continue the Zarr folder output ``path`` when an input file changed since
        it was started and a finished base unit read it (the output would mix old and new
        data). A changed file that no finished unit read (a slice found corrupt and replaced
        before any unit read it) lets the run go on, and the record's fingerprint is renewed,
        so that later reruns compare with the files as they are now. An output that is not a
        convert output of ours with the same options, or whose record has no fingerprint, is
        left to the claim.

        Raises:
            ResumeMismatchError: naming the changed file (or range of files).
            InputError: an input file cannot be examined.
        """
        output = ledger.ZarrLedger(path)
        existing = output.read_record()
        if existing is None or ledger.diff_params(existing, self.record):
            return
        before = existing.params.get(ledger.SOURCE_FILES)
        if not isinstance(before, dict) or before == self.record.params[ledger.SOURCE_FILES]:
            return
        changed = ledger.changed_files(before, self.volume.files())
        seen: set[tuple[Path, ...]] = set()
        for index in output.done():
            if index < self.plan.n_base_units:
                seen.add(self.volume.files_in(self.plan.unit(index).shift(self.plan.roi.start)))
        if changed & ledger.standing_files(f for files in seen for f in files):
            ledger.check_same_sources(path, existing.params, self.record.params)
        ledger.renew_fingerprint(path, self.record)

    def read_unit(self, index: int, buffer: Array | None = None) -> tuple[int, Box, Array]:
        """Read base unit ``index`` (its level-0 box) from the source, cast to the output dtype.

        ``buffer``: a flat array of the source dtype with room for a whole unit, reused for the
        read (the result is a view of it unless a cast copies), so no fresh pages per unit.

        Raises:
            OptionError: a value does not fit the output dtype (without ``allow_lossy_cast``).
        """
        box = self.plan.unit(index)
        out = None if buffer is None else buffer[: box.size].reshape(box.shape)
        data = self.volume.read(box.shift(self.plan.roi.start), out=out)
        if not self.allow_lossy_cast:
            return index, box, cast(data, self.out_dtype, False, self.volume.spec, box)
        converted, changed = lossy_cast(data, self.out_dtype)
        if changed:
            with self._lossy_lock:
                self.lossy_changed += changed
        return index, box, converted

    def level_placements(self) -> list[Placement]:
        """Placement of each level (scale and translation from the cumulative factors)."""
        out = [self.placement]
        cumulative = [1] * len(self.placement.voxel_size)
        for _, factors in self.plan.levels[1:]:
            spatial = [f for f, a in zip(factors, self.axes, strict=True) if a in "zyx"]
            cumulative = [c * f for c, f in zip(cumulative, spatial, strict=True)]
            out.append(self.placement.downsampled(cumulative, centred=centred(self.method)))
        return out


def _warn_small_chunks(
    chunks: tuple[int, ...], shape: tuple[int, ...], itemsize: int, spec: str
) -> None:
    """Warn when chunks under :data:`SMALL_CHUNK_BYTES` split the array into many files."""
    count = math.prod(-(-n // c) for n, c in zip(shape, chunks, strict=True))
    nbytes = math.prod(chunks) * itemsize
    if nbytes < SMALL_CHUNK_BYTES and count > SMALL_CHUNK_COUNT:
        log.warning(
            "%s: chunks %s hold %d bytes each, %d chunk files in all (give larger --chunks: "
            "loaders read chunks of 64 KiB to a few MiB best)",
            spec,
            " x ".join(map(str, chunks)),
            nbytes,
            count,
        )


def _out_dtype(dtype: str) -> np.dtype[Any]:
    try:
        out = np.dtype(dtype)
    except TypeError as exc:
        raise OptionError(
            f"--dtype {dtype}: not a numpy dtype (e.g. uint8, uint16, float32)"
        ) from exc
    if out.kind not in "biuf":
        raise OptionError(f"--dtype {dtype}: datatools writes bool, integer or float data")
    return out


def _placement(
    volume: Volume, voxel_size: Sequence[float] | None, unit: str | None, *, warn: bool
) -> Placement:
    n = len(spatial_axes(volume.axes))
    if voxel_size is not None:
        values = tuple(float(v) for v in voxel_size)
        if len(values) == 1:
            values = values * n
        if len(values) != n or any(v <= 0 for v in values):
            raise OptionError(
                f"--voxel-size {','.join(map(str, voxel_size))}: give 1 or {n} positive values "
                f"({','.join(spatial_axes(volume.axes))})"
            )
    elif volume.voxel_size is not None:
        values = volume.voxel_size
    else:
        if warn:
            log.warning(
                "%s: no voxel size in the source; writing scale 1 (give --voxel-size and --unit)",
                volume.spec,
            )
        values = (1.0,) * n
    unit_name = normalize_unit(unit) if unit is not None else normalize_unit(volume.unit)
    translation = volume.translation if volume.translation is not None else (0.0,) * n
    if voxel_size is not None and volume.voxel_size is not None:
        translation = tuple(
            t / old * new
            for t, old, new in zip(translation, volume.voxel_size, values, strict=True)
        )
    return Placement(values, tuple(translation), unit_name)
