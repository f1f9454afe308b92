"""Physical length units: the names OME-NGFF allows, the spellings users write, and conversions.

Every module that reads or writes a unit (sources, convert, verify, the OME-NGFF metadata) takes
its names from here, so ``um`` read from an HDF5 attribute and ``--unit um`` both become
``micrometer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

from datatools.errors import OptionError

SPACE_UNITS = (
    "angstrom", "attometer", "centimeter", "decimeter", "exameter", "femtometer", "foot",
    "gigameter", "hectometer", "inch", "kilometer", "megameter", "meter", "micrometer", "mile",
    "millimeter", "nanometer", "parsec", "petameter", "picometer", "terameter", "yard",
    "yoctometer", "yottameter", "zeptometer", "zettameter",
)  # fmt: skip
"""Length units OME-NGFF allows for space axes (UDUNITS-2 names)."""

UNIT_ALIASES = MappingProxyType({
    "um": "micrometer", "µm": "micrometer", "μm": "micrometer", "micron": "micrometer",
    "microns": "micrometer", "nm": "nanometer", "mm": "millimeter", "cm": "centimeter",
    "m": "meter", "pm": "picometer", "a": "angstrom", "å": "angstrom",
})  # fmt: skip
"""Short spellings of length units, lower case, mapped to their OME-NGFF names."""

METERS = MappingProxyType({
    "angstrom": 1e-10, "picometer": 1e-12, "nanometer": 1e-9, "micrometer": 1e-6,
    "millimeter": 1e-3, "centimeter": 1e-2, "decimeter": 1e-1, "meter": 1.0, "kilometer": 1e3,
})  # fmt: skip
"""Metres per unit for the length units datatools converts between."""


def unit_name(text: str) -> str | None:
    """The OME-NGFF name of the length unit spelled ``text``, or ``None`` when it is not one.

    Case and surrounding blanks are ignored; aliases (``um``, ``nm``, ``µm``, ``micron``) and
    plurals of the names (``micrometers``) are accepted.
    """
    name = text.strip().lower()
    name = UNIT_ALIASES.get(name, name)
    if name not in SPACE_UNITS and name.endswith("s"):
        name = name[:-1]
    return name if name in SPACE_UNITS else None


def normalize_unit(unit: str | None) -> str | None:
    """An OME-NGFF length unit name for the ``--unit`` value ``unit`` (``None`` or empty: none).

    Raises:
        OptionError: not a length unit OME-NGFF knows.
    """
    if unit is None or unit == "":
        return None
    name = unit_name(unit)
    if name is None:
        raise OptionError(
            f"--unit {unit}: not an OME-NGFF length unit (e.g. micrometer, nanometer, um, nm)"
        )
    return name


def to_nanometers(values: Sequence[float], unit: str) -> tuple[float, ...]:
    """``values`` in ``unit`` expressed in nanometres.

    Raises:
        OptionError: ``unit`` is not a length unit in :data:`METERS`.
    """
    if unit not in METERS:
        raise OptionError(f"--unit {unit}: cannot express it in nanometres")
    factor = METERS[unit] / METERS["nanometer"]
    # 12 significant digits: 4 micrometres are 4000 nm, not 3999.9999999999995 (1e-6 / 1e-9)
    return tuple(float(f"{float(v) * factor:.12g}") for v in values)
