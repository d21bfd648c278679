"""The Privacy page through its widgets, on a real encrypted (SQLCipher) gallery file: the
privacy policy, key rotation, the audit log and its verification; the People page's
expiry dates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fakes import enroll_three, make_service, raw_connect

from faceapp.gui.main_window import MainWindow
from faceapp.gui.settings import GuiSettings, SettingsStore
from faceapp.services import FaceService
from faceapp.services.governance import Governance, PrivacyPolicy

pytestmark = pytest.mark.gui

WAIT = 60_000
PASSPHRASE = "correct horse battery staple (tests)"  # conftest's $FACEAPP_PASSPHRASE


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "g.sqlite"


@pytest.fixture
def service(db: Path):
    svc = make_service(f"sqlite:///{db}")
    enroll_three(svc)
    yield svc
    svc.close()


@pytest.fixture
def window(qtbot, service, tmp_path: Path):
    w = MainWindow(GuiSettings(camera="0"), store=SettingsStore.at_path(str(tmp_path / "s.ini")),
                   service=service, camera_on=False)
    qtbot.addWidget(w)
    yield w
    w.shutdown()


def idle(qtbot, window: MainWindow) -> None:
    qtbot.waitUntil(lambda: not window.ctx.runner.is_busy(), timeout=WAIT)


def show_privacy(qtbot, window: MainWindow):
    page = window.privacy_page
    with qtbot.waitSignal(page.loaded, timeout=WAIT):
        window.show_page(page)
    return page


def test_privacy_page_is_registered(qtbot, window) -> None:
    titles = [window.nav.item(i).text() for i in range(window.nav.count())]
    assert titles == ["Enroll", "Verify", "Recognize", "People", "Calibrate", "Privacy",
                      "Settings"]
    page = show_privacy(qtbot, window)
    assert window.current_page() is page and window.stack.currentWidget() is page
    assert "encrypted (SQLCipher 4" in page.keys_label.text()
    assert page.policy_label.text().startswith("use: personal")


def test_set_policy_is_persisted_and_people_show_expiry(qtbot, window, service, db) -> None:
    page = show_privacy(qtbot, window)
    page.use_combo.setCurrentIndex(page.use_combo.findData("organisation"))
    page.purpose_edit.setText("  door access of the lab ")
    page.retention_spin.setValue(30)
    page.retention_from_combo.setCurrentIndex(page.retention_from_combo.findData("last_match"))
    page.confirm = lambda *_a: True  # type: ignore[method-assign]
    with qtbot.waitSignal(page.policySaved, timeout=WAIT) as saved:
        page.apply_policy_button.click()
    expected = PrivacyPolicy("organisation", 30, "last_match", "door access of the lab")
    assert saved.args == [expected]
    assert service.privacy_policy() == expected and service.consent_required("Dee")
    assert page.policy_label.text().startswith("use: organisation (consent required")
    assert page.policy_label.text().endswith("; purpose: door access of the lab")
    idle(qtbot, window)
    with FaceService.open(str(db), load_model=False) as other:  # stored in the gallery file
        assert other.privacy_policy() == expected
    people = window.people_page
    with qtbot.waitSignal(people.peopleLoaded, timeout=WAIT):
        window.show_page(people)
    idle(qtbot, window)
    assert people.select_name("Ann")
    soon = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%d")
    assert f"expires {soon} (retention policy)" in people.summary.text()
    tooltip = people.model.data(people.model.index(0, 0), 3)  # ToolTipRole
    assert f"expires {soon}" in tooltip
    assert [e["kind"] for e in service.events(1)] == ["policy"]


def test_shorter_retention_is_asked_first(qtbot, window, service) -> None:
    page = show_privacy(qtbot, window)
    page.retention_spin.setValue(7)
    asked: list[str] = []
    page.confirm = lambda _t, text: asked.append(text) or False  # type: ignore[method-assign]
    assert not page.apply_policy()
    assert len(asked) == 1 and "deleted 7 day(s) after enrolment" in asked[0]
    assert service.privacy_policy() == PrivacyPolicy()


def test_rotate_keys_then_reopen(qtbot, window, service, db, monkeypatch) -> None:
    monkeypatch.delenv("FACEAPP_PASSPHRASE")  # the current one must be typed
    page = show_privacy(qtbot, window)
    key_file = Path(page.keys.key_file)
    before = key_file.read_bytes()
    asked: list[tuple[str, bool]] = []
    replies = {"Current": "wrong", "New": "new secret"}

    def ask_passphrase(_title: str, label: str, *, confirm: bool = False) -> str:
        asked.append((label, confirm))
        return replies[label.split()[0]]

    page.ask_passphrase = ask_passphrase  # type: ignore[method-assign]
    with qtbot.waitSignal(window.messageShown, timeout=WAIT,
                          check_params_cb=lambda _t, error: error) as shown:
        assert page.rotate_button.isEnabled() and page.rotate_keys()
    assert "wrong passphrase" in shown.args[0] and "nothing was changed" in shown.args[0]
    assert key_file.read_bytes() == before
    assert asked == [("Current passphrase of the gallery:", False),
                     ("New passphrase of the gallery:", True)]
    replies["Current"] = PASSPHRASE
    changed: list[str] = []
    window.ctx.passphraseChanged.connect(changed.append)
    with qtbot.waitSignal(page.keysRotated, timeout=WAIT) as rotated:
        page.rotate_button.click()
    report = rotated.args[0]
    assert report.source == "passphrase" and report.rotated and changed == ["new secret"]
    assert key_file.read_bytes() != before and "last rotated" in page.keys_label.text()
    idle(qtbot, window)
    assert page.audit_rows()[-1][3:5] == ("keys", "rotated")
    window.shutdown()
    service.close()
    with FaceService.open(str(db), load_model=False, key_prompt=lambda _m, _c: "new secret") as svc:
        assert svc.people_names() == ["Ann", "Bob", "Cid"]
        assert [(e["kind"], e["outcome"]) for e in svc.events(1)] == [("keys", "rotated")]
    from faceapp.errors import WrongPassphrase

    with pytest.raises(WrongPassphrase):
        FaceService.open(str(db), load_model=False, key_prompt=lambda _m, _c: PASSPHRASE)


def test_audit_lists_enrol_and_delete_and_filters(qtbot, window, service) -> None:
    people = window.people_page
    with qtbot.waitSignal(people.peopleLoaded, timeout=WAIT):
        window.show_page(people)
    idle(qtbot, window)
    assert people.select_name("Bob")
    with qtbot.waitSignal(people.peopleLoaded, timeout=WAIT):
        assert people.delete_selected(ask=False)
    page = show_privacy(qtbot, window)
    rows = page.audit_rows()
    actions = [(r[3], r[4], r[5]) for r in rows]
    bob = actions[1][2]  # the deleted Bob shows as his pseudonym, the living by name
    assert bob.startswith("deleted person (p:")
    assert actions[:3] == [("enroll", "accepted", "Ann"), ("enroll", "accepted", bob),
                           ("enroll", "accepted", "Cid")]
    assert len(actions) == 4 and actions[-1] == ("delete", "deleted", bob)
    assert all("@" in r[2] for r in rows)
    assert rows[0][6] == "accepted: 2, rejected: 0, model_id: fake-model-1"
    assert rows[-1][6] == "templates: 2"
    with qtbot.waitSignal(page.auditLoaded, timeout=WAIT) as loaded:
        page.action_combo.setCurrentIndex(page.action_combo.findData("delete"))
    assert loaded.args == [1] and page.audit_rows()[0][3:6] == ("delete", "deleted", bob)
    with qtbot.waitSignal(page.chainVerified, timeout=WAIT) as verified:
        page.verify_button.click()
    assert verified.args[0].ok and page.chain_label.text().startswith("✔ audit log intact: 4 entries")


def test_verify_reports_a_tampered_entry(qtbot, window, service, db) -> None:
    victim = Governance.of(service).audit_entries()[1]
    con = raw_connect(db)
    try:  # someone with the key drops the append-only triggers and edits an entry
        con.execute("DROP TRIGGER audit_entry_no_update")
        con.execute("UPDATE audit_entry SET subject = 'Mallory' WHERE id = ?", (victim.id,))
        con.commit()
    finally:
        con.close()
    page = show_privacy(qtbot, window)
    assert page.audit_rows()[1][5] == "Mallory"
    with qtbot.waitSignal(page.chainVerified, timeout=WAIT) as verified:
        page.verify_button.click()
    report = verified.args[0]
    assert not report.ok and report.first_bad == victim.id
    text = page.chain_label.text()
    assert f"audit log BROKEN at entry {victim.id}" in text and "was modified" in text
    selected = page.audit_table.selectedItems()
    assert selected and {i.row() for i in selected} == {1}


def test_readable_detail() -> None:
    from faceapp.gui.privacy_page import readable_detail

    assert readable_detail('{"detail": "{\\"templates\\": 2}", "score": 0.5}') == "templates: 2, score: 0.5"
    assert readable_detail('{"detail": "free text"}') == "detail: free text"
    assert readable_detail('{"kdf": {"name": "argon2id"}}') == 'kdf: {"name": "argon2id"}'
    assert readable_detail("not json") == "not json" and readable_detail("") == ""
