"""One behaviour for every ledger: :class:`LedgerContract` runs the same checks on each
implementation (Zarr v3 and v2 folders; HDF5 files with done units listed in the record
attribute or kept in a dataset), each subclass saying only how to make and spoil an output."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import h5py
import numpy as np
import pytest
import zarr

from datatools.errors import ResumeMismatchError, TargetError
from datatools.info import inspect
from datatools.ledger import (
    Hdf5Ledger,
    OutputLedger,
    RunRecord,
    ZarrLedger,
    open_ledger,
    partial_path,
)


def record(**params: Any) -> RunRecord:
    return RunRecord("test", {"x": 1, "units_total": 4, **params})


class LedgerContract:
    """What every ledger does; subclasses name the output and write its data and a foreign
    file or folder."""

    name: ClassVar[str]
    sized: ClassVar[bool] = False
    """Claims give the unit count (an HDF5 ledger keeps the done units in a dataset)."""

    def populate(self, handle: Any) -> None:
        raise NotImplementedError

    def make_foreign(self, path: Path) -> None:
        raise NotImplementedError

    def make(self, tmp_path: Path) -> OutputLedger[Any]:
        return open_ledger(tmp_path / self.name)

    def claim(self, output: OutputLedger[Any], run: RunRecord, *, overwrite: bool = False) -> str:
        units = int(run.params["units_total"]) if self.sized else None
        return output.claim(run, overwrite=overwrite, populate=self.populate, units_total=units)

    def test_a_fresh_claim_creates_an_unfinished_output(self, tmp_path: Path) -> None:
        output = self.make(tmp_path)
        assert (output.is_ours(), output.read_record(), output.status()) == (False, None, None)
        assert self.claim(output, record()) == "created"
        assert output.is_ours()
        assert output.read_record() == record()
        assert (output.is_complete(), output.is_unfinished()) == (False, True)
        assert output.done() == frozenset()
        output.close()
        status = self.make(tmp_path).status()
        assert status is not None
        assert status.record == record()
        assert (status.complete, status.units_done, status.units_total) == (False, 0, 4)

    def test_the_same_record_resumes_with_its_done_units(self, tmp_path: Path) -> None:
        first = self.make(tmp_path)
        self.claim(first, record())
        first.mark_done([1])
        first.close()
        again = self.make(tmp_path)
        assert self.claim(again, record()) == "resumed"
        assert again.done() == {1}
        again.mark_done([2])
        assert again.done() == {1, 2}
        again.close()

    def test_another_record_is_refused_naming_the_option(self, tmp_path: Path) -> None:
        first = self.make(tmp_path)
        self.claim(first, record())
        first.close()
        with pytest.raises(ResumeMismatchError, match=r"exists from a run with other options \(x"):
            self.claim(self.make(tmp_path), record(x=2))
        with pytest.raises(ResumeMismatchError, match="command was test, now other"):
            self.claim(self.make(tmp_path), RunRecord("other", record().params))
        replaced = self.make(tmp_path)
        assert self.claim(replaced, record(x=2), overwrite=True) == "created"
        replaced.close()
        assert self.make(tmp_path).read_record() == record(x=2)

    def test_units_and_state_are_recorded(self, tmp_path: Path) -> None:
        output = self.make(tmp_path)
        self.claim(output, record())
        output.mark_done([0, 3])
        output.mark_done([3, 2])
        assert output.done() == {0, 2, 3}
        output.write_state({"rows": 12})
        output.write_state({"rows": 20, "group_rows": {"a": 20}})
        assert output.read_state() == {"rows": 20, "group_rows": {"a": 20}}
        output.close()
        reread = self.make(tmp_path)
        assert reread.done() == {0, 2, 3}
        assert reread.read_state() == {"rows": 20, "group_rows": {"a": 20}}
        status = reread.status()
        assert status is not None
        assert (status.complete, status.units_done, status.units_total) == (False, 3, 4)
        assert status.state["rows"] == 20

    def test_completion_is_kept_and_cleared_for_an_append(self, tmp_path: Path) -> None:
        output = self.make(tmp_path)
        self.claim(output, record())
        output.mark_done(range(4))
        output.mark_complete()
        finished = self.make(tmp_path)
        assert (finished.is_complete(), finished.is_unfinished()) == (True, False)
        assert finished.location() == finished.path
        status = finished.status()
        assert status is not None
        assert (status.complete, status.units_done, status.units_total) == (True, 4, 4)
        assert self.claim(finished, record()) == "resumed"
        assert finished.is_complete()
        finished.clear_complete()
        assert not finished.is_complete()
        finished.write_state({"rows": 5})
        finished.mark_complete()
        assert self.make(tmp_path).is_complete()
        assert self.make(tmp_path).read_state() == {"rows": 5}

    def test_info_reports_the_status_and_the_data_not_the_ledger(self, tmp_path: Path) -> None:
        output = self.make(tmp_path)
        self.claim(output, record())
        output.mark_done([2])
        output.close()
        info = inspect(tmp_path / self.name)
        status = {k: v for k, v in info["status"].items() if k != "state"}
        assert status == {"complete": False, "command": "test", "units_done": 1, "units_total": 4}
        assert list(info["arrays"]) == ["a"]

    def test_remove_deletes_only_what_is_ours(self, tmp_path: Path) -> None:
        foreign = tmp_path / self.name
        self.make_foreign(foreign)
        output = self.make(tmp_path)
        assert not output.is_ours()
        with pytest.raises(TargetError, match=r"datatools did not create|not an output of"):
            output.remove()
        for overwrite in (False, True):
            with pytest.raises(TargetError, match=r"datatools did not create|not an output of"):
                self.claim(output, record(), overwrite=overwrite)
        assert foreign.exists()
        ours = open_ledger(tmp_path / f"b{Path(self.name).suffix}")
        self.claim(ours, record())
        ours.close()
        ours.remove()
        assert not ours.location().exists()
        assert not ours.path.exists()
        ours.remove()  # nothing there: nothing to do


class TestZarrLedger(LedgerContract):
    name = "out.zarr"
    zarr_format: ClassVar[int] = 3

    def populate(self, handle: Any) -> None:
        group = zarr.create_group(handle, zarr_format=self.zarr_format)  # type: ignore[arg-type]
        group.create_array("a", shape=(4,), chunks=(2,), dtype="uint8")

    def make_foreign(self, path: Path) -> None:
        path.mkdir()
        (path / "notes.txt").write_text("mine")


class TestZarrV2Ledger(TestZarrLedger):
    zarr_format = 2


class TestHdf5Ledger(LedgerContract):
    name = "out.h5"

    def populate(self, handle: Any) -> None:
        handle.create_dataset("a", shape=(4,), chunks=(2,), dtype="uint8")

    def make_foreign(self, path: Path) -> None:
        with h5py.File(path, "w") as file:
            file["x"] = np.arange(3)

    def test_a_partial_file_beside_a_finished_one_is_the_current_run(self, tmp_path: Path) -> None:
        output = self.make(tmp_path)
        self.claim(output, record())
        output.mark_complete()
        rerun = self.make(tmp_path)
        assert self.claim(rerun, record(x=2), overwrite=True) == "created"
        rerun.mark_done([1])
        rerun.close()
        assert (tmp_path / self.name).is_file()  # kept until the new file is whole
        current = self.make(tmp_path)
        assert current.location() == partial_path(tmp_path / self.name)
        assert (current.is_complete(), current.read_record()) == (False, record(x=2))
        status = current.status()
        assert status is not None
        assert status.state["partial"] == str(current.location())
        assert self.claim(current, record(x=2)) == "resumed"
        current.mark_done([0, 2, 3])
        current.mark_complete()
        assert self.make(tmp_path).is_complete()
        assert self.make(tmp_path).read_record() == record(x=2)


class TestHdf5LedgerWithUnitDataset(TestHdf5Ledger):
    sized = True


@pytest.mark.parametrize(
    ("name", "kind", "path"),
    [
        ("o.zarr", ZarrLedger, "o.zarr"),
        ("o.h5", Hdf5Ledger, "o.h5"),
        ("o.HDF5", Hdf5Ledger, "o.HDF5"),
        ("o.h5.datatools-partial", Hdf5Ledger, "o.h5"),
        ("folder", ZarrLedger, "folder"),
    ],
)
def test_open_ledger_picks_the_kind_by_name(
    tmp_path: Path, name: str, kind: type[OutputLedger[Any]], path: str
) -> None:
    output = open_ledger(tmp_path / name)
    assert type(output) is kind
    assert output.path == tmp_path / path
