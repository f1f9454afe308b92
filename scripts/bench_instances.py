"""Benchmark ``datatools instances`` against an in-memory scipy.ndimage reference.

Usage: python scripts/bench_instances.py [--data-dir bench_data] [--quick] [--workers N]
                                        [--repeat N]

Synthetic data (cached in --data-dir as Zarr v3, 64^3 chunks, zstd): a 64 x 1024 x 1024 uint16
image (smooth structure + noise) and uint32 labels with about 5,000 ellipsoids whose ids are
shuffled (id order is not scan order: the hard case for batching crops), 32 x 64 x 64 windows.
--quick: 32 x 256 x 256, about 300 objects, 16 x 32 x 32 windows.

Two phases, each in its own process so peak RSS is its own:
  reference  both volumes loaded into memory (untimed), then timed: scipy.ndimage.find_objects
             + center_of_mass, and one numpy crop per instance (np.pad'ed at the border)
  datatools  extract_instances Zarr -> Zarr end to end (statistics, crops, zstd, writing)
It prints instances/s, CPU seconds and peak RSS of each, and the ratio datatools/reference
(goal >= 1.0). --codec picks the output codec (default zstd, as the CLI).
With --repeat N the phases run N times, interleaved, and the fastest run of each counts (the
machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zarr

FULL = {"shape": (64, 1024, 1024), "objects": 5000, "size": (32, 64, 64)}
QUICK = {"shape": (32, 256, 256), "objects": 300, "size": (16, 32, 32)}
CHUNK = 64


def make_data(folder: Path, shape: tuple[int, ...], objects: int) -> None:
    """Write the image and labels once (cached)."""
    done = folder / ".complete"
    key = [list(shape), objects]
    if done.is_file() and json.loads(done.read_text()) == key:
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    nz, ny, nx = shape
    labels = np.zeros(shape, np.uint32)
    ids = rng.permutation(objects) + 1
    scale = ny / 1024
    for obj in ids:
        centre = rng.uniform(0, 1, 3) * np.asarray(shape)
        radii = np.array([rng.uniform(3, 8), *rng.uniform(6, 16, 2) * max(scale, 0.5)])
        lo = np.maximum(0, np.floor(centre - radii)).astype(int)
        hi = np.minimum(shape, np.ceil(centre + radii) + 1).astype(int)
        grid = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
        inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1
        labels[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))][inside] = obj
    image = zarr.create_array(
        folder / "image.zarr", shape=shape, chunks=(CHUNK,) * 3, dtype="uint16", fill_value=0
    )
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    for z in range(0, nz, CHUNK):
        planes = []
        for k in range(z, min(z + CHUNK, nz)):
            base = 20000 + 8000 * np.sin(xx / 97.0 + k / 13.0) * np.cos(yy / 71.0 - k / 29.0)
            base += 3000 * (labels[k] > 0)
            planes.append(base + rng.normal(0, 40, size=(ny, nx)).astype(np.float32))
        image[z : z + len(planes)] = np.stack(planes).astype(np.uint16)
    out = zarr.create_array(
        folder / "labels.zarr", shape=shape, chunks=(CHUNK,) * 3, dtype="uint32", fill_value=0
    )
    out[...] = labels
    done.write_text(json.dumps(key))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def phase_reference(folder: Path, size: tuple[int, ...]) -> dict[str, float]:
    """find_objects + center_of_mass on in-memory arrays, then one crop per instance."""
    from scipy import ndimage

    image = zarr.open_array(folder / "image.zarr", mode="r")[...]
    labels = zarr.open_array(folder / "labels.zarr", mode="r")[...]
    cpu = cpu_seconds()
    start = time.perf_counter()
    boxes = ndimage.find_objects(labels)
    ids = np.array([i + 1 for i, box in enumerate(boxes) if box is not None])
    centres = np.asarray(ndimage.center_of_mass(labels > 0, labels, ids))
    half = np.asarray(size) // 2
    shape = np.asarray(image.shape)
    total = 0
    for centre in centres:
        origin = np.floor(centre + 0.5).astype(int) - half
        lo = np.maximum(origin, 0)
        hi = np.minimum(origin + size, shape)
        crop = image[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
        if np.any(lo != origin) or np.any(hi != origin + size):
            pads = [(a - o, o + s - b) for a, b, o, s in zip(lo, hi, origin, size, strict=True)]
            crop = np.pad(crop, pads)
        total += np.ascontiguousarray(crop).nbytes
    seconds = time.perf_counter() - start
    return {"n": len(ids), "seconds": seconds, "cpu": cpu_seconds() - cpu, "rss": peak_rss_mb()}


def phase_datatools(
    folder: Path, size: tuple[int, ...], workers: int, codec: str
) -> dict[str, float]:
    from datatools.instances import extract_instances

    out = folder / "out.zarr"
    cpu = cpu_seconds()
    start = time.perf_counter()
    result = extract_instances(
        folder / "image.zarr",
        folder / "labels.zarr",
        out,
        size=size,
        codec=codec,
        workers=workers,
        overwrite=True,
    )
    seconds = time.perf_counter() - start
    cpu = cpu_seconds() - cpu
    shutil.rmtree(out)
    return {"n": result.count, "seconds": seconds, "cpu": cpu, "rss": peak_rss_mb()}


def run_phase(name: str, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--phase", name, "--data-dir", str(args.data_dir)]
    cmd += ["--workers", str(args.workers), "--codec", args.codec]
    cmd += ["--quick"] if args.quick else []
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("bench_data"))
    parser.add_argument("--quick", action="store_true", help="small volume, for a smoke test")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--repeat", type=int, default=1, help="runs per phase; the best counts")
    parser.add_argument("--codec", default="zstd", help="output codec of datatools (zstd)")
    parser.add_argument("--phase", choices=["reference", "datatools"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    setup = QUICK if args.quick else FULL
    folder = args.data_dir / ("instances_quick" if args.quick else "instances")
    size = tuple(setup["size"])
    if args.phase == "reference":
        print(json.dumps(phase_reference(folder, size)))
        return
    if args.phase == "datatools":
        print(json.dumps(phase_datatools(folder, size, args.workers, args.codec)))
        return
    make_data(folder, tuple(setup["shape"]), int(setup["objects"]))
    shape = " x ".join(map(str, setup["shape"]))
    window = " x ".join(map(str, size))
    print(
        f"instances: {shape} uint16 image, uint32 labels, {window} windows, {args.workers} "
        f"workers, codec {args.codec}"
    )
    runs: dict[str, list[dict[str, float]]] = {"reference": [], "datatools": []}
    for _ in range(max(1, args.repeat)):
        for name, results in runs.items():
            results.append(run_phase(name, args))
    ref, ours = (min(results, key=lambda r: r["seconds"]) for results in runs.values())
    for name, r in (("reference", ref), ("datatools", ours)):
        rate = r["n"] / r["seconds"]
        print(
            f"  {name:<10} {int(r['n']):>6} instances in {r['seconds']:6.2f} s = {rate:7.0f}/s "
            f"({r['cpu']:5.1f} CPU-s), peak RSS {r['rss']:6.0f} MB"
        )
    ratio = (ours["n"] / ours["seconds"]) / (ref["n"] / ref["seconds"])
    print(f"  ratio datatools/reference: {ratio:.2f} (goal >= 1.0)")


if __name__ == "__main__":
    main()
