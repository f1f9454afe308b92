"""Room on disk for an HDF5 file being written, and a failed write that leaves it readable.

Why room is made first: HDF5 cannot take a flush back. A flush that fails half-way (a full
disk, the file size limit of ``ulimit -f``, a disk quota) has already rewritten part of the
file's metadata in place, e.g. the superblock with the new end of the file, so the file no
longer opens ("truncated file") and every unit written before is lost with it. So the ledger
allocates the bytes that the writes until its next record can add *before* they are written
(:func:`allocate`, ``posix_fallocate`` from the end of the file at its last record): when the
room is not there the run stops between two records with one line naming the problem, HDF5
has written nothing since the last record, and the file holds every recorded unit for the
rerun. The bound is the data's uncompressed size plus 1/64 (no HDF5 codec grows data more)
and :data:`METADATA_ROOM` for chunk indexes, object headers and the record attribute. The
allocated bytes past HDF5's end of file are zeros HDF5 never reads; a clean close trims them
(:func:`trim`).

Should a write fail anyway (the room could not be allocated ahead, or another process filled
a copy-on-write file system), :func:`seal` closes the file with its descriptor pointed at
``/dev/null``, so HDF5's closing flush writes nothing more to the file (and cannot fail, which
made h5py crash the process at exit). What the file holds then depends on where HDF5 stopped;
the rerun resumes it, or says it is unreadable.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from pathlib import Path
from typing import Any

from datatools.errors import WriteError, first_line

METADATA_ROOM = 2**20
"""Bytes allowed on top of the data for HDF5's metadata between two records of the ledger."""
CODEC_GROWTH = 64
"""The data's bytes may grow by 1/64 through a codec (incompressible data, headers)."""
NOT_ALLOCATABLE = frozenset({errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS})
"""``posix_fallocate`` errors of file systems that cannot allocate ahead (writes go on)."""
RESUME = "then rerun the same command to resume"
"""The end of the hint of a write error after which the file keeps its recorded units."""


def room_for(nbytes: int) -> int:
    """Bytes to allocate ahead for ``nbytes`` of uncompressed data written to HDF5."""
    return nbytes + nbytes // CODEC_GROWTH


def allocate(file: Any, path: Path, start: int, nbytes: int) -> bool:
    """Allocate bytes ``[start, start + nbytes + METADATA_ROOM)`` of the open h5py ``file``
    (at ``path``), so that HDF5's writes into them cannot fail for lack of room.

    Returns:
        ``False`` when the file system cannot allocate ahead (nothing was allocated).

    Raises:
        WriteError: the disk is full, the file would pass the file size limit or a quota.
    """
    fd = file.id.get_vfd_handle()
    try:
        os.posix_fallocate(fd, start, nbytes + METADATA_ROOM)
    except OSError as exc:
        if exc.errno in NOT_ALLOCATABLE:
            return False
        raise write_error(path, exc, needed=nbytes + METADATA_ROOM) from exc
    return True


def seal(file: Any) -> None:
    """Close the h5py ``file`` after a failed write without anything more reaching it: its
    descriptor is pointed at ``/dev/null`` first, so HDF5's closing flush goes nowhere."""
    try:
        fd = file.id.get_vfd_handle()
    except (OSError, RuntimeError, ValueError):
        fd = None  # the file is closed already
    if isinstance(fd, int):
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    with contextlib.suppress(OSError, RuntimeError):  # its flush went to /dev/null
        file.close()


def trim(path: Path, size: int) -> None:
    """Cut the bytes allocated ahead past ``size`` (HDF5's end of file) off the closed file."""
    try:
        if path.stat().st_size > size:
            os.truncate(path, size)
    except OSError:
        pass  # a longer file is still whole: HDF5 never reads past its end of file


def hdf5_errno(exc: BaseException) -> int | None:
    """The system error behind an h5py error: its ``errno``, or the ``errno = N`` that HDF5
    writes into the message of a failed flush (a ``RuntimeError``); ``None`` if neither."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int):
        return code
    found = re.search(r"errno = (\d+)", str(exc))
    return int(found.group(1)) if found else None


def write_error(
    path: Path, exc: BaseException, *, needed: int | None = None, by_hdf5: bool = False
) -> WriteError:
    """One line for a write to ``path`` that failed with ``exc``: disk full, file too large
    (naming the limit), quota exceeded, or HDF5's first line. ``needed``: the bytes that did
    not fit. ``by_hdf5``: HDF5 itself failed (the file may be left unreadable)."""
    code = hdf5_errno(exc)
    room = f"no room for up to {_size(needed)} more" if needed else ""
    if code == errno.EFBIG:
        problem, hint = "file too large", "raise the limit"
        limit = _file_size_limit()
        if limit is not None:
            more = f"up to {_size(needed)} more" if needed else "it"
            problem += f": {more} would pass the file size limit of {_size(limit)} set by ulimit -f"
    elif code in (errno.ENOSPC, errno.EDQUOT):
        problem = "disk full" if code == errno.ENOSPC else "disk quota exceeded"
        problem, hint = problem + (f": {room}" if room else ""), "free space"
    else:
        problem, hint = f"write failed ({first_line(exc)})", "fix the cause"
    if by_hdf5:
        return WriteError(
            f"{path}: {problem} ({hint}, then rerun the same command: it resumes, or says "
            "that HDF5 left the file unreadable)"
        )
    return WriteError(f"{path}: {problem} ({hint}, {RESUME})")


def _file_size_limit() -> int | None:
    """The process's file size limit in bytes (``ulimit -f``), ``None`` when it has none."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if limit == resource.RLIM_INFINITY else int(limit)


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"
