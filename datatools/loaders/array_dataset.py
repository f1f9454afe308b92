"""A map-style dataset over arrays that share axis 0: outputs of ``datatools patches``,
``datatools instances`` and :mod:`datatools.writers`, HDF5 files, or arrays in memory.

An item is a dict of one row of every array, under training names (:data:`ITEM_KEYS`):
``patches`` / ``images`` -> ``image``, ``labels`` -> ``label``, ``masks`` -> ``mask``,
``origins`` -> ``origin``, ``instance_ids`` -> ``instance_id``; other arrays keep their name.
A per-class patches output (subgroups ``class_<value>``) reads as one dataset whose items also
hold ``class``. The dataset needs no torch: ``DataLoader(dataset, ...)`` takes it as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeAlias

import h5py
import numpy as np
import zarr
import zarr.errors

from datatools.errors import InputError, InputNotFoundError, OptionError
from datatools.ledger import open_ledger
from datatools.loaders.rows import (
    Array,
    ChunkCache,
    ConcatSources,
    Hdf5Rows,
    Index,
    NumpyRows,
    RowSource,
    StoredRows,
    as_rows,
    normalize_rows,
)
from datatools.loaders.splits import SharedEpoch
from datatools.stores import HDF5_SUFFIXES

ITEM_KEYS = MappingProxyType(
    {
        "patches": "image",
        "images": "image",
        "labels": "label",
        "masks": "mask",
        "origins": "origin",
        "instance_ids": "instance_id",
    }
)
"""Stored array name -> item key; other names are item keys as they are."""
CLASS_KEY = "class"
"""Item key of the class value of a per-class patches output."""
DEFAULT_CACHE_CHUNKS = 4
_CLASS_GROUP = re.compile(r"class_(-?\d+)\Z")

GroupLike: TypeAlias = (
    str | Path | zarr.Group | Mapping[str, Any] | RowSource | Array | zarr.Array[Any]
)
Transform: TypeAlias = Callable[[dict[str, Any], np.random.Generator], Mapping[str, Any]]


def open_arrays(source: GroupLike, *, arrays: Sequence[str] | None = None) -> dict[str, RowSource]:
    """The arrays of ``source`` that share axis 0, as row sources under their item keys.

    Args:
        source: a Zarr group (path or object; a single Zarr array path also works), an HDF5
            file (``.h5`` / ``.hdf5``, datasets at its root), a mapping name -> array
            (numpy, Zarr, h5py, :class:`~datatools.loaders.LazyView`,
            :class:`~datatools.loaders.ConcatSources`), or one such array (item key
            ``image``).
        arrays: stored names to read (default: all).

    Returns:
        Item key -> row source, in stored order (``class`` last for per-class outputs).

    Raises:
        InputNotFoundError: the path does not exist.
        InputError: not a group of arrays, an unfinished datatools output, arrays of different
            lengths, or two arrays with the same item key.
        OptionError: ``arrays`` names an array the source does not hold.
    """
    if isinstance(source, Mapping):
        where = "<arrays>"
        named = {str(name): as_rows(a, str(name)) for name, a in source.items()}
    elif isinstance(source, zarr.Group):
        where = str(source.store_path)
        named = _zarr_rows(source, where)
    elif not isinstance(source, str | Path):
        where = "image"
        named = {"image": as_rows(source, "image")}
    else:
        path = Path(source)
        where = str(path)
        if not path.exists():
            raise InputNotFoundError(f"{path}: no such file or directory")
        named = _hdf5_rows(path) if path.suffix.lower() in HDF5_SUFFIXES else _zarr_path(path)
    if not named:
        raise InputError(
            f"{where}: holds no arrays (give a patches or instances output, or a group of "
            "arrays that share axis 0)"
        )
    if arrays is not None:
        missing = [a for a in arrays if a not in named]
        if missing:
            raise OptionError(
                f"arrays: {where} has no array {missing[0]!r} (it holds {', '.join(named)})"
            )
        named = {a: named[a] for a in arrays}
    lengths = {name: len(rows) for name, rows in named.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name}: {n} rows" for name, n in lengths.items())
        raise InputError(f"{where}: arrays do not share axis 0 ({listed})")
    out: dict[str, RowSource] = {}
    stored: dict[str, str] = {}
    for name, rows in named.items():
        key = ITEM_KEYS.get(name, name)
        if key in out:
            raise InputError(
                f"{where}: arrays {stored[key]!r} and {name!r} both make item key {key!r} "
                "(choose one with arrays=...)"
            )
        out[key], stored[key] = rows, name
    return out


def _zarr_path(path: Path) -> dict[str, RowSource]:
    if open_ledger(path).is_unfinished():
        raise InputError(
            f"{path}: unfinished datatools output (rerun the command that writes it to complete it)"
        )
    try:
        node = zarr.open(str(path), mode="r")
    except (FileNotFoundError, zarr.errors.NodeNotFoundError, ValueError) as exc:
        raise InputError(f"{path}: not a Zarr group or array ({exc})") from exc
    if isinstance(node, zarr.Array):
        return {path.name: StoredRows(node, str(path))}
    return _zarr_rows(node, str(path))


def _zarr_rows(group: zarr.Group, where: str) -> dict[str, RowSource]:
    """Direct arrays of ``group``; else its ``class_<value>`` subgroups joined, plus ``class``."""
    direct: dict[str, RowSource] = {
        name: StoredRows(a, f"{where}/{name}") for name, a in group.arrays()
    }
    if direct:
        return direct
    classes = sorted(
        (int(m.group(1)), name, sub)
        for name, sub in group.groups()
        if (m := _CLASS_GROUP.match(name)) is not None
    )
    if not classes:
        return {}
    per_class = [(value, name, dict(sub.arrays())) for value, name, sub in classes]
    names = list(per_class[0][2])
    if not names:
        return {}
    for _, name, found in per_class[1:]:
        if sorted(found) != sorted(names):
            raise InputError(
                f"{where}/{name}: holds arrays {sorted(found)}, {per_class[0][1]} holds "
                f"{sorted(names)} (class groups must hold the same arrays)"
            )
    parts = {
        a: [StoredRows(found[a], f"{where}/{name}/{a}") for _, name, found in per_class]
        for a in names
    }
    out: dict[str, RowSource] = {a: ConcatSources(rows) for a, rows in parts.items()}
    lengths = [len(rows) for rows in parts[names[0]]]
    values = np.repeat([v for v, _, _ in per_class], lengths).astype(np.int64)
    out[CLASS_KEY] = NumpyRows(values)
    return out


def _hdf5_rows(path: Path) -> dict[str, RowSource]:
    try:
        with h5py.File(path, "r") as file:
            names = [name for name, node in file.items() if isinstance(node, h5py.Dataset)]
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc})") from exc
    if open_ledger(path).is_unfinished():
        raise InputError(
            f"{path}: unfinished datatools output (rerun the command that writes it to complete it)"
        )
    return {name: Hdf5Rows(path, name) for name in names}


class ArrayDataset:
    """Map-style dataset over arrays that share axis 0; ``dataset[i]`` is a dict of row ``i``.

    Example (PyTorch; :class:`~datatools.loaders.ChunkShuffleSampler` decodes each chunk about
    once per epoch)::

        dataset = ArrayDataset("patches.zarr", transform=Compose([AddChannel(), Flip("zyx")]))
        sampler = ChunkShuffleSampler(dataset, batch_size=64, num_workers=4, seed=0)
        loader = DataLoader(dataset, batch_size=64, sampler=sampler, num_workers=4)
        for epoch in range(10):
            sampler.set_epoch(epoch)     # new order, new augmentation draws
            for batch in loader:         # batch["image"]: (64, ...) tensor
                ...

    Indexing with an int gives one row (``{"image": (…), "origin": (ndim,), ...}``); with a
    slice or an int array it gives the rows stacked, read with one gather per chunk (what a
    batch sampler with ``DataLoader(batch_size=None)`` uses).

    Args:
        source: see :func:`open_arrays`.
        arrays: stored names to read (default: all).
        transform: ``transform(item, rng) -> item`` applied to every row, e.g. a
            :class:`datatools.augment.Compose`; ``rng`` is a generator seeded from
            ``(seed, epoch, row)``, so the draws do not depend on workers or order.
        seed: seed of the transform's draws (an int >= 0).
        cache_chunks: decoded chunks kept per array (per process, so per DataLoader worker).

    Memory: ``cache_chunks`` chunks per array, plus the rows returned.

    Raises:
        InputNotFoundError, InputError, OptionError: as :func:`open_arrays`; OptionError also
            for a negative ``seed`` or ``cache_chunks``.
    """

    def __init__(
        self,
        source: GroupLike,
        *,
        arrays: Sequence[str] | None = None,
        transform: Transform | None = None,
        seed: int = 0,
        cache_chunks: int = DEFAULT_CACHE_CHUNKS,
    ) -> None:
        if seed < 0:
            raise OptionError(f"seed {seed}: must be >= 0")
        if cache_chunks < 0:
            raise OptionError(f"cache_chunks {cache_chunks}: must be >= 0")
        self.sources = open_arrays(source, arrays=arrays)
        self.transform = transform
        self.seed = seed
        self._epoch = SharedEpoch()
        self.caches = {key: ChunkCache(cache_chunks) for key in self.sources}
        self._length = len(next(iter(self.sources.values())))

    @property
    def keys(self) -> tuple[str, ...]:
        """Item keys, in stored order."""
        return tuple(self.sources)

    def __len__(self) -> int:
        return self._length

    @property
    def epoch(self) -> int:
        """The epoch whose transform draws are used."""
        return self._epoch.value

    def set_epoch(self, epoch: int) -> None:
        """Use the transform draws of ``epoch`` (a :class:`ChunkShuffleSampler` made from this
        dataset calls this from its own ``set_epoch``). DataLoader workers see the change,
        persistent ones included."""
        self._epoch.value = int(epoch)

    def chunk_ids(self) -> Array:
        """``(n,)`` int64 chunk of each row in the array with the largest rows (the one whose
        decoding dominates), for :class:`~datatools.loaders.ChunkShuffleSampler`."""
        primary = max(
            self.sources.values(),
            key=lambda s: int(np.prod(s.item_shape, dtype=np.int64)) * s.dtype.itemsize,
        )
        return primary.chunk_ids()

    def __getitem__(self, index: Index) -> dict[str, Any]:
        """Row ``index`` (an int) or rows stacked (a slice, ints, an int or bool array).

        Raises:
            IndexError: a row out of range.
            InputError: stored data cannot be read.
        """
        rows, single = normalize_rows(index, self._length)
        if self.transform is None:
            batch = self._read(rows)
            return {k: v[0] for k, v in batch.items()} if single else batch
        items = self._items(rows)
        if single:
            return items[0]
        if not items:
            return self._read(rows)
        return {k: np.stack([item[k] for item in items]) for k in items[0]}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Rows ``indices`` as a list of items, read with one gather per chunk (a DataLoader
        with ``batch_size`` asks for its batches this way, then collates them).

        Raises:
            IndexError: a row out of range.
            InputError: stored data cannot be read.
        """
        rows, _ = normalize_rows(np.asarray(indices, dtype=np.int64), self._length)
        return self._items(rows)

    def _read(self, rows: Array) -> dict[str, Array]:
        return {key: src.take(rows, self.caches[key]) for key, src in self.sources.items()}

    def _items(self, rows: Array) -> list[dict[str, Any]]:
        """One dict per row, transformed with ``rng`` seeded from ``(seed, epoch, row)``."""
        batch = self._read(rows)
        items = [{k: v[i] for k, v in batch.items()} for i in range(len(rows))]
        if self.transform is None:
            return items
        return [
            dict(self.transform(item, np.random.default_rng((self.seed, self.epoch, int(row)))))
            for item, row in zip(items, rows, strict=True)
        ]

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without cached chunks (a DataLoader worker starts with empty caches)."""
        state = dict(self.__dict__)
        state["caches"] = {key: ChunkCache(c.capacity) for key, c in self.caches.items()}
        return state

    def cache_info(self) -> dict[str, tuple[int, int]]:
        """Per item key, ``(hits, misses)`` of this process's chunk cache (misses: chunks
        decoded)."""
        return {key: (c.hits, c.misses) for key, c in self.caches.items()}

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}: {s.item_shape} {s.dtype}" for k, s in self.sources.items())
        return f"<ArrayDataset {self._length} rows; {parts}>"
