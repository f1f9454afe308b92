"""The loaders' options objects: round trips, flat overrides at any depth, what the patch
loader refuses, and the loaders built from an options object."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from datatools.errors import OptionError
from datatools.executor import TaskSlice
from datatools.geometry import RoiSpec
from datatools.loaders import (
    ChunkShuffleSampler,
    LoaderOptions,
    SamplerOptions,
    SplitOptions,
    VolumePatchStream,
)
from datatools.options import Options, OutputOptions, RunOptions
from datatools.patches import PatchOptions, extract_patches
from datatools.sources import ArrayVolume, OpenOptions
from tests.helpers import arange_volume, stored


@dataclass(frozen=True)
class Nested(Options):
    """Options holding a group that holds groups, and a field named like a nested one."""

    chunks: int | None = None
    patches: PatchOptions = field(default_factory=PatchOptions)


FULL_LOADER = LoaderOptions(
    patches=PatchOptions(
        size=(4, 8, 8),
        stride=(2, 4, 4),
        edge="constant",
        fill=3.0,
        min_fraction=0.5,
        sampler="balanced",
        count=40,
        min_distance=2.5,
        roi=RoiSpec(((1, None), (None, 20), (None, None))),
        open_options=OpenOptions(level=1, series=0, allow_gaps=True),
        run=RunOptions(memory_limit=2**20),
    ),
    classes=(2, 5),
    split=SplitOptions(shuffle=False, seed=7, rank=1, world_size=3, drop_last=True),
)


@pytest.mark.parametrize(
    "options",
    [
        LoaderOptions(),
        FULL_LOADER,
        LoaderOptions(patches=PatchOptions(size=6, sampler="blue-noise", min_distance=3.0)),
        SplitOptions(),
        SplitOptions(shuffle=False, seed=3, rank=0, world_size=2, drop_last=True),
        SamplerOptions(),
        SamplerOptions(batch_size=64, batched=True, num_workers=4, split=SplitOptions(seed=9)),
        Nested(chunks=3, patches=PatchOptions(size=4, output=OutputOptions(codec="gzip"))),
    ],
)
def test_loader_options_round_trip_through_json(options: Any) -> None:
    data = json.loads(json.dumps(options.to_dict()))
    again = type(options).from_dict(data)
    assert again == options
    assert hash(again) == hash(options)
    assert pickle.loads(pickle.dumps(options)) == options  # DataLoader workers get a copy


def test_flat_overrides_reach_fields_at_any_depth() -> None:
    options = LoaderOptions().with_overrides(
        size=[4, 4],
        memory_limit=4096,
        sampler="balanced",
        count=5,
        classes=[np.int64(2), 1],
        seed=3,
        rank=1,
        world_size=2,
        open_options=OpenOptions(level=1),
    )
    assert options.patches == PatchOptions(
        size=(4, 4),
        sampler="balanced",
        count=5,
        open_options=OpenOptions(level=1),
        run=RunOptions(memory_limit=4096),
    )
    assert options.classes == (2, 1)
    assert all(type(c) is int for c in options.classes)
    assert options.split == SplitOptions(seed=3, rank=1, world_size=2)
    assert options.memory_limit == 4096
    assert options.planned() == replace(
        options.patches, per_class=True, sampler="random", count=None
    )


def test_overrides_take_own_fields_first_and_groups_with_flat_fields() -> None:
    with pytest.warns(DeprecationWarning, match="level= is deprecated: use codec_level="):
        nested = Nested().with_overrides(chunks=3, size=8, workers=2, level=5, codec="gzip")
    assert nested.chunks == 3
    assert nested.patches == PatchOptions(
        size=8,
        output=OutputOptions(codec="gzip", codec_level=5),  # chunks: the outer field
        run=RunOptions(workers=2),
    )
    given = Nested().with_overrides(patches=PatchOptions(size=4, edge="reflect"), size=6)
    assert given.patches == PatchOptions(size=6, edge="reflect")
    with pytest.raises(OptionError, match=r"^Nested: unknown option 'colour'$"):
        Nested().with_overrides(colour=1)
    with pytest.raises(OptionError, match=r"^LoaderOptions: unknown option 'batch_size'$"):
        LoaderOptions().with_overrides(batch_size=4)
    with pytest.raises(OptionError, match=r"^--memory-limit 0: must be > 0$"):
        Nested().with_overrides(memory_limit=0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"per_class": True}, r"per_class: not an option of the patch loader \(sampler="),
        ({"class_rule": "any"}, r"class_rule: not an option of the patch loader \("),
        ({"max_patches": 3}, r"max_patches: not an option of the patch loader \(count sets"),
        ({"max_per_class": 3}, r"max_per_class: not an option of the patch loader \("),
        ({"codec": "gzip"}, r"codec: not an option of the patch loader \(the loader writes"),
        ({"overwrite": True}, r"overwrite: not an option of the patch loader \("),
        ({"workers": 2}, r"workers: not an option of the patch loader \(DataLoader workers"),
        ({"task": TaskSlice(0, 2)}, r"task: not an option of the patch loader \("),
        ({"sampler": "poisson"}, r"sampler poisson: unknown sampler \(choose grid, random, "),
        ({"sampler": "balanced"}, r"sampler balanced: needs count \(patches per epoch\)$"),
        ({"sampler": "balanced", "count": 0}, r"count 0: must be > 0$"),
        ({"classes": [1]}, r"classes: only with sampler balanced$"),
        ({"seed": -2}, r"seed -2: must be >= 0$"),
        ({"rank": 1}, r"rank 1, world_size None: give both"),
        ({"rank": 3, "world_size": 3}, r"rank 3: must be in \[0, 3\) for world_size 3$"),
    ],
)
def test_loader_options_refuse_what_the_loader_cannot_do(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(OptionError, match=f"^{message}"):
        LoaderOptions().with_overrides(**overrides)
    with pytest.raises(OptionError, match=f"^{message}"):
        VolumePatchStream(ArrayVolume(arange_volume((10, 10), "uint8")), 4, **overrides)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch_size": 0}, r"batch_size 0: must be >= 1$"),
        ({"num_workers": -1}, r"num_workers -1: must be >= 0$"),
        ({"num_workers": 2}, r"num_workers 2: needs batch_size \(the DataLoader's"),
        ({"batched": True}, r"batched=True: needs batch_size"),
        ({"seed": -1}, r"seed -1: must be >= 0$"),
        ({"shuffled": False}, r"SamplerOptions: unknown option 'shuffled'$"),
    ],
)
def test_sampler_options_refuse_bad_values(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionError, match=f"^{message}"):
        ChunkShuffleSampler(np.zeros((4, 1)), **overrides)


def test_volume_patch_stream_takes_an_options_object() -> None:
    volume = ArrayVolume(arange_volume((30, 30), "uint16"))
    options = LoaderOptions(
        patches=PatchOptions(size=5, sampler="random", count=12), split=SplitOptions(seed=4)
    )
    by_object = VolumePatchStream(volume, options=options)
    by_keyword = VolumePatchStream(volume, 5, sampler="random", count=12, seed=4)
    assert by_object.options == by_keyword.options == options
    origins = [tuple(i["origin"]) for i in by_object]
    assert origins == [tuple(i["origin"]) for i in by_keyword]
    assert len(origins) == 12
    copy = pickle.loads(pickle.dumps(by_object))
    assert copy.options == options
    assert [tuple(i["origin"]) for i in copy] == origins
    changed = VolumePatchStream(volume, (7, 7), options, shuffle=False)
    assert changed.options.patches.size == (7, 7)
    assert changed.options.split == SplitOptions(shuffle=False, seed=4)
    assert next(iter(changed))["image"].shape == (7, 7)


def test_chunk_shuffle_sampler_takes_an_options_object() -> None:
    rows = np.zeros((50, 1))
    options = SamplerOptions(batch_size=4, batched=True, split=SplitOptions(seed=3))
    by_object = ChunkShuffleSampler(rows, options)
    by_keyword = ChunkShuffleSampler(rows, batch_size=4, batched=True, seed=3)
    assert by_object.options == by_keyword.options == options
    assert [b.tolist() for b in by_object] == [b.tolist() for b in by_keyword]
    assert ChunkShuffleSampler(rows, options, drop_last=True).options.split.drop_last


def test_a_grid_runs_patch_options_give_the_loader_its_patches(tmp_path: Path) -> None:
    data = arange_volume((20, 26), "uint16")
    options = PatchOptions(
        size=(4, 6),
        stride=(3, 5),
        edge="reflect",
        output=OutputOptions(chunk_rows=4, codec="gzip"),
        run=RunOptions(workers=1),
    )
    extract_patches(ArrayVolume(data), tmp_path / "p.zarr", options)
    written = zarr.open_group(tmp_path / "p.zarr", mode="r")
    loader = LoaderOptions(
        patches=replace(options, output=OutputOptions(), run=RunOptions()),
        split=SplitOptions(shuffle=False),
    )
    items = list(VolumePatchStream(ArrayVolume(data), options=loader))
    expected = {
        tuple(o): p
        for o, p in zip(stored(written, "origins"), stored(written, "patches"), strict=True)
    }
    assert {tuple(i["origin"]) for i in items} == expected.keys()
    assert all(np.array_equal(i["image"], expected[tuple(i["origin"])]) for i in items)
