"""The settings of the loaders as frozen options objects, like the commands' (see
:mod:`datatools.options`): built once, compared by value, pickled into DataLoader workers, with
``to_dict`` / ``from_dict`` round trips and flat keyword overrides::

    VolumePatchStream("raw.zarr", 64, sampler="random", count=1000, seed=0, memory_limit=2**28)
    ChunkShuffleSampler(dataset, batch_size=64, num_workers=4, seed=0)

- :class:`SplitOptions`: how an epoch is ordered and shared between DDP ranks (``shuffle``,
  ``seed``, ``rank``, ``world_size``, ``drop_last``), the same words with the same meaning for
  both loaders.
- :class:`LoaderOptions`: :class:`~datatools.loaders.VolumePatchStream` and
  :class:`~datatools.loaders.VolumePatches`.
- :class:`SamplerOptions`: :class:`~datatools.loaders.ChunkShuffleSampler`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from datatools.errors import OptionError
from datatools.loaders.splits import check_seed, resolve_ranks
from datatools.options import Options, OutputOptions
from datatools.patches.options import PatchOptions

SAMPLERS = ("grid", "random", "blue-noise", "balanced")
"""The samplers of the patch loader: those of ``datatools patches`` and ``balanced``."""
_NOT_LOADER: tuple[tuple[str | None, tuple[str, ...], str], ...] = (
    (None, ("per_class", "class_rule"), "sampler='balanced' draws patches class by class"),
    (None, ("max_per_class", "max_patches"), "count sets the patches per epoch"),
    ("output", tuple(f.name for f in fields(OutputOptions)), "the loader writes nothing"),
    ("run", ("workers", "task"), "DataLoader workers and DDP ranks share the work"),
)
"""Fields of :class:`PatchOptions` (or of its group) the loader does not take, and what it
does instead."""


@dataclass(frozen=True)
class SplitOptions(Options):
    """How each epoch is ordered and split between DDP ranks.

    Attributes:
        shuffle: a new order every epoch (seeded by ``(seed, epoch)``); ``False`` keeps the
            stored (or planned) order.
        seed: seed of every random choice (an int >= 0).
        rank, world_size: this process's DDP rank and the number of ranks; ``None`` (both):
            from an initialised ``torch.distributed`` group when the loader is made, else one
            process.
        drop_last: every rank gets ``n // world_size`` items (equal steps for DDP).

    Raises:
        OptionError: a negative seed; only one of ``rank`` and ``world_size``, ``world_size <
            1`` or ``rank`` outside ``[0, world_size)``.
    """

    shuffle: bool = True
    seed: int = 0
    rank: int | None = None
    world_size: int | None = None
    drop_last: bool = False

    def __post_init__(self) -> None:
        check_seed(self.seed)
        if self.rank is not None or self.world_size is not None:
            resolve_ranks(self.rank, self.world_size)


@dataclass(frozen=True)
class LoaderOptions(Options):
    """Every option of :class:`~datatools.loaders.VolumePatchStream` (and
    :class:`~datatools.loaders.VolumePatches`); their docstring says what each one does.

    The loader plans patches with the code of ``datatools patches``, so what decides where
    patches are is a :class:`~datatools.patches.PatchOptions`, ``patches``, with the same
    meaning and checks as for the command: ``size``, ``stride``, ``edge``, ``fill``,
    ``min_fraction``, ``sampler``, ``count`` (per epoch), ``min_distance``, ``roi``,
    ``open_options`` and ``run.memory_limit``. Kept whole rather than copied flat, those
    settings are defined once, with the command's checks and spelling (a grid run's
    ``PatchOptions``, less its ``output`` and ``run``, give the loader that run's patches),
    and ``sampler`` and ``count`` live in one place, ``balanced`` being the one sampler only
    the loader has. The fields of ``patches`` for what a command writes (``output``,
    ``per_class``, ``class_rule``, ``max_per_class``, ``max_patches``) or how it runs
    (``run.workers``, ``run.task``) must stay unset, so that no setting is taken and then
    ignored: the loader writes nothing, and DataLoader workers and DDP ranks share its work.

    Attributes:
        patches: where patches are (above).
        classes: the label values ``balanced`` draws from; ``None``: every value present.
        split: epoch order and DDP ranks (:class:`SplitOptions`).

    Raises:
        OptionError: an unknown sampler, ``count`` missing or not > 0 for ``balanced``,
            ``classes`` without ``balanced``, or a field of ``patches`` the loader does not
            take.
    """

    patches: PatchOptions = field(default_factory=PatchOptions)
    classes: tuple[int, ...] | None = None
    split: SplitOptions = field(default_factory=SplitOptions)

    def __post_init__(self) -> None:
        patches, defaults = self.patches, PatchOptions()
        for group, names, hint in _NOT_LOADER:
            given = patches if group is None else getattr(patches, group)
            default = defaults if group is None else getattr(defaults, group)
            for name in names:
                if getattr(given, name) != getattr(default, name):
                    raise OptionError(f"{name}: not an option of the patch loader ({hint})")
        sampler, count = patches.sampler, patches.count
        if sampler not in SAMPLERS:
            raise OptionError(f"sampler {sampler}: unknown sampler (choose {', '.join(SAMPLERS)})")
        if sampler == "balanced":
            if count is None:
                raise OptionError("sampler balanced: needs count (patches per epoch)")
            if count <= 0:
                raise OptionError(f"count {count}: must be > 0")
        elif self.classes is not None:
            raise OptionError("classes: only with sampler balanced")
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))

    @property
    def balanced(self) -> bool:
        """Whether the sampler is ``balanced``."""
        return self.patches.sampler == "balanced"

    @property
    def memory_limit(self) -> int | None:
        """Bytes per process for planning tiles and slabs; ``None``: the default."""
        return self.patches.run.memory_limit

    def planned(self) -> PatchOptions:
        """The options the plan code of ``datatools patches`` is given: ``balanced`` plans
        ``random`` centres class by class (``count`` is set per epoch from the draws)."""
        if not self.balanced:
            return self.patches
        return replace(self.patches, per_class=True, sampler="random", count=None)


@dataclass(frozen=True)
class SamplerOptions(Options):
    """Every option of :class:`~datatools.loaders.ChunkShuffleSampler`; its docstring says
    what each one does.

    Attributes:
        batch_size: the DataLoader's batch size; needed with ``batched`` or
            ``num_workers > 1``.
        batched: yield arrays of ``batch_size`` rows.
        num_workers: the DataLoader's ``num_workers``.
        split: epoch order and DDP ranks (:class:`SplitOptions`); with ``batched`` and
            ``drop_last`` a last partial batch is dropped too.

    Raises:
        OptionError: a batch size < 1, a negative worker count, or ``batch_size`` missing where
            it is needed.
    """

    batch_size: int | None = None
    batched: bool = False
    num_workers: int = 0
    split: SplitOptions = field(default_factory=SplitOptions)

    def __post_init__(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise OptionError(f"batch_size {self.batch_size}: must be >= 1")
        if self.num_workers < 0:
            raise OptionError(f"num_workers {self.num_workers}: must be >= 0")
        if self.batch_size is None and (self.batched or self.num_workers > 1):
            why = "batched=True" if self.batched else f"num_workers {self.num_workers}"
            raise OptionError(
                f"{why}: needs batch_size (the DataLoader's, so each worker's batches come "
                "from its own chunks)"
            )
