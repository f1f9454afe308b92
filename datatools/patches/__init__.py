"""Training-ready patch datasets: 2D/3D patches of a volume, its labels, selected by a mask.

Two phases, both out of core:

1. **Plan** (:mod:`datatools.patches.plan`). Positions are chosen first: a grid over the ROI, or
   random / blue-noise centres (:mod:`datatools.patches.sampling`). When a mask, ``min_fraction`` or
   per-class groups need voxel data, the mask and labels are streamed in slabs (a slab plus the
   patch halo in memory at a time) and every position is tested there. The plan holds the
   origins of the kept patches (``8 x ndim`` bytes each) and their classes.
2. **Extract** (this module). Origins are ordered slab by slab (C order inside a slab), so each
   slab of the source (plus the halo its patches reach) is read once, its patches are cut out
   with one vectorised gather per batch, and appended to the output
   (:mod:`datatools.patches.output`: one writer, one run record, per-class subgroups) in
   their known row ranges.

Edges follow :mod:`datatools.edges`, at the border of the ROI: a patch never contains voxels
from outside the ROI (``symmetric`` / ``reflect`` mirror them, ``constant`` fills, ``shift``
moves the patch inside, ``drop`` skips it). Patches are ``(n, [c,] *size)`` in the source dtype;
``origins`` ``(n, ndim)`` are the voxel starts in source coordinates, (z, y, x), possibly
negative at mirrored edges. A patch's physical position is ``translation + origin * voxel_size``.

Peak memory: ``memory_limit`` (default 256 MiB) bounds the slabs in flight: each slab is at most
``memory_limit / (2 * (workers + 1))`` bytes of source plus labels including its halo (``workers``
threads read slabs ahead of the one being cut; 0 reads in the calling thread); plus one batch being
appended (at most 16 MiB), the writers' buffers (one chunk row, about 2 MiB, per array and
class) and the plan (``8 x ndim`` bytes per patch). Never the volume, never a float copy of it.
Slabs cover whole source chunks where that fits in their share, else cut through them. Sizes
that cannot fit are refused before the output is created: a patch larger than half
``memory_limit``, a chunk row given by ``chunk_rows`` larger than a quarter of it (or 2 MiB), a
source chunk (strip, tile) decoding to more than all of it
(:func:`datatools.patches.plan.check_slab_bytes`,
:func:`datatools.patches.output.check_chunk_rows`).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datatools import ledger
from datatools.errors import OptionError
from datatools.executor import R, T, default_workers
from datatools.geometry import Box, spatial_axes
from datatools.inputs import open_input
from datatools.patches.options import PatchOptions
from datatools.patches.output import (
    PatchResult,
    check_chunk_rows,
    default_chunk_rows,
    open_output,
    previous_extent,
)
from datatools.patches.plan import (
    DEFAULT_MEMORY_LIMIT,
    PatchGeometry,
    PatchPlan,
    SlabPatches,
    plan_patches,
)
from datatools.patches.sampling import resolve_seed
from datatools.progress import progress_bar
from datatools.sources import (
    ArrayVolume,
    OpenOptions,
    SourceSpec,
    Volume,
    check_source_options,
    source_choices,
)
from datatools.stores import is_hdf5_target

__all__ = [
    "PatchBatch",
    "PatchOptions",
    "PatchPlan",
    "PatchResult",
    "default_chunk_rows",
    "extract_patches",
    "iter_patches",
    "plan_patches",
]

ITER_BYTES = 512 * 2**10
"""Default batch of :func:`iter_patches`, bytes (small enough to stay in the CPU cache)."""
APPEND_BYTES = 16 * 2**20
"""Patches cut and appended at once (whole chunks), bytes: fewer, larger writer flushes."""

Array = np.ndarray[Any, Any]


@dataclass(frozen=True, eq=False)
class PatchBatch:
    """Consecutive rows of one output group.

    Attributes:
        group: ``""`` or ``"class_<value>"``.
        start: row of the first patch in its group.
        patches: ``(b, [c,] *size)`` in the source dtype.
        labels: ``(b, *size)`` label patches, or ``None`` without labels.
        origins: ``(b, ndim)`` voxel start of each patch in source coordinates (z, y, x).
    """

    group: str
    start: int
    patches: Array
    labels: Array | None
    origins: Array


def _slab_jobs(plan: PatchPlan, done: Mapping[str, int]) -> Iterator[tuple[Box, dict[str, range]]]:
    """Per slab with rows still to write: the region its patches cover, and rows per group."""
    size = np.asarray(plan.geometry.size, dtype=np.int64)
    for i in range(len(plan.slabs)):
        rows: dict[str, range] = {}
        for name, offsets in plan.offsets.items():
            first, stop = max(int(offsets[i]), done.get(name, 0)), int(offsets[i + 1])
            if first < stop:
                rows[name] = range(first, stop)
        if rows:
            parts = [plan.groups[name][r.start : r.stop] for name, r in rows.items()]
            lo = np.min([p.min(axis=0) for p in parts], axis=0)
            hi = np.max([p.max(axis=0) for p in parts], axis=0) + size
            yield Box(tuple(lo), tuple(hi)), rows


def _prefetch(func: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``func`` over ``items``, results in order; ``workers`` threads run ahead of the caller
    (at most ``workers + 1`` results alive at once); 0 runs everything in the caller."""
    if workers < 1:
        yield from map(func, items)
        return
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="datatools-patches") as pool:
        try:
            for item in items:
                pending.append(pool.submit(func, item))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _batches(
    plan: PatchPlan,
    volume: Volume,
    labels: Volume | None,
    *,
    done: Mapping[str, int],
    batch_rows: int,
    workers: int,
) -> Iterator[PatchBatch]:
    """Cut the planned patches slab by slab; batches end on multiples of ``batch_rows``
    (whole output chunks). Peak memory: the slabs in flight plus one batch."""

    def load(job: tuple[Box, dict[str, range]]) -> tuple[dict[str, range], SlabPatches]:
        region, rows = job
        return rows, SlabPatches.read(plan.geometry, region, volume, labels)

    for rows, slab in _prefetch(load, _slab_jobs(plan, done), workers):
        for name, span in rows.items():
            first = span.start
            while first < span.stop:
                last = min(span.stop, (first // batch_rows + 1) * batch_rows)
                origins = plan.groups[name][first:last]
                patches, cut = slab.cut(origins)
                yield PatchBatch(name, first, patches, cut, origins)
                first = last


def iter_patches(
    array: Array,
    options: PatchOptions | None = None,
    *,
    axes: str | None = None,
    labels: Array | None = None,
    mask: Array | None = None,
    rng: int | np.random.Generator | None = None,
    batch_rows: int | None = None,
    **overrides: Any,
) -> Iterator[PatchBatch]:
    """Patches of an in-memory array in batches, planned as :func:`extract_patches` plans.

    Options are checked and the plan is made at the call; batches come lazily::

        for batch in iter_patches(volume, size=(64, 64), edge="reflect"):
            train_step(batch.patches, batch.origins)

    Args:
        array: the volume, axes ``axes`` (default by ndim: ``yx``, ``zyx``, ``czyx``).
        labels, mask: arrays on the same spatial grid (spatial axes only).
        batch_rows: patches per batch (default about 512 KiB of patches, which stay in the
            CPU cache); a group's batches end on multiples of it.
        Others: as :func:`extract_patches`.

    Returns:
        An iterator of :class:`PatchBatch`, group by group within each slab. Peak memory:
        one batch, plus a slab copy only where patches cross the ROI border (interior slabs
        are views of ``array``).

    Raises:
        OptionError, RoiError, InputError: as :func:`extract_patches`.
    """
    options = (options or PatchOptions()).with_overrides(**overrides)
    volume = ArrayVolume(np.asarray(array), axes, views=True)
    letters = spatial_axes(volume.axes)
    lab = (
        None
        if labels is None
        else ArrayVolume(np.asarray(labels), letters, spec="<labels>", views=True)
    )
    msk = (
        None if mask is None else ArrayVolume(np.asarray(mask), letters, spec="<mask>", views=True)
    )
    plan = plan_patches(
        volume, options, labels=lab, mask=msk, rng=rng, memory_limit=options.run.memory_limit
    )
    item_bytes = math.prod(plan.geometry.item_shape) * volume.dtype.itemsize
    rows = batch_rows or max(1, ITER_BYTES // item_bytes)
    if rows <= 0:
        raise OptionError(f"batch_rows {rows}: must be > 0")
    return _batches(plan, volume, lab, done={}, batch_rows=rows, workers=0)


def extract_patches(
    source: SourceSpec | Volume,
    target_path: str | Path,
    options: PatchOptions | None = None,
    *,
    labels: SourceSpec | Volume | None = None,
    mask: SourceSpec | Volume | None = None,
    rng: int | np.random.Generator | None = None,
    progress: bool = False,
    **overrides: Any,
) -> PatchResult:
    """Write a patch dataset of ``source`` to ``target_path`` (Zarr group; HDF5 for ``.h5``).

    Output: ``patches`` ``(n, [c,] *size)`` in the source dtype; ``labels`` ``(n, *size)`` with
    ``labels``; ``origins`` ``(n, ndim)`` int64, the voxel start of each patch in the source
    (z, y, x; negative at mirrored edges); chunked along ``n``. With ``per_class``, one
    subgroup ``class_<value>`` holding these arrays per label value (Zarr and HDF5). Attributes:
    size, stride, edge, sampler, seed, source, its voxel size, translation and unit, counts, and
    every option. Rows come slab by slab (C order inside a slab); ``origins`` places them.

    A rerun with the same options completes an interrupted output, Zarr or HDF5 (flushed rows
    are kept, the rest appended) and leaves a finished one as it is; other options are refused
    unless ``overwrite``.

    Args:
        source: anything :func:`datatools.sources.open_volume` opens, or an open volume.
        target_path: ``.zarr`` folder, or ``.h5`` / ``.hdf5`` file.
        options: every setting (:class:`PatchOptions`), ``None`` for the defaults; fields
            may be replaced by keyword (``overrides``), shared ones flat:
            ``extract_patches("raw.zarr", "p.zarr", size=64, codec="gzip", workers=2)``.
        labels: label volume on the source's grid; label patches are stored aligned.
        mask: keep a patch when its fraction of mask voxels (> 0) is at least ``min_fraction``
            and not zero (random samplers: centred on mask voxels). Without a mask,
            ``min_fraction`` applies to ``labels > 0``.
        rng: seed or generator for every random choice; the seed used is recorded.
        progress: a progress bar on stderr.

    The options (fields of :class:`PatchOptions`):
        size: patch size, voxels: one int for every spatial axis, or fewer values for patches
            over the trailing axes at every index of the leading ones (``(64, 64)`` on
            (z, y, x): 2D patches from every slice). Channels are kept whole.
        stride: grid step (default ``size``, tiling); grid sampler only.
        edge: ``symmetric``, ``reflect``, ``constant`` (value ``fill``), ``shift`` or
            ``drop``, applied at the ROI border exactly as ``np.pad`` modes; patches never hold
            voxels from outside the ROI.
        min_fraction: see ``mask``.
        per_class: a subgroup per label value; a patch belongs to the class of its centre
            voxel (``class_rule="centre"``), its most frequent label (``"majority"``, ties to
            the smaller value) or each label in it (``"any"``); other rules grid only.
        max_per_class: at most this many patches per class (a seeded random subset).
        sampler: ``grid``; ``random`` (``count`` centres drawn uniformly without replacement
            from the valid, mask or class voxels; per class with ``per_class``);
            ``blue-noise`` (random centres at least ``min_distance`` voxels apart, greedy
            Poisson-disk; ``count`` optional). Fewer than asked: a
            :class:`~datatools.patches.sampling.SamplingWarning` gives the number obtained.
        max_patches: at most this many patches (per class with ``per_class``).
        roi: region of the source, half-open voxels; non-spatial axes kept whole.
        chunk_rows: patches per chunk (default about 2 MiB); ``codec``/``codec_level``:
            compression (default zstd; HDF5 gzip); ``zarr_format``: 3 or 2.
        open_options: level / series / gap choices for opening the inputs.
        memory_limit: bytes for slabs in flight (default 256 MiB). Peak memory: slabs of at
            most ``memory_limit / (2 x (workers + 1))`` bytes (source + labels + halo), plus a
            batch being appended (<= 16 MiB) and one chunk row (~2 MiB) per array and class,
            plus ``8 x ndim`` bytes per patch for the plan. Never the whole volume.
        workers: threads reading (decoding) slabs ahead of the one being cut and written
            (default: one per core).
        overwrite: replace an existing output of datatools (never a foreign one).

    Raises:
        OptionError, RoiError: invalid options (the message names the option), or a patch or
            chunk row that does not fit in the memory limit.
        InputError, InputNotFoundError: unreadable inputs, labels or mask not on the source's
            grid, a source chunk (strip, tile) decoding to more than the memory limit, or
            nothing selected (then nothing is written).
        TargetError, ResumeMismatchError: the target is not ours or holds another run.
        WriteError: writing failed (the output stays resumable).
    """
    started = time.perf_counter()
    path = Path(target_path)
    hdf5 = is_hdf5_target(path)
    options = (options or PatchOptions()).with_overrides(**overrides)
    open_options, output, run = options.open_options, options.output, options.run
    chunk_rows, overwrite = output.chunk_rows, output.overwrite
    workers = run.workers or default_workers()
    if chunk_rows is not None and chunk_rows <= 0:
        raise OptionError(f"--chunk-rows {chunk_rows}: must be > 0")
    with ExitStack() as stack:
        volume = _open(source, open_options, stack)
        lab = None if labels is None else _open(labels, open_options, stack, companion=True)
        msk = None if mask is None else _open(mask, open_options, stack, companion=True)
        check_source_options(volume, open_options)
        files = [f for v in (volume, lab, msk) if v is not None for f in v.files()]
        ledger.check_not_input(path, files)
        record = {
            **options.selection(),
            "source": volume.spec,
            "labels": None if lab is None else lab.spec,
            "mask": None if msk is None else msk.spec,
            "seed": resolve_seed(rng) if options.random else None,
            "chunk_rows": chunk_rows,
            "codec": output.codec,
            "level": output.codec_level,
            "zarr_format": None if hdf5 else output.zarr_format,
            **source_choices(open_options),
            ledger.SOURCE_FILES: ledger.fingerprint_files(files),
            "options": options.recorded(),
        }
        extent = previous_extent(path, record, overwrite=overwrite)
        plan = plan_patches(
            volume,
            options,
            labels=lab,
            mask=msk,
            rng=record["seed"],
            memory_limit=run.memory_limit,
            workers=workers,
            extent=extent,
        )
        g = plan.geometry
        rows = chunk_rows or default_chunk_rows(g.item_shape, volume.dtype)
        limit = DEFAULT_MEMORY_LIMIT if run.memory_limit is None else run.memory_limit
        check_chunk_rows(rows, _row_bytes(g, volume, lab), limit, given=chunk_rows is not None)
        record["slab_extent"] = list(plan.slab_extent)
        written = 0
        with (
            open_output(path, plan, volume, lab, record, rows, overwrite=overwrite) as writer,
            progress_bar(
                sum(plan.counts.values()), "patches", enabled=progress, unit="patch"
            ) as bar,
        ):
            done = {name: writer.group(name).rows for name in plan.groups}
            bar.update(sum(done.values()))
            per_batch = rows * max(1, APPEND_BYTES // (rows * _row_bytes(g, volume, lab)))
            for batch in _batches(
                plan, volume, lab, done=done, batch_rows=per_batch, workers=workers
            ):
                arrays = {"patches": batch.patches, "origins": batch.origins}
                if batch.labels is not None:
                    arrays["labels"] = batch.labels
                writer.group(batch.group).append(**arrays)
                written += len(batch.origins)
                bar.update(len(batch.origins))
    return PatchResult(
        path,
        plan.counts,
        g.item_shape,
        str(volume.dtype),
        g.patch_axes,
        rows,
        written,
        plan.seed,
        time.perf_counter() - started,
        record,
    )


def _row_bytes(g: PatchGeometry, volume: Volume, labels: Volume | None) -> int:
    """Bytes of one output row: patch, label patch and origin."""
    row = math.prod(g.item_shape) * volume.dtype.itemsize + 8 * len(g.spatial)
    return row + (0 if labels is None else math.prod(g.label_shape) * labels.dtype.itemsize)


def _open(
    spec: SourceSpec | Volume,
    options: OpenOptions | None,
    stack: ExitStack,
    companion: bool = False,
) -> Volume:
    """``spec`` opened (closed by ``stack``); labels and masks as companions."""
    if isinstance(spec, Volume):
        return spec
    return stack.enter_context(open_input(spec, options, companion=companion))
