"""Where an output may be written: refusals checked before anything is written (a missing
parent folder, a symlink, a Zarr folder named like a file, an output that is also an input)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from datatools.errors import TargetError

RESOLVE_EACH = 64
"""Inputs per folder whose links :func:`check_not_input` resolves one by one."""

FILE_SUFFIXES = frozenset(
    {".h5", ".hdf5", ".hdf", ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".nrrd", ".nhdr", ".mha",
     ".mhd", ".nii", ".gz", ".npy", ".npz", ".txt", ".csv", ".json", ".n5"}
)  # fmt: skip
"""Name endings of files, refused for the Zarr folder an output is (``out.tif`` would become a
folder the user takes for a TIFF file)."""


def is_absent(path: Path) -> bool:
    """No output at ``path``: nothing there, or an empty folder (made by ``mkdir`` in a job
    script), which a new output may replace."""
    if path.is_symlink():
        return False
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def check_target_location(path: Path) -> None:
    """Refuse a target whose parent folder is missing or that is a symlink.

    Raises:
        TargetError: with the path and the problem.
    """
    path = Path(path)
    if path.is_symlink():
        raise TargetError(f"{path}: target is a symbolic link (give a real path)")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise TargetError(f"{path}: parent folder {parent} does not exist")


def check_folder_name(path: Path) -> None:
    """Refuse a Zarr output folder named like a file of another format.

    Raises:
        TargetError: naming the ending and the choices.
    """
    suffix = Path(path).suffix.lower()
    if suffix in FILE_SUFFIXES:
        raise TargetError(
            f"{path}: a Zarr output folder named like a {suffix} file (name it e.g. "
            f"{Path(path).stem}.zarr)"
        )


def check_not_input(path: Path, inputs: Iterable[Path]) -> None:
    """Refuse an output path that is one of the inputs or a folder holding one: writing it, or
    replacing it with ``--overwrite``, would destroy them. Links are followed (for long lists
    of slices, only their folders' links).

    Raises:
        TargetError: naming the target and the input.
    """
    out = Path(path).resolve()
    by_folder: dict[Path, list[Path]] = {}
    for item in inputs:
        by_folder.setdefault(Path(item).parent, []).append(Path(item))
    for folder, items in by_folder.items():
        many = len(items) > RESOLVE_EACH
        real = [folder.resolve() / i.name if many else i.resolve() for i in items]
        for item, resolved in zip(items, real, strict=True):
            if resolved == out:
                raise TargetError(f"{path}: is also an input (write the output elsewhere)")
            if out in resolved.parents:
                raise TargetError(f"{path}: holds the input {item} (write the output elsewhere)")
