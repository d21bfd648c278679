"""faceapp.services.governance: one implementation of policy, keys and audit log for the CLI
and the GUI; the kinds of logged operations come from one definition."""

from __future__ import annotations

import argparse
import ast
import json
from dataclasses import replace
from pathlib import Path

import pytest
from fakes import enroll_three, make_service

from faceapp.cli import build_parser, main
from faceapp.errors import GalleryError, WrongPassphrase
from faceapp.gallery.audit import EVENT_KINDS
from faceapp.services import FaceService
from faceapp.services.governance import Governance, PrivacyPolicy, describe_policy, key_report

PACKAGE = Path(__file__).resolve().parents[1] / "faceapp"


def _logged_kinds() -> set[str]:
    """The kind of every call that logs an operation in the gallery, services and CLI:
    ``log_event(kind, ...)``, ``audit.append(session, kind, ...)``,
    ``chained_fields(prev, kind, ...)``, ``self._log(kind, ...)``."""
    position = {"log_event": 0, "_log": 0, "append": 1, "chained_fields": 1}
    kinds: set[str] = set()
    files = [p for folder in ("gallery", "services", "cli", "liveness") for p in
             (PACKAGE / folder).rglob("*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute | ast.Name):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
            if name not in position or len(node.args) <= position[name]:
                continue
            if name == "append" and not (isinstance(node.func, ast.Attribute)
                                         and isinstance(node.func.value, ast.Name)
                                         and node.func.value.id == "audit"):
                continue
            arg = node.args[position[name]]
            if isinstance(arg, ast.Name) and arg.id in ("kind", "action"):
                continue  # passes its caller's kind on (log_event itself)
            assert isinstance(arg, ast.Constant) and isinstance(arg.value, str), (
                f"{path}:{node.lineno}: {name}() with a kind that is not a literal")
            kinds.add(arg.value)
    return kinds


def _choices(parser: argparse.ArgumentParser, *path: str, option: str) -> tuple[str, ...]:
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    action = next(a for a in parser._actions if option in a.option_strings)
    return tuple(action.choices)


def test_event_kinds_are_one_definition():
    logged = _logged_kinds()
    assert {"enroll", "consent", "policy", "keys", "delete"} <= logged
    assert logged == set(EVENT_KINDS), "every kind logged is listed, and none listed is unused"
    parser = build_parser()
    assert _choices(parser, "people", "events", option="--kind") == EVENT_KINDS
    assert _choices(parser, "audit", option="--action") == EVENT_KINDS


def test_events_kind_lists_the_new_kinds(tmp_path, capsys):
    db = tmp_path / "g.sqlite"
    svc = make_service(f"sqlite:///{db}")
    enroll_three(svc)
    svc.close()
    assert main(["policy", "--db", str(db), "--use", "organisation"]) == 0
    assert main(["keys", "rotate", "--db", str(db)]) == 2  # no new passphrase: nothing changed
    capsys.readouterr()
    for kind in ("policy", "consent", "keys"):
        assert main(["people", "events", "--db", str(db), "--kind", kind, "--json"]) == 0
        events = json.loads(capsys.readouterr().out)
        assert all(e["kind"] == kind for e in events)
        assert len(events) == (1 if kind == "policy" else 0)
    with pytest.raises(SystemExit):
        main(["people", "events", "--db", str(db), "--kind", "bogus"])


def test_policy_keys_and_audit_through_governance(tmp_path, monkeypatch):
    db = tmp_path / "g.sqlite"
    svc = make_service(f"sqlite:///{db}")
    enroll_three(svc)
    gov = Governance.of(svc)
    assert gov.policy() == PrivacyPolicy()
    policy = gov.update_policy(use="organisation", retention_days=30, purpose=" lab door ")
    assert policy == PrivacyPolicy("organisation", 30, "enrolment", "lab door")
    assert svc.privacy_policy() == policy  # the service sees the same stored policy
    assert describe_policy(policy).startswith("use: organisation (consent required")
    assert gov.update_policy() == policy
    with pytest.raises(GalleryError, match="500 characters"):
        gov.update_policy(purpose="x" * 501)
    assert gov.policy() == policy

    before = gov.key_status()
    assert before.managed and before.encrypted and before.source == "passphrase"
    assert before.passphrase_from_env and before.to_dict()["encrypted"] is True
    key_file = Path(before.key_file).read_bytes()
    monkeypatch.setenv("FACEAPP_PASSPHRASE", "wrong one")
    with pytest.raises(WrongPassphrase):
        gov.rotate_keys(new="never used")
    assert Path(before.key_file).read_bytes() == key_file  # nothing changed
    monkeypatch.delenv("FACEAPP_PASSPHRASE")
    asked: list[bool] = []

    def prompt(message: str, confirm: bool) -> str:
        asked.append(confirm)
        return "new passphrase"

    after = gov.rotate_keys(current="correct horse battery staple (tests)", prompt=prompt)
    assert asked == [True] and after.rotated and after.key_id == before.key_id
    assert not after.passphrase_from_env
    with pytest.raises(GalleryError, match="no passphrase"):
        gov.rotate_keys(current="new passphrase")  # no new one, no prompt: nothing changed
    svc.close()
    monkeypatch.setenv("FACEAPP_PASSPHRASE", "new passphrase")
    with FaceService.open(str(db), load_model=False) as reopened:
        assert reopened.people_names() == ["Ann", "Bob", "Cid"]
        gov = Governance.of(reopened)
        rows = gov.audit_entries()
        assert [(r.action, r.outcome) for r in rows[-2:]] == [("policy", "set"), ("keys", "rotated")]
        assert gov.audit_entries(action="keys", limit=5) == rows[-1:]
        assert gov.verify_audit().ok
    assert key_report(db) == replace(after, passphrase_from_env=True)


def test_server_galleries_have_no_managed_keys(pg_url):
    svc = make_service(pg_url)
    try:
        report = Governance.of(svc).key_status()
        assert not report.managed and not report.encrypted
        assert "does not encrypt" in report.text()
        with pytest.raises(GalleryError, match="SQLite gallery files only"):
            Governance.of(svc).rotate_keys(new="x")
    finally:
        svc.close()


def test_purpose_by_the_cli_and_policies_stored_without_one(tmp_path, capsys):
    from faceapp.gallery import GalleryRepository, open_database, write_session
    from faceapp.gallery.privacy import POLICY_KEY

    db = tmp_path / "g.sqlite"
    engine = open_database(str(db))
    with write_session(engine) as s:  # as stored before the purpose existed
        GalleryRepository(s).set_setting(POLICY_KEY, json.dumps(
            {"use": "organisation", "retention_days": 3, "retention_from": "last_match"}))
    assert Governance(engine).policy() == PrivacyPolicy("organisation", 3, "last_match", "")
    engine.dispose()
    assert main(["policy", "--db", str(db), "--purpose", "visitor badges", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "use": "organisation", "retention_days": 3, "retention_from": "last_match",
        "purpose": "visitor badges"}
    assert main(["policy", "--db", str(db), "--purpose", ""]) == 0
    assert capsys.readouterr().out.strip() == (
        "use: organisation (consent required for new people); people are deleted 3 day(s) "
        "after their last match")
