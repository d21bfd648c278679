"""Schema migrations of the gallery through Alembic (SQLite and PostgreSQL alike).

The revisions live in ``versions/`` beside this file: ``0001`` is the schema v1 that every
faceapp gallery had before migrations existed, each later revision one step. A gallery
records its revision in Alembic's ``alembic_version`` table.

* a new gallery is created from the current models and stamped with the head revision;
* a gallery without ``alembic_version`` (made before migrations) is stamped ``0001`` and
  upgraded;
* a gallery at an older revision is upgraded in the caller's transaction (so a failure
  leaves it as it was);
* a gallery at a revision this faceapp does not know was written by a newer faceapp: it
  is refused by :func:`check_revision`, untouched.

A new revision: ``alembic -c /dev/null`` is not needed; copy the newest file in
``versions/``, give it the next id and ``down_revision``, and write ``upgrade()`` with
``alembic.op``. ``tests/test_migrations.py`` checks that upgrading an empty database
through every revision gives exactly the models' schema.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

BASELINE = "0001"
"""The revision of a gallery made before migrations existed (schema v1)."""

REVISIONS = ("0001", "0002", "0003", "0004")
"""Every revision in ``versions/``, oldest first; the last is the head. Kept here so that
opening a gallery reads no revision files and imports no Alembic (start-up);
``tests/test_migrations.py`` checks it against Alembic's own view of ``versions/``."""

_HERE = Path(__file__).resolve().parent


def _config(conn: Connection | None = None):  # type: ignore[no-untyped-def]
    from alembic.config import Config  # only when a gallery is stamped or migrated

    cfg = Config()
    cfg.set_main_option("script_location", str(_HERE))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head_revision() -> str:
    """The newest revision this faceapp knows."""
    return REVISIONS[-1]


def known_revisions() -> set[str]:
    return set(REVISIONS)


def script_revisions() -> list[str]:
    """The revisions Alembic finds in ``versions/``, oldest first (for the test of
    :data:`REVISIONS`)."""
    from alembic.script import ScriptDirectory

    revs = [r.revision for r in ScriptDirectory.from_config(_config()).walk_revisions()]
    return revs[::-1]


def current_revision(conn: Connection) -> str | None:
    """The gallery's revision, ``None`` when it has no ``alembic_version`` table (yet)."""
    if "alembic_version" not in inspect(conn).get_table_names():
        return None
    value = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return None if value is None else str(value)


def stamp(conn: Connection, revision: str) -> None:
    """Record ``revision`` without running anything (a gallery just made at that schema)."""
    from alembic import command

    command.stamp(_config(conn), revision)


def upgrade(conn: Connection, revision: str = "head") -> None:
    """Run every migration from the gallery's revision up to ``revision``."""
    from alembic import command

    command.upgrade(_config(conn), revision)
