"""Privacy page: the gallery's privacy policy, its encryption keys and its audit log.

Everything that touches the gallery runs in the task pool through
:class:`faceapp.services.governance.Governance` (the same code as ``faceapp policy``,
``faceapp keys`` and ``faceapp audit``); the GUI thread only shows the results.
"""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from faceapp.errors import FaceappError
from faceapp.gui.context import AppContext
from faceapp.gui.page import Page, heading
from faceapp.services.governance import (
    EVENT_KINDS,
    ChainReport,
    Governance,
    KeyReport,
    PrivacyPolicy,
    describe_chain,
    describe_policy,
)

AUDIT_COLUMNS = ("#", "time (UTC)", "who", "action", "outcome", "person", "detail")
ALL_ACTIONS = "all actions"
BROKEN = QColor(231, 76, 60, 90)
USES = (("personal", "Personal use: consent is recorded when given, not required"),
        ("organisation", "Organisation: enrolling a new person requires recorded consent"))
RETENTION_FROM = (("enrolment", "after enrolment"), ("last_match", "after the last match"))


def readable_detail(text: str) -> str:
    """An audit entry's JSON detail as ``key: value, …`` (the nested ``detail`` of a logged
    event unpacked); the text as it is when it is not JSON."""
    try:
        facts = json.loads(text) if text else {}
    except ValueError:
        return text
    if not isinstance(facts, dict):
        return text
    inner = facts.pop("detail", None)
    if isinstance(inner, str):
        try:
            nested = json.loads(inner)
        except ValueError:
            nested = None
        if isinstance(nested, dict):
            facts = nested | facts
        else:
            facts["detail"] = inner
    return ", ".join(f"{k}: {json.dumps(v, ensure_ascii=False) if isinstance(v, dict | list) else v}"
                     for k, v in facts.items())


def _row(*widgets: QWidget) -> QWidget:
    row = QHBoxLayout()
    row.setContentsMargins(0, 0, 0, 0)
    for w in widgets:
        row.addWidget(w)
    row.addStretch(1)
    holder = QWidget()
    holder.setLayout(row)
    return holder


class PrivacyPage(Page):
    """Policy (use, purpose, retention), keys (status, rotate) and the audit log (list, verify).

    Signals: ``loaded()`` after policy, keys and log were read; ``policySaved(PrivacyPolicy)``;
    ``keysRotated(KeyReport)``; ``auditLoaded(int)`` (entries shown);
    ``chainVerified(ChainReport)``.
    """

    title = "Privacy"
    loaded = Signal()
    policySaved = Signal(object)
    keysRotated = Signal(object)
    auditLoaded = Signal(int)
    chainVerified = Signal(object)

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(ctx, parent)
        self.policy: PrivacyPolicy | None = None
        self.keys: KeyReport | None = None
        self.chain: ChainReport | None = None
        self._shown = False  # the page is the one shown: gallery changes refresh it
        # policy
        self.use_combo = QComboBox()
        for value, text in USES:
            self.use_combo.addItem(text, value)
        self.purpose_edit = QLineEdit()
        self.purpose_edit.setMaxLength(500)
        self.purpose_edit.setPlaceholderText('what the gallery is for, e.g. "door access of the lab"')
        self.retention_spin = QSpinBox()
        self.retention_spin.setRange(0, 36_500)
        self.retention_spin.setSuffix(" days")
        self.retention_spin.setSpecialValueText("keep until deleted")
        self.retention_from_combo = QComboBox()
        for value, text in RETENTION_FROM:
            self.retention_from_combo.addItem(text, value)
        self.policy_label = QLabel()
        self.policy_label.setWordWrap(True)
        self.apply_policy_button = QPushButton("Apply policy")
        # keys
        self.keys_label = QLabel()
        self.keys_label.setWordWrap(True)
        self.keys_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.rotate_to_combo = QComboBox()
        self.rotate_to_combo.addItem("same source", None)
        self.rotate_to_combo.addItem("a passphrase", "passphrase")
        self.rotate_to_combo.addItem("the OS keyring", "keyring")
        self.rotate_button = QPushButton("Rotate key…")
        self.rotate_button.setToolTip(
            "Re-wrap the gallery's data key with a new passphrase or keyring secret "
            "(the database is not rewritten; a wrong current passphrase changes nothing).")
        # audit
        self.action_combo = QComboBox()
        self.action_combo.addItem(ALL_ACTIONS, None)
        for kind in EVENT_KINDS:
            self.action_combo.addItem(kind, kind)
        self.limit_spin = QSpinBox()
        self.limit_spin.setRange(10, 100_000)
        self.limit_spin.setValue(500)
        self.limit_spin.setPrefix("last ")
        self.refresh_button = QPushButton("Refresh")
        self.verify_button = QPushButton("Verify chain")
        self.chain_label = QLabel()
        self.chain_label.setWordWrap(True)
        self.audit_table = QTableWidget(0, len(AUDIT_COLUMNS))
        self.audit_table.setHorizontalHeaderLabels(list(AUDIT_COLUMNS))
        self.audit_table.verticalHeader().setVisible(False)
        self.audit_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.audit_table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.audit_table.horizontalHeader().setStretchLastSection(True)

        policy_form = QFormLayout()
        policy_form.addRow("Use", self.use_combo)
        policy_form.addRow("Purpose", self.purpose_edit)
        policy_form.addRow("Retention", _row(self.retention_spin, self.retention_from_combo))
        policy_form.addRow("", _row(self.apply_policy_button))
        policy_form.addRow("In effect", self.policy_label)
        policy_box = QGroupBox("Privacy policy")
        policy_box.setLayout(policy_form)
        keys_form = QFormLayout()
        keys_form.addRow("Encryption", self.keys_label)
        keys_form.addRow("Rotate to", _row(self.rotate_to_combo, self.rotate_button))
        keys_box = QGroupBox("Keys")
        keys_box.setLayout(keys_form)
        audit_layout = QVBoxLayout()
        audit_layout.addWidget(_row(self.action_combo, self.limit_spin, self.refresh_button,
                                    self.verify_button))
        audit_layout.addWidget(self.chain_label)
        audit_layout.addWidget(self.audit_table, 1)
        audit_box = QGroupBox("Audit log (hash-chained; no biometric data in it)")
        audit_box.setLayout(audit_layout)
        layout = QVBoxLayout(self)
        layout.addWidget(heading("Privacy"))
        top = QHBoxLayout()
        top.addWidget(policy_box, 1)
        top.addWidget(keys_box, 1)
        layout.addLayout(top)
        layout.addWidget(audit_box, 1)

        self.apply_policy_button.clicked.connect(lambda: self.apply_policy())
        self.rotate_button.clicked.connect(lambda: self.rotate_keys())
        self.refresh_button.clicked.connect(lambda: self.refresh())
        self.verify_button.clicked.connect(lambda: self.verify_chain())
        self.action_combo.currentIndexChanged.connect(lambda _i: self.load_audit())
        ctx.galleryChanged.connect(self._refresh_if_shown)
        self.on_service_changed(ctx.service)

    # data --------------------------------------------------------------------------------
    def _governance(self) -> Governance | None:
        service = self.service
        return None if service is None else Governance.of(service)

    def on_service_changed(self, service: Any) -> None:
        for w in (self.apply_policy_button, self.rotate_button, self.refresh_button,
                  self.verify_button):
            w.setEnabled(service is not None)
        self.policy = self.keys = self.chain = None
        self.audit_table.setRowCount(0)
        self.chain_label.setText("")
        if service is None:
            self.policy_label.setText(self.no_service_text())
            self.keys_label.setText("")
        elif self._shown:
            self.refresh()

    def activated(self) -> None:
        self._shown = True
        self.refresh()

    def deactivated(self) -> None:
        self._shown = False

    def _refresh_if_shown(self) -> None:
        if self._shown:
            self.refresh()

    def refresh(self) -> bool:
        """Read policy, key status and the audit log (in the background)."""
        gov = self._governance()
        if gov is None:
            return False
        action, limit = self.action_combo.currentData(), self.limit_spin.value()

        def job(_p: Any, _s: Any) -> tuple[PrivacyPolicy, KeyReport, list[Any]]:
            return gov.policy(), gov.key_status(), gov.audit_entries(action=action, limit=limit)

        def done(result: tuple[PrivacyPolicy, KeyReport, list[Any]]) -> None:
            policy, keys, entries = result
            self._show_policy(policy)
            self._show_keys(keys)
            self._show_audit(entries)
            self.loaded.emit()

        self.ctx.run_task(job, label="Reading the privacy settings", on_result=done)
        return True

    def load_audit(self) -> bool:
        gov = self._governance()
        if gov is None:
            return False
        action, limit = self.action_combo.currentData(), self.limit_spin.value()
        self.ctx.run_task(lambda _p, _s: gov.audit_entries(action=action, limit=limit),
                          label="Reading the audit log", on_result=self._show_audit)
        return True

    def _show_policy(self, policy: PrivacyPolicy) -> None:
        self.policy = policy
        self.use_combo.setCurrentIndex(max(0, self.use_combo.findData(policy.use)))
        self.purpose_edit.setText(policy.purpose)
        self.retention_spin.setValue(policy.retention_days)
        self.retention_from_combo.setCurrentIndex(
            max(0, self.retention_from_combo.findData(policy.retention_from)))
        self.policy_label.setText(describe_policy(policy))

    def _show_keys(self, keys: KeyReport) -> None:
        self.keys = keys
        self.keys_label.setText(keys.text())
        self.rotate_button.setEnabled(keys.encrypted)
        self.rotate_to_combo.setEnabled(keys.encrypted)

    def _show_audit(self, entries: list[Any]) -> None:
        table = self.audit_table
        table.setRowCount(len(entries))
        for row, e in enumerate(entries):
            when = e.time[:19].replace("T", " ")
            for col, value in enumerate((e.id, when, e.actor, e.action, e.outcome,
                                         e.person or "-", readable_detail(e.detail))):
                item = QTableWidgetItem(str(value))
                item.setData(Qt.ItemDataRole.UserRole, e.id)
                if col in (1, len(AUDIT_COLUMNS) - 1):
                    item.setToolTip(e.time if col == 1 else f"{e.detail}\nentry hash {e.hash}")
                table.setItem(row, col, item)
        for col in range(len(AUDIT_COLUMNS) - 1):  # the detail column takes the rest
            table.resizeColumnToContents(col)
        if self.chain is not None and not self.chain.ok:
            self._mark_broken(self.chain.first_bad)
        self.auditLoaded.emit(len(entries))

    def audit_rows(self) -> list[tuple[str, ...]]:
        """The table's rows as text (id, time, who, action, outcome, person, detail)."""
        t = self.audit_table
        return [tuple(t.item(r, c).text() for c in range(t.columnCount())) for r in range(t.rowCount())]

    # actions -------------------------------------------------------------------------------
    def chosen_policy(self) -> PrivacyPolicy:
        """The policy the form shows (raises ``GalleryError`` for an invalid one)."""
        return PrivacyPolicy(self.use_combo.currentData(), self.retention_spin.value(),
                             self.retention_from_combo.currentData(), self.purpose_edit.text().strip())

    def apply_policy(self, *, ask: bool = True) -> bool:
        """Store the form's policy. A retention limit deletes the people it expires at the next
        start-up (or ``faceapp people expire``): asked first when it is shorter than before."""
        gov = self._governance()
        if gov is None:
            return False
        try:
            policy = self.chosen_policy()
        except FaceappError as err:  # an invalid combination: one message
            self.ctx.show_error(err)
            return False
        old = self.policy
        shorter = policy.retention_days and (old is None or not old.retention_days
                                             or policy.retention_days < old.retention_days)
        if ask and shorter and not self.confirm(
                "Retention", f"People will be deleted {policy.retention_days} day(s) "
                f"{dict(RETENTION_FROM)[policy.retention_from]} (at the next start-up, or with "
                "`faceapp people expire`). Apply this policy?"):
            return False

        def done(saved: PrivacyPolicy) -> None:
            self._show_policy(saved)
            self.ctx.show_message(f"Privacy policy saved: {describe_policy(saved)}.")
            self.policySaved.emit(saved)
            self.ctx.galleryChanged.emit()  # the People page shows the new expiries

        self.ctx.run_task(lambda _p, _s: gov.set_policy(policy), label="Saving the privacy policy",
                          on_result=done)
        return True

    def rotate_keys(self) -> bool:
        """Re-wrap the data key: asks for the current passphrase (unless it comes from the
        environment or the keyring) and, for a passphrase, a new one (twice)."""
        gov, keys = self._governance(), self.keys
        if gov is None or keys is None or not keys.encrypted:
            return False
        to = self.rotate_to_combo.currentData()
        target = to or keys.source
        current = None
        if keys.source == "passphrase" and not keys.passphrase_from_env:
            current = self.ask_passphrase("Rotate key", "Current passphrase of the gallery:")
            if current is None:
                return False
        new = None
        if target == "passphrase":
            new = self.ask_passphrase("Rotate key", "New passphrase of the gallery:", confirm=True)
            if new is None:
                return False

        def done(report: KeyReport) -> None:
            self._show_keys(report)
            self.ctx.show_message(f"Key re-wrapped by the {report.source}"
                                  + (" (FACEAPP_PASSPHRASE still holds the old passphrase: "
                                     "update it)" if report.passphrase_from_env else "") + ".")
            if new is not None:
                self.ctx.passphraseChanged.emit(new)
            self.keysRotated.emit(report)
            self.load_audit()

        self.ctx.run_task(lambda _p, _s: gov.rotate_keys(current=current, new=new, to=to),
                          label="Rotating the gallery key", on_result=done)
        return True

    def verify_chain(self) -> bool:
        gov = self._governance()
        if gov is None:
            return False

        def done(report: ChainReport) -> None:
            self.chain = report
            self.chain_label.setText(("✔ " if report.ok else "⚠ ") + describe_chain(report))
            self.chain_label.setStyleSheet("" if report.ok else "color: #e74c3c;")
            if not report.ok:
                self._mark_broken(report.first_bad)
            self.chainVerified.emit(report)

        self.ctx.run_task(lambda _p, _s: gov.verify_audit(), label="Verifying the audit log",
                          on_result=done)
        return True

    def _mark_broken(self, entry_id: int) -> None:
        for row in range(self.audit_table.rowCount()):
            item = self.audit_table.item(row, 0)
            if item is not None and item.data(Qt.ItemDataRole.UserRole) == entry_id:
                for col in range(self.audit_table.columnCount()):
                    self.audit_table.item(row, col).setBackground(QBrush(BROKEN))
                self.audit_table.selectRow(row)
                self.audit_table.scrollToItem(item)
                return
