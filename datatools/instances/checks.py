"""Checks of the inputs and options of :func:`datatools.instances.extract_instances`, made
before anything is read or written: the image and labels agree, and the window, channels and
chunk rows are possible within the memory limit."""

from __future__ import annotations

from collections.abc import Sequence

from datatools.errors import InputError, OptionError
from datatools.geometry import spatial_axes
from datatools.sources import Volume

IMAGE_AXES = ("zyx", "czyx", "yx", "cyx")
CHUNK_BYTES = 8 * 2**20
MAX_CHUNK_ROWS = 256


def window_size(size: int | Sequence[int], spatial: str) -> tuple[int, ...]:
    """The window extent per spatial axis (``spatial`` letters, e.g. ``"zyx"``), voxels.

    Raises:
        OptionError: not 1 or ``len(spatial)`` values, or a value <= 0.
    """
    values = (size,) if isinstance(size, int) else tuple(int(s) for s in size)
    text = ",".join(map(str, values))
    if len(values) not in (1, len(spatial)):
        raise OptionError(
            f"--size {text}: {len(values)} values for an image with {len(spatial)} spatial "
            f"axes ({','.join(spatial)}) (give 1 or {len(spatial)} values)"
        )
    if any(v <= 0 for v in values):
        raise OptionError(f"--size {text}: every value must be > 0")
    return values * len(spatial) if len(values) == 1 else values


def check_ids(ids: Sequence[int] | None) -> None:
    """Check that every id of ``ids`` fits int64, the dtype instance ids are kept in.

    Raises:
        OptionError: naming the ids beyond it.
    """
    beyond = [str(i) for i in ids or () if not -(2**63) <= i < 2**63]
    if beyond:
        raise OptionError(
            f"--ids {','.join(beyond)}: instance ids are int64, from {-(2**63)} to "
            f"{2**63 - 1} (give ids that occur in the labels)"
        )


def check_inputs(image: Volume, labels: Volume) -> None:
    """Check that ``image`` is 2D or 3D (channels first allowed) and ``labels`` are integers of
    its spatial shape.

    Raises:
        InputError: naming the volume at fault.
    """
    if image.axes not in IMAGE_AXES:
        raise InputError(
            f"{image.spec}: axes ({','.join(image.axes)}) are not (z,y,x), (c,z,y,x), (y,x) or "
            "(c,y,x) (instances need a 2D or 3D image, optionally with channels)"
        )
    spatial = spatial_axes(image.axes)
    if labels.dtype.kind not in "iu":
        raise InputError(
            f"{labels.spec}: labels have dtype {labels.dtype} (instance labels must be integers, "
            "0 = background)"
        )
    image_shape = spatial_shape(image)
    labels_shape = spatial_shape(labels)
    extra = [n for n, a in zip(labels.shape, labels.axes, strict=True) if a not in "zyx"]
    if (
        spatial_axes(labels.axes) != spatial
        or labels_shape != image_shape
        or any(n != 1 for n in extra)
    ):
        raise InputError(
            f"{labels.spec}: labels shape {_dims(labels.shape)} ({','.join(labels.axes)}) does "
            f"not match the spatial shape {_dims(image_shape)} ({','.join(spatial)}) of the "
            f"image {image.spec} (give labels of the same volume)"
        )


def spatial_shape(volume: Volume) -> tuple[int, ...]:
    """The (z, y, x) or (y, x) extent of ``volume``, voxels."""
    return tuple(n for n, a in zip(volume.shape, volume.axes, strict=True) if a in "zyx")


def _dims(shape: Sequence[int]) -> str:
    return " x ".join(map(str, shape))


def check_channels(channels: Sequence[int] | None, count: int, spec: str) -> tuple[int, ...]:
    """The channel indices to keep (all ``count`` when ``channels`` is None).

    Raises:
        OptionError: an index outside ``0..count - 1`` of ``spec``, or named twice.
    """
    if channels is None:
        return tuple(range(count))
    chosen = tuple(int(c) for c in channels)
    text = ",".join(map(str, chosen))
    if not chosen or any(not 0 <= c < count for c in chosen):
        raise OptionError(
            f"--channels {text}: {spec} has {count} channel{'s' if count > 1 else ''} "
            f"(indices 0..{count - 1})"
        )
    if len(set(chosen)) != len(chosen):
        raise OptionError(f"--channels {text}: a channel is named twice")
    return chosen


def pick_chunk_rows(chunk_rows: int | None, row_bytes: int, memory_limit: int) -> int:
    """Rows per chunk: as given, else the largest power of two with crops of at most
    ``CHUNK_BYTES`` (at most ``MAX_CHUNK_ROWS``); ``row_bytes`` is one instance's crops.

    Raises:
        OptionError: ``chunk_rows`` < 1, or a chunk row over a quarter of ``memory_limit``.
    """
    if chunk_rows is not None:
        if isinstance(chunk_rows, bool) or chunk_rows < 1:
            raise OptionError(f"--chunk-rows {chunk_rows}: must be a positive number of rows")
        rows = int(chunk_rows)
    else:
        fit = max(1, min(MAX_CHUNK_ROWS, CHUNK_BYTES // max(1, row_bytes)))
        rows = 1 << (fit.bit_length() - 1)
    if rows * row_bytes > memory_limit // 4:
        raise OptionError(
            f"--memory-limit {memory_limit}: too small for one chunk row of crops "
            f"({rows} x {row_bytes} bytes; give at least {4 * rows * row_bytes} or lower "
            "--chunk-rows)"
        )
    return rows
