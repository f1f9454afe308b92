"""Convert a large volume on a SLURM cluster through Dask: dask-jobqueue starts the workers as
SLURM jobs, datatools submits one task per work unit (a bounded number in flight) and records
each finished unit in the output's ledger, so an interrupted run resumes, with Dask or locally.

    python scripts/cluster/dask_jobqueue_convert.py /data/scan /data/scan.zarr --jobs 8

The same from the shell, with a scheduler started any other way:

    datatools convert /data/scan /data/scan.zarr --levels auto --dask-scheduler tcp://head:8786

Memory per worker: about 2 x unit bytes (64 MiB units by default; --memory-limit on the driver
sets it), one unit per worker thread.
"""

from __future__ import annotations

import argparse

from dask_jobqueue import SLURMCluster  # type: ignore[import-untyped]
from distributed import Client

from datatools.convert import convert
from datatools.executor import DaskExecutor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--jobs", type=int, default=4, help="SLURM jobs (one worker each)")
    parser.add_argument("--memory", default="8GB", help="memory per SLURM job")
    args = parser.parse_args()
    with (
        SLURMCluster(cores=1, processes=1, memory=args.memory, walltime="04:00:00") as cluster,
        Client(cluster) as client,
    ):
        cluster.scale(jobs=args.jobs)
        client.wait_for_workers(1)
        result = convert(
            args.source, args.target, levels="auto", executor=DaskExecutor(client), progress=True
        )
        print(result.summary())


if __name__ == "__main__":
    main()
