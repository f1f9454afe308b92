"""Patches sampled on the fly from a volume, planned by the code of ``datatools patches``.

Every epoch has a plan: the patch origins (voxel starts, C order) that
:func:`datatools.patches.plan.plan_patches` chooses for the options (grid, random, blue-noise; the
mask and ``min_fraction`` select), or, for ``balanced``, a class drawn uniformly per patch and a
centre drawn among that class's voxels. Random plans are drawn from a seed derived from
``(seed, epoch)``, so every process computes the same plan. The plan is ordered slab by slab
(slabs follow the source's chunks and ``memory_limit``), optionally shuffled (slab order and
rows inside a slab), cut into ``world_size`` contiguous parts (DDP ranks), and each part into
``num_workers`` parts (DataLoader workers): each planned patch is yielded once per epoch over
the whole job. A worker reads each slab of its part once (plus the patch halo) and cuts its
patches out with one gather per batch.

Grid plans do not depend on the epoch; with ``shuffle=False`` a single process yields exactly
the rows ``datatools patches`` writes with the same options, in the same order when the slabs
agree (``datatools patches --workers 0`` with the same ``memory_limit``).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

import numpy as np

from datatools.errors import InputError, OptionError
from datatools.geometry import Box, tile_box
from datatools.inputs import open_input
from datatools.instances.label_stats import slab_shape
from datatools.loaders.options import LoaderOptions
from datatools.loaders.splits import (
    SharedEpoch,
    epoch_seed,
    rank_share,
    resolve_ranks,
    share,
    worker_split,
)
from datatools.patches.plan import (
    DEFAULT_MEMORY_LIMIT,
    PatchGeometry,
    SlabPatches,
    make_geometry,
    plan_patches,
)
from datatools.patches.sampling import SamplingWarning
from datatools.sources import SourceSpec, Volume

Array: TypeAlias = np.ndarray[Any, Any]
Transform: TypeAlias = Callable[[dict[str, Any], np.random.Generator], Mapping[str, Any]]

CUT_BYTES = 4 * 2**20
"""Patches cut from a slab at once, bytes (the gather's output)."""
COUNT_BYTES_PER_VOXEL = 24
"""Working bytes per label voxel while counting classes (the tile, np.unique's sort)."""


@dataclass(frozen=True, eq=False)
class EpochPlan:
    """The patches of one epoch, in reading order (before the rank and worker split).

    Attributes:
        epoch: the epoch planned.
        origins: ``(n, ndim)`` int64 voxel start of each patch (spatial axes, C order; negative
            where a mirrored edge reaches past the ROI start).
        classes: ``(n,)`` int64 class of each patch (``balanced``), else ``None``.
        slabs: ``(n,)`` int64 slab of each row; rows of one slab are consecutive and read
            together.
    """

    epoch: int
    origins: Array
    classes: Array | None
    slabs: Array

    def __len__(self) -> int:
        return len(self.origins)


class VolumePatchStream:
    """Patches of a volume (and its labels) sampled on the fly; iterate it (no torch needed).

    ``for item in stream`` yields dicts: ``image`` (``([c,] *size)``, the source dtype),
    ``label`` (with ``labels``), ``origin`` (``(ndim,)`` int64 voxel start in the source, C
    order), ``class`` (``balanced``), each passed through ``transform``.
    :class:`~datatools.loaders.VolumePatches` is the same as a torch ``IterableDataset``.

    Args:
        source: anything :func:`datatools.sources.open_volume` opens (OME-Zarr level, Zarr,
            HDF5, TIFF, ITK image), or an open volume. Paths are reopened in each worker
            process; an open volume is used as it is (it must survive pickling or fork).
        size: patch size in voxels, as ``datatools patches --size``: one int for every spatial
            axis, or values for the trailing axes (2D patches from a 3D volume); ``None``:
            ``options``'s.
        options: every setting (:class:`~datatools.loaders.LoaderOptions`), ``None`` for the
            defaults; fields may be replaced by keyword (``overrides``), nested ones flat:
            ``VolumePatchStream("raw.zarr", 64, sampler="random", count=100, seed=0)``.
        labels: label volume on the source's grid; its patches are yielded as ``label``.
        mask: keeps patches whose mask fraction (values > 0) is at least ``min_fraction`` and
            not zero (random samplers: centres on mask voxels).
        transform: ``transform(item, rng) -> item`` (e.g. a
            :class:`datatools.augment.Compose`), ``rng`` seeded from ``(seed, epoch, row)``.

    The options (by their flat names):
        sampler: ``grid`` (every position, ``stride`` apart; the same each epoch), ``random``
            (``count`` centres per epoch), ``blue-noise`` (random centres at least
            ``min_distance`` voxels apart; ``count`` optional), ``balanced`` (``count``
            patches per epoch, each of a class drawn uniformly from ``classes``, centred on a
            voxel of that class; needs ``labels``).
        count: patches per epoch for ``random``, ``blue-noise`` (at most) and ``balanced``.
        min_fraction: least fraction of mask voxels (else labels > 0) in a patch.
        edge: ``symmetric``, ``reflect``, ``constant`` (``fill``), ``shift`` or ``drop``, at
            the ROI border, as ``datatools patches``.
        stride: grid step, voxels; ``min_distance``: blue-noise spacing, voxels.
        classes: the label values ``balanced`` draws from (default: every value present).
        roi: region of the source, half-open voxels.
        shuffle: shuffle each epoch's slab order and the rows inside each slab (seeded by
            ``(seed, epoch)``); ``False`` keeps the plan's order.
        seed: seed of every random choice (an int >= 0).
        rank, world_size: DDP rank and number of ranks; default from an initialised
            ``torch.distributed`` group, else one process.
        drop_last: every rank gets ``n // world_size`` patches (equal steps for DDP).
        open_options: level / series choices for opening paths.
        memory_limit: bytes per process for planning tiles and slabs (default 256 MiB).

    Memory per process: a slab of at most ``memory_limit / 2`` bytes (source and labels, with
    the patch halo), a batch being cut (<= 4 MiB), and the plan (``8 x ndim`` bytes per patch,
    twice that while shuffling). Planning streams the mask and labels (``memory_limit / 2``
    per tile) when they select; ``balanced`` counts classes once (tiles of
    ``memory_limit / 8``) and plans with the labels each epoch.

    Raises:
        OptionError, RoiError: invalid options (as ``datatools patches``), an unknown option
            or sampler, ``count`` missing for ``random`` / ``balanced``, ``balanced`` without
            labels, or an option of ``datatools patches`` the loader does not take
            (:class:`~datatools.loaders.LoaderOptions`).
        InputError, InputNotFoundError: unreadable inputs, labels or mask off the source's
            grid, nothing selected, or no class to draw from.
    """

    def __init__(
        self,
        source: SourceSpec | Volume,
        size: int | Sequence[int] | None = None,
        options: LoaderOptions | None = None,
        *,
        labels: SourceSpec | Volume | None = None,
        mask: SourceSpec | Volume | None = None,
        transform: Transform | None = None,
        **overrides: Any,
    ) -> None:
        if size is not None:
            overrides["size"] = size if isinstance(size, int) else tuple(int(v) for v in size)
        self.options = (options or LoaderOptions()).with_overrides(**overrides)
        if self.options.balanced and labels is None:
            raise OptionError("sampler balanced: needs labels (it draws classes from them)")
        split = self.options.split
        self.rank, self.world_size = resolve_ranks(split.rank, split.world_size)
        self.transform = transform
        limit = self.options.memory_limit
        self.memory_limit = DEFAULT_MEMORY_LIMIT if limit is None else limit
        self._planned = self.options.planned()
        self._specs = {"source": source, "labels": labels, "mask": mask}
        self._volumes: dict[str, Volume | None] | None = None
        self._pid = -1
        self._stack: ExitStack | None = None
        opened = self._open()["source"]
        assert opened is not None
        self.geometry: PatchGeometry = make_geometry(opened, self._planned)
        self._class_counts: dict[int, int] | None = None
        self._grid: EpochPlan | None = None
        self._plan: EpochPlan | None = None
        self._epoch = SharedEpoch()
        self.set_epoch(0)

    def _open(self) -> dict[str, Volume | None]:
        """The volumes, opened in this process on first use."""
        if self._volumes is None or self._pid != os.getpid():
            opened: dict[str, Volume | None] = {}
            with ExitStack() as stack:
                for role, spec in self._specs.items():
                    if spec is None or isinstance(spec, Volume):
                        opened[role] = spec
                    else:
                        opened[role] = stack.enter_context(
                            open_input(spec, self._planned.open_options, companion=role != "source")
                        )
                self._stack = stack.pop_all()
            self._volumes, self._pid = opened, os.getpid()
        return self._volumes

    def close(self) -> None:
        """Close the volumes this process opened from paths."""
        if self._stack is not None and self._pid == os.getpid():
            self._stack.close()
        self._volumes, self._stack = None, None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_volumes=None, _pid=-1, _stack=None)
        return state

    @property
    def epoch(self) -> int:
        """The epoch planned and iterated."""
        return self._epoch.value

    def set_epoch(self, epoch: int) -> None:
        """Plan ``epoch`` now. DataLoader workers see the change, persistent ones included, and
        each plans the same epoch from ``(seed, epoch)``. Grid plans are kept across epochs
        (only their shuffle changes).

        Raises:
            InputError: as the constructor, for the new plan (e.g. no class to draw from).
        """
        self.plan(int(epoch))
        self._epoch.value = int(epoch)

    def plan(self, epoch: int) -> EpochPlan:
        """The whole job's patches of ``epoch`` in reading order (every rank and worker); the
        last one planned is kept, so a persistent DataLoader worker plans each epoch once."""
        if self._plan is None or self._plan.epoch != epoch:
            self._plan = self._ordered(epoch)
        return self._plan

    def _ordered(self, epoch: int) -> EpochPlan:
        if self._planned.sampler == "grid":
            if self._grid is None:
                self._grid = self._choose(epoch)
            base = self._grid
        else:
            base = self._choose(epoch)
        if not self.options.split.shuffle:
            return EpochPlan(epoch, base.origins, base.classes, base.slabs)
        rng = np.random.default_rng((self.options.split.seed, epoch))
        position = rng.permutation(int(base.slabs.max()) + 1)
        order = np.lexsort((rng.random(len(base)), position[base.slabs]))
        classes = None if base.classes is None else base.classes[order]
        return EpochPlan(epoch, base.origins[order], classes, base.slabs[order])

    def _choose(self, epoch: int) -> EpochPlan:
        """Origins of ``epoch`` ordered slab by slab, C order inside a slab."""
        vols = self._open()
        source, labels, mask = vols["source"], vols["labels"], vols["mask"]
        assert source is not None
        rng_seed = epoch_seed(self.options.split.seed, epoch)
        if not self.options.balanced:
            plan = plan_patches(
                source,
                self._planned,
                labels=labels,
                mask=mask,
                rng=rng_seed,
                memory_limit=self.memory_limit,
                workers=0,
            )
            origins = plan.groups[""]
            offsets = plan.offsets[""]
            slabs = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
            return EpochPlan(epoch, origins, None, slabs.astype(np.int64))
        return self._balanced(epoch, source, labels, mask, rng_seed)

    def _balanced(
        self,
        epoch: int,
        source: Volume,
        labels: Volume | None,
        mask: Volume | None,
        rng_seed: int,
    ) -> EpochPlan:
        """A class per patch uniformly, then a centre uniformly among that class's voxels
        (with replacement when a class has fewer valid centres than draws)."""
        assert labels is not None
        count, classes = self.options.patches.count, self.options.classes
        assert count is not None
        counts = self.class_counts()
        chosen = [c for c in counts if classes is None or c in classes]
        if not chosen:
            raise InputError(
                f"{labels.spec}: none of the classes {list(classes or ())} occurs in the "
                f"labels (present: {', '.join(map(str, counts)) or 'none'})"
            )
        rng = np.random.default_rng(rng_seed)
        draws = np.bincount(rng.integers(len(chosen), size=count), minlength=len(chosen))
        options = replace(self._planned, count=int(draws.max()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SamplingWarning)
            plan = plan_patches(
                source,
                options,
                labels=labels,
                mask=mask,
                rng=rng_seed,
                memory_limit=self.memory_limit,
                workers=0,
            )
        parts, values = [], []
        for cls, n in zip(chosen, draws, strict=True):
            if n == 0:
                continue
            found = plan.groups.get(f"class_{cls}")
            if found is None:
                raise InputError(
                    f"{labels.spec}: class {cls} has no valid patch centre (inside the mask, "
                    "ROI and edge mode; leave it out with classes=...)"
                )
            parts.append(found[rng.choice(len(found), int(n), replace=int(n) > len(found))])
            values.append(np.full(int(n), cls, dtype=np.int64))
        origins = np.concatenate(parts)
        low = np.asarray(self.geometry.bounds.start, dtype=np.int64)
        k = np.floor_divide(np.maximum(origins, low), np.asarray(plan.slab_extent))
        _, slabs = np.unique(k, axis=0, return_inverse=True)
        slabs = slabs.astype(np.int64).ravel()
        order = np.lexsort((*origins.T[::-1], slabs))
        return EpochPlan(epoch, origins[order], np.concatenate(values)[order], slabs[order])

    def class_counts(self) -> dict[int, int]:
        """Voxels per label value inside the ROI, counted once (streamed in tiles of
        ``memory_limit / 8`` bytes of work space), values ascending.

        Raises:
            OptionError: no labels were given.
        """
        if self._class_counts is None:
            labels = self._open()["labels"]
            if labels is None:
                raise OptionError("class_counts: needs labels")
            bounds = self.geometry.bounds
            if labels.shape != tuple(self.geometry.shape[i] for i in self.geometry.spatial):
                raise InputError(
                    f"{labels.spec}: labels shape {labels.shape} differs from the spatial shape "
                    f"of the source (labels must be on the source's voxel grid)"
                )
            tile = slab_shape(
                bounds.shape,
                labels.dtype.itemsize + COUNT_BYTES_PER_VOXEL,
                max(1, self.memory_limit // 8),
                labels.chunks,
            )
            totals: dict[int, int] = {}
            for box in tile_box(bounds, tile):
                values, n = np.unique(labels.read(box), return_counts=True)
                for v, c in zip(values.tolist(), n.tolist(), strict=True):
                    totals[int(v)] = totals.get(int(v), 0) + int(c)
            self._class_counts = dict(sorted(totals.items()))
        return dict(self._class_counts)

    def _part(self, n: int, worker: int, workers: int) -> range:
        """Rows of the epoch plan for this rank and ``worker``."""
        mine = rank_share(n, self.rank, self.world_size, self.options.split.drop_last)
        inner = share(len(mine), worker, workers)
        return range(mine.start + inner.start, mine.start + inner.stop)

    def __len__(self) -> int:
        """Patches this rank yields per epoch (over all its workers)."""
        n = len(self.plan(self.epoch))
        return len(rank_share(n, self.rank, self.world_size, self.options.split.drop_last))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, workers = worker_split()
        return self.iter_part(worker, workers)

    def iter_part(self, worker: int = 0, workers: int = 1) -> Iterator[dict[str, Any]]:
        """The items of part ``worker`` of ``workers`` of this rank's share of the epoch (what
        a DataLoader worker yields)."""
        plan = self.plan(self.epoch)
        part = self._part(len(plan), worker, workers)
        if not len(part):
            return
        slabs = plan.slabs[part.start : part.stop]
        cuts = np.flatnonzero(slabs[1:] != slabs[:-1]) + 1
        starts = [part.start, *(part.start + cuts).tolist()]
        stops = [*starts[1:], part.stop]
        for a, b in zip(starts, stops, strict=True):
            yield from self._cut(plan, a, b)

    def _cut(self, plan: EpochPlan, start: int, stop: int) -> Iterator[dict[str, Any]]:
        """Items of rows ``[start, stop)`` (one slab): read its region once, cut in batches."""
        g = self.geometry
        vols = self._open()
        source, labels = vols["source"], vols["labels"]
        assert source is not None
        origins = plan.origins[start:stop]
        size = np.asarray(g.size, dtype=np.int64)
        region = Box(
            tuple(int(v) for v in origins.min(axis=0)),
            tuple(int(v) for v in origins.max(axis=0) + size),
        )
        slab = SlabPatches.read(g, region, source, labels)
        item_bytes = math.prod(g.item_shape) * source.dtype.itemsize
        step = max(1, CUT_BYTES // max(1, item_bytes))
        for first in range(0, len(origins), step):
            o = origins[first : first + step]
            patches, label_patches = slab.cut(o)
            batch: dict[str, Array] = {"image": patches}
            if label_patches is not None:
                batch["label"] = label_patches
            batch["origin"] = o
            if plan.classes is not None:
                batch["class"] = plan.classes[start + first : start + first + len(o)]
            for i in range(len(o)):
                item = {key: value[i] for key, value in batch.items()}
                row = start + first + i
                if self.transform is not None:
                    rng = np.random.default_rng((self.options.split.seed, plan.epoch, row))
                    item = dict(self.transform(item, rng))
                yield item
