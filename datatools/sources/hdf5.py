"""HDF5 datasets as lazy volumes: ``file.h5:/group/data``, or ``file.h5`` holding one image.

Axes follow the dataset's dimensions in C order: 2D ``(y, x)``, 3D ``(z, y, x)``,
4D ``(c, z, y, x)``, unless an ``axes`` attribute (as datatools writes, e.g. ``"cyx"``) names
another order datatools reads. The placement comes from the dataset's attributes when present:
voxel size from ``element_size_um`` (Fiji, ilastik; micrometer, ``(z, y, x)``) or
``resolution`` / ``voxel_size`` (``(z, y, x)``) with an optional ``unit`` attribute (an
OME-NGFF length unit or an alias such as ``um``), and ``translation`` (the physical position of
voxel 0's centre, spatial axes in C order, in the voxel size's unit), as datatools writes them.

A virtual dataset (HDF5 VDS) or one with external raw storage reads other files. HDF5 reads
the part of a missing virtual source as the fill value, without an error, so such a dataset is
refused at open with the missing files listed. The files are looked for where HDF5 looks:
virtual sources in ``HDF5_VDS_PREFIX``, next to the virtual file, then from the working folder;
external files in ``HDF5_EXTFILE_PREFIX``, else from the working folder. Source names with a
``printf`` pattern (unlimited virtual datasets) are not checked.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from datatools.errors import InputError, first_line
from datatools.geometry import Box, spatial_axes
from datatools.sources.base import AXES_BY_NDIM, LISTED_MAX, OpenOptions, SourceSpec, Volume
from datatools.stores import HDF5_READ_SUFFIXES
from datatools.units import unit_name

if TYPE_CHECKING:
    import h5py

logger = logging.getLogger(__name__)

KNOWN_AXES = ("yx", "zyx", "cyx", "czyx")
"""Values of an ``axes`` attribute that are read (datatools writes its volume's axes)."""
SIGNATURE = b"\x89HDF\r\n\x1a\n"
"""The bytes an HDF5 file starts with, or holds at 512, 1024, 2048... after a user block."""


def split_spec(spec: str) -> tuple[Path, str | None]:
    """Split ``file.h5:/group/data`` into the file and the dataset path (``None`` if absent).

    The split is at the first ``:/`` whose left part is an existing file, so ``C:/x.h5:/raw``
    works; without such a split the whole spec is the file.
    """
    start = 0
    while (pos := spec.find(":/", start)) >= 0:
        head = Path(spec[:pos])
        if head.is_file():
            return head, spec[pos + 1 :]
        start = pos + 1
    return Path(spec), None


def has_signature(path: Path) -> bool:
    """Whether ``path`` holds the HDF5 signature where HDF5 looks for it (at 0, then at every
    power of two from 512 inside the file), as ``h5py.is_hdf5`` answers, without h5py.

    Raises:
        OSError: the file cannot be read.
    """
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        offset = 0
        while offset + len(SIGNATURE) <= size:
            fh.seek(offset)
            if fh.read(len(SIGNATURE)) == SIGNATURE:
                return True
            offset = max(512, 2 * offset)
    return False


class Hdf5Volume(Volume):
    """One HDF5 dataset, read with h5py; the file stays open until :meth:`close`.

    ``read(box)`` lets HDF5 read only the chunks that meet the box; a box aligned with
    ``chunks`` decompresses each chunk once. Peak memory per read: the box's bytes plus the
    chunks HDF5 decompresses for it (h5py's default 1 MiB chunk cache).
    """

    kind = "hdf5"

    def __init__(self, spec: str, file: h5py.File, dataset: h5py.Dataset) -> None:
        """Wrap an open ``dataset`` of ``file``; closes ``file`` when the dataset is unusable.

        Raises:
            InputError: the dataset has fewer than 2 or more than 4 dimensions, is empty, has
                an unsupported dtype, or reads virtual or external files that are missing.
        """
        self._file = file
        self._dataset = dataset
        try:
            shape = tuple(int(s) for s in dataset.shape or ())
            axes = AXES_BY_NDIM.get(len(shape))
            dims = " x ".join(str(s) for s in shape) or "()"
            if axes is None:
                raise InputError(
                    f"{spec}: {len(shape)}D dataset of shape {dims} (datatools reads 2D "
                    "(y, x), 3D (z, y, x) and 4D (c, z, y, x) datasets)"
                )
            if 0 in shape:
                raise InputError(f"{spec}: dataset is empty (shape {dims})")
            self._storage, self._others = _storage(spec, dataset)
            axes = _axes(spec, dataset.attrs, axes)
            n_spatial = len(spatial_axes(axes))
            voxel_size, unit = _voxel_size(spec, dataset.attrs, n_spatial)
            super().__init__(
                spec,
                shape,
                dataset.dtype,
                axes,
                voxel_size=voxel_size,
                unit=unit,
                translation=_translation(spec, dataset.attrs, n_spatial),
                chunks=dataset.chunks,
            )
        except BaseException:
            file.close()
            raise

    @classmethod
    def can_open(cls, spec: str) -> bool:
        """An existing file with an HDF5 extension or the HDF5 signature (``file.h5:/path``)."""
        path, _ = split_spec(spec)
        if not path.is_file():
            return False
        if path.suffix.lower() in HDF5_READ_SUFFIXES:
            return True
        try:
            return has_signature(path)
        except OSError:
            return False

    @classmethod
    def open(cls, spec: SourceSpec, options: OpenOptions) -> Hdf5Volume:
        """Open the dataset named in ``spec``, or the file's only 2D-4D dataset.

        Raises:
            InputError: not an HDF5 file, no such dataset, the path is a group, several
                candidate datasets and none named, or the dataset is unusable.
        """
        import h5py

        path, name = split_spec(str(spec))
        try:
            file = h5py.File(path, "r")
        except OSError as exc:
            raise InputError(f"{path}: not a readable HDF5 file ({first_line(exc)})") from exc
        try:
            dataset = _find_dataset(file, path, name)
        except BaseException:
            file.close()
            raise
        return cls(f"{path}:{dataset.name}", file, dataset)

    def _read(self, box: Box) -> np.ndarray[Any, Any]:
        """Read ``box`` (half-open, in this volume's axes) into a new array.

        Raises:
            InputError: HDF5 cannot read the chunks of the box (corrupt or truncated file).
        """
        try:
            return np.asarray(self._dataset[box.slices()])
        except OSError as exc:
            raise InputError(
                f"{self.spec}: cannot read region {box.to_text()} ({first_line(exc)})"
            ) from exc

    def details(self) -> dict[str, Any]:
        """``dataset`` (path in the file), ``storage`` (``compact``, ``contiguous``,
        ``chunked``, or ``virtual`` / ``external`` with the files read), ``codecs`` (HDF5
        filters), ``file_bytes``."""
        plist = self._dataset.id.get_create_plist()
        codecs = [_filter_name(plist.get_filter(i)) for i in range(plist.get_nfilters())]
        return {
            "dataset": self._dataset.name,
            "storage": self._storage,
            "codecs": codecs,
            "file_bytes": Path(self._file.filename).stat().st_size,
        }

    def files(self) -> tuple[Path, ...]:
        """The HDF5 file, then the virtual sources or external files its dataset reads."""
        return (split_spec(self.spec)[0], *self._others)

    def close(self) -> None:
        """Close the HDF5 file; reading afterwards raises h5py's error."""
        self._file.close()


def _find_dataset(file: h5py.File, path: Path, name: str | None) -> h5py.Dataset:
    import h5py

    datasets: dict[str, h5py.Dataset] = {}

    def visit(key: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            datasets["/" + key] = obj

    file.visititems(visit)
    listing = _listing(list(datasets))
    if name is not None:
        obj = file.get(name)
        if obj is None:
            raise InputError(f"{path}: no dataset {name} (datasets: {listing})")
        if not isinstance(obj, h5py.Dataset):
            raise InputError(f"{path}: {name} is a group, not a dataset (datasets: {listing})")
        return obj
    images = {key: d for key, d in datasets.items() if (d.ndim or 0) in AXES_BY_NDIM}
    if len(images) == 1:
        return next(iter(images.values()))
    if not images:
        found = f" (datasets: {listing})" if datasets else ""
        raise InputError(f"{path}: holds no 2D, 3D or 4D dataset{found}")
    largest = max(images, key=lambda key: images[key].size)
    raise InputError(
        f"{path}: holds {len(images)} datasets ({_listing(list(images))}); "
        f"name one as {path}:{largest}"
    )


def _storage(spec: str, dataset: h5py.Dataset) -> tuple[str, tuple[Path, ...]]:
    """How ``dataset`` is stored, as ``info`` shows it, and the other files it reads.

    Raises:
        InputError: a virtual source or external file is missing.
    """
    import h5py

    file = Path(dataset.file.filename)
    if dataset.is_virtual:
        kind = "virtual"
        names = sorted({m.file_name for m in dataset.virtual_sources()} - {"."})
        found = {
            n: _find_file(n, "HDF5_VDS_PREFIX", file.parent, beside=True)
            for n in names
            if "%" not in n
        }
        hint = (
            f"HDF5 would read their parts as the fill value; restore them next to {file.name}, "
            "or name their folder in HDF5_VDS_PREFIX"
        )
    elif dataset.external:
        kind = "external"
        names = sorted({os.fsdecode(name) for name, _, _ in dataset.external})
        found = {n: _find_file(n, "HDF5_EXTFILE_PREFIX", file.parent, beside=False) for n in names}
        hint = (
            "restore them; HDF5 reads relative names from the working folder or HDF5_EXTFILE_PREFIX"
        )
    else:
        layout = dataset.id.get_create_plist().get_layout()
        plain = {h5py.h5d.COMPACT: "compact", h5py.h5d.CONTIGUOUS: "contiguous"}
        return plain.get(layout, "chunked"), ()
    missing = [name for name, path in found.items() if path is None]
    if missing:
        raise InputError(
            f"{spec}: {kind} dataset whose files are missing: {_listing(missing)} ({hint})"
        )
    shown = f"{kind} ({_listing(names)})" if names else kind
    return shown, tuple(path for path in found.values() if path is not None)


def _find_file(name: str, variable: str, origin: Path, *, beside: bool) -> Path | None:
    """Where HDF5 finds the file ``name``: as given (an absolute name, or from the working
    folder), in the folders listed in the environment ``variable`` (``${ORIGIN}`` standing for
    ``origin``, the folder of the file that names it), and with ``beside`` next to
    ``origin``; the last two by its base name when it is absolute. ``None`` when it is
    nowhere."""
    path = Path(name)
    candidates = [path]
    if path.is_absolute():
        path = Path(path.name)
    prefixes = [p for p in os.environ.get(variable, "").split(os.pathsep) if p]
    candidates += [Path(p.replace("${ORIGIN}", str(origin))) / path for p in prefixes]
    if beside:
        candidates.append(origin / path)
    return next((c for c in candidates if c.is_file()), None)


def _listing(names: list[str]) -> str:
    names = sorted(names)
    if not names:
        return "none"
    if len(names) <= LISTED_MAX:
        return ", ".join(names)
    return ", ".join(names[:LISTED_MAX]) + f", ... ({len(names) - LISTED_MAX} more)"


def _voxel_size(
    spec: str, attrs: h5py.AttributeManager, n_spatial: int
) -> tuple[tuple[float, ...] | None, str | None]:
    """Voxel size ``(z, y, x)`` and NGFF unit from the dataset's attributes, if they fit."""
    unit: str | None
    if "element_size_um" in attrs:
        key, unit = "element_size_um", "micrometer"
    elif "resolution" in attrs:
        key, unit = "resolution", _unit(spec, attrs.get("unit"))
    elif "voxel_size" in attrs:
        key, unit = "voxel_size", _unit(spec, attrs.get("unit"))
    else:
        return None, None
    try:
        values = tuple(float(v) for v in np.atleast_1d(np.asarray(attrs[key], dtype=np.float64)))
    except (TypeError, ValueError):
        values = ()
    if len(values) != n_spatial or not all(np.isfinite(v) and v > 0 for v in values):
        logger.warning(
            "%s: ignoring attribute %s=%r (want %d positive values, (z, y, x))",
            spec,
            key,
            attrs[key],
            n_spatial,
        )
        return None, None
    return values, unit


def _axes(spec: str, attrs: h5py.AttributeManager, default: str) -> str:
    """The ``axes`` attribute when it is a known order with ``len(default)`` axes, else
    ``default`` (the order by number of dimensions)."""
    value = attrs.get("axes")
    if value is None:
        return default
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    if isinstance(text, str) and text in KNOWN_AXES and len(text) == len(default):
        return text
    logger.warning(
        "%s: ignoring attribute axes=%r (want one of %s with %d axes); reading axes %s",
        spec,
        value,
        ", ".join(KNOWN_AXES),
        len(default),
        default,
    )
    return default


def _translation(
    spec: str, attrs: h5py.AttributeManager, n_spatial: int
) -> tuple[float, ...] | None:
    """Position of voxel 0's centre per spatial axis (C order) from ``translation``, if it fits."""
    if "translation" not in attrs:
        return None
    try:
        values = tuple(
            float(v) for v in np.atleast_1d(np.asarray(attrs["translation"], dtype=np.float64))
        )
    except (TypeError, ValueError):
        values = ()
    if len(values) != n_spatial or not all(np.isfinite(v) for v in values):
        logger.warning(
            "%s: ignoring attribute translation=%r (want %d finite values, spatial axes)",
            spec,
            attrs["translation"],
            n_spatial,
        )
        return None
    return values


def _unit(spec: str, value: object) -> str | None:
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    if not text.strip():
        return None  # no unit (datatools writes "" when the voxel size has none)
    unit = unit_name(text)
    if unit is None:
        logger.warning("%s: ignoring unknown unit attribute %r", spec, text)
    return unit


def _filter_name(info: tuple[int, int, tuple[int, ...], bytes]) -> str:
    import h5py

    code, _, _, name = info
    if code == h5py.h5z.FILTER_DEFLATE:
        return "gzip"
    return name.decode(errors="replace").lower() or f"filter-{code}"
