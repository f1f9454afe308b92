"""The loaders' options objects: round trips, flat overrides at any depth, what the patch
loader refuses, and the loaders built from an options object."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from datatools.errors import OptionError
from datatools.options import Options, OutputOptions, RunOptions
from datatools.patches import PatchOptions


@dataclass(frozen=True)
class Nested(Options):
    """Options holding a group that holds groups, and a field named like a nested one."""

    chunks: int | None = None
    patches: PatchOptions = field(default_factory=PatchOptions)


def test_nested_groups_round_trip_through_json() -> None:
    options = Nested(chunks=3, patches=PatchOptions(size=4, output=OutputOptions(codec="gzip")))
    assert Nested.from_dict(json.loads(json.dumps(options.to_dict()))) == options


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
    with pytest.raises(OptionError, match=r"^--memory-limit 0: must be > 0$"):
        Nested().with_overrides(memory_limit=0)
