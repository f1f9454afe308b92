"""Ctrl-C during HDF5 writing takes effect at the next safe point (h5py would swallow it)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datatools.convert import convert
from datatools.geometry import Box
from datatools.interrupts import deferred_interrupt
from datatools.patches import extract_patches
from datatools.sources import ArrayVolume
from tests.helpers import arange_volume


def test_ctrl_c_is_noted_then_raised_at_the_check() -> None:
    before = signal.getsignal(signal.SIGINT)
    with deferred_interrupt() as check:
        check()  # nothing pressed yet
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            check()
    assert signal.getsignal(signal.SIGINT) is before


def test_ctrl_c_stops_an_hdf5_convert_after_the_unit_and_it_resumes(tmp_path: Path) -> None:
    data = arange_volume((16, 16, 16), "uint16")
    out = tmp_path / "o.h5"
    kwargs: dict[str, Any] = {"chunks": 4, "memory_limit": 2 * 4 * 4 * 16 * 2, "workers": 2}
    done: list[int] = []

    def press(index: int) -> None:
        done.append(index)
        if len(done) == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        convert(ArrayVolume(data), out, on_unit_done=press, **kwargs)
    assert len(done) == 2  # stopped right after the unit that saw the key press
    result = convert(ArrayVolume(data), out, **kwargs)
    assert (result.units_skipped, result.complete) == (2, True)


def test_ctrl_c_stops_hdf5_patches_at_a_recorded_chunk_row(tmp_path: Path) -> None:
    class PressOnce(ArrayVolume):
        reads = 0

        def _read(self, box: Box) -> np.ndarray:
            PressOnce.reads += 1
            if PressOnce.reads == 2:
                os.kill(os.getpid(), signal.SIGINT)
            return super()._read(box)

    data = arange_volume((8, 40, 40))
    options: dict[str, Any] = {
        "size": (8, 8),
        "stride": 6,
        "memory_limit": 10_000,
        "chunk_rows": 10,
    }
    out = tmp_path / "p.h5"
    with pytest.raises(KeyboardInterrupt):
        extract_patches(PressOnce(data), out, **options)
    assert not out.exists()
    result = extract_patches(ArrayVolume(data), out, **options)
    assert result.written < result.total
    assert result.written > 0
