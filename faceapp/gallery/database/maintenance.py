"""Maintenance of a SQLite gallery file: purging deleted rows from the disk, integrity check."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from faceapp.gallery.database.files import _describe, is_sqlite, sqlite_path
from faceapp.gallery.database.sessions import translate_errors


@dataclass(frozen=True)
class PurgeReport:
    """What :func:`purge_deleted` did to a SQLite file.

    ``vacuumed``: the file was rebuilt without free pages; ``wal_busy``: another connection
    kept the write-ahead log from being emptied (it is emptied at the next checkpoint);
    ``freelist_pages``: free pages left (0 after a VACUUM).
    """

    vacuumed: bool
    wal_busy: bool
    freelist_pages: int
    wal_bytes: int

    def to_dict(self) -> dict[str, object]:
        return {"secure_delete": True, "vacuumed": self.vacuumed, "wal_busy": self.wal_busy,
                "freelist_pages": self.freelist_pages, "wal_bytes": self.wal_bytes}


def purge_deleted(engine: Engine) -> PurgeReport:
    """Make deleted rows leave the disk files, after their deletion was committed.

    Every connection runs with ``secure_delete`` (deleted cells are zeroed); this then
    ``VACUUM``s (no free page keeps old bytes) and checkpoints the write-ahead log with
    ``TRUNCATE`` (its frames held the pages from before the deletion). Nothing to do for
    in-memory SQLite or another back end (a report with ``vacuumed=False``).
    """
    url = engine.url.render_as_string(hide_password=False)
    path = sqlite_path(url)
    if not is_sqlite(engine) or path is None:
        return PurgeReport(False, False, 0, 0)
    with translate_errors(f"{_describe(url)} (purge)"):
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            try:
                cur.execute("VACUUM")
                busy = int(cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
                free = int(cur.execute("PRAGMA freelist_count").fetchone()[0])
            finally:
                cur.close()
        finally:
            raw.close()
    wal = Path(f"{path}-wal")
    return PurgeReport(True, bool(busy), free, wal.stat().st_size if wal.exists() else 0)



def integrity_check(engine: Engine) -> str:
    """SQLite ``PRAGMA integrity_check`` result (``"ok"`` when sound); ``"ok"`` elsewhere."""
    if not is_sqlite(engine):
        return "ok"
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("PRAGMA integrity_check").fetchall()
    return "; ".join(str(r[0]) for r in rows)
