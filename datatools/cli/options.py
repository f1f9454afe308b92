"""Options shared by several commands, defined once."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, TypeVar

import click

from datatools.edges import EDGE_MODES
from datatools.errors import OptionError
from datatools.executor import Executor, TaskSlice, dask_executor
from datatools.geometry import RoiSpec
from datatools.options import Options, OutputOptions, RunOptions
from datatools.sinks.codecs import HDF5_CODECS, ZARR_CODECS
from datatools.sources import OpenOptions, SourceSpec, paths_from_lines

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("datatools.cli")

if TYPE_CHECKING:
    _ParamType = click.ParamType[Any]  # generic in the click stubs from 8.2 on
else:
    _ParamType = click.ParamType


def _compose(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


class IntTuple(_ParamType):
    """``64`` or ``32,256,256``: a tuple of ints, or one int alone when ``scalar`` (one value
    for every axis). Messages name the option as :class:`OptionError` does elsewhere."""

    name = "ints"

    def __init__(self, scalar: bool = False) -> None:
        self.scalar = scalar

    def convert(self, value: Any, param: click.Parameter | None, ctx: Any) -> Any:
        if not isinstance(value, str):
            return value
        values = parse_ints(value, _flag(param)) or ()
        return values[0] if self.scalar and len(values) == 1 else values


class FloatTuple(_ParamType):
    """``7.91`` or ``40,4,4``: a tuple of floats."""

    name = "numbers"

    def convert(self, value: Any, param: click.Parameter | None, ctx: Any) -> Any:
        return parse_floats(value, _flag(param)) if isinstance(value, str) else value


class Bytes(_ParamType):
    """``2G``, ``512M``, ``1000000``: bytes (binary multiples), > 0."""

    name = "bytes"

    def convert(self, value: Any, param: click.Parameter | None, ctx: Any) -> Any:
        if not isinstance(value, str):
            return value
        units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
        body = value.strip().upper().removesuffix("IB").removesuffix("B")
        factor = units.get(body[-1:], 1)
        number = body[:-1] if body[-1:] in units else body
        try:
            parsed = int(float(number) * factor)
        except ValueError as exc:
            raise OptionError(f"{_flag(param)} {value}: expected bytes such as 2G or 512M") from exc
        if parsed <= 0:
            raise OptionError(f"{_flag(param)} {value}: must be > 0")
        return parsed


class Roi(_ParamType):
    """``z0:z1,y0:y1,x0:x1`` (open ends allowed): a :class:`RoiSpec`."""

    name = "roi"

    def convert(self, value: Any, param: click.Parameter | None, ctx: Any) -> Any:
        return RoiSpec.parse(value) if isinstance(value, str) else value


INTS = IntTuple()
ONE_OR_MORE_INTS = IntTuple(scalar=True)
FLOATS = FloatTuple()
BYTES = Bytes()
ROI = Roi()


def _flag(param: click.Parameter | None) -> str:
    """The option as the user typed it, e.g. ``--chunks``."""
    if param is None or not param.opts:
        return "value"
    return max(param.opts, key=len)


roi_options = _compose(
    click.option(
        "--roi",
        "roi_text",
        type=ROI,
        metavar="Z0:Z1,Y0:Y1,X0:X1",
        help="Region of interest, half-open voxel ranges; open ends allowed (':100', '16:', ':').",
    ),
    *[
        click.option(
            f"--{ax}-{end}",
            f"{ax}_{end}",
            type=int,
            default=None,
            help=f"{'Start' if end == 'start' else 'End (exclusive)'} of the ROI on {ax}, voxels.",
        )
        for ax in "zyx"
        for end in ("start", "end")
    ],
)
"""``--roi`` and ``--z-start/--z-end/--y-start/--y-end/--x-start/--x-end``; read them with
:func:`roi_from_options`."""


def roi_from_options(kwargs: dict[str, Any]) -> RoiSpec | None:
    """Pop the ROI options from a command's keyword arguments and build the spec.

    Raises:
        OptionError: both ``--roi`` and per-axis options are given.
    """
    text: RoiSpec | None = kwargs.pop("roi_text", None)
    bounds = {ax: (kwargs.pop(f"{ax}_start", None), kwargs.pop(f"{ax}_end", None)) for ax in "zyx"}
    per_axis = RoiSpec.from_axis_bounds(bounds)
    if text is not None and per_axis is not None:
        raise OptionError(
            "--roi: give either --roi or the per-axis --z-start/... options, not both"
        )
    return text if text is not None else per_axis


def source_options(*, short_level: bool = False) -> Callable[[F], F]:
    """``--source-level``, ``--series``, ``--allow-gaps``; read them with
    :func:`open_options_from`. ``short_level``: ``--level`` is accepted too (``info`` and
    ``verify``, which read no other level); in commands that write, ``--level`` was once the
    compression level (:data:`output_options`)."""
    flags = ["--source-level", "--level"] if short_level else ["--source-level"]
    return _compose(
        click.option(
            *flags,
            "source_level",
            type=int,
            default=None,
            help="Resolution level of an OME-Zarr image or pyramidal TIFF (0 = full); labels "
            "and masks with one level are read as they are.",
        ),
        click.option(
            "--series",
            type=int,
            default=None,
            help="Series of a multi-series TIFF; labels and masks with one series are read as "
            "they are.",
        ),
        click.option(
            "--allow-gaps", is_flag=True, help="Accept a slice folder whose numbering has gaps."
        ),
    )


def open_options_from(kwargs: dict[str, Any]) -> OpenOptions:
    """Pop the source options from a command's keyword arguments."""
    return OpenOptions(
        level=kwargs.pop("source_level", None),
        series=kwargs.pop("series", None),
        allow_gaps=kwargs.pop("allow_gaps", False),
    )


def source_argument(name: str = "source") -> Callable[[F], F]:
    """A SOURCE argument: path, ``file.h5:/dataset``, glob, or ``-`` for paths on stdin."""
    return click.argument(name, metavar=name.upper())


def resolve_source(text: str) -> SourceSpec:
    """``-`` reads one path per line from stdin; anything else is passed on as given."""
    if text == "-":
        return paths_from_lines(sys.stdin)
    return text


def parse_ints(text: str | None, option: str) -> tuple[int, ...] | None:
    """Parse ``64`` or ``32,256,256`` into a tuple of ints.

    Raises:
        OptionError: a part is not an integer.
    """
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as exc:
        raise OptionError(f"{option} {text}: expected integers separated by commas") from exc


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    """Parse ``7.91`` or ``40,4,4`` into a tuple of floats.

    Raises:
        OptionError: a part is not a number.
    """
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        raise OptionError(f"{option} {text}: expected numbers separated by commas") from exc


task_options = _compose(
    click.option(
        "--task-index",
        type=int,
        default=None,
        help="This task's index (0-based), e.g. $SLURM_ARRAY_TASK_ID.",
    ),
    click.option(
        "--task-count",
        type=int,
        default=None,
        help="Number of tasks sharing the work; each does a disjoint slice.",
    ),
)
"""``--task-index/--task-count`` for job arrays; read them with :func:`task_from_options`."""


executor_options = _compose(
    click.option(
        "--dask-scheduler",
        default=None,
        metavar="ADDRESS",
        help="Run units as tasks on a running Dask cluster, e.g. tcp://host:8786.",
    ),
    click.option(
        "--dask-local",
        type=int,
        default=None,
        metavar="N",
        help="Start a local Dask cluster of N worker processes for this run.",
    ),
)
"""``--dask-scheduler/--dask-local``; read them with :func:`executor_from_options`."""


def executor_from_options(kwargs: dict[str, Any]) -> AbstractContextManager[Executor | None]:
    """Pop the Dask options; a context giving the executor (``None``: run in this process).

    Raises:
        OptionError: both are given, or the cluster extra is missing.
    """
    scheduler, local = kwargs.pop("dask_scheduler", None), kwargs.pop("dask_local", None)
    if scheduler is None and local is None:
        return nullcontext()
    try:
        import distributed  # noqa: F401  (configures its loggers when imported)
    except ImportError:
        pass  # dask_executor names the missing extra
    else:
        # it logs every scheduler and worker event at INFO: only its warnings, none with -q
        level = max(logging.WARNING, logging.getLogger("datatools").getEffectiveLevel())
        logging.getLogger("distributed").setLevel(level)
    return dask_executor(scheduler, local)


def task_from_options(kwargs: dict[str, Any]) -> TaskSlice | None:
    """Pop the task options; both or neither must be given.

    Raises:
        OptionError: only one of them is given, or the index is out of range.
    """
    index, count = kwargs.pop("task_index", None), kwargs.pop("task_count", None)
    if index is None and count is None:
        return None
    if index is None or count is None:
        raise OptionError("--task-index/--task-count: give both or neither")
    return TaskSlice(index, count)


output_options = _compose(
    click.option(
        "--codec",
        type=click.Choice(list(dict.fromkeys([*ZARR_CODECS, *HDF5_CODECS]))),
        default=None,
        help="Compression [default: zstd; HDF5: gzip].",
    ),
    click.option("--codec-level", type=int, default=None, help="Compression level."),
    click.option(
        "--level",
        "deprecated_level",
        type=int,
        default=None,
        hidden=True,
        help="Deprecated spelling of --codec-level.",
    ),
    click.option(
        "--zarr-format",
        type=click.Choice(["2", "3"]),
        default="3",
        show_default=True,
        help="3: Zarr v3 (OME-NGFF 0.5); 2: Zarr v2 (NGFF 0.4) for loaders pinned to zarr 2.",
    ),
    click.option(
        "--overwrite",
        is_flag=True,
        help="Replace an existing output of datatools (never a foreign file or folder).",
    ),
)
"""``--codec``, ``--codec-level``, ``--zarr-format``, ``--overwrite`` (and ``--level``, the old
spelling of ``--codec-level``); read them with :func:`output_from_options`."""


def output_from_options(kwargs: dict[str, Any], **more: Any) -> OutputOptions:
    """Pop the output options (plus ``more``: chunks, shards, chunk rows) and build them.

    Raises:
        OptionError: both ``--level`` and ``--codec-level``, or an invalid value.
    """
    level = kwargs.pop("codec_level", None)
    old = kwargs.pop("deprecated_level", None)
    if old is not None:
        if level is not None:
            raise OptionError("--level: give --codec-level only (--level is its old spelling)")
        log.warning("--level is deprecated for the compression level: use --codec-level %d", old)
        level = old
    return OutputOptions(
        codec=kwargs.pop("codec", None),
        codec_level=level,
        zarr_format=int(kwargs.pop("zarr_format", "3")),
        overwrite=kwargs.pop("overwrite", False),
        **more,
    )


def run_options(memory_default: str | None = None) -> Callable[[F], F]:
    """``--workers`` and ``--memory-limit``, the same for every command; read them with
    :func:`run_from_options` (with :data:`task_options` when the command takes them)."""
    memory = f" [default: {memory_default}]" if memory_default else ""
    return _compose(
        click.option(
            "--workers",
            type=int,
            default=None,
            help="Threads working on units at once (reading, decoding, encoding) [default: "
            "number of cores].",
        ),
        click.option(
            "--memory-limit",
            type=BYTES,
            default=None,
            metavar="BYTES",
            help=f"Bound for data in flight, e.g. 2G or 512M; sizes the units{memory}.",
        ),
    )


def run_from_options(kwargs: dict[str, Any]) -> RunOptions:
    """Pop ``--workers``, ``--memory-limit`` and (if the command has them) the task options.

    Raises:
        OptionError: as :func:`task_from_options`.
    """
    return RunOptions(
        workers=kwargs.pop("workers", None),
        memory_limit=kwargs.pop("memory_limit", None),
        task=task_from_options(kwargs),
    )


def edge_option(default: str, subject: str) -> Callable[[F], F]:
    """``--edge`` for boxes (``subject``: patches, windows) that cross the volume's border."""
    return click.option(
        "--edge",
        type=click.Choice(EDGE_MODES),
        default=default,
        show_default=True,
        help=f"{subject} crossing the border: mirror with (symmetric) or without (reflect) the "
        "edge voxel as np.pad does, pad with the fill value (constant), move inside (shift), "
        "skip (drop).",
    )


def progress_wanted() -> bool:
    """Progress bars only when not ``--quiet`` and stderr is a terminal."""
    ctx = click.get_current_context(silent=True)
    quiet = bool(ctx and ctx.find_root().obj and ctx.find_root().obj.get("quiet"))
    return not quiet and sys.stderr.isatty()


OptionsT = TypeVar("OptionsT", bound=Options)


def command_options(
    cls: type[OptionsT], kwargs: dict[str, Any], output: dict[str, Any], **fields: Any
) -> OptionsT:
    """One options object of a command from its keyword options: the shared groups (ROI,
    source choices, ``output`` plus the given output fields, run) popped from ``kwargs`` and
    built, and every other keyword option (``kwargs`` left, and ``fields``) set by name.

    Raises:
        OptionError: an invalid value (the message names the option).
    """
    roi, open_options = roi_from_options(kwargs), open_options_from(kwargs)
    storage = output_from_options(kwargs, **output)
    run = run_from_options(kwargs)
    return cls().with_overrides(
        roi=roi, open_options=open_options, output=storage, run=run, **kwargs, **fields
    )
