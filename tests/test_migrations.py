"""Gallery schema migrations through Alembic, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import hashlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from faceapp.errors import GalleryError
from faceapp.gallery import GalleryRepository, migrations, open_database, pseudonyms, read_session
from faceapp.gallery.orm import Base


def plain_engine(url: str):
    """An engine without faceapp's hooks (a SQLite file is made in clear)."""
    return create_engine(url)


def test_a_new_gallery_is_at_the_head_revision(gallery_url):
    open_database(gallery_url).dispose()
    engine = open_database(gallery_url)
    try:
        with engine.connect() as conn:
            assert migrations.current_revision(conn) == migrations.head_revision()
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_revisions_build_exactly_the_models_schema(backend, tmp_path, request):
    """Upgrading an empty database through every revision gives the schema the models
    declare (what a new gallery gets from ``create_all``): no drift between the two."""
    url = (f"sqlite:///{tmp_path / 'm.sqlite'}" if backend == "sqlite"
           else request.getfixturevalue("pg_url"))
    engine = plain_engine(url)
    try:
        with engine.begin() as conn:
            migrations.upgrade(conn)
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": False})
            diff = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def _legacy_gallery(url: str) -> None:
    """A gallery as faceapp made it before migrations: schema v1, one person, no
    ``alembic_version`` table, no audit or consent table."""
    engine = plain_engine(url)
    try:
        with engine.begin() as conn:
            migrations.upgrade(conn, migrations.BASELINE)
            conn.execute(text("DROP TABLE alembic_version"))
            conn.execute(text("INSERT INTO schema_info (id, version, generation, app_version, "
                              "gallery_uuid) VALUES (1, 1, 3, '0.1.0', 'u-1')"))
            conn.execute(text("INSERT INTO person (id, name, created, updated) VALUES "
                              "(1, 'Old Timer', '2025-01-01 00:00:00', '2025-01-01 00:00:00')"))
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_old_gallery_upgrades_in_place(backend, tmp_path, request):
    url = (f"sqlite:///{tmp_path / 'old.sqlite'}" if backend == "sqlite"
           else request.getfixturevalue("pg_url"))
    _legacy_gallery(url)
    engine = open_database(url)
    try:
        with engine.connect() as conn:
            assert migrations.current_revision(conn) == migrations.head_revision()
            tables = set(inspect(conn).get_table_names())
            assert {"audit_entry", "consent", "alembic_version"} <= tables
            assert conn.execute(text("SELECT name FROM person")).scalars().all() == ["Old Timer"]
            assert conn.execute(text("SELECT generation FROM schema_info")).scalar() == 3
    finally:
        engine.dispose()
    open_database(url).dispose()  # a second open has nothing to do


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_revision_0004_rewrites_the_history_to_pseudonyms(backend, tmp_path, request):
    """Events written before pseudonyms: a living person's become their pseudonym (still
    shown by name), a former person's and a refused name's a pseudonym nothing maps back,
    in ``event.person`` and in the detail; the audit log is left as written (SECURITY.md)."""
    url = (f"sqlite:///{tmp_path / 'old.sqlite'}" if backend == "sqlite"
           else request.getfixturevalue("pg_url"))
    engine = plain_engine(url)
    try:
        with engine.begin() as conn:
            migrations.upgrade(conn, "0003")
            conn.execute(text("INSERT INTO schema_info (id, version, generation, app_version, "
                              "gallery_uuid) VALUES (1, 1, 3, '0.1.0', 'u-1')"))
            conn.execute(text("INSERT INTO person (id, name, created, updated) VALUES "
                              "(1, 'Old Timer', '2025-01-01 00:00:00', '2025-01-01 00:00:00')"))
            conn.execute(text(
                "INSERT INTO event (time, kind, person, outcome, detail) VALUES "
                "('2025-01-02 00:00:00', 'enroll', 'Old Timer', 'accepted', ''),"
                "('2025-01-02 00:00:00', 'enroll', 'Gone Person', 'accepted', ''),"
                "('2025-01-03 00:00:00', 'consent', 'Gone Person', 'recorded',"
                " '{\"given_by\": \"Gone Person\"}'),"
                "('2025-01-04 00:00:00', 'enroll', 'Never Enrolled', 'rejected',"
                " '/photos/never enrolled/1.jpg: no face'),"
                "('2025-01-05 00:00:00', 'recognize', NULL, 'unknown', '')"))
    finally:
        engine.dispose()
    open_database(url).dispose()
    engine = open_database(url)
    try:
        with read_session(engine) as s:
            shown = [(e.kind, e.person) for e in GalleryRepository(s).events()][::-1]
        with engine.connect() as conn:
            refs = conn.execute(text("SELECT person FROM event ORDER BY id")).scalars().all()
            details = " ".join(conn.execute(text("SELECT detail FROM event")).scalars())
            token = conn.execute(text("SELECT pseudonym FROM person")).scalar()
    finally:
        engine.dispose()
    assert pseudonyms.is_pseudonym(token) and refs[0] == token and refs[4] is None
    assert refs[1] == refs[2] != refs[3] and all(pseudonyms.is_pseudonym(r) for r in refs[:4])
    assert shown[0] == ("enroll", "Old Timer")
    assert shown[1:4] == [("enroll", pseudonyms.deleted_label(refs[1])),
                          ("consent", pseudonyms.deleted_label(refs[1])),
                          ("enroll", pseudonyms.deleted_label(refs[3]))]
    assert "Gone" not in details and "never enrolled" not in details.lower()
    assert refs[1] in details and f"/photos/{refs[3]}/1.jpg" in details


def test_a_gallery_of_a_newer_faceapp_is_refused_untouched_sqlite(tmp_path):
    path = tmp_path / "new.sqlite"
    _legacy_gallery(f"sqlite:///{path}")
    engine = plain_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        migrations.stamp(conn, migrations.BASELINE)
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(GalleryError, match="newer faceapp"):
        open_database(str(path))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_a_gallery_of_a_newer_faceapp_is_refused_untouched_postgresql(pg_url):
    open_database(pg_url).dispose()
    engine = plain_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(GalleryError, match="newer faceapp"):
        open_database(pg_url)
    engine = plain_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "9999"
    finally:
        engine.dispose()


def test_the_listed_revisions_are_alembics():
    """``migrations.REVISIONS`` (read at every open, without Alembic) is exactly the chain
    of revision files in ``versions/``; a new revision must be listed there."""
    assert migrations.script_revisions() == list(migrations.REVISIONS)
    assert migrations.head_revision() == migrations.script_revisions()[-1]
