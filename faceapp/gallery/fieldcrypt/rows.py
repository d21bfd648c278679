"""Field encryption inside a unit of work: the cipher of a session, the epoch, person keys
(new, looked up, shredded with a ratchet) and the ORM hooks that open a loaded template."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import event, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from faceapp.errors import GalleryError
from faceapp.gallery.crypto import random_key
from faceapp.gallery.fieldcrypt.cipher import (
    EMBEDDING,
    FIELD_OPTION,
    SOURCE,
    TEXT_PREFIX,
    FieldCipher,
)
from faceapp.gallery.orm import FaceTemplate, GalleryKey, Person
from faceapp.gallery.types import SealedField, embedding_from_bytes

logger = logging.getLogger(__name__)


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

