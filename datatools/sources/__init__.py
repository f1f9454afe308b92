"""Open any supported input as a lazy :class:`Volume`.

Kinds, asked in this order: Zarr array or OME-Zarr image (:mod:`.zarr_array`), folder, glob or
list of 2D TIFF slices (:mod:`.tiff_stack`), HDF5 dataset (:mod:`.hdf5`), multi-page / OME /
ImageJ TIFF (:mod:`.tiff_file`), ITK image via SimpleITK (:mod:`.itk_image`). A kind's module is
imported when the kind is first asked, and asking (``can_open``: names, folder contents, file
signatures) imports no reading library, so opening a TIFF imports neither zarr, h5py nor
SimpleITK.
"""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from datatools.errors import InputError, InputNotFoundError, OptionError, UnsupportedInputError
from datatools.sources.base import ArrayVolume, OpenOptions, SourceSpec, Volume, spec_text

__all__ = [
    "ArrayVolume",
    "OpenOptions",
    "SourceSpec",
    "Volume",
    "check_source_options",
    "kinds",
    "open_companion",
    "open_volume",
    "paths_from_lines",
    "source_choices",
    "spec_text",
]


def paths_from_lines(lines: Iterable[str]) -> list[Path]:
    """Paths from text lines (one per line, blank lines ignored), as read from stdin (``-``).

    Raises:
        InputError: no path was given.
    """
    paths = [Path(line.strip()) for line in lines if line.strip()]
    if not paths:
        raise InputError("-: no file paths on standard input (give one path per line)")
    return paths


def open_volume(spec: SourceSpec, options: OpenOptions | None = None) -> Volume:
    """Open ``spec`` lazily with the first source kind that recognises it.

    Args:
        spec: a path, ``file.h5:/dataset``, a glob such as ``'scan/*.tif'``, or a list of
            2D TIFF slice paths (in order after natural sorting).
        options: level, series and gap choices; defaults when ``None``.

    Raises:
        InputNotFoundError: the path does not exist.
        UnsupportedInputError: no kind can open it; the message lists the kinds tried.
        InputError: a kind recognised it but the input is unusable (the message says why).
    """
    options = options or OpenOptions()
    if not isinstance(spec, str | Path):
        from datatools.sources.tiff_stack import TiffStack

        return TiffStack.open(spec, options)
    text = str(spec)
    if not glob.has_magic(text) and not _exists(text):
        raise InputNotFoundError(f"{text}: no such file or directory")
    tried: list[str] = []
    for kind in kinds():
        if kind.can_open(text):
            return kind.open(text, options)
        tried.append(kind.kind)
    raise UnsupportedInputError(
        f"{text}: not a volume datatools can open (tried: {', '.join(tried)})"
    )


def kinds() -> Iterator[type[Volume]]:
    """The source kinds in the order :func:`open_volume` asks them, each module imported when
    its kind is reached (SimpleITK only when no other kind recognised the input)."""
    from datatools.sources.zarr_array import ZarrVolume

    yield ZarrVolume
    from datatools.sources.tiff_stack import TiffStack

    yield TiffStack
    from datatools.sources.hdf5 import Hdf5Volume

    yield Hdf5Volume
    from datatools.sources.tiff_file import TiffFileVolume

    yield TiffFileVolume
    from datatools.sources.itk_image import ItkVolume

    yield ItkVolume


def open_companion(spec: SourceSpec, options: OpenOptions | None) -> Volume:
    """Open labels or a mask that go with a main source opened with ``options``: the series
    and the level apply where the input has several; an input with one (a plain array, a
    single-series TIFF) is read as it is, and the caller checks its shape against the image.

    Raises:
        InputError, InputNotFoundError: as :func:`open_volume`.
    """
    if options is None or (options.level in (None, 0) and options.series in (None, 0)):
        return open_volume(spec, options)
    gaps = OpenOptions(allow_gaps=options.allow_gaps)
    volume = open_volume(spec, gaps)
    chosen = gaps
    if options.series not in (None, 0) and volume.details().get("series_count", 1) > 1:
        chosen = OpenOptions(series=options.series, allow_gaps=options.allow_gaps)
        volume.close()
        volume = open_volume(spec, chosen)
    levels = volume.details().get("levels")
    count = levels if isinstance(levels, int) else len(levels or [None])
    if options.level not in (None, 0) and count > 1:
        volume.close()
        volume = open_volume(spec, replace(chosen, level=options.level))
    return volume


def check_source_options(volume: Volume, options: OpenOptions | None) -> None:
    """Refuse a level or a series asked of a main source that has none. (Labels and masks are
    opened with :func:`open_companion`: the choices apply where they have several.)

    Raises:
        OptionError: naming the option, the source and its kind.
    """
    if options is None:
        return
    if options.level not in (None, 0) and volume.kind not in ("zarr", "tiff-file"):
        raise OptionError(
            f"--source-level {options.level}: {volume.spec} ({volume.kind}) has one level "
            "(levels are for OME-Zarr images and pyramidal TIFF files)"
        )
    if options.series not in (None, 0) and volume.kind != "tiff-file":
        raise OptionError(
            f"--series {options.series}: {volume.spec} ({volume.kind}) has one series (series "
            "are for multi-series TIFF files)"
        )


def source_choices(options: OpenOptions | None) -> dict[str, int]:
    """The parts of ``options`` that change which data a source gives, for run records:
    ``source_level`` and ``series``, 0 when not chosen (the same data as ``--series 0``)."""
    chosen = options or OpenOptions()
    return {"source_level": chosen.level or 0, "series": chosen.series or 0}


def _exists(text: str) -> bool:
    if Path(text).exists():
        return True
    head, sep, _ = text.partition(":/")
    return bool(sep) and Path(head).is_file()
