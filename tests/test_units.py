"""Length units: spellings, ``--unit`` values and conversion to nanometres."""

from __future__ import annotations

import numpy as np
import pytest

from datatools.errors import OptionError
from datatools.units import normalize_unit, to_nanometers, unit_name


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("um", "micrometer"),
        (" µm ", "micrometer"),
        ("Microns", "micrometer"),
        ("micrometers", "micrometer"),
        ("NM", "nanometer"),
        ("Å", "angstrom"),
        ("kilometer", "kilometer"),
        ("yards", "yard"),
        ("pixel", None),
        ("ms", None),
        ("", None),
    ],
)
def test_unit_names(text: str, name: str | None) -> None:
    assert unit_name(text) == name


def test_normalize_unit_and_nanometers() -> None:
    assert (normalize_unit(None), normalize_unit("")) == (None, None)
    assert normalize_unit("um") == "micrometer"
    with pytest.raises(OptionError, match=r"^--unit pixel: not an OME-NGFF length unit"):
        normalize_unit("pixel")
    assert to_nanometers((4.0, 0.25), "micrometer") == (4000.0, 250.0)
    assert to_nanometers(np.array([2.0]).tolist(), "angstrom") == (0.2,)
    with pytest.raises(OptionError, match=r"^--unit mile: cannot express it in nanometres"):
        to_nanometers((1.0,), "mile")
