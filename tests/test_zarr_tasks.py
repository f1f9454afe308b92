"""settle: zarr's background tasks are finished before they can be abandoned at exit."""

from __future__ import annotations

import asyncio

from zarr.core.sync import sync

from datatools.zarr_tasks import settle


async def _spawn(seconds: float) -> None:
    asyncio.get_running_loop().create_task(asyncio.sleep(seconds), name="left-running")


async def _left() -> list[str]:
    me = asyncio.current_task()
    return [t.get_name() for t in asyncio.all_tasks() if t is not me]


def test_settle_waits_for_tasks_left_running() -> None:
    sync(_spawn(0.05))
    assert sync(_left()) == ["left-running"]
    settle(30)
    assert sync(_left()) == []


def test_settle_cancels_on_request_and_does_not_wait_out_the_timeout() -> None:
    sync(_spawn(3600))
    settle(30, cancel=True)  # an hour-long task: returns at once once it is cancelled
    assert sync(_left()) == []
