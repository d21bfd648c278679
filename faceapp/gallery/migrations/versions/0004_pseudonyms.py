"""Pseudonyms: the history names people by a random token, never by name (issue 14).

Revision ID: 0004
Revises: 0003

Adds ``person.pseudonym`` (``p:`` + 16 random hex digits, unique), drawn here for every
existing person, and rewrites the ``event`` history (not hash-chained) so that it names no
one: ``event.person`` of a living person becomes their pseudonym; a name that is no longer any
person's (deleted before this revision, or a refused enrolment) becomes a fresh pseudonym of its
own that nothing maps back (its events still group together, shown as ``deleted person``); and
each such name is replaced by the same pseudonym wherever it appears in an event's detail.

The audit log is append-only and hash-chained: its entries written before this revision keep
the name they were written with as ``subject`` (rewriting them would break the chain and the
head hash kept elsewhere). SECURITY.md says so; new entries carry pseudonyms only.
"""

import json
import re
import secrets

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _token() -> str:
    return "p:" + secrets.token_hex(8)


def _scrubber(names: dict[str, str]):  # type: ignore[no-untyped-def]
    """A function replacing, in a detail, each of ``names`` (case-insensitive, as written or
    JSON-escaped, not inside a longer word) by its token: one regex for all names."""
    forms: dict[str, str] = {}
    for name, token in names.items():
        for form in (name, json.dumps(name)[1:-1]):
            forms.setdefault(form.lower(), token)
    if not forms:
        return lambda detail: detail
    alternatives = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    pattern = re.compile(rf"(?<![^\W_])(?:{alternatives})(?![^\W_])", re.IGNORECASE)
    return lambda detail: pattern.sub(lambda m: forms.get(m.group(0).lower()) or _token(), detail)


def upgrade() -> None:
    with op.batch_alter_table("person") as batch:
        batch.add_column(sa.Column("pseudonym", sa.String(40), nullable=True))
    conn = op.get_bind()
    person = sa.table("person", sa.column("id", sa.Integer), sa.column("name", sa.String),
                      sa.column("pseudonym", sa.String))
    event = sa.table("event", sa.column("id", sa.Integer), sa.column("person", sa.String),
                     sa.column("detail", sa.Text))
    tokens: dict[str, str] = {}
    for pid, name in conn.execute(sa.select(person.c.id, person.c.name)).all():
        tokens[name] = _token()
        conn.execute(person.update().where(person.c.id == pid).values(pseudonym=tokens[name]))
    with op.batch_alter_table("person") as batch:
        batch.alter_column("pseudonym", existing_type=sa.String(40), nullable=False)
        batch.create_index("ix_person_pseudonym", ["pseudonym"], unique=True)
    named = conn.execute(sa.select(event.c.person).where(event.c.person.is_not(None))
                         .distinct()).scalars().all()
    for name in named:  # former people and refused names: a token of their own, unmapped
        tokens.setdefault(name, _token())
    rows = conn.execute(sa.select(event.c.id, event.c.person, event.c.detail)).all()
    scrub = _scrubber({n: t for n, t in tokens.items() if n})
    for eid, name, detail in rows:
        new_detail = scrub(detail) if detail else detail
        new_person = tokens.get(name) if name else None
        if new_person != name or new_detail != detail:
            conn.execute(event.update().where(event.c.id == eid)
                         .values(person=new_person, detail=new_detail))


def downgrade() -> None:
    raise NotImplementedError("gallery migrations go forward only")
