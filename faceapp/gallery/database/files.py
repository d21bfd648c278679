"""The gallery's SQLite file on disk: its path from a URL, what it holds (looked at before it is
opened as a database), and its private modes.

A new file is created with mode 0600 (a face gallery is biometric data), its directory with
0700 when it has to be made; an existing empty file that becomes a gallery is set to 0600 too
(and so are the -wal/-shm files SQLite makes beside it).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import Engine, make_url

from faceapp.errors import GalleryError
from faceapp.gallery.keys import key_file_path

logger = logging.getLogger(__name__)

SQLITE_MAGIC = b"SQLite format 3\x00"
FileState = Literal["new", "plain", "encrypted"]


def is_sqlite(engine_or_url: Engine | str) -> bool:
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else make_url(engine_or_url)
    return url.get_backend_name() == "sqlite"


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; ``None`` for an in-memory database or another back end."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or u.database in (None, "", ":memory:"):
        return None
    if u.database.startswith("file:"):
        return None
    return Path(u.database)


def _describe(url: str) -> str:
    path = sqlite_path(url)
    return str(path) if path is not None else make_url(url).render_as_string(hide_password=True)


def classify_gallery_file(path: Path, create: bool) -> FileState:
    """Classify the file without opening it as a database; create a new file 0600.

    ``plain``: a SQLite file in clear (its header says so); ``encrypted``: a file with a
    key file beside it whose header is not plaintext SQLite (SQLCipher starts with a random
    salt); ``new``: missing (then created empty) or empty. Anything else is refused.
    """
    if path.exists():
        if path.is_dir():
            raise GalleryError(f"{path}: is a directory, not a gallery database")
        try:
            with path.open("rb") as fh:
                head = fh.read(len(SQLITE_MAGIC))
        except OSError as err:
            raise GalleryError(f"{path}: cannot read the gallery database ({err})") from err
        if not head:  # an empty file becomes a gallery: make it private first
            _make_private(path)
            return "new"
        if head == SQLITE_MAGIC:
            return "plain"
        if key_file_path(path).is_file():
            return "encrypted"
        raise GalleryError(
            f"{path}: not a SQLite database (corrupt, another kind of file, or an encrypted "
            f"gallery whose key file {key_file_path(path).name} is missing); it was left untouched"
        )
    if not create:
        raise GalleryError(f"{path}: no gallery database at this path")
    parent = path.parent
    try:
        if not parent.exists():
            parent.mkdir(parents=True, mode=0o700)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        logger.info("created gallery database %s", path)
    except FileExistsError:
        pass  # another process created it at the same moment
    except OSError as err:
        raise GalleryError(f"{path}: cannot create the gallery database ({err})") from err
    return "new"


def _make_private(path: Path) -> None:
    """Mode 0600 for a gallery file this process made or adopted, and for its -wal/-shm."""
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if p.exists() and (p.stat().st_mode & 0o077):
                os.chmod(p, 0o600)
        except OSError as err:
            logger.warning("%s: could not make the gallery file private (%s)", p, err)


def _writable(path: Path) -> bool:
    """This process can write the SQLite file and create its -wal/-shm beside it."""
    folder = path.parent if str(path.parent) else Path(".")
    return os.access(path, os.W_OK) and os.access(folder, os.W_OK | os.X_OK)
