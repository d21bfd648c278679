"""Files a service writes for the user: created 0600, atomically (exports, receipts)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from faceapp.errors import GalleryError


def write_private(path: Path, data: bytes, what: str = "the export") -> None:
    """Write ``data`` to ``path`` atomically with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise GalleryError(f"{path}: cannot write {what} ({err})") from err
