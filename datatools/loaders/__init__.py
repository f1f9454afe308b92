"""Feed datatools outputs and large volumes to training loops, with or without PyTorch.

Without torch (numpy only):

- :class:`ArrayDataset`: map-style dataset over a patches / instances output (or any arrays
  sharing axis 0); ``dataset[i]`` is a dict of row ``i``, ``dataset[rows]`` the rows stacked.
- :class:`ChunkShuffleSampler`: row (or batch) indices in shuffled chunk order, split over DDP
  ranks and DataLoader workers, reshuffled by ``set_epoch``.
- :class:`LazyView`, :class:`ConcatSources`: shuffled / subset views and concatenations of
  stored arrays along axis 0, read lazily.
- :class:`VolumePatchStream`: patches sampled on the fly from any volume datatools opens, with
  the plan code of ``datatools patches``; iterate it directly.
- :class:`LoaderOptions`, :class:`SamplerOptions`, :class:`SplitOptions`: the settings of the
  stream and the sampler as frozen options objects (``to_dict`` / ``from_dict``); the
  constructors also take each setting by keyword.

With torch (``pip install datatools[torch]``): :class:`VolumePatches`, the same stream as a
``torch.utils.data.IterableDataset``; torch is imported only when it is first used.
"""

from __future__ import annotations

from typing import Any

from datatools.loaders.array_dataset import ITEM_KEYS, ArrayDataset, open_arrays
from datatools.loaders.options import LoaderOptions, SamplerOptions, SplitOptions
from datatools.loaders.rows import ChunkCache, ConcatSources, LazyView, RowSource, as_rows
from datatools.loaders.samplers import ChunkShuffleSampler
from datatools.loaders.volume_patches import VolumePatchStream

__all__ = [
    "ITEM_KEYS",
    "ArrayDataset",
    "ChunkCache",
    "ChunkShuffleSampler",
    "ConcatSources",
    "LazyView",
    "LoaderOptions",
    "RowSource",
    "SamplerOptions",
    "SplitOptions",
    "VolumePatchStream",
    "VolumePatches",
    "as_rows",
    "open_arrays",
]


def __getattr__(name: str) -> Any:
    """``VolumePatches`` on first use (it imports torch)."""
    if name == "VolumePatches":
        from datatools.loaders.torch_datasets import VolumePatches

        return VolumePatches
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
