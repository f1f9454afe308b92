"""datatools: turn large 2D/3D image volumes into training-ready chunked arrays.

Library modules do the work; :mod:`datatools.cli` is a thin command-line layer over them.
Axis order is C-order everywhere: ``(z, y, x)``, ``(c, z, y, x)``, ``(i, c, z, y, x)``; 2D is
``(y, x)``. Boxes are half-open ``[start, stop)`` in voxels.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
