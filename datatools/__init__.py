"""datatools: turn large 2D/3D image volumes into training-ready chunked arrays.

Library modules do the work; :mod:`datatools.cli` is a thin command-line layer over them.
Axis order is C-order everywhere: ``(z, y, x)``, ``(c, z, y, x)``, ``(i, c, z, y, x)``; 2D is
``(y, x)``. Boxes are half-open ``[start, stop)`` in voxels.

Every command follows one flow: source (lazy volume) -> plan (work units) -> executor ->
sink (writer) -> ledger -> finalize. The package is laid out in floors; a module imports only
from its own floor or the floors below it, never in a circle (``tests/test_architecture.py``
checks it; ``ARCHITECTURE.md`` has one line per module):

1. ``cli``: parses options into one options object per command, calls one library function,
   prints (``__main__`` runs it).
2. ``verify``, ``info`` (check and describe outputs), ``loaders`` (feed outputs and volumes to
   training loops), ``augment`` (sample augmentation).
3. Commands: ``convert`` (volumes into OME-Zarr or HDF5, pyramids, class masks), ``patches``
   (patch datasets), ``instances`` (one crop per labelled object). Each package holds its
   ``options``, its ``plan`` and its output.
4. ``inputs``: opens a command's inputs, refusing an unfinished datatools output.
5. ``ledger`` (the one record of an output: marker, run record, done units, completion),
   ``sinks`` (chunk files, codecs, label images), ``writers`` (row writers growing along axis 0).
6. ``edges`` (boxes crossing the border), ``downsample`` (pyramid kernels and level shapes).
7. ``sources``: lazy volumes, ``read(box)`` only; they know nothing of commands or outputs.
8. ``ngff`` (OME-NGFF metadata as data, one class per version), ``stores`` (which files a path
   names).
9. Ground floor: ``errors``, ``geometry``, ``dtypes``, ``units``, ``options`` (the shared
   output and run options), ``executor``, ``progress``, ``interrupts``, ``zarr_tasks``.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
