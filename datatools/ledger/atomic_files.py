"""Files replaced atomically: JSON documents and Zarr attribute edits written under a fresh
temporary name and renamed into place (readers never see half a file). The temporaries a
killed writer left are cleaned by :mod:`datatools.ledger.leftovers`."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def fresh_name(path: Path, suffix: str, create: Callable[[Path], None]) -> Path:
    """A new hidden sibling of ``path``, made by ``create`` (which fails if it exists).

    Unlike ``tempfile``, which makes owner-only files (0600) and folders (0700), this leaves
    the mode to ``create`` and the umask, so outputs are shared as the user's files are.
    """
    while True:
        name = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            create(name)
        except FileExistsError:
            continue
        return name


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` via a temporary file and rename (readers never see half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = -1

    def create(name: Path) -> None:
        nonlocal fd
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)

    tmp = fresh_name(path, ".tmp", create)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def update_attributes(folder: Path, changes: Mapping[str, Any]) -> None:
    """Set top-level attributes of the Zarr group or array (v3 or v2) at ``folder``, replacing
    its attribute file atomically: several processes finishing at once never see a torn file.
    """
    folder = Path(folder)
    v3 = folder / "zarr.json"
    if v3.is_file():
        doc = json.loads(v3.read_text())
        doc["attributes"] = {**doc.get("attributes", {}), **changes}
        write_json_atomic(v3, doc)
        return
    v2 = folder / ".zattrs"
    current = json.loads(v2.read_text()) if v2.is_file() else {}
    write_json_atomic(v2, {**current, **changes})
