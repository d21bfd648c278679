"""The field keys of one gallery: the ratcheting field key and its key-file entry
(:class:`KeyStore`), per-person keys and the sealing of values (:class:`FieldCipher`)."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from faceapp.errors import GalleryError
from faceapp.gallery.crypto import (
    KEY_BYTES,
    MAGIC,
    NONCE_BYTES,
    IntegrityError,
    seal,
    subkey,
    unseal,
)
from faceapp.gallery.types import SealedField

ENV_FIELDS = "FACEAPP_FIELD_ENCRYPTION"
"""``on`` (default) or ``off``: whether a *new* gallery gets field-level encryption."""
ENV_KEY_DIR = "FACEAPP_KEY_DIR"
"""Folder of the client-side key files of server galleries."""
FIELD_OPTION = "faceapp_fields"
ROOT_OPTION = "faceapp_field_root"
CHECK_TEXT = b"faceapp field key check"


class ShreddedKey(IntegrityError):
    """A person key wrapped by a field key that was destroyed (a deleted person's, in a copy
    of the database from before the deletion)."""


def fields_wanted(value: bool | None) -> bool:
    if value is not None:
        return value
    text = os.environ.get(ENV_FIELDS, "on").strip().lower() or "on"
    if text not in ("on", "off"):
        raise GalleryError(f"{ENV_FIELDS}={text!r}: expected on or off")
    return text == "on"


def key_dir() -> Path:
    text = os.environ.get(ENV_KEY_DIR, "").strip()
    if text:
        return Path(text).expanduser()
    base = os.environ.get("XDG_DATA_HOME", "").strip() or str(Path.home() / ".local" / "share")
    return Path(base) / "faceapp" / "keys"


def server_key_base(gallery_uuid: str) -> Path:
    """The path whose ``.keys`` sibling is the key file of a server gallery (see keys.py)."""
    if not gallery_uuid or "/" in gallery_uuid:
        raise GalleryError(f"gallery id {gallery_uuid!r} cannot name a key file")
    folder = key_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder / f"server-{gallery_uuid}"


def ratchet(w: bytes, key_id: str) -> bytes:
    """The next field key: one-way (HKDF), so the current key never gives an older one."""
    return subkey(w, f"fields/ratchet/{key_id}")


def _ad(key_id: str, what: str) -> bytes:
    return f"faceapp-field/v1/{key_id}/{what}".encode()


# ---------------------------------------------------------------------- key file entry
class KeyStore:
    """The ``fields`` entry of a key file: ``W_e`` wrapped by ``root`` (derived from the key
    file's data key), with its epoch. Updates are serialised by a lock on the key file's
    folder and never move the epoch back."""

    def __init__(self, key_file: Path, root: bytes) -> None:
        self.path = key_file
        self._root = root

    @contextlib.contextmanager
    def _locked(self):  # type: ignore[no-untyped-def]
        # the key file is replaced by a rename, so the lock is on its folder (no lock file)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def load(self) -> tuple[str, int, bytes] | None:
        """(key id, epoch, W) or ``None`` when the file has no field key."""
        from faceapp.gallery.keys import _read_key_file

        entry = _read_key_file(self.path).get("fields")
        if not isinstance(entry, dict):
            return None
        try:
            key_id, epoch = str(entry["key_id"]), int(entry["epoch"])
            wrapped = base64.b64decode(str(entry["wrapped"]), validate=True)
        except (KeyError, TypeError, ValueError):
            raise GalleryError(f"{self.path}: malformed field key entry") from None
        try:
            w = unseal(self._root, wrapped, _ad(key_id, f"key-file/e{epoch}"))
        except IntegrityError:
            raise GalleryError(f"{self.path}: the field key does not open (modified key file?)") \
                from None
        return key_id, epoch, w

    def save(self, key_id: str, epoch: int, w: bytes, *, replace: bool = False) -> None:
        """Write ``W_epoch``; an entry of the same key at a later epoch is kept (``replace``:
        overwrite an entry of another key id, a field key never committed)."""
        from faceapp.gallery.keys import _read_key_file, _write_key_file

        with self._locked():
            doc = _read_key_file(self.path)
            old = doc.get("fields")
            if isinstance(old, dict) and not replace and str(old.get("key_id")) == key_id \
                    and int(old.get("epoch", -1)) >= epoch:
                return
            doc["fields"] = {"key_id": key_id, "epoch": epoch, "wrapped": base64.b64encode(
                seal(self._root, w, _ad(key_id, f"key-file/e{epoch}"))).decode("ascii")}
            _write_key_file(self.path, doc, exclusive=False)


# ---------------------------------------------------------------------- the cipher
class FieldCipher:
    """The field keys of one open gallery (an engine option, see :func:`cipher_of`)."""

    def __init__(self, key_id: str, epoch: int, w: bytes, store: KeyStore) -> None:
        self.key_id = key_id
        self.store = store
        self._first = epoch
        self._w: dict[int, bytes] = {epoch: w}
        self._people: dict[tuple[int, bytes], bytes] = {}
        self._aeads: dict[bytes, AESGCM] = {}

    # keys of epochs
    def field_key(self, epoch: int) -> bytes:
        """``W_epoch``, derived forward from the oldest one held; :class:`ShreddedKey` for an
        epoch before it (destroyed)."""
        if epoch in self._w:
            return self._w[epoch]
        known = max(e for e in self._w if e <= epoch) if epoch >= self._first else None
        if known is None:
            raise ShreddedKey(f"the field key of epoch {epoch} was destroyed (crypto-shredded)")
        w = self._w[known]
        for e in range(known + 1, epoch + 1):
            w = ratchet(w, self.key_id)
            self._w[e] = w
        return w

    def check_value(self, epoch: int) -> bytes:
        return seal(self.field_key(epoch), CHECK_TEXT, _ad(self.key_id, f"check/e{epoch}"))

    def verify(self, epoch: int, check: bytes) -> None:
        try:
            ok = unseal(self.field_key(epoch), check, _ad(self.key_id, f"check/e{epoch}")) == CHECK_TEXT
        except IntegrityError:
            ok = False
        if not ok:
            raise GalleryError(f"{self.store.path}: this key file does not open the gallery's "
                               "field key (a key file of another gallery, or modified)")

    def forget_before(self, epoch: int) -> None:
        """Destroy the keys of epochs before ``epoch`` (after a ratchet was committed)."""
        for e in [e for e in self._w if e < epoch]:
            del self._w[e]
        self._first = max(self._first, epoch)

    # person keys
    def wrap_person_key(self, person_id: int, key: bytes, epoch: int) -> bytes:
        return seal(self.field_key(epoch), key, _ad(self.key_id, f"person.key/p{person_id}/e{epoch}"))

    def person_key(self, person_id: int, wrapped: bytes, epoch: int) -> bytes:
        cached = self._people.get((person_id, bytes(wrapped)))
        if cached is not None:
            return cached
        key = unseal(self.field_key(epoch), bytes(wrapped),
                     _ad(self.key_id, f"person.key/p{person_id}/e{epoch}"))
        if len(key) != KEY_BYTES:
            raise IntegrityError(f"person {person_id}: malformed key")
        if len(self._people) >= _MAX_CACHED_KEYS:  # entries of older wraps pile up
            self._people.clear()
        self._people[(person_id, bytes(wrapped))] = key
        return key

    def forget_person(self, person_id: int) -> None:
        for k in [k for k in self._people if k[0] == person_id]:
            self._aeads.pop(self._people.pop(k), None)

    # values
    def seal_text(self, key: bytes, what: str, template_id: int, person_id: int, value: str) -> str:
        """A text column's value sealed like :meth:`seal` (empty text stays empty)."""
        if not value:
            return value
        blob = self.seal(key, what, template_id, person_id, value.encode("utf-8"))
        return TEXT_PREFIX + base64.b64encode(blob).decode("ascii")

    def open_text(self, key: bytes, what: str, template_id: int, person_id: int, value: str) -> str:
        if not value.startswith(TEXT_PREFIX):
            return value
        try:
            blob = base64.b64decode(value[len(TEXT_PREFIX):], validate=True)
        except ValueError:
            raise IntegrityError("malformed sealed text") from None
        return self.open(key, what, template_id, person_id, blob).decode("utf-8")

    def _aead(self, key: bytes) -> AESGCM:
        aead = self._aeads.get(key)
        if aead is None:
            if len(self._aeads) >= _MAX_CACHED_KEYS:
                self._aeads.clear()
            aead = self._aeads[key] = AESGCM(key)
        return aead

    def seal(self, key: bytes, what: str, template_id: int, person_id: int, data: bytes) -> SealedField:
        """``MAGIC | nonce | ciphertext | tag`` (:func:`faceapp.gallery.crypto.seal`'s format, a
        fresh random nonce) bound to the row's ids."""
        nonce = os.urandom(NONCE_BYTES)
        return SealedField(MAGIC + nonce + self._aead(key).encrypt(
            nonce, data, _ad(self.key_id, f"{what}/t{template_id}/p{person_id}")))

    def open(self, key: bytes, what: str, template_id: int, person_id: int, blob: bytes) -> bytes:
        """The plaintext of :meth:`seal`; :class:`IntegrityError` for another row's, person's
        or gallery's ciphertext, or a changed byte. (One AES-GCM object per person key is
        kept: building it costs more than opening a 512-byte value.)"""
        aead = self._aead(key)
        raw = bytes(blob)
        head = len(MAGIC) + NONCE_BYTES
        if not raw.startswith(MAGIC) or len(raw) < head + 16:
            raise IntegrityError("not an encrypted field")
        try:
            return aead.decrypt(raw[len(MAGIC) : head], raw[head:],
                                _ad(self.key_id, f"{what}/t{template_id}/p{person_id}"))
        except InvalidTag:
            raise IntegrityError("wrong key or modified data (authentication failed)") from None


_MAX_CACHED_KEYS = 1_000_000
"""Unwrapped person keys kept in memory (by person and wrap; a ratchet re-wraps everyone)."""

EMBEDDING = "face_template.embedding"
CROP = "face_crop.png"
SOURCE = "face_template.source"
TEXT_PREFIX = "faceapp-sealed:"
"""A sealed text column: this prefix, then the base64 of the sealed UTF-8 bytes."""
