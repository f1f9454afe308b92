"""The output of :func:`datatools.patches.extract_patches`: its arrays, attributes and groups,
the check of an existing output before a rerun, and the result.

One writer (:mod:`datatools.writers`) owns the target, a Zarr group (v3 or v2) or an HDF5 file
(``.h5`` / ``.hdf5``). Its run record (command ``patches``) holds every option of the run, so
a rerun checks its options against it and continues what was flushed, in both formats. The
arrays are ``patches`` ``(n, [c,] *size)``, ``labels`` (with labels) and ``origins``
``(n, ndim)``, at the root, or with ``per_class`` in one subgroup ``class_<value>`` per class;
all classes share the one target (one run record, one completion flag). The attributes of the
root and of each class subgroup are written when the output is created, so an output never
lacks them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datatools import __version__
from datatools import ledger as owned
from datatools.errors import OptionError, TargetError
from datatools.geometry import spatial_axes
from datatools.options import OutputOptions
from datatools.patches.plan import PatchGeometry, PatchPlan
from datatools.progress import counted
from datatools.sources import Volume
from datatools.writers import ArraySpec, ArrayWriter, RunRecord, open_writer, read_run

COMMAND = "patches"
CHUNK_BYTES = 2 * 2**20
"""Target size of one output chunk (``chunk_rows`` patches), bytes."""
MAX_CHUNK_ROWS = 65536


def default_chunk_rows(item_shape: Sequence[int], dtype: np.dtype[Any]) -> int:
    """Patches per output chunk: about 2 MiB of patches (1 to 65,536)."""
    item_bytes = math.prod(item_shape) * np.dtype(dtype).itemsize
    return max(1, min(MAX_CHUNK_ROWS, CHUNK_BYTES // max(1, item_bytes)))


def check_chunk_rows(chunk_rows: int, row_bytes: int, limit: int, *, given: bool) -> None:
    """Refuse a chunk row of patches that does not fit in memory, before the output exists.

    The writers buffer one chunk row (``chunk_rows`` rows of ``row_bytes``: patch, label patch
    and origin) per array and class, and a batch being appended holds at least one: a chunk row
    ``given`` may take a quarter of ``limit`` or :data:`CHUNK_BYTES`, whichever is larger; the
    default one (about :data:`CHUNK_BYTES` of patches) is refused only when one row alone
    passes that.

    Raises:
        OptionError: naming ``--chunk-rows`` when ``given``, else ``--size`` (one row alone
            is too large).
    """
    nbytes = (chunk_rows if given else 1) * row_bytes
    allowed = max(limit // 4, CHUNK_BYTES)
    if nbytes <= allowed:
        return
    needed = -(-4 * nbytes // 2**20)
    if given:
        raise OptionError(
            f"--chunk-rows {chunk_rows}: one chunk row of patches takes {nbytes} bytes "
            f"({chunk_rows} x {row_bytes}), more than a quarter of the memory limit ({limit} "
            f"bytes) (give a smaller --chunk-rows, or --memory-limit {needed}M or more)"
        )
    raise OptionError(
        f"--size: one row of patches (patch, labels and origin) takes {row_bytes} bytes, more "
        f"than a quarter of the memory limit ({limit} bytes) (give a smaller --size, or "
        f"--memory-limit {needed}M or more)"
    )


def previous_extent(
    path: Path, record: Mapping[str, Any], *, overwrite: bool
) -> tuple[int, ...] | None:
    """Check an existing output at ``path`` against this run's options ``record``.

    Returns:
        The slab extent of the earlier run when continuing it (so rows come in the same
        order), ``None`` for a new output (or with ``overwrite``).

    Raises:
        TargetError: the target exists and was not written by ``patches``.
        ResumeMismatchError: it was, with other options or from input files changed since.
    """
    if overwrite:
        return None
    stored = read_run(path)
    if stored is None and owned.is_absent(path):
        return None
    if stored is None or stored.command != COMMAND:
        raise TargetError(
            f"{path}: exists and was not written by datatools patches (choose another "
            "target; --overwrite only replaces outputs of datatools)"
        )
    old = {key: value for key, value in stored.params.items() if key != "slab_extent"}
    owned.check_same_run(
        path, owned.RunRecord(COMMAND, old), owned.RunRecord(COMMAND, dict(record))
    )
    return tuple(int(e) for e in stored.params["slab_extent"])


def open_output(
    path: Path,
    plan: PatchPlan,
    volume: Volume,
    labels: Volume | None,
    record: Mapping[str, Any],
    chunk_rows: int,
    *,
    overwrite: bool,
) -> ArrayWriter:
    """The writer of ``plan``'s output: created with its attributes, or continued.

    ``record`` holds every option (as :func:`previous_extent` checked it; how the output is
    stored under ``options.output``) and the slab extent; ``chunk_rows`` is the patches per
    chunk chosen for this run. Peak memory: one chunk row of every array per group (the
    writer's buffers).

    Raises:
        TargetError, ResumeMismatchError: as :func:`datatools.writers.open_writer`.
        WriteError: the output cannot be created.
    """
    attributes = _attributes(plan, volume, record)
    counts = plan.counts
    groups = None
    if "" in counts:
        root = {**attributes, "count": counts[""]}
    else:
        root = {**attributes, "counts": counts}
        groups = {
            name: {**attributes, "class_value": int(name.removeprefix("class_")), "count": n}
            for name, n in counts.items()
        }
    return open_writer(
        path,
        _arrays(plan.geometry, volume, labels),
        OutputOptions.from_dict(record["options"]["output"]),
        groups=groups,
        record=RunRecord(COMMAND, dict(record)),
        attributes=root,
        append=not overwrite,
        chunks=None,
        shards=None,
        chunk_rows=chunk_rows,
        overwrite=overwrite,
    )


def _arrays(g: PatchGeometry, volume: Volume, labels: Volume | None) -> dict[str, ArraySpec]:
    """Writer specs: ``patches``, ``labels`` when given, ``origins``; axis names as dims."""
    kept = g.patch_axes[len(g.patch_axes) - g.kept :]
    arrays = {"patches": ArraySpec(g.item_shape, volume.dtype, dims=tuple(g.patch_axes))}
    if labels is not None:
        arrays["labels"] = ArraySpec(g.label_shape, labels.dtype, dims=("n", *kept))
    arrays["origins"] = ArraySpec((len(g.spatial),), np.dtype("int64"), dims=("n", "axis"))
    return arrays


def _attributes(plan: PatchPlan, volume: Volume, record: Mapping[str, Any]) -> dict[str, Any]:
    """Group attributes: what the patches are and where they lie in the source."""
    g = plan.geometry
    return {
        "patch_axes": g.patch_axes,
        "origin_axes": spatial_axes(g.axes),
        "size": list(g.size),
        "stride": list(g.stride),
        "edge": g.edge,
        "fill": g.fill if g.edge == "constant" else None,
        "sampler": record["sampler"],
        "seed": plan.seed,
        "source": volume.spec,
        "source_shape": list(volume.shape),
        "source_axes": volume.axes,
        "roi": g.roi.to_text(),
        "voxel_size": None if volume.voxel_size is None else list(volume.voxel_size),
        "translation": None if volume.translation is None else list(volume.translation),
        "unit": volume.unit,
        "placement": "physical position of patch voxel i = translation + (origin + i) * "
        "voxel_size per spatial axis (origin_axes order)",
        "datatools_version": __version__,
        "params": dict(record),
    }


@dataclass(frozen=True)
class PatchResult:
    """What :func:`datatools.patches.extract_patches` wrote.

    Attributes:
        target: the output path.
        counts: rows per group (``""`` for a single dataset, else ``class_<value>``).
        item_shape: shape of one patch; ``dtype`` its dtype; ``patch_axes`` its axis letters.
        chunk_rows: patches per output chunk.
        written: rows written by this call (the others were written by an earlier run).
        seed: seed of the random choices (``None`` when nothing was random).
        seconds: wall time of this call.
        params: the options recorded in the output.
    """

    target: Path
    counts: dict[str, int]
    item_shape: tuple[int, ...]
    dtype: str
    patch_axes: str
    chunk_rows: int
    written: int
    seed: int | None
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """A few lines for the terminal."""
        shape = " x ".join(map(str, self.item_shape))
        lines = [
            f"{self.target}: {counted(self.total, 'patch', 'patches')} of {shape} {self.dtype} "
            f"({self.patch_axes}), {self.chunk_rows} per chunk, complete",
            f"  {self.written} written now, {self.total - self.written} already done, "
            f"{self.seconds:.1f} s" + ("" if self.seed is None else f"; seed {self.seed}"),
        ]
        if "" not in self.counts:
            lines.append("  " + ", ".join(f"{g}: {n}" for g, n in self.counts.items()))
        return "\n".join(lines)
