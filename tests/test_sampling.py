"""Samplers: grid positions, keyed random choice, blue noise, window counts, classes, tiles."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from datatools.errors import OptionError
from datatools.geometry import Box
from datatools.patches.choose import Region, Selection, check_selection, choose_origins
from datatools.patches.options import PatchOptions
from datatools.patches.sampling import (
    SamplingWarning,
    SmallestKeys,
    aligned_tiles,
    axis_positions,
    centre_box,
    label_classes,
    mix_keys,
    poisson_disk,
    random_points,
    slab_extent,
    window_counts,
)
from datatools.sources import ArrayVolume


@pytest.mark.parametrize(
    ("edge", "expected"),
    [
        ("symmetric", [2, 6, 10]),
        ("reflect", [2, 6, 10]),
        ("constant", [2, 6, 10]),
        ("shift", [2, 6, 8]),
        ("drop", [2, 6]),
    ],
)
def test_axis_positions_per_edge(edge: str, expected: list[int]) -> None:
    np.testing.assert_array_equal(axis_positions(2, 13, 5, 4, edge), expected)


def test_axis_positions_shift_removes_duplicates_and_refuses_too_big() -> None:
    np.testing.assert_array_equal(axis_positions(0, 10, 4, 2, "shift"), [0, 2, 4, 6])
    with pytest.raises(OptionError, match=r"^--edge shift: a box of 12 voxels does not fit"):
        axis_positions(0, 10, 12, 4, "shift")


def test_grid_at_stride_size_covers_every_voxel_once() -> None:
    bounds = Box((3, 1), (20, 14))
    size = (4, 5)
    origins = choose_origins(Region(bounds, size, size, "symmetric"), Selection())[None]
    cover = np.zeros((30, 30), dtype=int)
    for z, y in origins:
        cover[z : z + 4, y : y + 5] += 1
    np.testing.assert_array_equal(cover[bounds.slices()], 1)
    assert origins.min(axis=0).tolist() == [3, 1]


def test_centre_box() -> None:
    bounds = Box((0, 10), (20, 30))
    assert centre_box(bounds, (4, 5), "reflect") == bounds
    assert centre_box(bounds, (4, 5), "drop") == Box((2, 12), (19, 28))
    assert centre_box(bounds, (21, 5), "shift") is None


def test_mix_keys_deterministic_and_seeded() -> None:
    ids = np.arange(1000)
    a, b, c = mix_keys(ids, 7), mix_keys(ids, 7), mix_keys(ids, 8)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint64
    assert len(np.unique(a)) == 1000
    assert np.mean(a == c) < 0.01


def test_smallest_keys_do_not_depend_on_batches(rng: np.random.Generator) -> None:
    keys = rng.integers(0, 50, size=400).astype(np.uint64)
    values = np.arange(400).reshape(-1, 1)
    expected = values[np.lexsort((values[:, 0], keys))][:30]
    for cuts in ([400], [1, 399], [37, 100, 263]):
        kept = SmallestKeys(30, 1)
        start = 0
        for n in cuts:
            kept.add(keys[start : start + n], values[start : start + n])
            start += n
        np.testing.assert_array_equal(kept.result(), expected)
        assert kept.seen == 400


def test_random_points_distinct_inside_and_seeded() -> None:
    box = Box((2, -3), (7, 4))
    a = random_points(box, 20, np.random.default_rng(1))
    b = random_points(box, 20, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert len({tuple(p) for p in a}) == 20
    assert (a >= box.start).all()
    assert (a < box.stop).all()
    assert len(random_points(box, 100, np.random.default_rng(1))) == box.size


def test_poisson_disk_known_answer_and_limit() -> None:
    line = np.array([[0], [1], [2], [3], [4], [5]])
    np.testing.assert_array_equal(poisson_disk(line, 2), [0, 2, 4])
    np.testing.assert_array_equal(poisson_disk(line[::-1], 2), [0, 2, 4])
    np.testing.assert_array_equal(poisson_disk(line, 2, limit=2), [0, 2])


def test_poisson_disk_spacing_and_maximality(rng: np.random.Generator) -> None:
    points = rng.integers(0, 120, size=(5000, 2))
    kept = poisson_disk(points, 9.5)
    chosen = points[kept].astype(float)
    dist = np.sqrt(((chosen[:, None] - chosen[None]) ** 2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    assert dist.min() >= 9.5
    rest = np.delete(points, kept, axis=0).astype(float)
    near = np.sqrt(((rest[:, None] - chosen[None]) ** 2).sum(-1)).min(axis=1)
    assert (near < 9.5).all()


def test_window_counts_matches_brute_force(rng: np.random.Generator) -> None:
    binary = rng.random((6, 7, 9)) < 0.3
    size = (2, 3, 4)
    got = window_counts(binary, size)
    assert got.shape == (5, 5, 6)
    for z, y, x in itertools.product(range(5), range(5), range(6)):
        assert got[z, y, x] == binary[z : z + 2, y : y + 3, x : x + 4].sum()


def test_label_classes_rules() -> None:
    labels = np.array(
        [
            [1, 1, 2, 2],
            [1, 3, 2, 2],
            [0, 0, 5, 5],
            [0, 0, 5, 1],
        ]
    )
    starts = np.array([[0, 0], [0, 2], [2, 0], [2, 2]])

    def rule(name: str) -> dict[int, list[int]]:
        return {c: rows.tolist() for c, rows in label_classes(labels, starts, (2, 2), name)}

    assert rule("centre") == {0: [2], 1: [3], 2: [1], 3: [0]}
    assert rule("majority") == {0: [2], 1: [0], 2: [1], 5: [3]}
    assert rule("any") == {0: [2], 1: [0, 3], 2: [1], 3: [0], 5: [3]}


def test_slab_extent_whole_chunks_last_axes_first() -> None:
    extent = slab_extent((32, 2048, 2048), (1, 64, 64), (64, 64, 64), 1, 64 * 2**20)
    assert extent == (64, 896, 2048)
    assert 32 * (896 + 63) * (2048 + 63) <= 64 * 2**20
    assert slab_extent((10, 100, 100), (1, 8, 8), None, 1, 10**9) == (10, 100, 100)
    assert slab_extent((10, 100, 100), (1, 8, 8), (4, 16, 16), 2, 1) == (4, 16, 16)


def test_aligned_tiles_cover_once() -> None:
    space = Box((-3, 5), (9, 17))
    tiles = list(aligned_tiles(space, (4, 8)))
    cover = np.zeros((20, 30), dtype=int)
    for t in tiles:
        cover[t.shift((3, 0)).slices()] += 1
        assert all(a // e == (b - 1) // e for a, b, e in zip(t.start, t.stop, (4, 8), strict=True))
    np.testing.assert_array_equal(cover[space.shift((3, 0)).slices()], 1)
    assert cover.sum() == space.size
    merged = list(aligned_tiles(space, (4, 8), low=(0, 5)))
    assert [t.start[0] for t in merged][::3] == [-3, 4, 8]


def test_choose_origins_mask_fraction_counts() -> None:
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[0:4, 0:4] = 1
    mask[4:6, 4:8] = 1
    vol = ArrayVolume(mask)
    bounds = Box((0, 0), (8, 8))

    def grid(fraction: float) -> list[list[int]]:
        sel = Selection(min_fraction=fraction)
        found = choose_origins(Region(bounds, (4, 4), (4, 4), "symmetric"), sel, mask=vol)
        return sorted(found.get(None, np.zeros((0, 2), int)).tolist())

    assert grid(0.0) == [[0, 0], [4, 4]]
    assert grid(0.5) == [[0, 0], [4, 4]]
    assert grid(0.75) == [[0, 0]]


def test_choose_origins_random_on_mask_is_tile_independent() -> None:
    mask = np.zeros((6, 120, 150), dtype=bool)  # 66 planning bytes a voxel: 7 MB, >= 7 tiles
    mask[1:5, 5:90, 10:145] = True
    labels = (np.arange(mask.size).reshape(mask.shape) % 3).astype(np.uint8)
    sel = Selection(sampler="random", count=25, per_class=True)
    bounds = Box.from_shape(mask.shape)
    results = [
        choose_origins(
            Region(bounds, (1, 8, 8), (1, 8, 8), "reflect"),
            sel,
            labels=ArrayVolume(labels),
            mask=ArrayVolume(mask),
            seed=11,
            memory_limit=limit,
        )
        for limit in (2**30, 2**21)
    ]
    assert set(results[0]) == {0, 1, 2}
    for cls, origins in results[0].items():
        np.testing.assert_array_equal(
            np.unique(origins, axis=0), np.unique(results[1][cls], axis=0)
        )
        centres = origins + np.array([0, 4, 4])
        assert len(origins) == 25
        assert mask[tuple(centres.T)].all()
        assert (labels[tuple(centres.T)] == cls).all()


def test_choose_origins_warns_with_number_obtained() -> None:
    sel = Selection(sampler="random", count=50)
    with pytest.warns(
        SamplingWarning,
        match=r"^--sampler random: only 12 candidate positions, fewer than the 50 asked; "
        r"wrote 12$",
    ):
        found = choose_origins(
            Region(Box((0, 0), (3, 4)), (2, 2), (2, 2), "symmetric"), sel, seed=1
        )
    assert len(found[None]) == 12


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sampler": "poisson"}, "--sampler poisson: unknown sampler (choose grid, random, "),
        ({"sampler": "random"}, "--sampler random: needs --count N"),
        ({"sampler": "blue-noise"}, "--sampler blue-noise: needs --min-distance D"),
        ({"min_distance": 3.0}, "--min-distance: only with --sampler blue-noise"),
        ({"sampler": "blue-noise", "min_distance": 0.0}, "--min-distance 0.0: must be > 0"),
        ({"count": 5}, "--count: only with --sampler random or blue-noise"),
        ({"sampler": "random", "count": 0}, "--count 0: must be > 0"),
        ({"max_patches": -1}, "--max-patches -1: must be > 0"),
        ({"sampler": "random", "count": 3, "stride": 2}, "--stride: only with"),
        ({"min_fraction": 1.5}, "--min-fraction 1.5: must be between 0 and 1"),
        ({"per_class": True}, "--per-class: needs --labels"),
        ({"max_per_class": 3}, "--max-per-class: only with --per-class"),
        ({"class_rule": "mode"}, "--class-rule mode: unknown rule"),
        ({"class_rule": "any"}, "--class-rule any: only with --per-class"),
        ({"min_fraction": 0.5}, "--min-fraction 0.5: needs --mask (or --labels"),
        (
            {"sampler": "random", "count": 2, "per_class": True, "has_labels": True,
             "class_rule": "any"},
            "--class-rule any: only with --sampler grid",
        ),
    ],
)  # fmt: skip
def test_check_selection_errors(kwargs: dict[str, Any], message: str) -> None:
    has = {k: bool(kwargs.pop(k)) for k in ("has_labels", "has_mask") if k in kwargs}
    with pytest.raises(OptionError) as info:
        check_selection(PatchOptions(**kwargs), **has)
    assert str(info.value).startswith(message)
