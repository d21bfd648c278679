"""Index snapshots: the search matrix of a large SQLite gallery saved beside it, so that
opening the gallery again does not decode a million database rows.

A snapshot ``<db file>.index-<model_id>.npz`` (mode 0600, written atomically) holds the
grouped unit rows, their template and person ids, the person names and the number of
templates of other models, stamped with the gallery's ``gallery_uuid`` and ``generation``.
It is used only when both stamps equal the database's current values: any change of
people or templates bumps the generation, so a stale snapshot is never read (it is
ignored, then replaced). The services delete the snapshots after every change of templates,
so that deleted faces do not linger on disk. Only SQLite files get snapshots.

The snapshot of an encrypted gallery is sealed (AES-256-GCM, see
:class:`~faceapp.gallery.crypto.AtRest`) with a key derived from the gallery's data key and
associated data naming the gallery and model: its bytes hold no embedding in clear, and a
snapshot copied from another gallery or modified does not open (it is ignored and rebuilt).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceapp.gallery.crypto import AtRest, IntegrityError
from faceapp.gallery.database import sqlite_path
from faceapp.gallery.matching import GalleryIndex

logger = logging.getLogger(__name__)

SNAPSHOT_MIN_TEMPLATES = 20_000
"""Galleries smaller than this load from the database fast enough: no snapshot."""

SNAPSHOT_VERSION = 1
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class IndexSnapshot:
    """What a snapshot restores: the index, person names and the stale-template count."""

    index: GalleryIndex
    names: dict[int, str]
    stale: int


def snapshot_path(db_url: str, model_id: str) -> Path | None:
    """Where the snapshot of ``model_id`` for this gallery lives; ``None`` if not SQLite."""
    db = sqlite_path(db_url)
    if db is None:
        return None
    return db.with_name(f"{db.name}.index-{_SAFE.sub('_', model_id)}.npz")


def remove_snapshots(db_url: str) -> int:
    """Delete every snapshot of this gallery; returns how many were removed."""
    db = sqlite_path(db_url)
    if db is None or not db.parent.is_dir():
        return 0
    removed = 0
    for path in db.parent.glob(f"{glob_escape(db.name)}.index-*.npz"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def save_snapshot(
    path: Path,
    index: GalleryIndex,
    names: dict[int, str],
    stale: int,
    *,
    gallery_uuid: str,
    generation: int,
    cipher: AtRest = AtRest(),
) -> None:
    """Write ``index`` (grouped rows) atomically with mode 0600, sealed by ``cipher``."""
    people = index.people()
    meta = {
        "version": SNAPSHOT_VERSION,
        "model_id": index.model_id,
        "dim": index.dim,
        "gallery_uuid": gallery_uuid,
        "generation": int(generation),
        "stale": int(stale),
        "names": [[int(p), names.get(int(p), str(p))] for p in people],
    }
    buf = io.BytesIO()
    np.savez(
        buf,
        meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8),
        template_ids=index.row_template_ids(),
        person_ids=index.row_person_ids(),
        embeddings=np.asarray(index.embeddings()),
    )
    data = cipher.seal(buf.getbuffer().tobytes(), _aad(gallery_uuid, index.model_id))
    del buf
    tmp = path.with_name(path.name + ".partial")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        logger.info("saved index snapshot %s (%d templates)", path, len(index))
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        logger.warning("could not save index snapshot %s: %s", path, err)


def _aad(gallery_uuid: str, model_id: str) -> bytes:
    return f"faceapp-index-snapshot/{SNAPSHOT_VERSION}/{gallery_uuid}/{model_id}".encode()


def npz_arrays(raw: bytes, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``names`` of an ``.npz`` held in memory (the opened snapshot).

    Members stored uncompressed (as :func:`save_snapshot` writes them) become read-only
    views of ``raw`` itself: no copy and no CRC pass over the 0.5 GB of a 10⁶-row index
    (``np.load`` on a ``BytesIO`` spent 1.2 s there); :meth:`GalleryIndex.from_grouped`
    then makes the one writable copy it needs. Any other layout goes through ``np.load``.
    """
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        infos = {n: zf.getinfo(f"{n}.npy") for n in names}
    if any(i.compress_type != zipfile.ZIP_STORED for i in infos.values()):
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            return {n: data[n] for n in names}
    out: dict[str, np.ndarray] = {}
    for name, info in infos.items():
        local = raw[info.header_offset: info.header_offset + 30]  # the member's local header
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise ValueError(f"bad zip member header for {name}")
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") \
            + int.from_bytes(local[28:30], "little")
        head = io.BytesIO(raw[start: start + 65_536 + 16])
        version = np.lib.format.read_magic(head)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(head)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(head)
        if dtype.hasobject or fortran:
            raise ValueError(f"unexpected array layout for {name}")
        count = int(np.prod(shape, dtype=np.int64))
        offset = start + head.tell()
        if offset + count * dtype.itemsize > start + info.file_size:
            raise ValueError(f"{name} is truncated")
        out[name] = np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape)
    return out


def load_snapshot(
    path: Path, *, model_id: str, gallery_uuid: str, generation: int,
    cipher: AtRest = AtRest(),
) -> IndexSnapshot | None:
    """The snapshot at ``path`` if it matches this gallery, model and generation (and opens
    with ``cipher``), else ``None`` (missing, stale, foreign or unreadable: logged, never
    raised)."""
    if not path.is_file():
        return None
    try:
        raw = cipher.unseal(path.read_bytes(), _aad(gallery_uuid, model_id))
        data = npz_arrays(raw, ("meta", "template_ids", "person_ids", "embeddings"))
        del raw  # the arrays keep the buffer alive, nothing else needs it
        meta = json.loads(bytes(data["meta"]).decode("utf-8"))
        if (
            meta.get("version") != SNAPSHOT_VERSION
            or meta.get("model_id") != model_id
            or meta.get("gallery_uuid") != gallery_uuid
            or meta.get("generation") != generation
        ):
            logger.debug("index snapshot %s is stale", path)
            return None
        index = GalleryIndex.from_grouped(
            model_id, data["template_ids"], data["person_ids"], data["embeddings"]
        )
        names = {int(p): str(n) for p, n in meta["names"]}
        return IndexSnapshot(index, names, int(meta["stale"]))
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, IntegrityError) as err:
        logger.warning("ignoring unreadable index snapshot %s: %s", path, err)
        return None
