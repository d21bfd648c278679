"""Column types of the gallery: an embedding stored as little-endian float32 bytes.

The bytes are exactly ``np.asarray(v, "<f4").tobytes()``: 4·D bytes for a (D,) vector, no
header, so a round trip is byte-for-byte and any backend's binary column can hold it
(SQLite ``BLOB``, PostgreSQL ``bytea``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy.engine import Dialect
from sqlalchemy.types import LargeBinary, TypeDecorator

MAX_EMBEDDING_DIM = 8192
"""Sanity bound on embedding sizes (real encoders use 64..1024)."""

EMBEDDING_DTYPE = np.dtype("<f4")


def embedding_to_bytes(vector: np.ndarray, dim: int | None = None) -> bytes:
    """(D,) float-like -> 4·D little-endian float32 bytes.

    Raises ``ValueError`` when the array is not 1-D, not finite, empty, larger than
    :data:`MAX_EMBEDDING_DIM`, or (when ``dim`` is given) not of length ``dim``.
    """
    arr = np.asarray(vector)
    if arr.ndim != 1:
        raise ValueError(f"an embedding must be a 1-D vector, got shape {arr.shape}")
    if not 0 < arr.shape[0] <= MAX_EMBEDDING_DIM:
        raise ValueError(f"embedding length {arr.shape[0]} outside 1..{MAX_EMBEDDING_DIM}")
    if dim is not None and arr.shape[0] != dim:
        raise ValueError(f"embedding has {arr.shape[0]} values, expected {dim}")
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"an embedding must be numeric, got dtype {arr.dtype}")
    out = arr.astype(EMBEDDING_DTYPE, copy=False)
    if not np.all(np.isfinite(out)):
        raise ValueError("an embedding must be finite (no NaN/inf)")
    return out.tobytes()


def embedding_from_bytes(data: bytes | memoryview, dim: int | None = None) -> np.ndarray:
    """4·D bytes -> (D,) float32 (a fresh, writable array)."""
    raw = bytes(data)
    if len(raw) == 0 or len(raw) % EMBEDDING_DTYPE.itemsize:
        raise ValueError(f"stored embedding has {len(raw)} bytes, not a multiple of 4")
    arr = np.frombuffer(raw, dtype=EMBEDDING_DTYPE).astype(np.float32)
    if dim is not None and arr.shape[0] != dim:
        raise ValueError(f"stored embedding has {arr.shape[0]} values, expected {dim}")
    return arr


class SealedField(bytes):
    """Ciphertext of a field (field-level encryption, :mod:`faceapp.gallery.fieldcrypt`):
    stored and read as it is; the repository seals and opens it with the row's ids."""


def _is_sealed(raw: bytes) -> bool:
    from faceapp.gallery.crypto import MAGIC

    # a sealed value is MAGIC | nonce | ciphertext | tag: 4·D + 43 bytes, never a multiple of 4
    return len(raw) % EMBEDDING_DTYPE.itemsize != 0 and raw.startswith(MAGIC)


class EmbeddingType(TypeDecorator[np.ndarray]):
    """A (D,) float32 vector in a binary column.

    ``dim=None`` accepts any length up to :data:`MAX_EMBEDDING_DIM` (templates of several
    models share the table; :class:`~faceapp.gallery.orm.FaceTemplate` checks each vector
    against its own ``dim`` column); ``dim=D`` fixes the length.
    """

    impl = LargeBinary
    cache_ok = True

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def process_bind_param(self, value: Any, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        if isinstance(value, SealedField):
            return bytes(value)
        if isinstance(value, bytes | bytearray | memoryview):
            # already encoded (bulk inserts): check the size only
            return embedding_from_bytes(value, self.dim).tobytes()
        return embedding_to_bytes(value, self.dim)

    def process_result_value(self, value: Any, dialect: Dialect) -> np.ndarray | None:
        if value is None:
            return None
        raw = bytes(value)
        if _is_sealed(raw):
            return SealedField(raw)  # type: ignore[return-value]  # opened by the repository
        return embedding_from_bytes(raw, self.dim)

    def compare_values(self, x: Any, y: Any) -> bool:
        # numpy arrays do not compare to a single bool with ==; the ORM needs one.
        if x is None or y is None:
            return x is y
        if isinstance(x, bytes) or isinstance(y, bytes):  # a sealed value
            return isinstance(x, bytes) and isinstance(y, bytes) and x == y
        return bool(np.array_equal(np.asarray(x), np.asarray(y)))
