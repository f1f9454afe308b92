"""Finishing zarr-python's background tasks before they are abandoned.

zarr-python reads and writes chunks as tasks on an event loop of its own thread. When one read
fails, or the user presses Ctrl-C, the call returns while other tasks still run; any left
pending when the process exits are destroyed with a page of ``Task was destroyed but it is
pending!`` and ``Event loop is closed`` tracebacks. :func:`settle` waits for them (or cancels
them) first.
"""

from __future__ import annotations

import asyncio

from zarr.core.sync import sync

SETTLE_TASK = "datatools-settle"


def settle(timeout: float, *, cancel: bool = False) -> None:
    """Wait at most ``timeout`` seconds for the tasks running now on zarr's event loop, after
    cancelling them with ``cancel``. Other threads' settles are not waited for (two waiting for
    each other would never end)."""
    sync(_settle(timeout, cancel))


async def _settle(timeout: float, cancel: bool) -> None:
    me = asyncio.current_task()
    if me is not None:
        me.set_name(SETTLE_TASK)
    pending = [t for t in asyncio.all_tasks() if t is not me and t.get_name() != SETTLE_TASK]
    if cancel:
        for task in pending:
            task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=timeout)
