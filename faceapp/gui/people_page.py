"""People page: who is in the gallery; rename, delete, add samples, export / import, re-embed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import QItemSelectionModel, QSize, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QAbstractItemView,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from faceapp.errors import DuplicatePerson
from faceapp.gui.context import AppContext
from faceapp.gui.page import IMAGE_FILTER, Page, heading
from faceapp.gui.people_model import PeopleListModel, expiry_text, pixmap_from_png

log = logging.getLogger(__name__)

GALLERY_FILTER = "faceapp export bundle (*.faceapp);;All files (*)"


def _template_png(template: Any) -> bytes | None:
    for attr in ("crop_png", "thumbnail_png", "png"):
        data = getattr(template, attr, None)
        if data:
            return bytes(data)
    return None


def _same_gallery_gains_model(old: Any, new: Any) -> bool:
    """``new`` is the full service replacing the gallery-only ``old`` on the same database."""
    if old is None or new is None or getattr(old, "has_model", True):
        return False
    url = getattr(getattr(old, "engine", None), "url", None)
    return url is not None and url == getattr(getattr(new, "engine", None), "url", None) and bool(
        getattr(new, "has_model", False)
    )


class PeoplePage(Page):
    """The gallery as a list with thumbnails, and what can be done to one person.

    Signals: ``peopleLoaded(int)`` after each reload (the number of people);
    ``templatesLoaded(int)`` after the selected person's templates were loaded.
    """

    title = "People"
    peopleLoaded = Signal(int)
    templatesLoaded = Signal(int)

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(ctx, parent)
        self.model = PeopleListModel(self)
        self.list_view = QListView()
        self.list_view.setModel(self.model)
        self.list_view.setIconSize(QSize(48, 48))
        self.list_view.setSpacing(2)
        self.list_view.setUniformItemSizes(True)
        self.list_view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list_view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.summary = QLabel("Select a person.")
        self.summary.setWordWrap(True)
        self.templates = QListWidget()
        self.templates.setViewMode(QListWidget.ViewMode.IconMode)
        self.templates.setIconSize(QSize(80, 80))
        self.templates.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.templates.setMovement(QListWidget.Movement.Static)
        self.count_label = QLabel()

        self.rename_button = QPushButton("Rename…")
        self.delete_button = QPushButton("Delete…")
        self.add_button = QPushButton("Add samples…")
        self.export_button = QPushButton("Export gallery…")
        self.import_button = QPushButton("Import gallery…")
        self.reembed_button = QPushButton("Re-embed all")
        self.reembed_button.setToolTip(
            "Recompute every template with the current model (after changing the model)."
        )
        self.refresh_button = QPushButton("Refresh")
        self._shown_service: Any = None

        left = QVBoxLayout()
        left.addWidget(heading("People"))
        left.addWidget(self.count_label)
        left.addWidget(self.list_view, 1)
        gallery_buttons = QGridLayout()
        gallery_buttons.addWidget(self.export_button, 0, 0)
        gallery_buttons.addWidget(self.import_button, 0, 1)
        gallery_buttons.addWidget(self.reembed_button, 1, 0)
        gallery_buttons.addWidget(self.refresh_button, 1, 1)
        left.addLayout(gallery_buttons)
        person_buttons = QHBoxLayout()
        for b in (self.rename_button, self.delete_button, self.add_button):
            person_buttons.addWidget(b)
        right = QVBoxLayout()
        right.addWidget(self.summary)
        right.addWidget(QLabel("Templates (aligned face crops):"))
        right.addWidget(self.templates, 1)
        right.addLayout(person_buttons)
        lw, rw = QWidget(), QWidget()
        lw.setLayout(left)
        rw.setLayout(right)
        lw.setMaximumWidth(340)
        layout = QHBoxLayout(self)
        layout.addWidget(lw)
        layout.addWidget(rw, 1)

        self.list_view.selectionModel().currentChanged.connect(lambda *_: self._on_selection())
        self.model.modelReset.connect(self._on_selection)
        self.rename_button.clicked.connect(lambda: self.rename_selected())
        self.delete_button.clicked.connect(lambda: self.delete_selected())
        self.add_button.clicked.connect(lambda: self.add_samples())
        self.export_button.clicked.connect(lambda: self.export_gallery())
        self.import_button.clicked.connect(lambda: self.import_gallery())
        self.reembed_button.clicked.connect(self.reembed)
        self.refresh_button.clicked.connect(self.refresh)
        ctx.galleryChanged.connect(self.refresh)
        self.on_service_changed(ctx.service)

    # data --------------------------------------------------------------------------------
    def on_service_changed(self, service: Any) -> None:
        """A gallery-only service (models still loading) is enough for everything but
        "Add samples" and "Re-embed"; when the full service of the same gallery replaces
        it, the list already shown is kept (no reload)."""
        previous, self._shown_service = self._shown_service, service
        for b in (
            self.rename_button,
            self.delete_button,
            self.export_button,
            self.import_button,
            self.refresh_button,
        ):
            b.setEnabled(service is not None)
        self.reembed_button.setEnabled(self.ctx.has_model)
        if service is None:
            self.model.set_people([])
            self.count_label.setText("No gallery open (see Settings).")
        elif _same_gallery_gains_model(previous, service):
            self._on_selection_buttons()  # listed (or being listed) from ``previous``
        else:
            self.refresh()

    def activated(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        service = self.service
        if service is None:
            return
        self.ctx.run_task(
            lambda _p, _s: list(service.list_people()),
            label="Loading people",
            on_result=self._set_people,
        )

    def _set_people(self, people: list[Any]) -> None:
        current = self.selected_name()
        self.model.set_people(people)
        n = len(people)
        total = sum(int(p.n_templates) for p in people)
        self.count_label.setText(f"{n} people, {total} templates" if n else "The gallery is empty.")
        row = self.model.row_of(current) if current else -1
        if row < 0 and n:
            row = 0
        if row >= 0:
            self.select_row(row)
        self.peopleLoaded.emit(n)

    def select_row(self, row: int) -> None:
        index = self.model.index(row, 0)
        self.list_view.selectionModel().setCurrentIndex(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect
        )

    def select_name(self, name: str) -> bool:
        row = self.model.row_of(name)
        if row >= 0:
            self.select_row(row)
        return row >= 0

    def selected_name(self) -> str | None:
        index = self.list_view.currentIndex()
        if not index.isValid() or index.row() >= self.model.rowCount():
            return None
        return str(self.model.person(index.row()).name)

    def _on_selection(self) -> None:
        name = self.selected_name()
        self.templates.clear()
        self._on_selection_buttons()
        if name is None:
            self.summary.setText("Select a person." if self.model.rowCount() else "")
            return
        p = self.model.person(self.model.row_of(name))
        created = getattr(p, "created", None)
        when = f"<br>added {created:%Y-%m-%d %H:%M}" if hasattr(created, "strftime") else ""
        when += expiry_text(getattr(p, "expires", None), prefix="<br>")
        self.summary.setText(f"<b style='font-size:14pt'>{p.name}</b><br>{p.n_templates} templates{when}")
        service = self.service
        if service is None:
            return
        self.ctx.run_task(
            lambda _p, _s: (name, list(service.person_templates(name))),
            label="Loading templates",
            on_result=self._set_templates,
        )

    def _on_selection_buttons(self) -> None:
        has = self.selected_name() is not None and self.service is not None
        self.rename_button.setEnabled(has)
        self.delete_button.setEnabled(has)
        self.add_button.setEnabled(has and self.ctx.has_model)  # needs the face models

    def _set_templates(self, result: tuple[str, list[Any]]) -> None:
        name, templates = result
        if name != self.selected_name():
            return  # the selection moved on meanwhile
        self.templates.clear()
        for t in templates:
            item = QListWidgetItem(QIcon(pixmap_from_png(_template_png(t), 80)), "")
            source = getattr(t, "source", None)
            item.setToolTip(str(source) if source else f"template {getattr(t, 'id', '')}")
            self.templates.addItem(item)
        self.templatesLoaded.emit(len(templates))

    # actions -----------------------------------------------------------------------------
    def rename_selected(self, new_name: str | None = None) -> bool:
        old = self.selected_name()
        service = self.service
        if old is None or service is None:
            return False
        if new_name is None:
            new_name = self.ask_text("Rename", f"New name for {old}:", old)
        if not new_name or not new_name.strip() or new_name.strip() == old:
            return False
        new = new_name.strip()

        def done(_r: object) -> None:
            self.ctx.show_message(f"Renamed {old} to {new}.")
            self.ctx.galleryChanged.emit()
            self.select_name(new)

        self.ctx.run_task(lambda _p, _s: service.rename_person(old, new), label="Renaming", on_result=done)
        return True

    def delete_selected(self, *, ask: bool = True) -> bool:
        name = self.selected_name()
        service = self.service
        if name is None or service is None:
            return False
        p = self.model.person(self.model.row_of(name))
        if ask and not self.confirm(
            "Delete person",
            f"Delete {name} and all {p.n_templates} templates and face crops?\nThis cannot be undone.",
        ):
            return False

        def done(_r: object) -> None:
            self.ctx.show_message(f"Deleted {name}.")
            self.ctx.galleryChanged.emit()

        self.ctx.run_task(
            lambda _p, _s: service.delete_person(name), label=f"Deleting {name}", on_result=done
        )
        return True

    def add_samples(self, paths: list[str] | None = None) -> bool:
        """Add image files as new templates of the selected person."""
        name = self.selected_name()
        service = self.service
        if name is None or service is None:
            return False
        if paths is None:
            paths = self.ask_open_files(f"Add images of {name}", IMAGE_FILTER)
        if not paths:
            return False
        files = [str(p) for p in paths]

        def job(progress: Any, should_stop: Any) -> tuple[int, list[str]]:
            faces, sources, problems = [], [], []
            for i, path in enumerate(files):
                if should_stop():
                    break
                progress(i, len(files), Path(path).name)
                try:
                    found = list(service.analyze(path))
                except Exception as err:  # reported per file
                    problems.append(f"{Path(path).name}: {err}")
                    continue
                if not found:
                    problems.append(f"{Path(path).name}: no face found")
                    continue
                face = max(found, key=lambda f: f.detection.area)
                if not face.quality.ok:
                    problems.append(f"{Path(path).name}: {'; '.join(face.quality.reasons)}")
                    continue
                faces.append(face)
                sources.append(path)
            if faces and not should_stop():
                service.enroll_faces(name, faces, sources=sources)
            return len(faces), problems

        def done(result: tuple[int, list[str]]) -> None:
            n, problems = result
            msg = f"Added {n} sample(s) to {name}."
            if problems:
                self.ctx.show_error(msg + " Skipped: " + " | ".join(problems))
            else:
                self.ctx.show_message(msg)
            self.ctx.galleryChanged.emit()

        self.ctx.run_task(job, label=f"Adding samples to {name}", on_result=done, show_progress=True)
        return True

    def export_gallery(self, path: str | None = None) -> bool:
        """Write the gallery to an encrypted bundle (a passphrase is asked, twice)."""
        service = self.service
        if service is None:
            return False
        if path is None:
            path = self.ask_save_file("Export gallery", GALLERY_FILTER, "gallery.faceapp")
        if not path:
            return False
        passphrase = self.ask_passphrase(
            "Export gallery", "Passphrase protecting the export (needed to import it):",
            confirm=True)
        if not passphrase:
            return False
        self.ctx.run_task(
            lambda _p, _s: service.export_gallery(path, passphrase=passphrase),
            label="Exporting gallery",
            on_result=lambda r: self.ctx.show_message(
                f"Exported {r.people} people, {r.templates} templates to {path}."
            ),
            show_progress=True,
        )
        return True

    def import_gallery(self, path: str | None = None) -> bool:
        """Add the people of an export file. When some already exist, ask whether to merge
        their templates (Yes) or skip them (No)."""
        service = self.service
        if service is None:
            return False
        if path is None:
            path = self.ask_open_file("Import gallery", GALLERY_FILTER)
        if not path:
            return False
        passphrase = self.ask_passphrase("Import gallery", "Passphrase of the export:")
        if not passphrase:
            return False

        def done(result: Any) -> None:
            skipped = f", skipped {', '.join(result.skipped)}" if result.skipped else ""
            self.ctx.show_message(f"Imported {result.people} people, {result.templates} templates{skipped}.")
            self.ctx.galleryChanged.emit()

        def failed(err: BaseException) -> None:
            if isinstance(err, DuplicatePerson):
                merge = self.confirm(
                    "People already in the gallery",
                    f"{err}\n\nMerge their templates into the existing people?\n"
                    "(No: skip them and import only the others)",
                )
                start("merge" if merge else "skip")
            else:
                self.ctx.show_error(err)

        def start(policy: str) -> None:
            self.ctx.run_task(
                lambda _p, _s: service.import_gallery(path, passphrase=passphrase,
                                                      on_conflict=policy),
                label="Importing gallery",
                on_result=done,
                on_error=failed,
                show_progress=True,
            )

        start("error")
        return True

    def reembed(self) -> None:
        service = self.service
        if service is None:
            return

        def done(result: object) -> None:
            self.ctx.show_message(f"Re-embedding done: {result}")
            self.ctx.galleryChanged.emit()

        self.ctx.run_task(
            lambda progress, should_stop: service.reembed(progress, should_stop),
            label="Re-embedding templates",
            on_result=done,
            show_progress=True,
        )
