"""Benchmark the TIFF slice-folder source against plain ``tifffile.imread``.

Makes (once, cached under ``--data-dir``) a synthetic ``128 x 2048 x 2048`` uint16 slice folder
in two flavours: uncompressed, and zlib-compressed in strips of 64 rows. The data is smooth
structure plus noise, so it compresses like real images, not like constants. Then, in the same
run and with the page cache warmed by one read of every file, each phase runs in its own
subprocess with the same modules imported (so each has its own peak RSS and the same process
state), ``--repeats`` times in rotating order, best time kept:

- ``plain``: ``tifffile.imread`` of every file, one by one (the reference);
- ``plain-slab``: ``tifffile.imread`` of the files of each 64-slice slab (tifffile stacks them
  into one array: the same output as ``full``, so the same allocation);
- ``alloc``: allocating and filling the slab arrays only (the floor for any slab reader: on a
  VM, first-touch page faults of fresh 512 MiB arrays can cost more than reading cached files);
- ``full``: ``TiffStack.open`` + ``read`` of the whole volume in 64-slice slabs, into one
  reused slab buffer (``read(box, out=...)``, as ``convert`` does);
- ``roi``: the same for the middle third of the rows, all slices.

Goals (ratios, because the machine is noisy): full-read speed >= 0.9 x plain, and the ROI of
1/3 of the rows takes <= 0.5 x the time of the full read. The speed ratio is printed against
both ``plain`` and ``plain-slab``.

Usage::

    .venv/bin/python scripts/bench_read.py [--data-dir bench_data] [--quick] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from scipy import ndimage

from datatools.geometry import Box
from datatools.sources import OpenOptions
from datatools.sources.tiff_stack import TiffStack

FULL_SHAPE = (128, 2048, 2048)
QUICK_SHAPE = (16, 512, 512)
SLAB = 64
ROWS_PER_STRIP = 64
FLAVOURS: dict[str, dict[str, Any]] = {
    "uncompressed": {},
    "zlib-strips64": {"compression": "zlib", "rowsperstrip": ROWS_PER_STRIP},
}
PHASES = ("plain", "plain-slab", "alloc", "full", "roi")
GOAL_FULL = 0.9
GOAL_ROI = 0.5


def make_slices(folder: Path, shape: tuple[int, int, int], write_args: dict[str, Any]) -> None:
    """Write ``shape[0]`` uint16 slices of smooth structure plus noise (deterministic).

    Skipped when ``folder`` already holds a complete set for the same shape and options.
    Memory: a few slices (``4 x shape[1] x shape[2] x 8`` bytes).
    """
    stamp = folder / "complete.json"
    params = {"shape": list(shape), "write_args": write_args, "version": 1}
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.tif"):
        old.unlink()
    n_z, n_y, n_x = shape
    rng = np.random.default_rng(20240601)
    coarse = rng.normal(size=(2, 17, 17))
    fields = [ndimage.zoom(c, (n_y / 17, n_x / 17), order=3)[:n_y, :n_x] for c in coarse]

    def write(z: int) -> None:
        noise = np.random.default_rng([20240601, z]).normal(0, 600, size=(n_y, n_x))
        angle = 2 * np.pi * z / n_z
        plane = 20000 + 6000 * (np.cos(angle) * fields[0] + np.sin(angle) * fields[1]) + noise
        data = np.clip(plane, 0, 65535).astype(np.uint16)
        tifffile.imwrite(folder / f"slice_{z:04d}.tif", data, **write_args)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(write, range(n_z)))
    stamp.write_text(json.dumps(params))


def run_phase(phase: str, folder: Path, slab: int) -> dict[str, float]:
    """Time one phase in this process; return seconds, bytes delivered and peak RSS."""
    files = sorted(folder.glob("*.tif"))
    start = time.perf_counter()
    nbytes = 0
    if phase == "plain":
        for path in files:
            nbytes += tifffile.imread(path).nbytes
    elif phase == "plain-slab":
        for z0 in range(0, len(files), slab):
            nbytes += tifffile.imread(files[z0 : z0 + slab]).nbytes
    elif phase == "alloc":
        with tifffile.TiffFile(files[0]) as tif:
            shape = tif.pages.first.shape
        for z0 in range(0, len(files), slab):
            block = np.empty((min(slab, len(files) - z0), *shape), np.uint16)
            block.fill(0)
            nbytes += block.nbytes
            del block
    else:
        with TiffStack.open(str(folder), OpenOptions()) as volume:
            n_z, n_y, n_x = volume.shape
            rows = (n_y // 3, n_y // 3 + n_y // 3) if phase == "roi" else (0, n_y)
            buffer = np.empty(slab * (rows[1] - rows[0]) * n_x, volume.dtype)
            for z0 in range(0, n_z, slab):
                box = Box((z0, rows[0], 0), (min(z0 + slab, n_z), rows[1], n_x))
                out = buffer[: box.size].reshape(box.shape)  # one slab buffer, reused
                nbytes += volume.read(box, out=out).nbytes
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"seconds": seconds, "bytes": nbytes, "peak_rss": peak}


def measure(phase: str, folder: Path, slab: int) -> dict[str, float]:
    """Run one phase in a fresh subprocess and return its numbers."""
    out = subprocess.run(
        [sys.executable, __file__, "--phase", phase, "--folder", str(folder), "--slab", str(slab)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def warm(folder: Path) -> None:
    """Read every file once so that every phase sees a warm page cache."""
    for path in sorted(folder.glob("*.tif")):
        path.read_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("bench_data"))
    parser.add_argument("--quick", action="store_true", help="16 x 512 x 512 instead")
    parser.add_argument("--repeats", type=int, default=3, help="runs per phase; best kept")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--slab", type=int, default=SLAB, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase is not None:
        print(json.dumps(run_phase(args.phase, args.folder, args.slab)))
        return 0

    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    slab = min(SLAB, shape[0])
    label = "x".join(map(str, shape))
    print(f"bench_read: {label} uint16 slices, {slab}-slice slabs, best of {args.repeats}")
    print(f"{'flavour':<15} {'phase':<10} {'seconds':>8} {'MB/s':>8} {'peak RSS MiB':>13}")
    missed = []
    for flavour, write_args in FLAVOURS.items():
        folder = args.data_dir / f"slices_{flavour}_{label}"
        started = time.perf_counter()
        make_slices(folder, shape, write_args)
        made = time.perf_counter() - started
        if made > 1:
            print(f"  (made {folder} in {made:.0f} s)")
        warm(folder)
        best: dict[str, dict[str, float]] = {}
        for repeat in range(args.repeats):
            shift = repeat % len(PHASES)  # rotate the order so no phase always runs first
            for phase in PHASES[shift:] + PHASES[:shift]:
                result = measure(phase, folder, slab)
                if phase not in best or result["seconds"] < best[phase]["seconds"]:
                    best[phase] = result
        for phase in PHASES:
            result = best[phase]
            rate = result["bytes"] / result["seconds"] / 1e6
            rss = result["peak_rss"] / 2**20
            print(f"{flavour:<15} {phase:<10} {result['seconds']:8.3f} {rate:8.0f} {rss:13.0f}")
        full = best["full"]["seconds"]
        speed = best["plain"]["seconds"] / full
        speed_slab = best["plain-slab"]["seconds"] / full
        roi = best["roi"]["seconds"] / full
        ok_speed = "n/a" if args.quick else "ok" if speed >= GOAL_FULL else "MISSED"
        ok_roi = "n/a" if args.quick else "ok" if roi <= GOAL_ROI else "MISSED"
        print(
            f"{flavour:<15} full/plain speed {speed:.2f} (goal >= {GOAL_FULL}: {ok_speed}); "
            f"full/plain-slab speed {speed_slab:.2f}; "
            f"roi/full time {roi:.2f} (goal <= {GOAL_ROI}: {ok_roi})"
        )
        missed += [
            f"{flavour} {n}" for n, ok in (("full", ok_speed), ("roi", ok_roi)) if ok == "MISSED"
        ]
    if args.quick:
        print("--quick: per-file overheads dominate such small slices; goals apply to full size")
    if missed:
        print(f"goals missed: {', '.join(missed)} (the machine is shared; rerun to confirm)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
