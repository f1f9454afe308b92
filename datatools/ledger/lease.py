"""One live run per output: the lease a run holds inside a Zarr folder output, and the task count
of a job array.

Design. Two runs writing the same units of one output can tear it: a run that does not know
a unit is done (paused while another run finished the output) rewrites its chunk files, and a
kill in the middle leaves a finished output with a torn chunk. So a run takes a *lease* on its
output before it writes, renews it while it runs, and gives it back when it stops::

    target.zarr/.datatools/leases/
        zarr.json | .zarray      an empty array, so Zarr readers walking the hierarchy see a
                                 node (and never list the files below)
        run.lease                a run of the whole plan (no --task-index/--task-count)
        task-<i>.lease           task i of a job array
        tasks.json               {"task_count": n}, written by the first task that claims

- A lease is a small JSON object (:class:`Holder`: a random token, pid, host name, start time,
  time of the last renewal, task), created under a temporary name and hard-linked into place,
  so exactly one of two runs starting together creates it; renewals replace it atomically.
- A lease is *live* while it was renewed within :data:`LEASE_STALE_SECONDS` and, when the
  holder is on this host, its process is still there (same pid and process start time, not a
  zombie). A run killed with ``kill -9`` loses its lease at once to a run on the same host; a
  run on another host, or one stopped or hung, loses it after :data:`LEASE_STALE_SECONDS`
  without renewal. A run renews every :data:`LEASE_RENEW_SECONDS` on a background thread, so
  a long unit never makes its lease stale.
- A second run whose lease would overlap a live one is **refused** (it does not wait): one
  ``Error:`` line names the holder's pid, host and start time. Slots overlap as the units they
  write do: the whole-plan slot ``run`` overlaps every other; task slots overlap only the same
  task index. So the tasks of a job array (``--task-index I --task-count N``) hold one lease
  each and write their disjoint slices side by side, while a second copy of one task, or a
  whole-plan run next to live tasks, is refused. A Dask run's lease is held by its driver,
  which hands units to the workers; the workers take none.
- A job array's task count is recorded by the first task that claims the output (created by
  a hard link, so concurrent first tasks agree on one) and compared on every later task
  claim: a task with another ``--task-count`` would overlap the others' slices and is refused.
  A whole-plan run is always allowed once no task is live (it finishes what the tasks left).
- A stale lease is taken over by replacing its file, then read back: of two runs taking it over
  at the same moment, one reads the other's token and is refused. A run checks its lease before
  every unit (:meth:`Lease.check`); when it has not confirmed it for
  :data:`LEASE_CHECK_SECONDS` (it was stopped), it reads it back first and stops with an
  ``Error:`` line if another run holds it now.
- The lease is the first line of defence; the units are the second. A run checks that a unit
  is not recorded done just before writing it, and chunk files are replaced atomically
  wherever another run may hold them (see :mod:`datatools.sinks.chunk_files`), so even a run
  resumed after losing its lease never leaves a torn chunk in a finished output.

Host names come from :func:`socket.gethostname`; machines sharing one file system must have
distinct ones. Clocks of different hosts must agree to well within :data:`LEASE_STALE_SECONDS`.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import threading
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from datatools.errors import TargetError, WriteError
from datatools.executor import TaskSlice

LEASE_SUFFIX = ".lease"
"""Ending of a lease file's name."""
TASKS_FILE = "tasks.json"
"""The task count of a job array, in the folder of the leases."""
LEASE_STALE_SECONDS = 120.0
"""A lease not renewed for this long is stale: another run may take it over."""
LEASE_RENEW_SECONDS = 15.0
"""How often a run renews its lease."""
LEASE_CHECK_SECONDS = 30.0
"""A run that has not confirmed its lease for this long (it was stopped) reads it back before
its next unit."""
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: a run of this or another process.

    Attributes:
        token: random, unique to one acquisition.
        pid: the holder's process id on ``host``.
        host: the holder's host name.
        started: when the holder took the lease (ISO 8601, local time with offset).
        renewed: when it last renewed the lease (seconds since the epoch).
        task: ``(index, count)`` of a job-array task, ``None`` for a whole-plan run.
        process_start: the process's start time as the kernel counts it (Linux), which tells
            a live holder from a new process given the same pid.
    """

    token: str
    pid: int
    host: str
    started: str
    renewed: float
    task: tuple[int, int] | None = None
    process_start: str | None = None

    @classmethod
    def for_this_process(cls, task: TaskSlice | None) -> Holder:
        """A new holder: this process, now, for ``task``."""
        return cls(
            token=secrets.token_hex(8),
            pid=os.getpid(),
            host=socket.gethostname(),
            started=datetime.now().astimezone().isoformat(timespec="seconds"),
            renewed=time.time(),
            task=None if task is None or task.count == 1 else (task.index, task.count),
            process_start=_process_start(os.getpid()),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Holder:
        task = data.get("task")
        start = data.get("process_start")
        return cls(
            token=str(data["token"]),
            pid=int(data["pid"]),
            host=str(data["host"]),
            started=str(data["started"]),
            renewed=float(data["renewed"]),
            task=None if task is None else (int(task[0]), int(task[1])),
            process_start=None if start is None else str(start),
        )

    @property
    def slot(self) -> str:
        """The lease file's stem: ``run``, or ``task-<i>`` for task ``i``."""
        return "run" if self.task is None else f"task-{self.task[0]}"

    def describe(self) -> str:
        """``task 2 of 4, pid 123 on node7, started 2026-05-01T09:30:00+02:00``."""
        what = "" if self.task is None else f"task {self.task[0]} of {self.task[1]}, "
        return f"{what}pid {self.pid} on {self.host}, started {self.started}"

    def is_live(self) -> bool:
        """Renewed within :data:`LEASE_STALE_SECONDS`, and on this host its process is there."""
        if time.time() - self.renewed > LEASE_STALE_SECONDS:
            return False
        if self.host != socket.gethostname():
            return True
        return _process_alive(self.pid, self.process_start)


class Lease:
    """A lease this run holds on an output (from :func:`acquire`), renewed on a background
    thread until :meth:`release` (or the end of a ``with`` block)."""

    def __init__(self, where: Path, file: Path, holder: Holder) -> None:
        self.where = where
        self.file = file
        self.holder = holder
        self._lock = threading.Lock()
        self._confirmed = time.monotonic()
        self._lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._renew_loop, name="datatools-lease", daemon=True
        )

    def check(self) -> None:
        """Make sure this run still holds its lease before it writes a unit; reads it back
        when it was not confirmed for :data:`LEASE_CHECK_SECONDS`.

        Raises:
            TargetError: another run took the lease over (this run was stopped or hung).
            OSError: the lease cannot be read or renewed.
        """
        if self._lost is None and time.monotonic() - self._confirmed >= LEASE_CHECK_SECONDS:
            self.renew()
        if self._lost is not None:
            raise TargetError(self._lost)

    def renew(self) -> None:
        """Read the lease back and, when it is still this run's, renew it; otherwise note it
        lost (:meth:`check` then refuses to go on).

        Raises:
            OSError: the lease cannot be read or written.
        """
        with self._lock:
            if self._lost is not None:
                return
            current = _read(self.file)
            if current is None or current.token != self.holder.token:
                self._lost = _lost_message(self.where, current)
                return
            self.holder = replace(self.holder, renewed=time.time())
            tmp = _write_temp(self.file.parent, self.file.name, self.holder.to_dict())
            try:
                os.replace(tmp, self.file)
            finally:
                tmp.unlink(missing_ok=True)
            self._confirmed = time.monotonic()

    def release(self) -> None:
        """Stop renewing and remove the lease, if it is still this run's (idempotent)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        with self._lock:
            try:
                current = _read(self.file)
                if current is not None and current.token == self.holder.token:
                    self.file.unlink(missing_ok=True)
            except OSError:
                pass  # a lease left behind goes stale; the output is unchanged

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def _start(self) -> None:
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(LEASE_RENEW_SECONDS):
            try:
                self.renew()
            except OSError:
                continue  # retried at the next tick; the stale time allows several misses
            if self._lost is not None:
                return


def acquire(folder: Path, where: Path, task: TaskSlice | None = None) -> Lease:
    """Take the lease of a run (``task`` ``None``: the whole plan) in ``folder`` (which
    exists), the leases of the output ``where`` (named in messages).

    Raises:
        TargetError: a live run holds an overlapping lease (the message names it), or
            ``task`` has another count than the output's other tasks.
        WriteError: the lease cannot be written.
    """
    try:
        if task is not None and task.count > 1:
            _check_task_count(folder, where, task)
        holder = Holder.for_this_process(task)
        file = folder / f"{holder.slot}{LEASE_SUFFIX}"
        _take(file, where, holder)
    except TargetError:
        raise  # a FileExistsError too, but nothing failed to be written
    except OSError as exc:
        raise WriteError(f"{where}: cannot write its lease ({exc.strerror or exc})") from exc
    lease = Lease(where, file, holder)
    try:
        for other in sorted(folder.glob(f"*{LEASE_SUFFIX}")):
            if other == file or (holder.task is not None and other.stem != "run"):
                continue
            current = _read(other)
            if current is not None and current.is_live():
                raise _busy(where, current)
    except BaseException:
        lease.release()
        raise
    lease._start()
    return lease


def check_free(folder: Path, where: Path) -> None:
    """Refuse to remove the output ``where`` while a live run holds a lease in ``folder``.

    Raises:
        TargetError: naming the holder.
    """
    for file in sorted(folder.glob(f"*{LEASE_SUFFIX}")):
        current = _read(file)
        if current is not None and current.is_live():
            raise _busy(where, current)


def _take(file: Path, where: Path, holder: Holder) -> None:
    """Create the lease ``file`` for ``holder``, or take it over from a dead or stale holder.

    Raises:
        TargetError: a live run holds it.
        OSError: it cannot be written.
    """
    tmp = _write_temp(file.parent, file.name, holder.to_dict())
    try:
        if _publish(tmp, file):
            return
        current = _read(file)
        if current is not None and current.is_live():
            raise _busy(where, current)
        os.replace(tmp, file)
    finally:
        tmp.unlink(missing_ok=True)
    current = _read(file)
    if current is None or current.token != holder.token:  # another run took it over just now
        raise _busy(where, current or holder)


def _check_task_count(folder: Path, where: Path, task: TaskSlice) -> None:
    """Record the task count of the first task in ``folder``; refuse a task with another.

    Raises:
        TargetError: the output's tasks have another count.
        OSError: the record cannot be written or read.
    """
    file = folder / TASKS_FILE
    tmp = _write_temp(folder, file.name, {"task_count": task.count})
    try:
        if _publish(tmp, file):
            return
    finally:
        tmp.unlink(missing_ok=True)
    recorded = json.loads(file.read_text()).get("task_count")
    if recorded != task.count:
        raise TargetError(
            f"{where}: its tasks were started with --task-count {recorded}, this one has "
            f"--task-count {task.count} (give --task-count {recorded}, or finish the output "
            "with one run without --task-index/--task-count once no task is running)"
        )


def _busy(where: Path, holder: Holder) -> TargetError:
    age = max(0.0, time.time() - holder.renewed)
    return TargetError(
        f"{where}: another datatools run is writing it ({holder.describe()}, renewed "
        f"{age:.0f} s ago) (wait for it to finish, or stop it: its lease passes to a new run "
        f"once its process is gone, or after {LEASE_STALE_SECONDS:.0f} s without renewal)"
    )


def _lost_message(where: Path, current: Holder | None) -> str:
    who = "its lease was removed" if current is None else f"{current.describe()} took it over"
    return (
        f"{where}: this run was stopped or unresponsive for over {LEASE_STALE_SECONDS:.0f} s "
        f"and {who}; it stops here (what it finished is kept; rerun to resume once no other "
        "run is writing)"
    )


def _read(file: Path) -> Holder | None:
    """The holder in ``file``; ``None`` when there is none or it cannot be parsed (a file
    that is not a lease counts as free)."""
    try:
        return Holder.from_dict(json.loads(file.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def _write_temp(folder: Path, name: str, data: dict[str, Any]) -> Path:
    """A new hidden temporary file in ``folder`` (which must exist) holding ``data`` as JSON.

    Raises:
        OSError: it cannot be written (nothing is left behind).
    """
    tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _publish(tmp: Path, file: Path) -> bool:
    """Give ``tmp``'s contents the name ``file`` unless it exists; whether it did. A hard link
    makes this exclusive; on a file system without hard links, a rename of a file found absent.
    """
    try:
        os.link(tmp, file)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if file.exists():
            return False
        os.replace(tmp, file)
    return True


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first); ``None``
    without ``/proc`` or such a process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def _process_start(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def _process_alive(pid: int, start: str | None) -> bool:
    """Whether the process ``pid`` on this host runs (or is stopped), and is the one that
    started at ``start`` when that is known."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process
    fields = _proc_stat(pid)
    if fields is None:
        return True  # no /proc here: the pid is all there is
    if fields[0] in ("Z", "X"):
        return False  # killed, not yet reaped
    return start is None or len(fields) <= 19 or fields[19] == start
