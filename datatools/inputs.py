"""Open a command's inputs: any source :mod:`datatools.sources` opens, except an unfinished
datatools output (its missing units would read as zeros).

Sources know nothing of datatools' own outputs; this module, above both the sources and the
ledger, joins them for the commands, the loaders, ``info`` and ``verify``.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

from datatools.errors import InputError
from datatools.ledger import PARTIAL_SUFFIX, open_ledger
from datatools.sources import OpenOptions, SourceSpec, Volume, open_companion, open_volume

UNFINISHED_DEPTH = 3
"""Folders above an input searched for the datatools output holding it (image/labels/name/0)."""


def open_input(
    spec: SourceSpec,
    options: OpenOptions | None = None,
    *,
    companion: bool = False,
    describe_only: bool = False,
) -> Volume:
    """Open ``spec`` as :func:`datatools.sources.open_volume` does (labels and masks that go
    with a main source, ``companion=True``, as :func:`datatools.sources.open_companion`).
    ``describe_only``: the caller reads no voxels (``info``), so an unfinished output opens.

    Raises:
        InputError: ``spec`` is inside a datatools output that is not finished; otherwise as
            :func:`datatools.sources.open_volume`.
    """
    if isinstance(spec, str | Path) and not glob.has_magic(str(spec)) and not describe_only:
        refuse_unfinished(Path(spec))
    return open_companion(spec, options) if companion else open_volume(spec, options)


def refuse_unfinished(path: Path) -> None:
    """Refuse a folder inside (or at) a datatools output that is not finished: its missing
    units would read as zeros.

    Raises:
        InputError: naming the output and its progress.
    """
    if not path.is_dir():
        _refuse_partial_file(path)
        return
    real = Path(os.path.realpath(path))  # a link to an unfinished output is refused too
    for folder in [real, *list(real.parents)[:UNFINISHED_DEPTH]]:
        output = open_ledger(folder)
        if not output.is_ours():
            continue
        if output.is_complete():
            return
        state = output.status()  # counts the done units: only for an unfinished output
        if state is not None:
            done = (
                f"{state.units_done}/{state.units_total} units done"
                if state.units_total
                else "unfinished"
            )
            where = "" if folder == real else f"inside {folder}, "
            raise InputError(
                f"{path}: {where}a datatools output that is not finished ({done}; its missing "
                "parts would read as zeros); rerun the command that makes it first"
            )
        return


def _refuse_partial_file(spec: Path) -> None:
    """Refuse the partial file of an unfinished HDF5 output (``out.h5.datatools-partial``, a
    dataset inside it included): its missing units would read as the fill value.

    Raises:
        InputError: naming the file and its progress.
    """
    text = str(spec)
    head, sep, _ = text.partition(":/")
    file = Path(head) if sep and Path(head).is_file() else spec
    if not file.name.endswith(PARTIAL_SUFFIX) or not file.is_file():
        return
    state = open_ledger(file).status()
    if state is None or state.complete:
        return
    done = (
        f"{state.units_done}/{state.units_total} units done" if state.units_total else "unfinished"
    )
    raise InputError(
        f"{file}: the partial file of a datatools output that is not finished ({done}; its "
        "missing parts would read as the fill value); rerun the command that makes it first"
    )
