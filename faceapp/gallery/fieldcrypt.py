"""Field-level encryption of biometric data with per-person keys (crypto-shredding).

Every template's embedding, face picture and source (a file path, often naming the person)
is sealed on the client with AES-256-GCM
(:func:`faceapp.gallery.crypto.seal`: a random 96-bit nonce per value) under **its person's
data key**, with associated data naming the gallery, the table/column and the row's template
and person ids: a ciphertext copied to another row, person or gallery fails to open. This is
what protects a PostgreSQL gallery from the server's operator (the server stores ciphertext
only), and, on SQLite, sits inside the SQLCipher file.

Keys::

    KEK (OS keyring or passphrase, faceapp.gallery.keys)
     └─ wraps the key file's data key G          (key file, on the client)
         └─ wraps W_e, the field key of epoch e  (key file, "fields" entry)
             └─ wraps each person's key P        (person.key_wrapped on the server / in the file)
                 └─ seals that person's embeddings and face pictures

**Crypto-shredding** (ISO/IEC 24745 revocability): deleting a person deletes their wrapped
key and *ratchets* the field key: ``W_{e+1} = HKDF(W_e)`` (one-way), every remaining person
key is re-wrapped by ``W_{e+1}`` in the same transaction, and the key file then keeps only
``W_{e+1}``. A copy of the database taken before the deletion holds the deleted person's key
wrapped by ``W_e``, which nobody can compute from the current keys any more: their
ciphertext in old backups is unrecoverable. (A copy of the *key file* from before the
deletion would still open it: keep key-file backups apart from database backups.) Desktops
whose key file is behind derive the current key forward by themselves (the database holds the
epoch), and their key file is advanced.

Where the key file is: beside a SQLite gallery (``<db>.keys``, the one that also holds the
SQLCipher key); for a server gallery, on each client, ``$FACEAPP_KEY_DIR/server-<gallery
uuid>.keys`` (default ``~/.local/share/faceapp/keys``): the server never holds a key, nor a
wrap that a passphrase guess could open. A second desktop gets a copy of that file once.

Server-side (pgvector) search needs the vectors in clear: an encrypted gallery is searched
on the client; :func:`faceapp.gallery.server_search.server_search_available` says so.
``FACEAPP_FIELD_ENCRYPTION=off`` (or ``DatabaseConfig(field_encryption=False)``) creates a new
gallery without field encryption, for in-server search.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import event, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from faceapp.errors import GalleryError, KeyUnavailable
from faceapp.gallery.crypto import (
    KEY_BYTES,
    MAGIC,
    NONCE_BYTES,
    IntegrityError,
    random_key,
    seal,
    subkey,
    unseal,
)
from faceapp.gallery.orm import FaceTemplate, GalleryKey, Person, SchemaInfo
from faceapp.gallery.types import SealedField, embedding_from_bytes

logger = logging.getLogger(__name__)

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


def cipher_of(bind: Session | Connection | Engine) -> FieldCipher | None:
    """The field cipher of a session's (or connection's, engine's) gallery, ``None`` when its
    fields are in clear."""
    if isinstance(bind, Session):
        bind = bind.get_bind()
    engine = bind.engine if isinstance(bind, Connection) else bind
    value = engine.get_execution_options().get(FIELD_OPTION)
    return value if isinstance(value, FieldCipher) else None


def _conn(session: Session) -> Connection:
    return session.connection()


def current_epoch(session: Session, *, for_update: bool = False, share: bool = False) -> int:
    """The gallery's field-key epoch in this transaction (locked for share: an enrolment
    wraps under it while no deletion ratchets it; for update: the ratchet itself)."""
    stmt = select(GalleryKey.epoch).where(GalleryKey.id == 1)
    if for_update:
        stmt = stmt.with_for_update()
    elif share:
        stmt = stmt.with_for_update(read=True)
    value = _conn(session).execute(stmt).scalar()
    if value is None:
        raise GalleryError("the gallery's field key row is missing (corrupt?)")
    return int(value)


def new_person_key(session: Session, cipher: FieldCipher, person: Person) -> bytes:
    """Give ``person`` (flushed: it has an id) a new random key, wrapped at the current epoch."""
    epoch = current_epoch(session, share=True)
    key = random_key()
    person.key_wrapped = cipher.wrap_person_key(int(person.id), key, epoch)
    person.key_epoch = epoch
    cipher._people[(int(person.id), bytes(person.key_wrapped))] = key
    session.flush()  # the key reads below go to the connection, past the unit of work
    return key


def person_keys(session: Session, cipher: FieldCipher, person_ids: Iterable[int], *,
                create_missing: bool = False) -> dict[int, bytes]:
    """person id -> data key, for the people ``person_ids``. ``create_missing``: a person
    without a key (a row written by bulk SQL, e.g. a benchmark's) gets one now."""
    wanted = sorted({int(p) for p in person_ids})
    out: dict[int, bytes] = {}
    keyless: list[int] = []
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = _conn(session).execute(select(Person.id, Person.key_wrapped, Person.key_epoch)
                                      .where(Person.id.in_(chunk))).all()
        for pid, wrapped, epoch in rows:
            if wrapped is None or epoch is None:
                keyless.append(int(pid))
                continue
            out[int(pid)] = cipher.person_key(int(pid), bytes(wrapped), int(epoch))
    if keyless:
        if not create_missing:
            raise GalleryError(f"person {keyless[0]} has no key in a field-encrypted gallery")
        from sqlalchemy import bindparam

        epoch = current_epoch(session, share=True)
        values = []
        for pid in keyless:
            out[pid] = key = random_key()
            values.append({"pid": pid, "w": cipher.wrap_person_key(pid, key, epoch), "e": epoch})
        _conn(session).execute(update(Person).where(Person.id == bindparam("pid"))
                               .values(key_wrapped=bindparam("w"), key_epoch=bindparam("e")), values)
    missing = set(wanted) - set(out)
    if missing:
        raise GalleryError(f"no person with id {min(missing)} in the gallery")
    return out


def shred_person(session: Session, cipher: FieldCipher, person_id: int) -> None:
    """Before ``person_id`` is deleted: ratchet the field key and re-wrap every other
    person's key by the next one (same transaction); the key file advances after commit."""
    epoch = current_epoch(session, for_update=True)
    new = epoch + 1
    conn = _conn(session)
    rows = conn.execute(select(Person.id, Person.key_wrapped, Person.key_epoch)
                        .where(Person.id != person_id, Person.key_wrapped.is_not(None))).all()
    values = []
    for pid, wrapped, e in rows:
        key = cipher.person_key(int(pid), bytes(wrapped), int(e))
        values.append({"pid": int(pid), "w": cipher.wrap_person_key(int(pid), key, new), "e": new})
    if values:
        from sqlalchemy import bindparam

        conn.execute(update(Person).where(Person.id == bindparam("pid"))
                     .values(key_wrapped=bindparam("w"), key_epoch=bindparam("e")), values)
    conn.execute(update(GalleryKey).where(GalleryKey.id == 1)
                 .values(epoch=new, check_value=cipher.check_value(new)))
    cipher.forget_person(person_id)
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Person) and obj.id != person_id:
            session.expire(obj, ["key_wrapped", "key_epoch"])

    state = {"cancelled": False}

    def rolled_back(_session: Session) -> None:
        state["cancelled"] = True  # the ratchet was not committed: the key file stays

    def advanced(_session: Session) -> None:
        if state["cancelled"]:
            return
        try:
            cipher.store.save(cipher.key_id, new, cipher.field_key(new))
        except GalleryError as err:  # the next open derives it forward again
            logger.warning("could not advance the field key file: %s", err)
        cipher.forget_before(new)

    event.listen(session, "after_rollback", rolled_back, once=True)
    event.listen(session, "after_commit", advanced, once=True)


def open_template_fields(session: Session, cipher: FieldCipher, target: FaceTemplate) -> None:
    """Open a loaded template's sealed embedding and source in place (as committed values)."""
    value = target.__dict__.get("embedding")
    source = target.__dict__.get("source")
    sealed_source = isinstance(source, str) and source.startswith(TEXT_PREFIX)
    if not isinstance(value, SealedField) and not sealed_source:
        return
    pid, tid = int(target.person_id), int(target.id)
    key = person_keys(session, cipher, [pid])[pid]
    if isinstance(value, SealedField):
        raw = cipher.open(key, EMBEDDING, tid, pid, value)
        set_committed_value(target, "embedding", embedding_from_bytes(raw, int(target.dim)))
    if sealed_source:
        set_committed_value(target, "source", cipher.open_text(key, SOURCE, tid, pid, source))


@event.listens_for(FaceTemplate, "load")
def _on_load(target: FaceTemplate, context: Any) -> None:
    cipher = cipher_of(context.session)
    if cipher is not None:
        open_template_fields(context.session, cipher, target)


@event.listens_for(FaceTemplate, "refresh")
def _on_refresh(target: FaceTemplate, context: Any, attrs: Any) -> None:
    _on_load(target, context)


# ---------------------------------------------------------------------- opening
def _key_store(engine: Engine, conn: Connection, keys_config: Any, *, create: bool) -> KeyStore:
    """The key file of this gallery and the root key of its field entry."""
    from faceapp.gallery.keys import create_key_file, key_file_path, unlock

    root = engine.get_execution_options().get(ROOT_OPTION)
    if engine.dialect.name == "sqlite":
        from faceapp.gallery.database.files import sqlite_path

        path = sqlite_path(str(engine.url))
        if not root or path is None:
            raise KeyUnavailable("field encryption of a SQLite gallery needs its key file "
                                 "(an encrypted gallery)")
        return KeyStore(key_file_path(path), bytes(root))
    uid = conn.execute(select(SchemaInfo.gallery_uuid).where(SchemaInfo.id == 1)).scalar()
    base = server_key_base(str(uid or ""))
    if not key_file_path(base).exists() and not create:
        raise KeyUnavailable(
            f"this server gallery's fields are encrypted and its key file {key_file_path(base)} "
            "is not on this desktop: copy it from a desktop that uses the gallery (same path, "
            f"or set {ENV_KEY_DIR})")
    data_key = create_key_file(base, keys_config) if create else unlock(base, keys_config)
    return KeyStore(key_file_path(base), subkey(data_key, "fields-root"))


def load_cipher(engine: Engine, conn: Connection, row: Any, keys_config: Any) -> FieldCipher:
    store = _key_store(engine, conn, keys_config, create=False)
    entry = store.load()
    if entry is None or entry[0] != row.key_id:
        raise GalleryError(f"{store.path}: this key file holds no field key of this gallery "
                           f"(key {row.key_id})")
    key_id, file_epoch, w = entry
    if file_epoch > int(row.epoch):
        raise GalleryError(
            f"{store.path}: the key file is ahead of the database (epoch {file_epoch} > "
            f"{row.epoch}): the database was restored from a copy older than a deletion; its "
            "people cannot be decrypted with the current keys (restore the key file of the "
            "same time)")
    cipher = FieldCipher(key_id, file_epoch, w, store)
    cipher.verify(int(row.epoch), bytes(row.check_value))
    if file_epoch < int(row.epoch):  # another desktop deleted someone: advance our file
        with contextlib.suppress(GalleryError, OSError):
            store.save(key_id, int(row.epoch), cipher.field_key(int(row.epoch)))
        cipher.forget_before(int(row.epoch))
    return cipher


def initialise(engine: Engine, conn: Connection, keys_config: Any) -> FieldCipher:
    """Give the gallery on ``conn`` (inside the caller's write transaction, which holds the
    write lock) a new field key: key file entry first, then the ``gallery_key`` row."""
    store = _key_store(engine, conn, keys_config, create=True)
    key_id, w = str(uuid.uuid4()), random_key()
    store.save(key_id, 0, w, replace=True)
    cipher = FieldCipher(key_id, 0, w, store)
    conn.execute(insert(GalleryKey).values(id=1, key_id=key_id, epoch=0,
                                           check_value=cipher.check_value(0)))
    return cipher


def gallery_key_row(conn: Connection) -> Any:
    return conn.execute(select(GalleryKey.key_id, GalleryKey.epoch, GalleryKey.check_value)
                        .where(GalleryKey.id == 1)).first()


def is_field_encrypted(engine: Engine) -> bool:
    """Are this gallery's templates field-encrypted (its engine's cipher, else its
    ``gallery_key`` row)?"""
    if cipher_of(engine) is not None:
        return True
    from sqlalchemy import inspect

    with engine.connect() as conn:
        if "gallery_key" not in inspect(conn).get_table_names():
            return False
        return gallery_key_row(conn) is not None


def is_empty(conn: Connection) -> bool:
    return not conn.execute(select(func.count()).select_from(Person)).scalar()


def attach(engine: Engine, keys_config: Any, *, want: bool | None, read_only: bool) -> None:
    """Set the engine's field cipher after the schema is in place: load it when the gallery
    has a field key; make one for a new (empty) gallery when field encryption is wanted; else
    fields stay in clear (an older gallery: ``faceapp keys migrate`` encrypts them)."""
    with engine.connect() as conn:
        row = gallery_key_row(conn)
        if row is not None:
            engine.update_execution_options(**{FIELD_OPTION: load_cipher(engine, conn, row, keys_config)})
            return
        if read_only or not fields_wanted(want) or not is_empty(conn):
            if not is_empty(conn) and fields_wanted(want):
                logger.warning("the gallery's templates are not field-encrypted; run `faceapp keys "
                               "migrate` to encrypt them with per-person keys")
            return
        if engine.dialect.name == "sqlite" and not engine.get_execution_options().get(ROOT_OPTION):
            return  # a plaintext (legacy or in-memory) SQLite gallery: no key file to hold it
    from faceapp.gallery.database.engine import _WRITE_OPTION

    with engine.connect() as conn:
        conn = conn.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql("LOCK TABLE gallery_key IN EXCLUSIVE MODE")
            row = gallery_key_row(conn)
            if row is not None:
                cipher = load_cipher(engine, conn, row, keys_config)
            elif is_empty(conn):
                cipher = initialise(engine, conn, keys_config)
                logger.info("field-level encryption with per-person keys set up")
            else:
                return
    engine.update_execution_options(**{FIELD_OPTION: cipher})


__all__ = [
    "ENV_FIELDS",
    "ENV_KEY_DIR",
    "FieldCipher",
    "KeyStore",
    "ShreddedKey",
    "attach",
    "cipher_of",
    "key_dir",
    "ratchet",
]
