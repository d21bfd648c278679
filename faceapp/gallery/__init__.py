"""The face gallery: SQLAlchemy storage of people and templates, and the in-memory index.

Nothing is opened at import; call :func:`open_database` and pass the engine around.
"""

from faceapp.gallery.database import (
    SCHEMA_VERSION,
    DatabaseConfig,
    integrity_check,
    open_database,
    read_session,
    translate_errors,
    write_session,
)
from faceapp.gallery.matching import (
    DEFAULT_AMBIGUITY_MARGIN,
    Candidate,
    GalleryIndex,
    Identification,
    Verification,
)
from faceapp.gallery.repository import GalleryRepository, IndexRows, NewTemplate, normalize_name

__all__ = [
    "DEFAULT_AMBIGUITY_MARGIN",
    "SCHEMA_VERSION",
    "Candidate",
    "DatabaseConfig",
    "GalleryIndex",
    "GalleryRepository",
    "Identification",
    "IndexRows",
    "NewTemplate",
    "Verification",
    "integrity_check",
    "normalize_name",
    "open_database",
    "read_session",
    "translate_errors",
    "write_session",
]
