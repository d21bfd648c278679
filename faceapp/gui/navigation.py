"""The pages of the main window and the navigation between them.

:func:`create_pages` makes every page, in the order of the navigation list;
:class:`Navigation` is that list (icons and titles) with the stack that shows the selected
page, calling ``deactivated()`` on the page left and ``activated()`` on the page shown.
To add a page: a :class:`~faceapp.gui.page.Page` subclass, a field of :class:`PageSet` and
its icon in :data:`PAGE_ICONS`.
"""

from __future__ import annotations

from typing import NamedTuple

from PySide6.QtCore import QObject, QSize, Signal
from PySide6.QtWidgets import QListWidget, QListWidgetItem, QStackedWidget, QStyle

from faceapp.gui.calibrate_page import CalibratePage
from faceapp.gui.context import AppContext
from faceapp.gui.enroll_page import EnrollPage
from faceapp.gui.page import Page
from faceapp.gui.people_page import PeoplePage
from faceapp.gui.privacy_page import PrivacyPage
from faceapp.gui.recognize_page import RecognizePage
from faceapp.gui.settings import SettingsStore
from faceapp.gui.settings_page import SettingsPage
from faceapp.gui.verify_page import VerifyPage


class PageSet(NamedTuple):
    """Every page, in the order of the navigation list."""

    enroll: EnrollPage
    verify: VerifyPage
    recognize: RecognizePage
    people: PeoplePage
    calibrate: CalibratePage
    privacy: PrivacyPage
    settings: SettingsPage


_P = QStyle.StandardPixmap
PAGE_ICONS: dict[str, QStyle.StandardPixmap] = {
    "enroll": _P.SP_FileDialogNewFolder,
    "verify": _P.SP_DialogApplyButton,
    "recognize": _P.SP_FileDialogContentsView,
    "people": _P.SP_DirHomeIcon,
    "calibrate": _P.SP_FileDialogDetailedView,
    "privacy": _P.SP_DriveHDIcon,
    "settings": _P.SP_FileDialogInfoView,
}


def create_pages(ctx: AppContext, store: SettingsStore | None = None) -> PageSet:
    return PageSet(EnrollPage(ctx), VerifyPage(ctx), RecognizePage(ctx), PeoplePage(ctx),
                   CalibratePage(ctx), PrivacyPage(ctx), SettingsPage(ctx, store))


class Navigation(QObject):
    """The navigation list (``nav``) and the page stack (``stack``) of ``pages``; the window
    lays the two widgets out. Signal ``pageChanged(Page)`` once a page is shown."""

    pageChanged = Signal(object)

    def __init__(self, pages: PageSet, style: QStyle, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.pages: list[Page] = list(pages)
        self.nav = QListWidget()
        self.nav.setIconSize(QSize(22, 22))
        self.nav.setFixedWidth(150)
        self.nav.setSpacing(3)
        self.stack = QStackedWidget()
        for name, page in zip(pages._fields, pages, strict=True):
            item = QListWidgetItem(style.standardIcon(PAGE_ICONS[name]), page.title)
            item.setSizeHint(QSize(140, 36))
            self.nav.addItem(item)
            self.stack.addWidget(page)
        self.nav.currentRowChanged.connect(self._on_row_changed)

    def current_page(self) -> Page:
        return self.pages[max(0, self.nav.currentRow())]

    def show_page(self, page: Page | str) -> None:
        """Switch to a page (object or title)."""
        for i, p in enumerate(self.pages):
            if p is page or p.title == page:
                self.nav.setCurrentRow(i)
                return
        raise KeyError(page)

    def _on_row_changed(self, row: int) -> None:
        if row < 0:
            return
        for i, p in enumerate(self.pages):
            if i != row and self.stack.currentIndex() == i:
                p.deactivated()
        self.stack.setCurrentIndex(row)
        page = self.pages[row]
        page.activated()
        self.pageChanged.emit(page)
