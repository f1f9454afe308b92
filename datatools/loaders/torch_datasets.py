"""The torch face of the loaders: :class:`VolumePatches`, a ``torch.utils.data.IterableDataset``.

Importing this module imports torch (``pip install datatools[torch]``); everything else in
:mod:`datatools.loaders` works without it.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import IterableDataset

from datatools.loaders.volume_patches import VolumePatchStream


class VolumePatches(VolumePatchStream, IterableDataset[dict[str, Any]]):
    """:class:`~datatools.loaders.VolumePatchStream` as a torch ``IterableDataset``.

    Each DataLoader worker yields its own part of this rank's share of the epoch, so every
    planned patch is seen once per epoch over all ranks and workers::

        dataset = VolumePatches("volume.zarr", 64, labels="labels.zarr", sampler="balanced",
                                count=10_000, seed=0)
        loader = DataLoader(dataset, batch_size=16, num_workers=4)
        for epoch in range(10):
            dataset.set_epoch(epoch)     # before the loader starts its workers
            for batch in loader:         # batch["image"]: (16, *size) tensor
                ...

    With ``persistent_workers=True`` the workers keep the epoch they started with; leave it
    off (the default) so ``set_epoch`` reaches them. Arguments, memory and errors: as
    :class:`~datatools.loaders.VolumePatchStream`.
    """
