"""The plan of :func:`datatools.instances.extract_instances`: which instances to crop (the
filters ``ids``, ``min_voxels``, ``max_voxels``, ``exclude_border``) and where each window lies.

A window of ``size`` voxels per spatial axis has its voxel ``size // 2`` on the centroid rounded
half up, so it starts at ``floor(centroid + 0.5) - size // 2``; ``edge`` then moves it inside
(``shift``) or drops the instance (``drop``) where it crosses the border, as in
:mod:`datatools.edges`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from datatools.edges import place_origins
from datatools.errors import InputError, OptionError
from datatools.geometry import Box
from datatools.instances.label_stats import LabelStats
from datatools.instances.options import InstanceOptions

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class InstancePlan:
    """The instances to crop, ids ascending, and their windows (source voxels, C order).

    Attributes:
        stats: count, bounding box and centroid of each kept instance.
        origins: ``(n, ndim)`` int64 window starts.
        labelled: instances in the labels (inside the ROI) before filtering.
        removed: instances each filter removed, in the order applied.
    """

    stats: LabelStats
    origins: Array
    labelled: int
    removed: dict[str, int]

    @property
    def n(self) -> int:
        return self.stats.n

    def digest(self) -> str:
        """A short hash of ids and origins: a rerun resumes only the same plan."""
        h = hashlib.sha256(self.stats.ids.astype("<i8").tobytes())
        h.update(self.origins.astype("<i8").tobytes())
        return h.hexdigest()[:16]


def plan_instances(
    stats: LabelStats,
    bounds: Box,
    size: Sequence[int],
    edge: str,
    options: InstanceOptions | None = None,
    *,
    labels_name: str = "labels",
) -> InstancePlan:
    """Filter instances and place their windows.

    Args:
        stats: statistics of the labels inside ``bounds``.
        bounds: the spatial region treated as the volume (the ROI), voxels.
        size: window extent per spatial axis, voxels.
        edge: :data:`datatools.edges.EDGE_MODES` value; ``shift`` moves windows inside
            ``bounds``, ``drop`` removes instances whose window crosses it.
        options: the filters, from :class:`~datatools.instances.options.InstanceOptions`:
            ``ids`` (keep only these ids; each must occur), ``min_voxels`` and ``max_voxels``
            (keep instances with ``min_voxels <= count <= max_voxels``), ``exclude_border``
            (remove instances whose bounding box touches the border of ``bounds``); ``None``:
            no filter.
        labels_name: the labels' path, for messages.

    Raises:
        InputError: the labels hold no instance.
        OptionError: ``ids`` names ids that do not occur (listed), no instance is left after
            the filters, or ``shift`` with a window larger than ``bounds``.
    """
    options = options or InstanceOptions()
    ids, min_voxels, max_voxels = options.ids, options.min_voxels, options.max_voxels
    exclude_border = options.exclude_border
    where = "" if bounds.start == (0,) * bounds.ndim else f" inside the ROI {bounds.to_text()}"
    if stats.n == 0:
        raise InputError(f"{labels_name}: holds no instances{where} (every voxel is 0)")
    labelled = stats.n
    removed: dict[str, int] = {}

    def apply(name: str, keep: Array) -> None:
        nonlocal stats
        removed[name] = int(stats.n - np.count_nonzero(keep))
        stats = stats.select(keep)

    if ids is not None:
        wanted = np.unique(np.asarray(ids, dtype=np.int64))
        missing = np.setdiff1d(wanted, stats.ids)
        if missing.size:
            shown = ", ".join(str(int(v)) for v in missing[:20])
            more = f" and {missing.size - 20} more" if missing.size > 20 else ""
            raise OptionError(
                f"{labels_name}: --ids names ids that do not occur{where}: {shown}{more}"
            )
        apply("ids", np.isin(stats.ids, wanted))
    if min_voxels > 0:
        apply("min_voxels", stats.voxel_count >= min_voxels)
    if max_voxels is not None:
        apply("max_voxels", stats.voxel_count <= max_voxels)
    if exclude_border:
        start = np.asarray(bounds.start, np.int64)
        stop = np.asarray(bounds.stop, np.int64)
        touching = np.any((stats.bbox_start == start) | (stats.bbox_stop == stop), axis=1)
        apply("exclude_border", ~touching)
    size_arr = np.asarray(size, np.int64)
    origins = np.floor(stats.centroid + 0.5).astype(np.int64) - size_arr // 2
    names = "zyx"[3 - bounds.ndim :]
    origins, keep = place_origins(origins, tuple(int(s) for s in size), bounds, edge, names)
    if edge == "drop":
        origins = origins[keep]
        apply("edge_drop", keep)
    if stats.n == 0:
        shown = ", ".join(f"{name} {count}" for name, count in removed.items() if count)
        raise OptionError(
            f"{labels_name}: no instances left after filters ({labelled} labelled{where}; "
            f"removed by {shown}) (relax the filters)"
        )
    return InstancePlan(stats, origins, labelled, removed)
