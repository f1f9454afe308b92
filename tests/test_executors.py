"""One plan, four ways to run it: serial, threads, task processes, Dask; identical outputs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr

from datatools import ledger
from datatools.convert import convert
from datatools.errors import OptionError
from datatools.executor import DaskExecutor, TaskSlice, ThreadExecutor, dask_executor
from tests.helpers import arange_volume

SMALL = 6 * 2 * 8 * 8 * 8 * 2


@pytest.fixture(scope="module")
def dask() -> Iterator[DaskExecutor]:
    with dask_executor(local_workers=2) as executor:
        yield executor


@pytest.fixture
def stack(tmp_path: Path) -> tuple[str, np.ndarray]:
    data = arange_volume((20, 30, 28), "uint16")
    folder = tmp_path / "slices"
    folder.mkdir()
    for z, plane in enumerate(data):
        tifffile.imwrite(folder / f"z{z:03d}.tif", plane)
    return str(folder), data


def files(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and ".datatools" not in p.parts
    }


def test_thread_executor_keeps_order_free_results() -> None:
    assert sorted(ThreadExecutor(3).map(lambda x: x * 2, list(range(10)))) == list(range(0, 20, 2))


def test_every_executor_gives_identical_output(
    tmp_path: Path, stack: tuple[str, np.ndarray], dask: DaskExecutor
) -> None:
    source, data = stack
    kwargs: dict[str, Any] = {"chunks": 8, "levels": "auto", "memory_limit": SMALL, "name": "img"}
    serial = tmp_path / "serial.zarr"
    convert(source, serial, workers=1, **kwargs)
    threads = tmp_path / "threads.zarr"
    convert(source, threads, workers=2, **kwargs)
    tasks = tmp_path / "tasks.zarr"
    for i in range(4):
        convert(source, tasks, task=TaskSlice(i, 4), **kwargs)
    distributed = tmp_path / "dask.zarr"
    result = convert(source, distributed, executor=dask, **kwargs)
    assert result.complete
    np.testing.assert_array_equal(zarr.open_array(distributed / "0", mode="r")[:], data)
    reference = files(serial)
    for other in (threads, tasks, distributed):
        assert files(other) == reference


def test_interrupted_dask_run_resumes_locally(
    tmp_path: Path, stack: tuple[str, np.ndarray], dask: DaskExecutor
) -> None:
    source, data = stack
    kwargs: dict[str, Any] = {"chunks": 4, "levels": 2, "memory_limit": SMALL, "name": "img"}
    out = tmp_path / "o.zarr"
    seen: list[int] = []

    def stop(index: int) -> None:
        seen.append(index)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(source, out, executor=dask, on_unit_done=stop, **kwargs)
    assert not ledger.is_complete(out)
    result = convert(source, out, **kwargs)
    assert result.complete
    assert result.units_skipped >= 3
    np.testing.assert_array_equal(zarr.open_array(out / "0", mode="r")[:], data)
    fresh = tmp_path / "fresh.zarr"
    convert(source, fresh, **kwargs)
    assert files(out) == files(fresh)


def test_dask_needs_paths_and_zarr(tmp_path: Path, dask: DaskExecutor) -> None:
    from datatools.sources import ArrayVolume

    with pytest.raises(OptionError, match="Dask runs need a Zarr target and a source given"):
        convert(ArrayVolume(arange_volume((4, 4, 4))), tmp_path / "a.zarr", executor=dask)


def test_dask_options_are_checked() -> None:
    with (
        pytest.raises(OptionError, match="--dask-scheduler/--dask-local: give exactly one"),
        dask_executor(),
    ):
        pass
    with (
        pytest.raises(OptionError, match="--dask-local 0: must be >= 1"),
        dask_executor(local_workers=0),
    ):
        pass


def test_cli_dask_local(tmp_path: Path, stack: tuple[str, np.ndarray]) -> None:
    from click.testing import CliRunner

    from datatools.cli.main import cli

    source, data = stack
    out = tmp_path / "cli.zarr"
    distributed = logging.getLogger("distributed")
    before = distributed.level
    try:
        result = CliRunner().invoke(
            cli, ["-q", "convert", source, str(out), "--chunks", "8", "--dask-local", "2"]
        )
        assert distributed.level == logging.ERROR  # -q: none of its INFO chatter
    finally:
        distributed.setLevel(before)
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(zarr.open_array(out / "0", mode="r")[:], data)


def test_rerunning_only_the_killed_task_completes(
    tmp_path: Path, stack: tuple[str, np.ndarray]
) -> None:
    source, data = stack
    kwargs: dict[str, Any] = {"chunks": 4, "memory_limit": SMALL, "name": "img"}
    out = tmp_path / "t.zarr"

    def die(index: int) -> None:
        raise KeyboardInterrupt

    for i in (0, 1, 3):
        convert(source, out, task=TaskSlice(i, 4), **kwargs)
    with pytest.raises(KeyboardInterrupt):
        convert(source, out, task=TaskSlice(2, 4), on_unit_done=die, **kwargs)
    assert not ledger.is_complete(out)
    result = convert(source, out, task=TaskSlice(2, 4), **kwargs)
    assert result.complete
    np.testing.assert_array_equal(zarr.open_array(out / "0", mode="r")[:], data)


def test_slurm_array_script_runs_as_a_job_array(
    tmp_path: Path, stack: tuple[str, np.ndarray]
) -> None:
    import os
    import subprocess
    import sys

    source, data = stack
    script = Path(__file__).resolve().parent.parent / "scripts" / "cluster" / "convert_array.sbatch"
    out = tmp_path / "array.zarr"
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        SLURM_ARRAY_TASK_COUNT="3",
        SLURM_CPUS_PER_TASK="1",
    )
    procs = [
        subprocess.run(
            ["bash", str(script), source, str(out)],
            env=dict(env, SLURM_ARRAY_TASK_ID=str(i)),
            capture_output=True,
            text=True,
            timeout=120,
        )
        for i in range(3)
    ]
    assert [p.returncode for p in procs] == [0, 0, 0], [p.stderr for p in procs]
    assert ledger.is_complete(out)
    np.testing.assert_array_equal(zarr.open_array(out / "0", mode="r")[:], data)
