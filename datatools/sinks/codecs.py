"""Compression choices, named once and mapped to Zarr v3, Zarr v2 and HDF5 settings.

Names: ``zstd`` (default), ``blosc-zstd``, ``blosc-lz4``, ``gzip``, ``none``; HDF5 outputs take
``gzip``, ``lzf`` or ``none``. :meth:`Codec.encoder` returns the numcodecs codec that produces
exactly the bytes Zarr stores for a chunk with these settings, so writers can encode chunks
themselves (in parallel, without Zarr's per-chunk overhead) and store the bytes directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from datatools.errors import OptionError

if TYPE_CHECKING:
    from numcodecs.abc import Codec as NumcodecsCodec
    from zarr.abc.codec import BytesBytesCodec

ZARR_CODECS = ("zstd", "blosc-zstd", "blosc-lz4", "gzip", "none")
HDF5_CODECS = ("gzip", "lzf", "none")
DEFAULT_LEVELS = {"zstd": 3, "blosc-zstd": 5, "blosc-lz4": 5, "gzip": 4}


@dataclass(frozen=True)
class Codec:
    """A compression choice: ``name`` from :data:`ZARR_CODECS` or :data:`HDF5_CODECS`, and
    ``level`` (``None`` for the codec's default)."""

    name: str = "zstd"
    level: int | None = None

    @property
    def effective_level(self) -> int | None:
        return self.level if self.level is not None else DEFAULT_LEVELS.get(self.name)

    def zarr_compressors(self, dtype: np.dtype[Any]) -> list[BytesBytesCodec]:
        """Zarr v3 ``compressors`` for ``zarr.create_array`` (empty list for ``none``)."""
        from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec

        level = self.effective_level
        itemsize = np.dtype(dtype).itemsize
        if self.name == "none":
            return []
        if self.name == "zstd":
            return [ZstdCodec(level=int(level or 0), checksum=False)]
        if self.name == "gzip":
            return [GzipCodec(level=int(level or 0))]
        cname: Literal["zstd", "lz4"] = "zstd" if self.name == "blosc-zstd" else "lz4"
        return [
            BloscCodec(
                cname=cname,
                clevel=int(level or 0),
                shuffle="shuffle" if itemsize > 1 else "bitshuffle",
                typesize=itemsize,
            )
        ]

    def encoder(self, dtype: np.dtype[Any]) -> NumcodecsCodec | None:
        """The numcodecs codec giving the same bytes as Zarr: the Zarr v2 ``compressor``, and
        the v3 compressor after the little-endian ``bytes`` codec; ``None`` for ``none``."""
        import numcodecs

        level = self.effective_level
        itemsize = np.dtype(dtype).itemsize
        if self.name == "none":
            return None
        if self.name == "zstd":
            return numcodecs.Zstd(level=int(level or 0))
        if self.name == "gzip":
            return numcodecs.GZip(level=int(level or 0))
        cname = "zstd" if self.name == "blosc-zstd" else "lz4"
        shuffle = numcodecs.Blosc.SHUFFLE if itemsize > 1 else numcodecs.Blosc.BITSHUFFLE
        return numcodecs.Blosc(
            cname=cname, clevel=int(level or 0), shuffle=shuffle, typesize=itemsize
        )

    def hdf5_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``h5py.Group.create_dataset``."""
        if self.name == "none":
            return {}
        if self.name == "lzf":
            return {"compression": "lzf"}
        return {"compression": "gzip", "compression_opts": self.effective_level}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "level": self.effective_level}


def parse_codec(name: str, level: int | None = None, *, hdf5: bool = False) -> Codec:
    """Check a codec name (and level) for a Zarr or an HDF5 output.

    Raises:
        OptionError: an unknown name, one the output format cannot store, or a bad level.
    """
    allowed = HDF5_CODECS if hdf5 else ZARR_CODECS
    if name not in allowed:
        where = "HDF5" if hdf5 else "Zarr"
        raise OptionError(
            f"--codec {name}: unknown for {where} outputs (choose {', '.join(allowed)})"
        )
    if level is not None:
        top = {"gzip": 9, "zstd": 22}.get(name, 9)
        if name in ("none", "lzf"):
            raise OptionError(f"--level {level}: codec {name} takes no level")
        if not 0 <= level <= top:
            raise OptionError(f"--level {level}: codec {name} takes a level from 0 to {top}")
    return Codec(name, level)
