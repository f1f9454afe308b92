"""The options of ``patches`` (and of :func:`datatools.patches.iter_patches` and the
``VolumePatches`` loader, which plan patches the same way), as one frozen value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from datatools.geometry import Box, RoiSpec
from datatools.options import Options, OutputOptions, RunOptions
from datatools.sources import OpenOptions


@dataclass(frozen=True)
class PatchOptions(Options):
    """Every option of a patch run; see :func:`datatools.patches.extract_patches`.

    The fields from ``size`` to ``roi`` decide which patches a run writes (and are compared
    on resume, see :meth:`selection`); ``open_options``, ``output`` and ``run`` say how the
    inputs are opened, the output stored and the work run.
    """

    size: int | tuple[int, ...] | None = None
    stride: int | tuple[int, ...] | None = None
    edge: str = "symmetric"
    fill: float = 0
    min_fraction: float = 0.0
    per_class: bool = False
    class_rule: str = "centre"
    max_per_class: int | None = None
    sampler: str = "grid"
    count: int | None = None
    min_distance: float | None = None
    max_patches: int | None = None
    roi: RoiSpec | Box | None = None
    open_options: OpenOptions = field(default_factory=OpenOptions)
    output: OutputOptions = field(default_factory=OutputOptions)
    run: RunOptions = field(default_factory=RunOptions)

    @property
    def random(self) -> bool:
        """Whether these options make random choices (so a seed matters)."""
        caps = (self.max_patches, self.max_per_class)
        return self.sampler != "grid" or any(c is not None for c in caps)

    def selection(self) -> dict[str, Any]:
        """The options that decide which patches are written, JSON-ready, as run records
        hold them (the ROI as ``z0:z1,...`` text)."""
        out = self.to_dict()
        for key in ("open_options", "output", "run"):
            del out[key]
        out["roi"] = None if self.roi is None else self.roi.to_text()
        return out
