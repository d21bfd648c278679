"""FaceService on a real SQLite file, with a deterministic stand-in pipeline.

The stand-in reads "faces" encoded in tiny synthetic images, so that every decision of the
service (which faces are accepted, who is recognised, which τ applies, what is stored) can
be checked exactly, without a detector or a network. The real pipeline is exercised end to
end in ``test_cli_gallery.py``.
"""

from __future__ import annotations

import json
import math
import os
import stat

import numpy as np
import pytest
from fakes import CROP, FakePipeline, calibration_for, enroll_three, identity_vector, img, make_service

from faceapp.errors import (
    CalibrationError,
    DuplicatePerson,
    GalleryError,
    InvalidImage,
    ModelMismatch,
    MultipleFaces,
    NoFaceFound,
    PersonNotFound,
    QualityRejected,
)
from faceapp.gallery import integrity_check, open_database
from faceapp.gallery.bundle import seal_bundle
from faceapp.gallery.crypto import KdfParams
from faceapp.services import FaceService
from faceapp.vision.images import load_image

PW = "export passphrase"


@pytest.fixture
def db_url(gallery_url):
    """Every test here runs on a SQLite file and on a real PostgreSQL database."""
    return gallery_url


@pytest.fixture
def svc(db_url):
    service = make_service(db_url)
    yield service
    service.close()


def brute_force_best(svc, probe: np.ndarray) -> dict[str, float]:
    """{name: best cosine over that person's stored templates}, with loops."""
    best: dict[str, float] = {}
    pipeline = svc.pipeline
    for person in svc.list_people():
        for t in svc.person_templates(person.name):
            crop = load_image(t.crop_png)
            emb = pipeline.embed_crops(crop[None])[0]
            s = sum(float(a) * float(b) for a, b in zip(probe, emb, strict=True))
            best[person.name] = max(best.get(person.name, -math.inf), s)
    return best


def test_enroll_recognize_verify(svc):
    enroll_three(svc)
    faces = svc.recognize(img((1, 5), (2, 6), (9, 0)), top_k=3)
    assert [f.person for f in faces] == ["Ann", "Bob", None]
    for f, probe_person in zip(faces, (1, 2, 9), strict=True):
        probe = identity_vector(probe_person, {1: 5, 2: 6, 9: 0}[probe_person], 1)
        best = brute_force_best(svc, probe)
        expected = sorted(best.items(), key=lambda kv: -kv[1])[:3]
        assert [n for n, _ in f.candidates] == [n for n, _ in expected]
        np.testing.assert_allclose([s for _, s in f.candidates], [s for _, s in expected],
                                   atol=1e-5)
        assert f.score == pytest.approx(expected[0][1], abs=1e-5)
        # 1:K against 3 people: the calibration's far_0.001 (0.7), not the 1:1 far_0.01
        assert f.threshold == 0.7 and f.scorer == "distance"
    v = svc.verify("Ann", img((1, 7)))
    assert v.match and v.person == "Ann" and v.threshold == 0.6 and v.scorer == "distance"
    assert v.score == pytest.approx(brute_force_best(svc, identity_vector(1, 7, 1))["Ann"],
                                    abs=1e-5)
    v = svc.verify("Ann", img((2, 7)))
    assert not v.match
    assert v.score < 0.6


def test_verify_needs_a_face_and_a_choice_among_several(svc):
    """Several faces: verify says how many and takes --largest or --face N, never silently
    the largest (a photo of Blair with Bush used to verify Blair's face against "Bush")."""
    enroll_three(svc)
    two = img((1, 3, 0, 40), (2, 3, 0, 120))
    with pytest.raises(MultipleFaces, match=r"2 faces found; choose one with --largest or --face N"):
        svc.verify("Bob", two)
    v = svc.verify("Bob", two, largest=True)
    assert v.match and v.box == (10.0, 0.0, 130.0, 120.0)
    assert (v.faces_found, v.face) == (2, 2) and v.to_dict()["faces_found"] == 2
    first = svc.verify("Bob", two, face=1)  # Ann's face, against Bob
    assert not first.match and (first.faces_found, first.face) == (2, 1)
    assert first.box == (0.0, 0.0, 40.0, 40.0)
    with pytest.raises(MultipleFaces, match="face 3 asked for, 2 found"):
        svc.verify("Bob", two, face=3)
    one = svc.verify("Bob", img((2, 4)))
    assert one.match and (one.faces_found, one.face) == (1, 1)
    with pytest.raises(NoFaceFound):
        svc.verify("Bob", img())
    with pytest.raises(PersonNotFound):
        svc.verify("Zed", img((1, 3)))


def test_enroll_reports_rejections(svc):
    report = svc.enroll("Ann", [
        img((1, 0)),
        img((1, 1), (2, 1)),          # two faces
        img((1, 2, 1)),               # blurred
        img(),                        # no face
        b"not an image",              # unreadable
        img((1, 3)),
    ])
    assert report.templates_added == 2
    assert len(report.accepted) == 2
    reasons = [r for _, r in report.rejected]
    assert len(reasons) == 4
    assert "2 faces" in reasons[0]
    assert "blurred" in reasons[1]
    assert reasons[2] == "no face found"
    assert reasons[3]  # the loader's reason
    assert [p.n_templates for p in svc.list_people()] == [2]
    report = svc.enroll("Ann", [img((1, 1, 0, 150), (2, 1, 0, 50))], largest=True)
    assert report.templates_added == 1
    assert svc.list_people()[0].n_templates == 3


@pytest.mark.parametrize("images,error", [
    ([img((1, 0, 1))], QualityRejected),
    ([img(), img()], NoFaceFound),
    ([b"garbage"], InvalidImage),
])
def test_enroll_nothing_accepted_raises_and_stores_nothing(svc, images, error):
    with pytest.raises(error):
        svc.enroll("Ann", images)
    assert svc.list_people() == []
    assert svc.events(kind="enroll")[0]["outcome"] == "rejected"


def test_enroll_is_all_or_nothing(svc, monkeypatch):
    enroll_three(svc)
    from faceapp.gallery.repository import GalleryRepository

    def boom(self, *a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(GalleryRepository, "log_event", boom)
    with pytest.raises(RuntimeError):
        svc.enroll("Dee", [img((4, 0)), img((4, 1))])
    monkeypatch.undo()
    assert [p.name for p in svc.list_people()] == ["Ann", "Bob", "Cid"]
    (face,) = svc.recognize(img((4, 2)))
    assert face.person is None  # the index did not keep the rolled-back templates


def test_enroll_faces_and_check_enrollment(svc):
    enroll_three(svc)
    pipeline = svc.pipeline
    captures = pipeline.analyze(img((1, 8))) + pipeline.analyze(img((5, 1))) + \
        pipeline.analyze(img((5, 2, 1)))
    warnings = svc.check_enrollment("Eve", captures[:2])
    assert len(warnings) == 1 and "'Ann'" in warnings[0] and "face 1" in warnings[0]
    warnings = svc.check_enrollment("Bob", captures[1:2])
    assert len(warnings) == 1 and "already exists" in warnings[0]
    report = svc.enroll_faces("Eve", captures[1:], sources=["cam 1", "cam 2"])
    assert report.accepted == ["cam 1"]
    assert report.rejected == [("cam 2", "too blurred")]
    assert svc.recognize(img((5, 9)))[0].person == "Eve"
    with pytest.raises(PersonNotFound):
        svc.enroll_faces("Fay", captures[1:2], create=False)


def test_rename_and_delete_update_recognition(svc):
    enroll_three(svc)
    assert svc.rename_person("Bob", " Robert  ") == "Robert"
    assert svc.recognize(img((2, 4)))[0].person == "Robert"
    assert svc.verify("Robert", img((2, 4))).match
    with pytest.raises(DuplicatePerson):
        svc.rename_person("Robert", "Ann")
    assert svc.delete_person("Ann") == 2
    (face,) = svc.recognize(img((1, 4)), top_k=5)
    assert face.person is None
    assert "Ann" not in [n for n, _ in face.candidates]
    with pytest.raises(PersonNotFound):
        svc.delete_person("Ann")
    kinds = [e["kind"] for e in svc.events()]
    for kind in ("enroll", "verify", "recognize", "rename", "delete"):
        assert kind in kinds


def test_events_record_decisions(svc):
    enroll_three(svc)
    svc.verify("Cid", img((3, 9)), threshold=0.2)
    ev = svc.events(kind="verify")[0]
    assert ev["person"] == "Cid" and ev["outcome"] == "match"
    assert ev["threshold"] == 0.2 and ev["scorer"] == "distance" and ev["score"] > 0.2
    svc.recognize(img((9, 9)))
    ev = svc.events(kind="recognize")[0]
    assert ev["outcome"] == "unknown" and ev["person"] is None
    n = len(svc.events(kind="recognize"))
    svc.recognize(img((1, 9)), log_event=False)
    assert len(svc.events(kind="recognize")) == n


def test_second_service_sees_changes_of_the_first(db_url):
    a = make_service(db_url)
    b = make_service(db_url)
    try:
        a.enroll("Ann", [img((1, 0))])
        assert b.recognize(img((1, 1)))[0].person == "Ann"
        b.enroll("Bob", [img((2, 0))])
        a.delete_person("Ann")
        assert a.recognize(img((2, 1)))[0].person == "Bob"
        assert b.recognize(img((1, 1)))[0].person is None
    finally:
        a.close()
        b.close()


def test_threshold_sources(db_url):
    svc = make_service(db_url)
    try:
        assert svc.threshold() == 0.6
        assert svc.threshold("distance", "far_0.001") == pytest.approx(0.7)
        assert svc.available_scorers() == ["distance"]
        with pytest.raises(CalibrationError):
            svc.threshold("nope")
        enroll_three(svc)
        probe = img((1, 9))
        score = svc.verify("Ann", probe).score
        assert svc.verify("Ann", probe, threshold=score + 0.01).match is False
        svc.set_threshold("distance", 0.123)
    finally:
        svc.close()
    again = make_service(db_url)
    try:
        assert again.threshold() == pytest.approx(0.123)  # stored in the gallery database
        assert again.threshold("distance", "eer") == pytest.approx(0.5)
        assert again.recognize(img((9, 1)))[0].threshold == pytest.approx(0.123)
        again.set_threshold("distance", None)
        assert again.threshold() == 0.6
    finally:
        again.close()
    bare = make_service(db_url, calibration=None)
    try:
        with pytest.raises(CalibrationError):
            bare.threshold()
        with pytest.raises(CalibrationError):
            bare.recognize(img((1, 1)))
        assert bare.recognize(img((1, 1)), threshold=0.5)[0].person == "Ann"
    finally:
        bare.close()
    other = make_service(db_url, calibration=calibration_for(FakePipeline(seed=7)))
    try:
        with pytest.raises(CalibrationError, match="calibration file is for model"):
            other.threshold()
    finally:
        other.close()


def test_model_mismatch_and_reembed(db_url):
    old = make_service(db_url, FakePipeline(seed=1))
    enroll_three(old)
    old.close()
    new_pipeline = FakePipeline(seed=2)
    new = make_service(db_url, new_pipeline)
    try:
        with pytest.raises(ModelMismatch):
            new.recognize(img((1, 1)))
        with pytest.raises(ModelMismatch):
            new.verify("Ann", img((1, 1)))
        seen = []
        report = new.reembed(progress=lambda d, t: seen.append((d, t)), batch_size=4)
        assert (report.recomputed, report.from_old_crops, report.model_id) == (6, 0, new_pipeline.model_id)
        assert seen[0] == (0, 6) and seen[-1] == (6, 6)
        assert {t.model_id for p in new.list_people() for t in new.person_templates(p.name)} \
            == {new_pipeline.model_id}
        faces = new.recognize(img((1, 5), (3, 5)))
        assert [f.person for f in faces] == ["Ann", "Cid"]
        # identical to enrolling from scratch with the new model
        expected = identity_vector(1, 0, 2) @ identity_vector(1, 5, 2)
        expected = max(expected, identity_vector(1, 1, 2) @ identity_vector(1, 5, 2))
        assert faces[0].score == pytest.approx(float(expected), abs=1e-5)
        assert new.reembed().recomputed == 0
    finally:
        new.close()


def test_reembed_can_stop_and_resume(db_url):
    old = make_service(db_url, FakePipeline(seed=1))
    enroll_three(old)
    old.close()
    new = make_service(db_url, FakePipeline(seed=2))
    try:
        calls = iter([False, True])
        done = new.reembed(should_stop=lambda: next(calls), batch_size=4)
        assert done.recomputed == 4
        with pytest.raises(ModelMismatch):
            new.recognize(img((1, 1)))
        assert new.reembed(batch_size=4).recomputed == 2
        assert new.recognize(img((1, 1)))[0].person == "Ann"
    finally:
        new.close()


def test_export_import_gives_identical_results(svc, tmp_path):
    enroll_three(svc)
    svc.enroll("Dee", [img((4, 0))])
    path = tmp_path / "out" / "gallery.faceapp"
    t = svc.export_gallery(path, passphrase=PW)
    assert (t.people, t.templates) == (4, 7)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    probes = img((1, 9), (2, 9), (4, 9), (8, 1))
    before = svc.recognize(probes, top_k=4)
    other = make_service(f"sqlite:///{tmp_path / 'new.sqlite'}")
    try:
        t2 = other.import_gallery(path, passphrase=PW)
        assert (t2.people, t2.templates) == (4, 7)
        after = other.recognize(probes, top_k=4)
        assert after == before
        assert [p.name for p in other.list_people()] == [p.name for p in svc.list_people()]
        a = svc.person_templates("Ann")
        b = other.person_templates("Ann")
        assert [x.crop_png for x in a] == [x.crop_png for x in b]
        assert [x.quality for x in a] == [x.quality for x in b]
        with pytest.raises(DuplicatePerson):
            other.import_gallery(path, passphrase=PW)
        assert other.import_gallery(path, passphrase=PW, on_conflict="skip").skipped == ["Ann", "Bob", "Cid",
                                                                           "Dee"]
        merged = other.import_gallery(path, passphrase=PW, on_conflict="merge")
        assert merged.templates == 7 and other.list_people()[0].n_templates == 4
        assert integrity_check(other.engine) == "ok"
    finally:
        other.close()


@pytest.mark.parametrize("content", [
    b"{not json",
    json.dumps({"format": "something-else"}).encode(),
    json.dumps({"format": "faceapp-gallery", "version": 99, "people": []}).encode(),
    json.dumps({"format": "faceapp-gallery", "version": 1, "people": [
        {"name": "X", "templates": [{"model_id": "m", "dim": 4, "embedding": "AAAA"}]}]}).encode(),
])
def test_import_rejects_bad_files(svc, tmp_path, content):
    """Inside a sound bundle (the document itself is bad), and as plaintext accepted."""
    path = tmp_path / "bad.faceapp"
    path.write_bytes(seal_bundle(content, PW, KdfParams.from_env()))
    with pytest.raises(GalleryError):
        svc.import_gallery(path, passphrase=PW)
    path.write_bytes(content)
    with pytest.raises(GalleryError):
        svc.import_gallery(path, passphrase=PW, allow_plaintext=True)
    assert svc.list_people() == []


def test_people_listing_and_templates(svc):
    enroll_three(svc)
    people = svc.list_people()
    assert [(p.name, p.n_templates) for p in people] == [("Ann", 2), ("Bob", 2), ("Cid", 2)]
    assert svc.people_names() == ["Ann", "Bob", "Cid"]
    thumb = load_image(people[1].thumbnail_png)
    assert thumb.shape == (CROP, CROP, 3) and tuple(thumb[0, 0]) == (2, 0, 0)
    templates = svc.person_templates("Bob")
    assert [tuple(load_image(t.crop_png)[0, 0]) for t in templates] == [(2, 0, 0), (2, 1, 0)]
    assert templates[0].quality["sharpness"] == 80.0
    assert templates[0].model_id == "fake-model-1"
    svc.delete_template(templates[0].id)
    assert svc.list_people()[1].n_templates == 1
    assert svc.verify("Bob", img((2, 1)), threshold=0.999).match  # the kept template


def test_gallery_scores_brute_force(svc):
    enroll_three(svc)
    scores, same = svc.gallery_scores()
    embs, owners = [], []
    for p in svc.list_people():
        for t in svc.person_templates(p.name):
            embs.append(svc.pipeline.embed_crops(load_image(t.crop_png)[None])[0])
            owners.append(p.id)
    expected = sorted(
        (round(float(sum(float(a) * float(b) for a, b in zip(embs[i], embs[j], strict=True))), 5),
         owners[i] == owners[j])
        for i in range(len(embs)) for j in range(i + 1, len(embs)))
    got = sorted((round(float(s), 5), bool(m)) for s, m in zip(scores, same, strict=True))
    assert got == expected
    assert int(same.sum()) == 3


def test_faces_of_another_model_are_refused(svc):
    enroll_three(svc)
    foreign = FakePipeline(seed=5).analyze(img((1, 1)))
    with pytest.raises(ModelMismatch):
        svc.recognize(foreign)
    with pytest.raises(ModelMismatch):
        svc.verify("Ann", foreign[0])
    with pytest.raises(ModelMismatch):
        svc.enroll_faces("Ann", foreign)


def test_closed_service_refuses(db_url):
    svc = make_service(db_url)
    svc.close()
    svc.close()
    with pytest.raises(GalleryError, match="closed"):
        svc.list_people()


def test_gallery_only_service(db_url):
    svc = make_service(db_url)
    enroll_three(svc)
    svc.close()
    bare = FaceService(open_database(db_url), owns_engine=True)
    try:
        assert [p.name for p in bare.list_people()] == ["Ann", "Bob", "Cid"]
        from faceapp.errors import ModelError

        with pytest.raises(ModelError):
            bare.recognize(img((1, 1)))
    finally:
        bare.close()
