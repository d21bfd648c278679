"""Consent at enrolment (required in an organisation's gallery) and retention (people
deleted N days after enrolment or last match; at start-up, by `people expire`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from fakes import enroll_three, img, make_service, raw_connect
from sqlalchemy import update

from faceapp.cli import gallery_cmds, main
from faceapp.errors import GalleryError
from faceapp.gallery import GalleryRepository, audit, read_session, write_session
from faceapp.gallery.orm import Event, Person
from faceapp.services import Consent, ConsentRequired, FaceService, PrivacyPolicy

CONSENT = Consent("door access at the lab", "signed form 2026-031")


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'g.sqlite'}"


def test_personal_gallery_records_consent_when_given(url):
    svc = make_service(url)
    try:
        assert svc.privacy_policy() == PrivacyPolicy()  # a new gallery is personal use
        svc.enroll("Ann", [img((1, 0))])
        assert svc.consents("Ann") == []
        svc.enroll("Bob", [img((2, 0))], consent=CONSENT)
        (c,) = svc.consents("Bob")
        assert (c["purpose"], c["basis"], c["given_by"]) == (CONSENT.purpose, CONSENT.basis, "Bob")
        assert "@" in str(c["recorded_by"])
    finally:
        svc.close()


def test_organisation_gallery_refuses_a_new_person_without_consent(url):
    svc = make_service(url)
    try:
        svc.enroll("Ann", [img((1, 0))])
        svc.set_privacy_policy(PrivacyPolicy(use="organisation"))
        assert svc.consent_required("Bob") and not svc.consent_required("Ann")
        with pytest.raises(ConsentRequired, match="consent"):
            svc.enroll("Bob", [img((2, 0))])
        with pytest.raises(ConsentRequired):
            svc.enroll_faces("Bob", svc.analyze(img((2, 0))))
        assert svc.people_names() == ["Ann"]
        assert svc.enroll("Ann", [img((1, 1))]).templates_added == 1  # already enrolled
        svc.enroll("Bob", [img((2, 0))], consent=Consent("access", "verbal, witnessed", "Bob's guardian"))
        assert svc.consents("Bob")[0]["given_by"] == "Bob's guardian"
        with read_session(svc.engine) as s:
            actions = [(r.action, r.person) for r in audit.entries(s)]
        assert ("consent", "Bob") in actions and ("policy", "") in actions
        svc.delete_person("Bob")
    finally:
        svc.close()
    con = raw_connect(url.removeprefix("sqlite:///"))
    try:  # the consent record went with the person; the history keeps no name of it
        assert con.execute("SELECT count(*) FROM consent").fetchone()[0] == 0
        history = con.execute("SELECT detail, subject FROM audit_entry").fetchall()
        history += con.execute("SELECT detail, person FROM event").fetchall()
        assert not any("Bob" in (d or "") + (p or "") or "witnessed" in d for d, p in history)
    finally:
        con.close()


def test_consent_and_policy_are_validated():
    with pytest.raises(GalleryError):
        Consent("", "form")
    with pytest.raises(GalleryError):
        Consent("purpose", "   ")
    with pytest.raises(GalleryError):
        PrivacyPolicy(use="public")  # type: ignore[arg-type]
    with pytest.raises(GalleryError):
        PrivacyPolicy(retention_days=-1)


def age(svc: FaceService, name: str, days: float) -> None:
    """Move ``name``'s enrolment ``days`` into the past."""
    with write_session(svc.engine) as s:
        s.execute(update(Person).where(Person.name == name).values(
            created=datetime.now(UTC) - timedelta(days=days)))


def test_retention_from_enrolment_and_from_last_match(url):
    svc = make_service(url)
    try:
        enroll_three(svc)
        age(svc, "Ann", 40)
        age(svc, "Bob", 40)
        with write_session(svc.engine) as s:  # Bob (by pseudonym) was matched 5 days ago
            bob = GalleryRepository(s).get_person("Bob").pseudonym
            s.add(Event(kind="verify", person=bob, outcome="match",
                        time=datetime.now(UTC) - timedelta(days=5)))
        svc.set_privacy_policy(PrivacyPolicy(retention_days=30, retention_from="last_match"))
        expires = {p.name: p.expires for p in svc.list_people()}
        now = datetime.now(UTC)
        assert abs(expires["Ann"] - (now - timedelta(days=10))) < timedelta(minutes=1)
        assert abs(expires["Bob"] - (now + timedelta(days=25))) < timedelta(minutes=1)
        assert abs(expires["Cid"] - (now + timedelta(days=30))) < timedelta(minutes=1)
        assert [g.name for g in svc.expire_people(dry_run=True)] == ["Ann"]
        assert svc.people_names() == ["Ann", "Bob", "Cid"]
        (gone,) = svc.expire_people()
        assert (gone.name, gone.templates_deleted) == ("Ann", 2)
        deletions = [e for e in svc.events(kind="delete")]
        assert [e["outcome"] for e in deletions] == ["expired"]  # retention, not a user
        assert svc.people_names() == ["Bob", "Cid"]
        svc.set_privacy_policy(PrivacyPolicy(retention_days=30, retention_from="enrolment"))
        assert [g.name for g in svc.expire_people()] == ["Bob"]
        later = datetime.now(UTC) + timedelta(days=31)
        assert [g.name for g in svc.expire_people(dry_run=True, now=later)] == ["Cid"]
        svc.set_privacy_policy(PrivacyPolicy())
        assert svc.list_people()[0].expires is None and svc.expire_people(now=later) == []
    finally:
        svc.close()


def test_retention_is_applied_at_start_up_and_by_the_cli(url, monkeypatch, capsys):
    svc = make_service(url)
    enroll_three(svc)
    svc.set_privacy_policy(PrivacyPolicy(retention_days=7))
    age(svc, "Cid", 8)
    svc.close()
    with FaceService.open(url, load_model=False) as opened:
        assert opened.people_names() == ["Ann", "Bob"]  # Cid expired at start-up
    monkeypatch.setattr(gallery_cmds, "_open_service",
                        lambda args, load_model=True: make_service(url))
    assert main(["policy", "--db", url, "--use", "organisation", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "use": "organisation", "retention_days": 7, "retention_from": "enrolment", "purpose": ""}
    svc = make_service(url)
    age(svc, "Bob", 30)
    svc.close()
    assert main(["people", "list", "--db", url]) == 0
    assert "expires" in capsys.readouterr().out
    assert main(["people", "expire", "--dry-run", "--db", url]) == 0
    assert "would delete Bob" in capsys.readouterr().out
    assert main(["people", "expire", "--db", url]) == 0
    assert "deleted Bob" in capsys.readouterr().out
    assert main(["people", "expire", "--db", url]) == 0
    assert "nobody has expired" in capsys.readouterr().out
