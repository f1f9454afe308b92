"""Benchmark the buffered writers against direct whole-chunk writes with zarr / h5py.

Appends ``--rows`` rows of 64 x 64 uint8 items plus their int64 origins ``(n, 3)`` in random
batches of 1..500 rows with :func:`datatools.writers.open_writer`, to Zarr v3 (zstd) and to
HDF5 (gzip), and writes the same rows as pre-assembled whole chunk rows straight through
zarr-python (``array[a:b] = chunk``) and h5py (``dataset[a:b] = chunk``) into arrays created
at their final size with the same chunks and codec. Every case runs in its own subprocess, so
peak RSS (``ru_maxrss`` at the end of the child) is separate per case.

Items come from a pool of 1024 smoothed-noise images (zstd ratio about 2), item ``i`` is
``pool[i % 1024]``; assembling batches is timed separately and subtracted, so MB/s (of item
and origin bytes) and CPU seconds (all threads) measure the writing alone. The machine may be
shared: the best of ``--repeat`` runs counts, and the CPU time ratio is the steadier figure.

Usage: ``.venv/bin/python scripts/bench_writers.py [--rows N] [--repeat R] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import zarr
from scipy.ndimage import gaussian_filter

from datatools.sinks.codecs import parse_codec
from datatools.writers import open_writer

ITEM = (64, 64)
CHUNK_ROWS = 256
POOL = 1024
CASES = ("zarr-direct", "zarr-writer", "hdf5-direct", "hdf5-writer")


def make_pool(seed: int = 0) -> np.ndarray:
    """1024 items of smoothed noise with some grain, like EM patches (zstd ratio about 2)."""
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.normal(size=(POOL, *ITEM)).astype(np.float32), (0, 2, 2))
    grain = rng.normal(size=field.shape).astype(np.float32) * 4
    pool: np.ndarray = np.clip(field * 300 + 128 + grain, 0, 255).astype(np.uint8)
    return pool


def rows_of(pool: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Items and origins ``(z, y, x)`` of rows ``[start, stop)``."""
    index = np.arange(start, stop)
    origins = np.stack([index // 1000, (index * 37) % 2000, (index * 91) % 2000], axis=1)
    return pool[index % POOL], origins.astype(np.int64)


def run_case(case: str, rows: int, out: Path) -> dict[str, Any]:
    """Write ``rows`` rows one way; returns seconds spent writing and peak RSS in bytes."""
    pool = make_pool()
    rng = np.random.default_rng(1)
    gen = gen_cpu = 0.0
    begin, begin_cpu = time.perf_counter(), time.process_time()
    if case.endswith("writer"):
        target = out / ("w.zarr" if case.startswith("zarr") else "w.h5")
        arrays = {"patches": (ITEM, "uint8"), "origins": ((3,), "int64")}
        with open_writer(target, arrays, chunk_rows=CHUNK_ROWS) as writer:
            done = 0
            while done < rows:
                n = min(int(rng.integers(1, 501)), rows - done)
                t, t_cpu = time.perf_counter(), time.process_time()
                items, origins = rows_of(pool, done, done + n)
                gen += time.perf_counter() - t
                gen_cpu += time.process_time() - t_cpu
                writer.append(patches=items, origins=origins)
                done += n
    elif case == "zarr-direct":
        codec = parse_codec("zstd")
        group = zarr.create_group(str(out / "d.zarr"))
        patches = group.create_array(
            "patches",
            shape=(rows, *ITEM),
            chunks=(CHUNK_ROWS, *ITEM),
            dtype="uint8",
            compressors=codec.zarr_compressors(np.dtype("uint8")),
        )
        origins_array = group.create_array(
            "origins",
            shape=(rows, 3),
            chunks=(CHUNK_ROWS, 3),
            dtype="int64",
            compressors=codec.zarr_compressors(np.dtype("int64")),
        )
        for start in range(0, rows, CHUNK_ROWS):
            t, t_cpu = time.perf_counter(), time.process_time()
            items, origins = rows_of(pool, start, min(start + CHUNK_ROWS, rows))
            gen += time.perf_counter() - t
            gen_cpu += time.process_time() - t_cpu
            patches[start : start + len(items)] = items
            origins_array[start : start + len(items)] = origins
    else:
        options = parse_codec("gzip", hdf5=True).hdf5_kwargs()
        with h5py.File(out / "d.h5", "w") as file:
            patches = file.create_dataset(
                "patches", (rows, *ITEM), "uint8", chunks=(CHUNK_ROWS, *ITEM), **options
            )
            origins_array = file.create_dataset(
                "origins", (rows, 3), "int64", chunks=(CHUNK_ROWS, 3), **options
            )
            for start in range(0, rows, CHUNK_ROWS):
                t, t_cpu = time.perf_counter(), time.process_time()
                items, origins = rows_of(pool, start, min(start + CHUNK_ROWS, rows))
                gen += time.perf_counter() - t
                gen_cpu += time.process_time() - t_cpu
                patches[start : start + len(items)] = items
                origins_array[start : start + len(items)] = origins
    seconds = time.perf_counter() - begin - gen
    cpu = time.process_time() - begin_cpu - gen_cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"case": case, "seconds": seconds, "cpu": cpu, "peak_rss": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the best counts")
    parser.add_argument("--out", type=Path, default=Path("bench_out/writers"))
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        args.out.mkdir(parents=True, exist_ok=True)
        print(json.dumps(run_case(args.case, args.rows, args.out)))
        shutil.rmtree(args.out)
        return

    nbytes = args.rows * (int(np.prod(ITEM)) + 3 * 8)
    chunk_row_bytes = CHUNK_ROWS * (int(np.prod(ITEM)) + 3 * 8)
    results: dict[str, dict[str, Any]] = {}
    for _ in range(args.repeat):
        for case in CASES:
            command = [sys.executable, __file__, "--case", case, "--rows", str(args.rows)]
            command += ["--out", str(args.out / case)]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            if case not in results or result["seconds"] < results[case]["seconds"]:
                results[case] = result
    print(f"{args.rows} rows of {ITEM[0]}x{ITEM[1]} uint8 + int64 origins: {nbytes / 1e6:.0f} MB")
    print(f"{'case':<12} {'seconds':>8} {'MB/s':>8} {'CPU s':>8} {'peak RSS MB':>12}")
    for case in CASES:
        r = results[case]
        print(
            f"{case:<12} {r['seconds']:8.2f} {nbytes / 1e6 / r['seconds']:8.1f} "
            f"{r['cpu']:8.2f} {r['peak_rss'] / 1e6:12.1f}"
        )
    for kind in ("zarr", "hdf5"):
        direct, writer = results[f"{kind}-direct"], results[f"{kind}-writer"]
        speed = direct["seconds"] / writer["seconds"]
        cpu = direct["cpu"] / writer["cpu"]
        extra = (writer["peak_rss"] - direct["peak_rss"]) / 1e6
        print(
            f"{kind}: writer/direct throughput {speed:.2f}x (goal >= 0.9; CPU time ratio "
            f"{cpu:.2f}x); peak RSS {extra:+.1f} MB vs direct (goal <= "
            f"+{chunk_row_bytes / 1e6:.2f} MB, one chunk row per array)"
        )


if __name__ == "__main__":
    main()
