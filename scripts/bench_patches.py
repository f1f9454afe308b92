"""Benchmark ``datatools patches`` against numpy and against reading + re-encoding the bytes.

Usage: python scripts/bench_patches.py [--data-dir bench_data] [--quick] [--repeat R]

On a synthetic volume (32 x 2048 x 2048 uint8, smooth structure + noise, as Zarr v3 with 64^3
chunks and zstd; cached in --data-dir; --quick: 8 x 512 x 512), 2D patches of 64 x 64 at
stride 64 with symmetric edges, it measures in one run, each case in its own process so peak
RSS is its own:

  numpy      reference in memory: sliding_window_view(volume, (1, 64, 64))[:, ::64, ::64] and
             a copy into (n, 64, 64): the same patches
  iter       datatools.patches.iter_patches on the same in-memory volume, every batch cut,
             plan included; numpy and iter alternate 7 times in one process (same load, warm
             pages) and the best of each counts (their peak RSS is that process's)
  transcode  reference end to end: read + decode the source slab by slab with zarr-python and
             zstd-encode the same bytes in 2 MiB pieces (the output chunk size), no writing
  patches    datatools.patches.extract_patches Zarr -> Zarr, workers=1 (one thread reads the
             next slab while the caller cuts and writes), and workers=2 (the default on a
             2-core machine: one per core)

It prints patches/s, MB/s of input bytes, peak RSS, and the ratios iter/numpy (goal >= 1.0)
and patches/transcode (goal >= 0.7). The peak RSS of ``patches`` should exceed the transcode
reference's (which holds one 64 MiB slab) by less than the stated bound (memory_limit 256 MiB
for slabs in flight + a 16 MiB batch + 2 MiB chunk buffers per array).
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

import numcodecs
import numpy as np
import zarr
from numpy.lib.stride_tricks import sliding_window_view
from scipy.ndimage import gaussian_filter

FULL = (32, 2048, 2048)
QUICK = (8, 512, 512)
PATCH = 64
CHUNK = 64
CASES = ("memory", "transcode", "patches", "patches-w2")


def make_volume(path: Path, shape: tuple[int, int, int]) -> None:
    """Write the synthetic volume once (cached): smooth blobs + grain, uint8, 64^3 chunks."""
    done = path / ".bench-complete"
    if done.is_file() and json.loads(done.read_text()) == list(shape):
        return
    shutil.rmtree(path, ignore_errors=True)
    rng = np.random.default_rng(0)
    nz, ny, nx = shape
    plane = gaussian_filter(rng.normal(size=(ny, nx)).astype(np.float32), 3) * 600 + 128
    array = zarr.create_array(
        str(path), shape=shape, chunks=(CHUNK, CHUNK, CHUNK), dtype="uint8", fill_value=0
    )
    for z in range(nz):
        grain = rng.normal(0, 6, size=(ny, nx)).astype(np.float32)
        shifted = np.roll(plane, (3 * z, 5 * z), axis=(0, 1))
        array[z] = np.clip(shifted + grain, 0, 255).astype(np.uint8)
    done.write_text(json.dumps(list(shape)))


def run_case(case: str, source: Path, out: Path) -> dict[str, Any]:
    """Time one case; returns seconds, patches, and peak RSS (bytes) of this process."""
    from datatools.patches import extract_patches, iter_patches  # same baseline RSS everywhere

    source_array = zarr.open_array(str(source), mode="r")
    shape = source_array.shape
    count = shape[0] * -(-shape[1] // PATCH) * -(-shape[2] // PATCH)
    if case == "memory":
        volume = np.asarray(source_array[:])
        best = {"numpy": float("inf"), "iter": float("inf")}
        for _ in range(7):  # alternate, so both see the same machine load; best of each
            begin = time.perf_counter()
            windows = sliding_window_view(volume, (1, PATCH, PATCH))[:, ::PATCH, ::PATCH]
            result = np.ascontiguousarray(windows).reshape(-1, PATCH, PATCH)
            best["numpy"] = min(best["numpy"], time.perf_counter() - begin)
            assert len(result) == count
            del result
            begin = time.perf_counter()
            produced = 0
            for batch in iter_patches(volume, size=(PATCH, PATCH), edge="symmetric"):
                produced += len(batch.patches)
            best["iter"] = min(best["iter"], time.perf_counter() - begin)
            assert produced == count
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return {"case": case, "seconds": best, "patches": count, "peak_rss": peak}
    if case == "transcode":
        codec = numcodecs.Zstd(level=3)
        piece = 2 * 2**20
        begin = time.perf_counter()
        for y in range(0, shape[1], 1024):
            slab = np.ascontiguousarray(source_array[:, y : y + 1024])
            flat = slab.reshape(-1)
            for start in range(0, flat.size, piece):
                codec.encode(flat[start : start + piece])
        seconds = time.perf_counter() - begin
        produced = count
    else:
        begin = time.perf_counter()
        result_info = extract_patches(
            str(source),
            out / "patches.zarr",
            size=(PATCH, PATCH),
            edge="symmetric",
            workers=2 if case == "patches-w2" else 1,
        )
        seconds = time.perf_counter() - begin
        produced = result_info.total
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"case": case, "seconds": seconds, "patches": produced, "peak_rss": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("bench_data"))
    parser.add_argument("--out", type=Path, default=Path("bench_out/patches"))
    parser.add_argument("--quick", action="store_true", help="8 x 512 x 512 instead")
    parser.add_argument("--repeat", type=int, default=2, help="runs per case; the best counts")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        args.out.mkdir(parents=True, exist_ok=True)
        print(json.dumps(run_case(args.case, args.source, args.out)))
        shutil.rmtree(args.out)
        return

    shape = QUICK if args.quick else FULL
    source = args.data_dir / ("patches_quick.zarr" if args.quick else "patches_volume.zarr")
    make_volume(source, shape)
    nbytes = int(np.prod(shape))
    results: dict[str, dict[str, Any]] = {}
    for _ in range(args.repeat):
        for case in CASES:
            command = [sys.executable, __file__, "--case", case, "--source", str(source)]
            command += ["--out", str(args.out / case)]
            done = subprocess.run(command, check=True, capture_output=True, text=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            runs = [result]
            if case == "memory":
                runs = [{**result, "case": k, "seconds": v} for k, v in result["seconds"].items()]
            for run in runs:
                name = run["case"]
                if name not in results or run["seconds"] < results[name]["seconds"]:
                    results[name] = run
    dims = " x ".join(map(str, shape))
    print(f"{dims} uint8 Zarr (64^3 chunks, zstd), 2D {PATCH}x{PATCH} patches, stride {PATCH}, "
          f"symmetric edges: {nbytes / 2**20:.0f} MiB")  # fmt: skip
    print(f"{'case':<11} {'seconds':>8} {'patches/s':>11} {'MB/s':>8} {'peak RSS MB':>12}")
    for name in ("numpy", "iter", "transcode", "patches", "patches-w2"):
        r = results[name]
        print(
            f"{name:<11} {r['seconds']:8.3f} {r['patches'] / r['seconds']:11.0f} "
            f"{nbytes / 1e6 / r['seconds']:8.1f} {r['peak_rss'] / 1e6:12.1f}"
        )
    if args.quick:
        print(
            "quick mode: fixed costs (output creation, metadata) dominate; goals are for full size"
        )
    rate = {case: r["patches"] / r["seconds"] for case, r in results.items()}
    print(f"iter/numpy (in memory, patches/s): {rate['iter'] / rate['numpy']:.2f}x (goal >= 1.0)")
    for case in ("patches", "patches-w2"):
        ratio = rate[case] / rate["transcode"]
        print(f"{case}/transcode (end to end): {ratio:.2f}x (goal >= 0.7)")
    extra = (results["patches"]["peak_rss"] - results["transcode"]["peak_rss"]) / 1e6
    bound = (256 + 16 + 2 * 2) * 2**20
    print(
        f"patches peak RSS {extra:+.1f} MB vs transcode (stated bound: 256 MiB memory_limit + "
        f"16 MiB batch + 2 MiB per array = {bound / 1e6:.0f} MB; volume {nbytes / 1e6:.0f} MB)"
    )


if __name__ == "__main__":
    main()
