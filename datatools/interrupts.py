"""Ctrl-C at safe points, for runs writing HDF5.

h5py swallows a ``KeyboardInterrupt`` raised inside its object bookkeeping (``Exception ignored
in: ... WeakValueDictionary``), so a run writing an HDF5 file from several threads went on to
the end after Ctrl-C. :func:`deferred_interrupt` notes the key press instead and raises it
where the caller checks, between units, once what is written is recorded.
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
