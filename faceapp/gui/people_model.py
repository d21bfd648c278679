"""``PeopleListModel``: the gallery's people as a Qt list model, with thumbnails."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from PySide6.QtCore import QAbstractListModel, QByteArray, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor, QIcon, QPixmap

ModelIndex = QModelIndex | QPersistentModelIndex

NAME_ROLE = Qt.ItemDataRole.UserRole + 1
TEMPLATES_ROLE = Qt.ItemDataRole.UserRole + 2
ID_ROLE = Qt.ItemDataRole.UserRole + 3
SUMMARY_ROLE = Qt.ItemDataRole.UserRole + 4

THUMB_SIZE = 64


def pixmap_from_png(data: bytes | None, size: int = THUMB_SIZE) -> QPixmap:
    """A square thumbnail from PNG bytes; a grey placeholder when missing or unreadable."""
    pix = QPixmap()
    if data and pix.loadFromData(QByteArray(bytes(data)), "PNG"):
        return pix.scaled(
            size,
            size,
            Qt.AspectRatioMode.KeepAspectRatio,
            Qt.TransformationMode.SmoothTransformation,
        )
    placeholder = QPixmap(size, size)
    placeholder.fill(QColor(90, 90, 90))
    return placeholder


def expiry_text(expires: object, prefix: str = "") -> str:
    """``"<prefix>expires 2026-12-31 (retention policy)"``; empty when the person does not
    expire (no retention limit)."""
    if not isinstance(expires, datetime):
        return ""
    return f"{prefix}expires {expires:%Y-%m-%d} (retention policy)"


class PeopleListModel(QAbstractListModel):
    """One row per person (a ``PersonSummary`` with ``id``, ``name``, ``n_templates``,
    ``created``, ``thumbnail_png`` and ``expires``). Display role: the name; decoration: the
    thumbnail; tooltip: template count, creation date and expiry (retention policy).
    Read-only: renames go through the service, then :meth:`set_people` reloads the rows."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._people: list[Any] = []
        # thumbnails are decoded when a row is first drawn (a large gallery has 10⁵ people);
        # rows without one share a single placeholder icon
        self._icons: dict[int, QIcon] = {}
        self._placeholder: QIcon | None = None

    def set_people(self, people: Sequence[Any]) -> None:
        self.beginResetModel()
        self._people = list(people)
        self._icons = {}
        self.endResetModel()

    def _icon(self, row: int) -> QIcon:
        icon = self._icons.get(row)
        if icon is None:
            data = getattr(self._people[row], "thumbnail_png", None)
            if data:
                icon = QIcon(pixmap_from_png(data))
            else:
                if self._placeholder is None:
                    self._placeholder = QIcon(pixmap_from_png(None))
                icon = self._placeholder
            self._icons[row] = icon
        return icon

    def people(self) -> list[Any]:
        return list(self._people)

    def names(self) -> list[str]:
        return [p.name for p in self._people]

    def person(self, row: int) -> Any:
        return self._people[row]

    def row_of(self, name: str) -> int:
        for i, p in enumerate(self._people):
            if p.name == name:
                return i
        return -1

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._people)

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._people):
            return None
        p = self._people[index.row()]
        if role in (Qt.ItemDataRole.DisplayRole, NAME_ROLE):
            return str(p.name)
        if role == Qt.ItemDataRole.DecorationRole:
            return self._icon(index.row())
        if role == Qt.ItemDataRole.ToolTipRole:
            n = int(p.n_templates)
            created = getattr(p, "created", None)
            when = f", added {created:%Y-%m-%d %H:%M}" if hasattr(created, "strftime") else ""
            when += expiry_text(getattr(p, "expires", None), prefix=", ")
            return f"{p.name}: {n} template{'s' if n != 1 else ''}{when}"
        if role == TEMPLATES_ROLE:
            return int(p.n_templates)
        if role == ID_ROLE:
            return p.id
        if role == SUMMARY_ROLE:
            return p
        return None

    def roleNames(self) -> dict[int, QByteArray]:
        names = dict(super().roleNames())
        names[NAME_ROLE] = QByteArray(b"name")
        names[TEMPLATES_ROLE] = QByteArray(b"templates")
        names[ID_ROLE] = QByteArray(b"personId")
        return names
