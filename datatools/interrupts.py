"""Signals at safe points, for runs writing HDF5: Ctrl-C and the file size limit.

h5py swallows a ``KeyboardInterrupt`` raised inside its object bookkeeping (``Exception ignored
in: ... WeakValueDictionary``), so a run writing an HDF5 file from several threads went on to
the end after Ctrl-C. :func:`deferred_interrupt` notes the key press instead and raises it
where the caller checks, between units, once what is written is recorded.

A write past the file size limit (``ulimit -f``) sends SIGXFSZ, whose default action kills the
process on the spot, leaving an HDF5 file in whatever state it was. The ``python`` command
ignores the signal at start-up, but a program embedding Python may not:
:func:`ignored_file_size_signal` ignores it while the block writes, so the write fails with
``EFBIG`` (an ``OSError`` the writer turns into a one-line error) instead.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def deferred_interrupt() -> Iterator[Callable[[], None]]:
    """Note Ctrl-C (SIGINT) while the block runs; the check it yields raises
    ``KeyboardInterrupt`` once one was noted. The previous handler is restored on exit. Off
    the main thread (where handlers cannot be set) the check does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    pressed = threading.Event()

    def note(signum: int, frame: object) -> None:
        pressed.set()

    def check() -> None:
        if pressed.is_set():
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def ignored_file_size_signal() -> Iterator[None]:
    """Ignore SIGXFSZ while the block runs: a write past the file size limit then fails with
    ``EFBIG`` instead of killing the process. The previous handler is restored on exit. Off
    the main thread, or where the platform has no SIGXFSZ, nothing changes."""
    number = getattr(signal, "SIGXFSZ", None)
    if number is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(number, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(number, previous)
