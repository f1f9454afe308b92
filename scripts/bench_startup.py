"""Benchmark the start-up of the ``datatools`` command line against a bare interpreter.

Runs, each in its own subprocess of this interpreter, ``--repeats`` times in rotating order
after one untimed warm-up run each:

- ``python -c pass`` (the reference: the interpreter and its ``site`` start-up);
- ``python -m datatools --version`` and ``python -m datatools --help``;
- ``python -m datatools info sample_data/mask.tif`` (a small zlib-compressed multi-page TIFF,
  which tifffile reads through a Zarr store);
- ``python -m datatools info <tmp>/plain.tif`` (the same volume uncompressed, written into a
  temporary folder: memory-mapped, no Zarr).

For each it prints the wall seconds (best and median), their ratio to ``python -c pass`` (best
to best), the peak RSS (the child's own resource usage, from ``os.wait4``: the largest over
the repeats), and, from runs under ``python -X importtime`` (the quickest of three), the total
import time, its ratio to ``python -c pass``'s, and the top-level packages that take most of it.

Goals (wall, on this machine): ``--version`` under 0.3 s and ``--help`` under 0.5 s, judged on
the best run (the one least disturbed by other work: the machine is shared); PASS or FAIL is
printed. The exit status is 0 either way (``make bench`` runs every ``scripts/bench_*.py``).

Usage::

    .venv/bin/python scripts/bench_startup.py [--repeats 7] [--root PATH]

``--root`` is the checkout whose ``datatools`` is measured (default: the one holding this
script), so an older checkout can be measured with the same script.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_TIFF = ROOT / "sample_data" / "mask.tif"
TOP_PACKAGES = 10
"""Top-level packages listed per command, by import time."""
IMPORT_RUNS = 3
"""``-X importtime`` runs per command; the one with the smallest total is shown."""


@dataclass
class Case:
    """One command line and what its runs measured."""

    label: str
    args: list[str]
    goal: float | None = None
    """Best wall seconds to stay under, if any."""
    seconds: list[float] = field(default_factory=list)
    peak_rss: int = 0
    import_us: int = 0
    packages_us: dict[str, int] = field(default_factory=dict)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def environment(root: Path) -> dict[str, str]:
    """This process's environment with ``root`` first on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    return env


def run_once(args: list[str], root: Path, env: dict[str, str]) -> tuple[float, int]:
    """Run ``python ARGS`` once; return its wall seconds and peak RSS in bytes.

    Raises:
        RuntimeError: the command failed.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"python {' '.join(args)}: exit status {proc.returncode}")
    return seconds, usage.ru_maxrss * 1024  # Linux: KiB


def import_times(args: list[str], root: Path, env: dict[str, str]) -> tuple[int, dict[str, int]]:
    """Import time of ``python -X importtime ARGS`` in microseconds: the total, and the
    cumulative time of each top-level package where it is first entered (its outermost
    import, with everything that import pulled in; so ``numpy`` pulled in by ``zarr`` counts
    under both).

    ``-X importtime`` prints ``self | cumulative | name`` after each import, children before
    their parent, the name indented two spaces per level of nesting.
    """
    out = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in out.stderr.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            depth = (len(name) - len(name.lstrip()) - 1) // 2
            rows.append((depth, int(parts[1]), name.strip().split(".")[0]))
    total = sum(cumulative for depth, cumulative, _ in rows if depth == 0)
    packages: dict[str, int] = defaultdict(int)
    path: list[str] = []  # packages of the enclosing imports (parents come first in reverse)
    for depth, cumulative, package in reversed(rows):
        del path[depth:]
        if package not in path:
            packages[package] += cumulative
        path.append(package)
    return total, dict(packages)


def plain_tiff(folder: Path) -> Path:
    """An uncompressed copy of the sample mask (or of a small volume, without sample data)."""
    data = (
        tifffile.imread(SAMPLE_TIFF)
        if SAMPLE_TIFF.is_file()
        else np.zeros((32, 256, 256), np.uint8)
    )
    path = folder / "plain.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    return path


def report(cases: list[Case]) -> None:
    """Print the table, the import times and the goals."""
    base = cases[0]
    print(f"{'command':<28} {'best s':>7} {'median s':>9} {'x pass':>7} {'peak MB':>8} "
          f"{'imports ms':>10} {'x pass':>7}")  # fmt: skip
    for case in cases:
        print(
            f"{case.label:<28} {case.best:7.3f} {case.median:9.3f} "
            f"{case.best / base.best:7.1f} {case.peak_rss / 2**20:8.1f} "
            f"{case.import_us / 1000:10.1f} {case.import_us / base.import_us:7.1f}"
        )
    print("\nimport time of top-level packages (cumulative ms where first imported):")
    for case in cases:
        ranked = sorted(case.packages_us.items(), key=lambda item: -item[1])[:TOP_PACKAGES]
        print(f"  {case.label:<26} " + ", ".join(f"{n} {us / 1000:.0f}" for n, us in ranked))
    print("\ngoals (best wall on this machine):")
    for case in cases:
        if case.goal is not None:
            verdict = "PASS" if case.best < case.goal else "FAIL"
            print(f"  {case.label:<26} {case.best:.3f} s < {case.goal} s: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per command")
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="checkout whose datatools is measured"
    )
    args = parser.parse_args()
    root = args.root.resolve()
    env = environment(root)
    with tempfile.TemporaryDirectory() as tmp:
        sample = SAMPLE_TIFF
        if not sample.is_file():
            sample = Path(tmp) / "compressed.tif"
            tifffile.imwrite(sample, np.zeros((32, 256, 256), np.uint8), compression="zlib")
        plain = plain_tiff(Path(tmp))
        cases = [
            Case("python -c pass", ["-c", "pass"]),
            Case("datatools --version", ["-m", "datatools", "--version"], goal=0.3),
            Case("datatools --help", ["-m", "datatools", "--help"], goal=0.5),
            Case("datatools info mask.tif", ["-m", "datatools", "info", str(sample)]),
            Case("datatools info plain.tif", ["-m", "datatools", "info", str(plain)]),
        ]
        print(f"python {sys.version.split()[0]} ({sys.executable}); datatools from {root}; "
              f"{args.repeats} repeats\n")  # fmt: skip
        for case in cases:
            run_once(case.args, root, env)  # warm-up: page cache, .pyc files
            runs = [import_times(case.args, root, env) for _ in range(IMPORT_RUNS)]
            case.import_us, case.packages_us = min(runs, key=lambda run: run[0])
        for repeat in range(args.repeats):
            for case in cases[repeat % len(cases) :] + cases[: repeat % len(cases)]:
                seconds, rss = run_once(case.args, root, env)
                case.seconds.append(seconds)
                case.peak_rss = max(case.peak_rss, rss)
    report(cases)


if __name__ == "__main__":
    main()
