"""Concurrent runs on one Zarr output: one live run per output (its lease), no unit rewritten
once it is recorded done, a chunk never torn by a run that lost the race, and job-array tasks
and Dask workers still side by side (:mod:`datatools.ledger.lease`).

Runs that must be paused at a known point are subprocesses that stop themselves (SIGSTOP) from
a hook at a known ledger state; the test waits for that state, never for a time."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr
from click.testing import CliRunner

from datatools import ledger
from datatools.cli.main import cli
from datatools.convert import convert
from datatools.errors import TargetError
from datatools.executor import TaskSlice, dask_executor
from datatools.ledger import lease
from datatools.ledger.lease import Holder
from datatools.sinks.chunk_files import write_new_file
from datatools.verify import verify
from tests.helpers import arange_volume

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc")

ROOT = Path(__file__).resolve().parent.parent
OPTIONS: dict[str, Any] = {"chunks": 8, "memory_limit": 20_000, "workers": 1, "name": "img"}
CLI_OPTIONS = ["--chunks", "8", "--memory-limit", "20000", "--workers", "1", "--name", "img"]

PAUSED_RUN = r"""
import os, signal, sys, threading
from pathlib import Path

from datatools.cli.main import main
from datatools.ledger import ZarrLedger, lease
from datatools.sinks import chunk_files

mode, flags = sys.argv[1], Path(sys.argv[2])
sys.argv = ["datatools", *sys.argv[3:]]
lease.LEASE_CHECK_SECONDS = 0.0  # read the lease back before every unit
record, write_chunk = ZarrLedger.mark_done, chunk_files.ChunkFiles.write
stops = []


def pause(name):
    (flags / name).write_text("")
    # sent to this thread, so that it stops before it runs on (sent to the process, the
    # signal may be taken by another thread while this one goes on writing)
    signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)


def mark_done(self, units):
    record(self, units)
    if not stops:
        stops.append("recorded")
        if mode == "recorded":
            pause("stopped")


def pause_in_next_chunk(self, chunk, data):
    if stops == ["recorded"] and mode != "recorded":
        stops.append("chunk")
        pause("stopped")
        if mode == "killed-writing":
            os.write = pause_in_write
    write_chunk(self, chunk, data)


def pause_in_write(fd, data):
    (flags / "writing").write_text("")
    threading.Event().wait()  # parked here, the file open and not yet written, until killed


ZarrLedger.mark_done = mark_done
chunk_files.ChunkFiles.write = pause_in_next_chunk
main()
"""
"""A ``datatools`` command that stops itself (SIGSTOP) once a flag file is written: ``recorded``
after its first unit is recorded; ``writing`` and ``killed-writing`` in the next unit, before
its first chunk is stored; ``killed-writing``, once continued, parks in that chunk's first
write of file data (flag ``writing``) until it is killed."""


@pytest.fixture
def stack(tmp_path: Path) -> tuple[str, np.ndarray]:
    data = arange_volume((24, 40, 36), "uint16") + 1
    folder = tmp_path / "slices"
    folder.mkdir()
    for z, plane in enumerate(data):
        tifffile.imwrite(folder / f"z{z:03d}.tif", plane)
    return str(folder), data


@pytest.fixture
def flags(tmp_path: Path) -> Path:
    folder = tmp_path / "flags"
    folder.mkdir()
    return folder


def start_paused(mode: str, flags: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", PAUSED_RUN, mode, str(flags), "-q", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def process_state(pid: int) -> str:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rfind(")") + 2]


def wait_until_stopped(proc: subprocess.Popen[str], flag: Path, *, parked: bool = False) -> None:
    """Wait until ``proc`` wrote ``flag`` and is stopped (state ``T``), or only wrote it when
    it ``parked``."""
    deadline = time.monotonic() + 120
    while not (flag.exists() and (parked or process_state(proc.pid) == "T")):
        if proc.poll() is not None:
            pytest.fail(f"the paused run ended ({proc.returncode}): {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the paused run never reached {flag.name}")
        time.sleep(0.01)


@pytest.fixture
def paused() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test started; killed and reaped whatever happens."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def read_levels(path: Path) -> list[np.ndarray]:
    keys = sorted(zarr.open_group(path, mode="r").array_keys())
    return [np.asarray(zarr.open_array(path / key, mode="r")[:]) for key in keys]


def lease_files(path: Path) -> list[Path]:
    return sorted((path / ledger.MARKER / "leases").glob("*.lease"))


def test_second_run_is_refused_while_the_first_lives_and_takes_over_once_it_is_killed(
    tmp_path: Path,
    stack: tuple[str, np.ndarray],
    flags: Path,
    paused: list[subprocess.Popen[str]],
) -> None:
    source, data = stack
    out = tmp_path / "out.zarr"
    first = start_paused("recorded", flags, "convert", source, str(out), *CLI_OPTIONS)
    paused.append(first)
    wait_until_stopped(first, flags / "stopped")
    [held] = [Holder.from_dict(json.loads(f.read_text())) for f in lease_files(out)]
    result = CliRunner().invoke(cli, ["-q", "convert", source, str(out), *CLI_OPTIONS])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1
    assert result.output.startswith(
        f"Error: {out}: another datatools run is writing it (pid {first.pid} on "
        f"{socket.gethostname()}, started {held.started}, renewed "
    )
    first.kill()
    first.communicate()
    assert not ledger.is_complete(out)
    resumed = convert(source, out, **OPTIONS)  # the killed run's lease is taken over
    assert resumed.complete
    assert resumed.units_skipped == 1
    assert verify(out, against=source).ok
    np.testing.assert_array_equal(zarr.open_array(out / "0", mode="r")[:], data)
    assert lease_files(out) == []


def test_run_resumed_after_another_finished_and_killed_mid_write_leaves_no_torn_chunk(
    tmp_path: Path,
    stack: tuple[str, np.ndarray],
    flags: Path,
    paused: list[subprocess.Popen[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reproduction of the torn output, step by step: the first run stops before storing a
    chunk; a second run finds its lease stale, finishes and finalizes the output; the first
    resumes, is held inside its first write and is killed."""
    source, data = stack
    out = tmp_path / "out.zarr"
    options = {**OPTIONS, "levels": 2}
    first = start_paused(
        "killed-writing", flags, "convert", source, str(out), *CLI_OPTIONS, "--levels", "2"
    )
    paused.append(first)
    wait_until_stopped(first, flags / "stopped")
    with monkeypatch.context() as patch:
        patch.setattr(lease, "LEASE_STALE_SECONDS", 0.0)  # as if stopped for a long time
        second = convert(source, out, **options)
    assert second.complete
    first.send_signal(signal.SIGCONT)
    wait_until_stopped(first, flags / "writing", parked=True)
    first.kill()
    first.communicate()
    assert ledger.is_complete(out)
    reference = tmp_path / "reference.zarr"
    convert(source, reference, **options)
    for got, expected in zip(read_levels(out), read_levels(reference), strict=True):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(read_levels(out)[0], data)
    rerun = convert(source, out, **options)
    assert rerun.complete
    assert rerun.units_written == 0
    assert verify(out, against=source).ok


def test_run_that_lost_its_lease_stops_with_one_error_line_and_records_nothing(
    tmp_path: Path,
    stack: tuple[str, np.ndarray],
    flags: Path,
    paused: list[subprocess.Popen[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, _data = stack
    out = tmp_path / "out.zarr"
    first = start_paused("writing", flags, "convert", source, str(out), *CLI_OPTIONS)
    paused.append(first)
    wait_until_stopped(first, flags / "stopped")
    with monkeypatch.context() as patch:
        patch.setattr(lease, "LEASE_STALE_SECONDS", 0.0)
        second = convert(source, out, **OPTIONS)
    assert second.complete
    done = ledger.ZarrLedger(out).done()
    first.send_signal(signal.SIGCONT)
    _stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 2, stderr
    assert stderr.count("\n") == 1
    assert stderr.startswith(f"Error: {out}: this run was stopped")
    assert "its lease was removed" in stderr  # the second run finished and gave it back
    assert ledger.ZarrLedger(out).done() == done
    assert ledger.is_complete(out)
    assert verify(out, against=source).ok


def test_pyramid_unit_recorded_by_another_task_is_not_rewritten(
    tmp_path: Path, stack: tuple[str, np.ndarray]
) -> None:
    """Two tasks that both see every base unit done build the lower levels side by side; each
    skips the units the other recorded first."""
    source, _ = stack
    out = tmp_path / "out.zarr"
    options = {**OPTIONS, "levels": 3}
    first = convert(source, out, task=TaskSlice(1, 2), **options)
    assert not first.complete
    recorded: list[int] = []
    other: list[Any] = []

    def let_the_other_task_finish(index: int) -> None:
        recorded.append(index)
        if index != len(recorded) - 1 and not other:  # past the base units: a level unit
            other.append(convert(source, out, task=TaskSlice(1, 2), **options))

    second = convert(
        source, out, task=TaskSlice(0, 2), on_unit_done=let_the_other_task_finish, **options
    )
    [finished] = other
    assert finished.complete
    assert second.complete
    assert finished.units_written > 1  # the level units left when it ran
    written = [first.units_written, second.units_written, finished.units_written]
    assert sum(written) == second.units_total, f"a unit was written twice: {written}"
    assert verify(out, against=source).ok


def unfinished_output(source: str, out: Path, **options: Any) -> None:
    """An output with one unit done, left as a killed run leaves it (no lease)."""

    def stop(index: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(source, out, on_unit_done=stop, **options)
    assert lease_files(out) == []


def write_lease(out: Path, slot: str, **fields: Any) -> Path:
    holder = Holder.for_this_process(None)
    values = {**holder.to_dict(), "process_start": None, **fields}
    file = out / ledger.MARKER / "leases" / f"{slot}.lease"
    file.write_text(json.dumps(values))
    return file


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize(
    "holder",
    ["dead pid on this host", "not renewed, on another host", "not renewed, on this host"],
)
def test_dead_or_stale_lease_is_taken_over(
    tmp_path: Path, stack: tuple[str, np.ndarray], holder: str
) -> None:
    source, data = stack
    out = tmp_path / "out.zarr"
    unfinished_output(source, out, **OPTIONS)
    stale = time.time() - lease.LEASE_STALE_SECONDS - 1
    kinds: dict[str, dict[str, Any]] = {
        "dead pid on this host": {"pid": dead_pid()},
        "not renewed, on another host": {"host": "elsewhere", "renewed": stale},
        "not renewed, on this host": {"pid": os.getppid(), "renewed": stale},
    }
    write_lease(out, "run", **kinds[holder])
    result = convert(source, out, **OPTIONS)
    assert result.complete
    assert lease_files(out) == []
    np.testing.assert_array_equal(zarr.open_array(out / "0", mode="r")[:], data)


def test_live_lease_refuses_a_run_and_overwrite_naming_the_holder(
    tmp_path: Path, stack: tuple[str, np.ndarray]
) -> None:
    source, _ = stack
    out = tmp_path / "out.zarr"
    unfinished_output(source, out, **OPTIONS)
    write_lease(out, "run", pid=4242, host="node7", started="2026-05-01T09:30:00+02:00")
    done = ledger.ZarrLedger(out).done()
    message = (
        f"{out}: another datatools run is writing it (pid 4242 on node7, started "
        "2026-05-01T09:30:00+02:00, renewed N s ago) (wait for it to finish, or stop it: its "
        "lease passes to a new run once its process is gone, or after 120 s without renewal)"
    )
    for overwrite in (False, True):
        with pytest.raises(TargetError) as refused:
            convert(source, out, overwrite=overwrite, **OPTIONS)
        assert re.sub(r"renewed \d+ s", "renewed N s", str(refused.value)) == message
    assert ledger.ZarrLedger(out).done() == done
    result = CliRunner().invoke(cli, ["convert", source, str(out), *CLI_OPTIONS])
    assert result.exit_code == 2
    assert re.sub(r"renewed \d+ s", "renewed N s", result.output) == f"Error: {message}\n"


def test_lease_is_renewed_while_a_long_unit_runs(
    tmp_path: Path, stack: tuple[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run slower than the stale time keeps its lease: a second run is still refused."""
    source, _ = stack
    out = tmp_path / "out.zarr"
    monkeypatch.setattr(lease, "LEASE_RENEW_SECONDS", 0.01)
    monkeypatch.setattr(lease, "LEASE_STALE_SECONDS", 1.0)
    seen: list[float] = []
    refused: list[str] = []

    def long_unit(index: int) -> None:
        if seen:
            return
        [file] = lease_files(out)
        first = Holder.from_dict(json.loads(file.read_text()))
        deadline = time.monotonic() + 60
        while time.time() - first.renewed < 1.5 * lease.LEASE_STALE_SECONDS:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        renewed = Holder.from_dict(json.loads(file.read_text()))
        seen.extend([first.renewed, renewed.renewed])
        try:
            convert(source, out, **OPTIONS)
        except TargetError as exc:
            refused.append(str(exc))

    result = convert(source, out, on_unit_done=long_unit, **OPTIONS)
    assert result.complete
    assert seen[1] > seen[0] + lease.LEASE_STALE_SECONDS
    assert len(refused) == 1
    assert f"(pid {os.getpid()} on " in refused[0]


def test_job_array_tasks_run_side_by_side(tmp_path: Path, stack: tuple[str, np.ndarray]) -> None:
    source, data = stack
    out = tmp_path / "array.zarr"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "datatools", "-q", "convert", source, str(out), *CLI_OPTIONS]
    tasks = [
        subprocess.Popen(
            [*command, "--levels", "2", "--task-index", str(i), "--task-count", "3"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    outcomes = [task.communicate(timeout=120) for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0, 0], outcomes
    assert ledger.is_complete(out)
    assert verify(out, against=source).ok
    np.testing.assert_array_equal(zarr.open_array(out / "0", mode="r")[:], data)
    assert lease_files(out) == []


def test_tasks_conflict_only_with_the_same_slice_or_a_whole_plan_run(
    tmp_path: Path, stack: tuple[str, np.ndarray]
) -> None:
    source, data = stack
    out = tmp_path / "out.zarr"
    convert(source, out, task=TaskSlice(2, 3), **OPTIONS)
    live = write_lease(out, "task-1", host="node7", task=[1, 3])
    with pytest.raises(TargetError, match=r"run is writing it \(task 1 of 3, pid \d+ on node7"):
        convert(source, out, task=TaskSlice(1, 3), **OPTIONS)
    with pytest.raises(TargetError, match=r"run is writing it \(task 1 of 3, pid \d+ on node7"):
        convert(source, out, **OPTIONS)
    assert not convert(source, out, task=TaskSlice(0, 3), **OPTIONS).complete
    live.unlink()
    assert convert(source, out, task=TaskSlice(1, 3), **OPTIONS).complete
    np.testing.assert_array_equal(zarr.open_array(out / "0", mode="r")[:], data)


def test_task_with_another_task_count_is_refused(
    tmp_path: Path, stack: tuple[str, np.ndarray]
) -> None:
    source, _ = stack
    out = tmp_path / "out.zarr"
    convert(source, out, task=TaskSlice(0, 3), **OPTIONS)
    done = ledger.ZarrLedger(out).done()
    result = CliRunner().invoke(
        cli,
        ["convert", source, str(out), *CLI_OPTIONS, "--task-index", "1", "--task-count", "2"],
    )
    assert result.exit_code == 2, result.output
    assert result.output == (
        f"Error: {out}: its tasks were started with --task-count 3, this one has --task-count 2 "
        "(give --task-count 3, or finish the output with one run without "
        "--task-index/--task-count once no task is running)\n"
    )
    assert ledger.ZarrLedger(out).done() == done
    assert convert(source, out, **OPTIONS).complete  # one whole-plan run finishes it


def test_dask_run_holds_one_lease_at_its_driver(
    tmp_path: Path, stack: tuple[str, np.ndarray]
) -> None:
    source, data = stack
    out = tmp_path / "dask.zarr"
    options = {**OPTIONS, "levels": 2}
    refused: list[str] = []

    def try_second_run(index: int) -> None:
        if refused:
            return
        [file] = lease_files(out)
        assert Holder.from_dict(json.loads(file.read_text())).pid == os.getpid()
        with pytest.raises(TargetError, match="another datatools run is writing it") as exc:
            convert(source, out, **options)
        refused.append(str(exc.value))

    with dask_executor(local_workers=2) as executor:
        result = convert(source, out, executor=executor, on_unit_done=try_second_run, **options)
    assert result.complete
    assert refused
    np.testing.assert_array_equal(zarr.open_array(out / "0", mode="r")[:], data)
    assert lease_files(out) == []


def test_existing_chunk_file_is_replaced_never_truncated(tmp_path: Path) -> None:
    """A reader holding a chunk file, or a run killed while it writes one again, still has
    the whole old file; a new file is created in place."""
    path = tmp_path / "c" / "0" / "1"
    write_new_file(path, b"first")
    with path.open("rb") as reader:
        write_new_file(path, b"second")
        assert reader.read() == b"first"
    assert path.read_bytes() == b"second"
    assert [p.name for p in path.parent.iterdir()] == ["1"]
