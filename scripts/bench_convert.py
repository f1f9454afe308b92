"""Benchmark ``datatools convert`` against the bound of a perfect pipeline and plain zarr-python.

Usage: python scripts/bench_convert.py [--data-dir bench_data] [--quick] [--repeat 3]

On a synthetic slice folder (128 x 2048 x 2048 uint16, smooth structure + noise, zstd ratio
about 1.8; cached in --data-dir) it measures in one run, each phase in its own process so peak
RSS is its own:
  read     tifffile.imread of every slice (nothing else)
  encode   zstd-encode every 64^3 chunk on all cores (no writing framework)
  write    writing the same encoded chunks as files (encoding untimed)
  bound    max(read, encode): a perfectly overlapped pipeline cannot beat it; bound+w also
           counts the writes, the limit on a machine whose disk is slower than its codec;
           bound+c adds up the CPU seconds (user + system) of read, encode and write and spreads
           them over all cores: the limit where writing files costs CPU time comparable to
           encoding (as on this kind of VM, where ext4 spends ~1 core-second per 400 MB written)
  zarr     reference: zarr-python streaming of 64-slice slabs (arr[z0:z1] = slab)
  convert  datatools convert, default options
  levels   datatools convert --levels auto (full volume only)
and the same for an ROI of 80 x 1024 x 1536 from the middle. It prints MB/s of input bytes,
peak RSS and the ratios convert/bound, convert/zarr and levels/convert time, and splits
convert's peak RSS into what the process held before converting and the data, next to the
memory formula of ``datatools.convert`` (units in flight + encoded chunks). Goals:
convert/bound >= 0.85, convert/zarr >= 2.2 (or 0.85 x bound/zarr where the bound caps the
gain), ROI convert MB/s >= 2x the reference's ROI MB/s, levels/convert time <= 1.25.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

FULL = (128, 2048, 2048)
QUICK = (64, 512, 512)
CHUNK = 64


# smooth structure of this amplitude plus Gaussian noise of this sigma around 20000 gives the
# zstd ratio of about 1.8, as in typical stacks (an amplitude of 8000 and sigma 40 gave 1.13)
AMPLITUDE, NOISE = 300, 12


def make_stack(folder: Path, shape: tuple[int, int, int]) -> None:
    """Write the synthetic slices once (cached): smooth blobs + noise, uint16."""
    done = folder / ".complete"
    recipe = {"shape": list(shape), "amplitude": AMPLITUDE, "noise": NOISE}
    if done.is_file() and json.loads(done.read_text()) == recipe:
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    nz, ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    for z in range(nz):
        base = 20000 + AMPLITUDE * np.sin(xx / 97.0 + z / 13.0) * np.cos(yy / 71.0 - z / 29.0)
        noise = rng.normal(0, NOISE, size=(ny, nx)).astype(np.float32)
        tifffile.imwrite(folder / f"slice_{z:05d}.tif", (base + noise).astype(np.uint16))
    done.write_text(json.dumps(recipe))


def files(folder: Path) -> list[Path]:
    return sorted(folder.glob("slice_*.tif"))


def roi_box(shape: tuple[int, int, int]) -> tuple[slice, slice, slice]:
    """80 x 1024 x 1536 from the middle (scaled down with the volume in quick mode)."""
    sizes = [shape[0] * 80 // 128, shape[1] // 2, shape[2] * 3 // 4]
    return tuple(slice((n - s) // 2, (n - s) // 2 + s) for n, s in zip(shape, sizes, strict=True))  # type: ignore[return-value]


class Clock:
    """Wall and CPU seconds (all threads, user + system) of the timed parts of a phase."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self.notes: dict[str, float] = {}

    @contextmanager
    def timed(self) -> Iterator[None]:
        # peak RSS before the first timed part: the interpreter, libraries and open inputs
        self.notes.setdefault(
            "baseline_mib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        )
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu


def phase_read(folder: Path, roi: bool) -> tuple[int, Clock]:
    """Read every slice the (ROI) volume needs; bytes are the ROI's."""
    paths = files(folder)
    zs = roi_box(read_shape(folder))[0] if roi else slice(0, len(paths))
    clock = Clock()
    with clock.timed():
        for p in paths[zs]:
            tifffile.imread(p)
    return roi_bytes(folder, roi), clock


def phase_encode(folder: Path, roi: bool) -> tuple[int, Clock]:
    """Encode every chunk of the (ROI) volume with zstd on all cores; slabs read untimed."""
    import numcodecs

    codec = numcodecs.Zstd(level=3)
    shape = read_shape(folder)
    box = roi_box(shape) if roi else tuple(slice(0, n) for n in shape)
    paths = files(folder)[box[0]]
    clock = Clock()
    total = 0
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        for z0 in range(0, len(paths), CHUNK):
            slab = np.stack([tifffile.imread(p)[box[1], box[2]] for p in paths[z0 : z0 + CHUNK]])
            chunks = [
                np.ascontiguousarray(slab[:, y : y + CHUNK, x : x + CHUNK])
                for y in range(0, slab.shape[1], CHUNK)
                for x in range(0, slab.shape[2], CHUNK)
            ]
            with clock.timed():
                list(pool.map(codec.encode, chunks))
            total += slab.nbytes
    return total, clock


def phase_write(folder: Path, out: Path, roi: bool) -> tuple[int, Clock]:
    """Write the same encoded chunks as files (encoding untimed): what the disk allows."""
    import numcodecs

    from datatools.sinks.chunk_files import write_file

    codec = numcodecs.Zstd(level=3)
    shape = read_shape(folder)
    box = roi_box(shape) if roi else tuple(slice(0, n) for n in shape)
    paths = files(folder)[box[0]]
    clock = Clock()
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        for z0 in range(0, len(paths), CHUNK):
            slab = np.stack([tifffile.imread(p)[box[1], box[2]] for p in paths[z0 : z0 + CHUNK]])
            keys = [  # as datatools orders them: neighbours in different folders
                (z0 // CHUNK, y // CHUNK, x // CHUNK)
                for x in range(0, slab.shape[2], CHUNK)
                for y in range(0, slab.shape[1], CHUNK)
            ]
            encoded = [
                codec.encode(np.ascontiguousarray(slab[:, y * CHUNK : (y + 1) * CHUNK,
                                                       x * CHUNK : (x + 1) * CHUNK]))
                for _, y, x in keys
            ]  # fmt: skip
            with clock.timed():
                list(pool.map(lambda kv: write_file(out / "/".join(map(str, kv[0])), kv[1]),
                              zip(keys, encoded, strict=True)))  # fmt: skip
    return roi_bytes(folder, roi), clock


def phase_zarr(folder: Path, out: Path, roi: bool) -> tuple[int, Clock]:
    shape = read_shape(folder)
    box = roi_box(shape) if roi else tuple(slice(0, n) for n in shape)
    out_shape = tuple(s.stop - s.start for s in box)
    arr = zarr.create_array(
        out,
        shape=out_shape,
        chunks=(CHUNK,) * 3,
        dtype="uint16",
        compressors=zarr.codecs.ZstdCodec(level=3),
    )
    paths = files(folder)[box[0]]
    clock = Clock()
    with clock.timed():
        for z0 in range(0, len(paths), CHUNK):
            slab = np.stack([tifffile.imread(p)[box[1], box[2]] for p in paths[z0 : z0 + CHUNK]])
            arr[z0 : z0 + slab.shape[0]] = slab
    return roi_bytes(folder, roi), clock


def phase_convert(folder: Path, out: Path, roi: bool) -> tuple[int, Clock]:
    from datatools.convert import convert
    from datatools.geometry import RoiSpec

    shape = read_shape(folder)
    box = roi_box(shape) if roi else None
    spec = None if box is None else RoiSpec(tuple((s.start, s.stop) for s in box))
    clock = Clock()
    with clock.timed():
        result = convert(str(folder), out, roi=spec)
    _memory_note(clock, result.params, result.chunks)
    return roi_bytes(folder, roi), clock


def phase_levels(folder: Path, out: Path, roi: bool) -> tuple[int, Clock]:
    """convert with --levels auto (full volume only)."""
    from datatools.convert import convert

    clock = Clock()
    with clock.timed():
        result = convert(str(folder), out, levels="auto")
    _memory_note(clock, result.params, result.chunks)
    return roi_bytes(folder, roi), clock


def _memory_note(clock: Clock, params: dict[str, Any], chunks: tuple[int, ...]) -> None:
    """Record the data convert's docstring says it holds: UNITS_IN_FLIGHT units of the plan's
    unit shape plus one encoded chunk per worker (uint16, no cast copy)."""
    from datatools.convert.plan import UNITS_IN_FLIGHT
    from datatools.executor import default_workers

    unit = 2 * math.prod(params["unit_shapes"][0])
    clock.notes["unit_mib"] = unit / 2**20
    clock.notes["units_in_flight"] = UNITS_IN_FLIGHT
    clock.notes["formula_mib"] = (
        UNITS_IN_FLIGHT * unit + default_workers() * 2 * math.prod(chunks)
    ) / 2**20


def roi_bytes(folder: Path, roi: bool) -> int:
    shape = read_shape(folder)
    box = roi_box(shape) if roi else tuple(slice(0, n) for n in shape)
    return int(np.prod([s.stop - s.start for s in box])) * 2


def read_shape(folder: Path) -> tuple[int, int, int]:
    return tuple(json.loads((folder / ".complete").read_text())["shape"])  # type: ignore[return-value]


def run_phase(name: str, folder: Path, out: Path, roi: bool, run: int) -> dict[str, float]:
    """Run one phase in a fresh process; returns seconds, CPU seconds, bytes and peak RSS
    (MiB)."""
    cmd = [
        sys.executable,
        __file__,
        "--phase",
        name,
        "--data-dir",
        str(folder.parent),
        "--folder",
        str(folder),
        "--out",
        str(out / f"{name}{'_roi' if roi else ''}_{run}"),
    ] + (["--roi"] if roi else [])
    line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
    return dict(json.loads(line.splitlines()[-1]))


def child(args: argparse.Namespace) -> None:
    folder, out = Path(args.folder), Path(args.out)
    phases = {
        "read": lambda: phase_read(folder, args.roi),
        "encode": lambda: phase_encode(folder, args.roi),
        "write": lambda: phase_write(folder, out, args.roi),
        "zarr": lambda: phase_zarr(folder, out, args.roi),
        "convert": lambda: phase_convert(folder, out, args.roi),
        "levels": lambda: phase_levels(folder, out, args.roi),
    }
    nbytes, clock = phases[args.phase]()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": clock.wall,
                "cpu": clock.cpu,
                "bytes": nbytes,
                "rss_mib": rss,
                **clock.notes,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="bench_data")
    parser.add_argument("--quick", action="store_true", help="small volume, runs in seconds")
    parser.add_argument("--phase")
    parser.add_argument("--folder")
    parser.add_argument("--out")
    parser.add_argument("--roi", action="store_true")
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="rounds of all phases, interleaved; each phase keeps its fastest round",
    )
    args = parser.parse_args()
    if args.phase:
        child(args)
        return
    shape = QUICK if args.quick else FULL
    folder = Path(args.data_dir) / ("convert_quick" if args.quick else "convert_stack")
    # every phase writes a new folder, all removed at the end: deleting thousands of files just
    # before a phase would slow its file creation (ext4 skips recently freed inodes)
    out = Path(args.data_dir) / "bench_out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    make_stack(folder, shape)
    phase_read(folder, False)  # warm the page cache so every phase sees the same state
    print(
        f"bench_convert: {' x '.join(map(str, shape))} uint16 slices, chunks {CHUNK}^3, "
        f"zstd, {os.cpu_count()} cores, best of {args.repeat} interleaved rounds"
    )
    for roi in (False, True):
        label = "ROI " + "x".join(str(s.stop - s.start) for s in roi_box(shape)) if roi else "full"
        names = ["read", "encode", "write", "zarr", "convert"] + ([] if roi else ["levels"])
        # this kind of VM changes speed by up to 2x from one minute to the next: interleaved
        # rounds, best of each phase, so every ratio compares phases at their best
        r: dict[str, dict[str, float]] = {}
        for run in range(args.repeat):
            for name in names:
                got = run_phase(name, folder, out, roi, run)
                if name not in r or got["seconds"] < r[name]["seconds"]:
                    r[name] = got
        mbps = {k: v["bytes"] / 1e6 / v["seconds"] for k, v in r.items()}
        bound = min(mbps["read"], mbps["encode"])
        disk_bound = min(bound, mbps["write"])
        cores = os.cpu_count() or 1
        cpu_bound = (
            r["read"]["bytes"]
            / 1e6
            / (sum(r[k]["cpu"] for k in ("read", "encode", "write")) / cores)
        )
        stored = sum(f.stat().st_size for f in (out / f"write{'_roi' if roi else ''}_0").rglob("*"))
        print(f"  {label:<22} zstd ratio {r['read']['bytes'] / stored:.2f} (input / chunk files)")
        for name in names:
            print(
                f"  {label:<22} {name:<8} {mbps[name]:8.0f} MB/s  peak RSS "
                f"{r[name]['rss_mib']:7.0f} MiB  CPU {r[name]['cpu']:6.2f} s"
            )
        print(f"  {label:<22} bound    {bound:8.0f} MB/s (slower of read and encode)")
        print(f"  {label:<22} bound+w  {disk_bound:8.0f} MB/s (slowest of read, encode, write)")
        print(
            f"  {label:<22} bound+c  {cpu_bound:8.0f} MB/s (CPU seconds of read + encode + write "
            f"over {cores} cores: the limit when the writes cost CPU too)"
        )
        print(
            f"  {label:<22} ratios   convert/bound+w {mbps['convert'] / disk_bound:.2f}, "
            f"convert/bound+c {mbps['convert'] / cpu_bound:.2f}"
        )
        print(
            f"  {label:<22} ratios   convert/bound {mbps['convert'] / bound:.2f} "
            f"(goal >= 0.85), convert/zarr {mbps['convert'] / mbps['zarr']:.2f} "
            f"(goal >= 2.2 or {0.85 * bound / mbps['zarr']:.2f} where the bound caps it)"
        )
        for name in ("convert", "levels"):
            if name in r:
                got = r[name]
                print(
                    f"  {label:<22} memory   {name}: peak RSS {got['rss_mib']:.0f} MiB = "
                    f"{got['baseline_mib']:.0f} MiB before converting (interpreter, libraries) + "
                    f"{got['rss_mib'] - got['baseline_mib']:.0f} MiB of data; formula "
                    f"{got['formula_mib']:.0f} MiB ({got['units_in_flight']:.0f} units of "
                    f"{got['unit_mib']:.0f} MiB + one encoded chunk per worker)"
                )
        if roi:
            print(
                f"  {label:<22} ratios   ROI convert MB/s / reference ROI MB/s "
                f"{mbps['convert'] / mbps['zarr']:.2f} (goal >= 2)"
            )
        else:
            print(
                f"  {label:<22} ratios   time(--levels auto) / time(convert) "
                f"{r['levels']['seconds'] / r['convert']['seconds']:.2f} (goal <= 1.25)"
            )
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
