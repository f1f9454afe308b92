"""Chunk-aware sampling: shuffle chunks, then rows inside a chunk, split over ranks and workers.

Reading rows in random order from a chunked array decodes a whole chunk per row; reading them
chunk by chunk decodes each chunk once. :class:`ChunkShuffleSampler` draws a new random order
of the chunks every epoch and a random order of the rows inside each chunk, so an epoch reads
each chunk about once while batches still mix rows across the epoch's chunks over time.

Splits: every epoch's order is cut into ``world_size`` contiguous parts, one per DDP rank;
a rank's part into batches, dealt to its DataLoader workers in contiguous blocks and
interleaved the way a DataLoader hands batches to workers (batch ``k`` to worker
``k % num_workers``), so each worker reads its own run of chunks. Every row is yielded exactly
once per epoch over all ranks (``drop_last=True``: the ``n % world_size`` rows left over after
equal parts are skipped, different ones each epoch).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from datatools.loaders.options import SamplerOptions
from datatools.loaders.rows import Array, as_rows
from datatools.loaders.splits import rank_share, resolve_ranks, share


class ChunkShuffleSampler:
    """Row indices for a DataLoader, in shuffled chunk order (no torch needed).

    Two ways to use it::

        # rows: the DataLoader batches them; the dataset reads row by row
        sampler = ChunkShuffleSampler(dataset, batch_size=64, num_workers=4)
        loader = DataLoader(dataset, batch_size=64, sampler=sampler, num_workers=4)

        # batches: each index is an array of rows, read with one gather per chunk (faster)
        sampler = ChunkShuffleSampler(dataset, batch_size=256, num_workers=4, batched=True)
        loader = DataLoader(dataset, batch_size=None, sampler=sampler, num_workers=4)

    Call :meth:`set_epoch` before each epoch (it also calls ``dataset.set_epoch`` so
    augmentation draws change too).

    Args:
        source: an :class:`~datatools.loaders.ArrayDataset`, a row source or an array (anything
            with ``chunk_ids()``, or that :func:`~datatools.loaders.rows.as_rows` takes).
        options: every setting (:class:`~datatools.loaders.SamplerOptions`), ``None`` for the
            defaults; fields may be replaced by keyword (``overrides``), nested ones flat:
            ``ChunkShuffleSampler(dataset, batch_size=64, seed=1)``.

    The options (by their flat names):
        batch_size: the DataLoader's batch size; needed with ``batched`` or
            ``num_workers > 1`` (each worker then gets whole batches of its own chunks).
        batched: yield arrays of ``batch_size`` rows (use with ``DataLoader(batch_size=None)``).
        num_workers: the DataLoader's ``num_workers``.
        shuffle: shuffle chunks and rows; ``False`` yields rows chunk by chunk in stored order.
        seed: the order of epoch ``e`` is a function of ``(seed, e)`` only (an int >= 0).
        rank, world_size: this process's DDP rank and the number of ranks; default from an
            initialised ``torch.distributed`` group, else one process.
        drop_last: every rank gets exactly ``n // world_size`` rows (equal steps per rank for
            DDP), and with ``batched`` a last partial batch is dropped.

    Memory: 8 bytes per row for the chunk ids, 24 per row while an epoch's order is drawn.

    Raises:
        OptionError: a bad batch size, worker count, seed or rank, or an unknown option.
    """

    def __init__(
        self, source: Any, options: SamplerOptions | None = None, **overrides: Any
    ) -> None:
        self.options = (options or SamplerOptions()).with_overrides(**overrides)
        split = self.options.split
        self.rank, self.world_size = resolve_ranks(split.rank, split.world_size)
        self.epoch = 0
        ids = source.chunk_ids() if hasattr(source, "chunk_ids") else as_rows(source).chunk_ids()
        _, inverse = np.unique(np.asarray(ids), return_inverse=True)
        self._chunk = inverse.astype(np.int64).ravel()
        self._dataset = source if hasattr(source, "set_epoch") else None

    def set_epoch(self, epoch: int) -> None:
        """Draw the order of ``epoch`` (and pass it to the dataset's ``set_epoch``)."""
        self.epoch = int(epoch)
        if self._dataset is not None:
            self._dataset.set_epoch(self.epoch)

    def order(self) -> Array:
        """This rank's rows for the current epoch, in the order yielded."""
        batches = self._batches()
        return np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)

    def _global_order(self) -> Array:
        n = len(self._chunk)
        if not self.options.split.shuffle:
            return np.argsort(self._chunk, kind="stable")
        rng = np.random.default_rng((self.options.split.seed, self.epoch))
        position = rng.permutation(int(self._chunk.max()) + 1 if n else 0)
        return np.lexsort((rng.random(n), position[self._chunk]))

    def _rank_rows(self) -> Array:
        order = self._global_order()
        part = rank_share(len(order), self.rank, self.world_size, self.options.split.drop_last)
        return order[part.start : part.stop]

    def _batches(self) -> list[Array]:
        """This rank's rows cut into batches, dealt to workers and interleaved.

        With ``full = q * workers + r`` whole batches, worker ``w`` owns a contiguous run of
        ``q + (w < r)`` of them, and worker ``r`` also the last partial batch (the one a
        DataLoader hands it after the others), so workers share at most the chunks at the
        ends of their runs.
        """
        rows = self._rank_rows()
        size = self.options.batch_size or max(1, len(rows))
        workers = max(1, self.options.num_workers)
        full, rest = divmod(len(rows), size)
        tail_owner = full % workers
        runs: list[list[Array]] = []
        start = 0
        for w in range(workers):
            count = len(share(full, w, workers)) * size + (rest if w == tail_owner else 0)
            run = rows[start : start + count]
            start += count
            runs.append([run[i : i + size] for i in range(0, len(run), size)])
        batches = [run[j] for j in range(max(map(len, runs))) for run in runs if j < len(run)]
        if rest and self.options.batched and self.options.split.drop_last:
            batches.pop()
        return batches

    def __iter__(self) -> Iterator[Any]:
        if self.options.batched:
            return iter(self._batches())
        return iter(self.order().tolist())

    def __len__(self) -> int:
        """Rows (or batches, with ``batched``) this rank yields per epoch."""
        split, batch_size = self.options.split, self.options.batch_size
        rows = len(rank_share(len(self._chunk), self.rank, self.world_size, split.drop_last))
        if not self.options.batched:
            return rows
        assert batch_size is not None
        full, rest = divmod(rows, batch_size)
        return full + (1 if rest and not split.drop_last else 0)
