"""The 1:K τ: the calibration point follows the number of people searched
(:func:`identification_point`), the user's τ still wins (:meth:`ThresholdPolicy.identification`),
and the service's searches report the τ they used."""

from __future__ import annotations

import shutil
from fractions import Fraction

import pytest
from fakes import FakePipeline, img, make_service

from faceapp.errors import CalibrationError
from faceapp.gallery import open_database
from faceapp.nn.calibration import Calibration
from faceapp.nn.scoring import CosineScorer
from faceapp.services import FaceService
from faceapp.services.thresholds import FPIR_TARGET, ThresholdPolicy, identification_point
from faceapp.services.unit_of_work import UnitOfWork

# distinct τ, one per calibration point (TIERS lacks far_1e-05, as a file from < 1e6 impostor
# pairs does; STRICT has it; a head's entry lacks far_0.0001 too)
TIERS = {"far_0.01": 0.5, "far_0.001": 0.6, "far_0.0001": 0.7, "eer": 0.45}
STRICT = {**TIERS, "far_1e-05": 0.75}
HEAD = {"far_0.01": 0.8, "far_0.001": 0.9}


# ---------------------------------------------------------------------- identification_point
@pytest.mark.parametrize(("n_people", "point"), [
    (0, "far_0.01"), (1, "far_0.01"), (2, "far_0.001"), (10, "far_0.001"),
    (11, "far_0.0001"), (100, "far_0.0001"), (101, "far_1e-05"), (1000, "far_1e-05"),
    (1001, "far_1e-05"), (10**6, "far_1e-05")])
def test_identification_point_table(n_people, point):
    assert identification_point(n_people) == point


def test_identification_point_is_the_loosest_within_the_fpir_target():
    """Brute force in exact fractions: the loosest FAR f with f × max(1, G) <= 1e-2."""
    assert FPIR_TARGET == 1e-2
    fars = [("far_0.01", Fraction(1, 100)), ("far_0.001", Fraction(1, 1000)),
            ("far_0.0001", Fraction(1, 10000)), ("far_1e-05", Fraction(1, 100000))]
    for g in range(0, 2500):
        fitting = [name for name, far in fars if far * max(1, g) <= Fraction(1, 100)]
        assert identification_point(g) == (fitting[0] if fitting else "far_1e-05"), g


# ---------------------------------------------------------------------- the policy
@pytest.fixture
def uow(tmp_path):
    unit = UnitOfWork(open_database(f"sqlite:///{tmp_path / 'g.sqlite'}"), owns_engine=True)
    yield unit
    unit.close()


def policy_for(uow, calibration, **kw):
    return ThresholdPolicy(uow, "m", {"distance": CosineScorer(), "head": CosineScorer()},
                           calibration, **kw)


def test_calibration_point_follows_the_gallery_size(uow):
    policy = policy_for(uow, Calibration("m", {"distance": dict(TIERS), "head": dict(HEAD)}))
    for g, tau in ((0, 0.5), (1, 0.5), (2, 0.6), (10, 0.6), (11, 0.7), (100, 0.7), (5000, 0.7)):
        assert policy.identification("distance", g) == tau, g  # no far_1e-05: far_0.0001
        assert policy.current("distance") == 0.5  # 1:1 keeps far_0.01
    strict = policy_for(uow, Calibration("m", {"distance": dict(STRICT)}))
    for g, tau in ((1, 0.5), (10, 0.6), (100, 0.7), (101, 0.75), (1000, 0.75), (5000, 0.75)):
        assert strict.identification("distance", g) == tau, g
    # a missing stricter point: the next looser one, never an error
    assert [policy.identification("head", g) for g in (1, 5, 50, 5000)] == [0.8, 0.9, 0.9, 0.9]
    only_1e2 = policy_for(uow, Calibration("m", {"distance": {"far_0.01": 0.5}}))
    assert only_1e2.identification("distance", 10**6) == 0.5


def test_errors_only_where_current_raises(uow):
    no_1e2 = policy_for(uow, Calibration("m", {"distance": {"far_0.0001": 0.7}}))
    with pytest.raises(CalibrationError):
        no_1e2.current("distance")
    with pytest.raises(CalibrationError):
        no_1e2.identification("distance", 1)
    assert no_1e2.identification("distance", 500) == 0.7
    none = policy_for(uow, None, problem="no calibration.json")
    with pytest.raises(CalibrationError, match=r"no calibration\.json"):
        none.identification("distance", 3)
    assert none.identification("distance", 3, threshold=0.25) == 0.25
    cal = policy_for(uow, Calibration("m", {"distance": dict(TIERS)}))
    with pytest.raises(CalibrationError, match="unknown scorer"):
        cal.identification("nope", 3)
    with pytest.raises(CalibrationError, match="no calibration for scorer"):
        cal.identification("head", 3)  # a scorer of the model without a calibration entry
    with pytest.raises(CalibrationError, match="finite"):
        cal.identification("distance", 3, threshold=float("nan"))


def test_user_choices_win_over_the_gallery_size(tmp_path, uow):
    cal = Calibration("m", {"distance": dict(TIERS), "head": dict(HEAD)})
    policy = policy_for(uow, cal)
    assert policy.identification("distance", 50, threshold=0.3) == 0.3  # the argument
    policy.store("distance", 0.42)  # stored in the gallery
    assert [policy.identification("distance", g) for g in (1, 5, 50)] == [0.42] * 3
    assert policy.current("distance") == 0.42
    # read back from the database by a fresh policy on the same gallery
    again = UnitOfWork(open_database(f"sqlite:///{tmp_path / 'g.sqlite'}"), owns_engine=True)
    try:
        assert policy_for(again, cal).identification("distance", 50) == 0.42
    finally:
        again.close()
    policy.use("distance", 0.33)  # this session's, over the stored one
    assert [policy.identification("distance", g) for g in (1, 50)] == [0.33, 0.33]
    assert policy.identification("distance", 50, threshold=0.31) == 0.31
    assert policy.identification("head", 50) == 0.9  # per scorer
    policy.use("distance", None)
    assert policy.identification("distance", 50) == 0.42
    policy.store("distance", None)
    assert policy.identification("distance", 50) == 0.7


def test_calibration_override_and_chosen_operating_point_win(uow):
    override = policy_for(uow, Calibration("m", {"distance": dict(TIERS)}, {"distance": 0.55}))
    assert [override.identification("distance", g) for g in (1, 5, 50)] == [0.55] * 3
    assert override.current("distance") == 0.55
    for point, tau in (("eer", 0.45), ("far_0.001", 0.6)):
        chosen = policy_for(uow, Calibration("m", {"distance": dict(TIERS)}), operating_point=point)
        assert [chosen.identification("distance", g) for g in (1, 5, 50)] == [tau] * 3, point
        assert chosen.current("distance") == tau


# ---------------------------------------------------------------------- the enrolment check
def test_enrollment_check_uses_the_1k_tau(tmp_path):
    pipeline = FakePipeline()
    cal = Calibration(pipeline.model_id, {"distance": dict(TIERS)})
    svc = make_service(f"sqlite:///{tmp_path / 'g.sqlite'}", pipeline, cal)
    try:
        svc.enroll("Ann", [img((1, 0))])
        ann_again = pipeline.analyze(img((1, 9)))
        (warning,) = svc.check_enrollment("Zed", ann_again)
        assert "already matches 'Ann'" in warning and warning.endswith(">= 0.500)")
        svc.enroll("Bob", [img((2, 0))])
        svc.enroll("Cid", [img((3, 0))])
        (warning,) = svc.check_enrollment("Zed", ann_again)
        assert "already matches 'Ann'" in warning and warning.endswith(">= 0.600)")
    finally:
        svc.close()


# ---------------------------------------------------------------------- a real model
def test_service_reports_the_tau_it_used(tmp_path, small_model_path, lfw_dir):
    """The small random model and real LFW photos: recognize's τ (and its audit event) is
    far_0.01's with 1 person enrolled, far_0.001's with 3, far_0.01's again after two are
    deleted; a session τ wins over both; verify keeps far_0.01's."""
    from faceapp.nn.checkpoint import load_checkpoint

    model = tmp_path / "model" / "small.pt"
    model.parent.mkdir()
    shutil.copy(small_model_path, model)
    tiers = {"far_0.01": -0.31, "far_0.001": -0.21, "far_0.0001": -0.11}
    Calibration(load_checkpoint(model).model_id, {"distance": tiers}).save(
        model.with_name("calibration.json"))

    def photo(person: str, i: int) -> str:
        return str(lfw_dir / person / f"{person}_{i:04d}.jpg")

    svc = FaceService.open(f"sqlite:///{tmp_path / 'g.sqlite'}", model_path=model)
    try:
        def recognized_taus() -> set[float]:
            faces = svc.recognize(photo("Colin_Powell", 3))
            assert faces
            event = svc.events(limit=1, kind="recognize")[0]
            assert event["threshold"] == pytest.approx(faces[-1].threshold)
            return {f.threshold for f in faces}

        svc.enroll("Colin Powell", [photo("Colin_Powell", 1)], largest=True)
        assert recognized_taus() == {-0.31}
        assert svc.identification_threshold() == -0.31
        for person in ("Tony_Blair", "Gerhard_Schroeder"):
            svc.enroll(person.replace("_", " "), [photo(person, 1)], largest=True)
        assert recognized_taus() == {-0.21}
        assert svc.identification_threshold() == -0.21
        assert svc.threshold() == -0.31
        assert svc.verify("Colin Powell", photo("Colin_Powell", 2), largest=True).threshold == -0.31
        svc.use_threshold("distance", 0.05)
        assert recognized_taus() == {0.05}
        assert svc.verify("Colin Powell", photo("Colin_Powell", 2), largest=True).threshold == 0.05
        svc.use_threshold("distance", None)
        assert recognized_taus() == {-0.21}
        svc.delete_person("Tony Blair")
        svc.delete_person("Gerhard Schroeder")
        assert recognized_taus() == {-0.31}
    finally:
        svc.close()
