"""People: look-up by name or id, add, rename, delete, the people list."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from faceapp.errors import DuplicatePerson, PersonNotFound
from faceapp.gallery import fieldcrypt, pseudonyms
from faceapp.gallery.database import bump_generation
from faceapp.gallery.orm import FaceTemplate, Person, utcnow
from faceapp.gallery.repository.rows import PersonRow, normalize_name


class PeopleQueries:
    """The people part of :class:`~faceapp.gallery.repository.GalleryRepository`."""

    session: Session
    count_templates: Callable[..., int]  # from TemplateQueries

    def find_person(self, name: str) -> Person | None:
        """The person called ``name`` (normalised), or ``None``."""
        key = normalize_name(name)
        return self.session.execute(select(Person).where(Person.name == key)).scalar_one_or_none()

    def get_person(self, name: str) -> Person:
        person = self.find_person(name)
        if person is None:
            raise PersonNotFound(f"no person named {normalize_name(name)!r} in the gallery")
        return person

    def get_person_by_id(self, person_id: int) -> Person:
        person = self.session.get(Person, person_id)
        if person is None:
            raise PersonNotFound(f"no person with id {person_id} in the gallery")
        return person

    def add_person(self, name: str) -> Person:
        key = normalize_name(name)
        if self.find_person(key) is not None:
            raise DuplicatePerson(f"a person named {key!r} already exists")
        person = Person(name=key)
        self.session.add(person)
        self._flush_unique(key)
        cipher = fieldcrypt.cipher_of(self.session)
        if cipher is not None:  # the person's own data key (crypto-shredding)
            fieldcrypt.new_person_key(self.session, cipher, person)
        bump_generation(self.session)
        return person

    def _flush_unique(self, key: str) -> None:
        """Flush; a unique-name violation (another process won a race) is DuplicatePerson.

        The check above reads first for a clear message, but only the database's unique
        constraint is race-free: two desktops enrolling the same name on a shared server
        both pass the read, and the second INSERT fails here. The transaction is then
        unusable and is rolled back by the caller's unit of work.
        """
        try:
            self.session.flush()
        except IntegrityError as err:
            text = str(err.orig).lower() if err.orig is not None else str(err).lower()
            if "unique" in text or "duplicate" in text:
                raise DuplicatePerson(f"a person named {key!r} already exists") from err
            raise

    def rename_person(self, old: str, new: str) -> Person:
        person = self.get_person(old)
        key = normalize_name(new)
        if key == person.name:
            return person
        other = self.find_person(key)
        if other is not None and other.id != person.id:
            raise DuplicatePerson(f"a person named {key!r} already exists")
        person.name = key
        person.updated = utcnow()
        self._flush_unique(key)
        bump_generation(self.session)
        return person

    def delete_person(self, name: str) -> tuple[int, int]:
        """Delete a person with their templates and crops (database cascade). In a
        field-encrypted gallery their key is destroyed with them and the gallery's field key
        ratchets (:func:`~faceapp.gallery.fieldcrypt.shred_person`): copies of their
        ciphertext in older copies of the database can no longer be decrypted.

        Their pseudonym goes with the row: events and audit entries that name them by it
        are then unlinked (the event of this deletion, logged in the same unit of work, still
        gets it).

        Returns (person id, number of templates deleted).
        """
        person = self.get_person(name)
        n = self.count_templates(person_id=person.id)
        pid = person.id
        pseudonyms.remember_deleted(self.session, person.name, person.pseudonym)
        cipher = fieldcrypt.cipher_of(self.session)
        if cipher is not None:
            fieldcrypt.shred_person(self.session, cipher, pid)
        self.session.execute(delete(Person).where(Person.id == pid))
        self.session.expunge(person)
        bump_generation(self.session)
        return pid, n

    def people(self) -> list[PersonRow]:
        """All people sorted by name, with their template count and first template id."""
        counts = (
            select(
                FaceTemplate.person_id.label("pid"),
                func.count(FaceTemplate.id).label("n"),
                func.min(FaceTemplate.id).label("first"),
            )
            .group_by(FaceTemplate.person_id)
            .subquery()
        )
        stmt = (
            select(Person.id, Person.name, Person.created, Person.updated, counts.c.n,
                   counts.c.first)
            .outerjoin(counts, counts.c.pid == Person.id)
            .order_by(Person.name)
        )
        return [
            PersonRow(int(r[0]), r[1], r[2], r[3], int(r[4] or 0),
                      None if r[5] is None else int(r[5]))
            for r in self.session.execute(stmt)
        ]

    def person_names(self, ids: Iterable[int] | None = None) -> dict[int, str]:
        """person id -> name (of everyone, or of the people ``ids`` only)."""
        stmt = select(Person.id, Person.name)
        if ids is not None:
            wanted = sorted({int(i) for i in ids})
            if not wanted:
                return {}
            stmt = stmt.where(Person.id.in_(wanted))
        return {int(i): n for i, n in self.session.execute(stmt)}

    def count_other_model_templates(self, model_id: str) -> int:
        """Templates made by another model than ``model_id`` (stale until reembedded)."""
        return int(self.session.execute(
            select(func.count(FaceTemplate.id)).where(FaceTemplate.model_id != model_id)
        ).scalar() or 0)
