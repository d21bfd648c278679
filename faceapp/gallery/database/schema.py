"""The gallery schema: its version, the checks before anything is written, creation and
Alembic migrations, and the ``schema_info`` row (change counter, gallery id).

A file that belongs to another application or was written by a newer faceapp raises
:class:`~faceapp.errors.GalleryError` *before* anything is written to it.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import inspect, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from faceapp import __version__
from faceapp.errors import GalleryError
from faceapp.gallery import migrations
from faceapp.gallery.audit import install_append_only
from faceapp.gallery.database.engine import _WRITE_OPTION
from faceapp.gallery.database.files import _describe
from faceapp.gallery.orm import Base, SchemaInfo

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""Coarse schema version in ``schema_info`` (a gallery above it is refused). Schema changes
themselves are Alembic revisions in :mod:`faceapp.gallery.migrations`."""


def _schema_version(conn: Connection, where: str) -> int:
    """The version in the ``schema_info`` row; its absence is a corrupt gallery."""
    row = conn.execute(select(SchemaInfo.version).where(SchemaInfo.id == 1)).first()
    if row is None:
        raise GalleryError(f"{where}: gallery has no schema version row (corrupt?)")
    return int(row[0])


def _check_read_only(engine: Engine, url: str) -> None:
    """The schema checks of :func:`_check_and_migrate`, without writing."""
    where = _describe(url)
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        if SchemaInfo.__tablename__ not in tables:
            raise GalleryError(f"{where}: read-only, and not a faceapp gallery (or an empty file)")
        version = _schema_version(conn, where)
        revision = migrations.current_revision(conn)
        if version != SCHEMA_VERSION or revision != migrations.head_revision():
            raise GalleryError(
                f"{where}: gallery schema v{version} (revision {revision}), this faceapp reads "
                f"v{SCHEMA_VERSION} (revision {migrations.head_revision()}), and the file is "
                "read-only (it cannot be migrated)")


def _schema_is_current(engine: Engine) -> bool:
    """A read (no write lock): the gallery schema is there at this code's version."""
    with engine.connect() as conn:
        if SchemaInfo.__tablename__ not in set(inspect(conn).get_table_names()):
            return False
        row = conn.execute(select(SchemaInfo.version).where(SchemaInfo.id == 1)).first()
        return (row is not None and int(row[0]) == SCHEMA_VERSION
                and migrations.current_revision(conn) == migrations.head_revision())


def _check_and_migrate(engine: Engine, url: str) -> None:
    where = _describe(url)
    if _schema_is_current(engine):
        return  # nothing to write: no need to wait for another writer's lock
    with engine.connect() as conn:
        conn = conn.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            tables = set(inspect(conn).get_table_names())
            if SchemaInfo.__tablename__ not in tables:
                if tables:
                    raise GalleryError(
                        f"{where}: not a faceapp gallery (it holds other tables: "
                        f"{', '.join(sorted(tables)[:5])}); it was left untouched"
                    )
                Base.metadata.create_all(conn)
                install_append_only(conn)
                conn.execute(
                    SchemaInfo.__table__.insert().values(
                        id=1, version=SCHEMA_VERSION, generation=0, app_version=__version__,
                        gallery_uuid=str(uuid.uuid4()),
                    )
                )
                migrations.stamp(conn, migrations.head_revision())
                logger.info("initialised gallery schema v%d in %s", SCHEMA_VERSION, where)
                return
            version = _schema_version(conn, where)
            revision = migrations.current_revision(conn)
            if version > SCHEMA_VERSION or (
                    revision is not None and revision not in migrations.known_revisions()):
                raise GalleryError(
                    f"{where}: gallery schema v{version} (revision {revision}) was written by "
                    f"a newer faceapp (this one reads up to revision "
                    f"{migrations.head_revision()}); upgrade faceapp. The file was left untouched"
                )
            if revision is None:
                # a gallery from before migrations existed: its schema is the baseline
                migrations.stamp(conn, migrations.BASELINE)
                revision = migrations.BASELINE
            if revision != migrations.head_revision():
                logger.info("migrating gallery %s from revision %s", where, revision)
                migrations.upgrade(conn)
                conn.execute(update(SchemaInfo).where(SchemaInfo.id == 1)
                             .values(app_version=__version__))



def bump_generation(session: Session) -> int:
    """Increment the gallery's change counter inside the caller's transaction; returns it."""
    session.execute(update(SchemaInfo).where(SchemaInfo.id == 1).values(
        generation=SchemaInfo.generation + 1
    ))
    return current_generation(session)


def current_generation(session: Session) -> int:
    """The change counter (people/templates) as seen by the caller's transaction."""
    value = session.execute(select(SchemaInfo.generation).where(SchemaInfo.id == 1)).scalar()
    if value is None:
        raise GalleryError("gallery has no schema version row (corrupt?)")
    return int(value)



def gallery_uuid(session: Session) -> str:
    """The random identifier of this gallery (set when it was created)."""
    value = session.execute(select(SchemaInfo.gallery_uuid).where(SchemaInfo.id == 1)).scalar()
    return str(value or "")
