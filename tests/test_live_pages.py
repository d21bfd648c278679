"""The Enroll and Verify pages' per-frame decisions (Qt-free) on hand-built live-loop results."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from faceapp.services.live_pages import CaptureGuide, Guidance, TrackedVerifier, advice, box_center_shift


def face(box=(0.0, 0.0, 100.0, 100.0), *, ok=True, reasons=(), fresh=True):
    quality = SimpleNamespace(ok=ok, reasons=tuple(reasons))
    return SimpleNamespace(box=box, fresh=fresh, face=SimpleNamespace(quality=quality))


def frame(*faces):
    return SimpleNamespace(faces=tuple(faces))


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_advice_and_shift_by_hand() -> None:
    assert advice("too blurred (sharpness 12 < 40): hold still") == "Hold still"
    assert advice("face too small") == "Face too small"
    assert box_center_shift((0, 0, 10, 10), (0, 0, 10, 10)) == 0.0
    assert box_center_shift((0, 0, 10, 10), (3, 4, 13, 14)) == pytest.approx(0.5)  # 5 px / 10 px


def test_guidance_without_one_good_still_face() -> None:
    g = CaptureGuide(max_shift=0.15)
    none = g.step(frame(), 1, 0, 3)
    assert (none.tone, none.boxes, none.sample, none.remeasure) == ("neutral", (), None, False)
    many = g.step(frame(face(), face((200, 0, 300, 100))), 2, 0, 3)
    assert many.tone == "bad" and len(many.boxes) == 2 and many.remeasure
    bad = g.step(frame(face(ok=False, reasons=("too dark (12): more light",))), 3, 0, 3)
    assert (bad.text, bad.tone, bad.remeasure) == ("More light", "bad", True)
    g.step(frame(face()), 4, 0, 3)
    moved = g.step(frame(face((20, 0, 120, 100))), 5, 0, 3)  # 0.2 face widths > 0.15
    assert (moved.text, moved.tone, moved.remeasure) == ("Hold still", "neutral", True)
    idle = g.step(frame(face((20, 0, 120, 100))), 6, 0, 3)
    assert idle.tone == "info" and idle.sample is None and not idle.measure


def test_capture_takes_fresh_samples_at_the_interval_until_the_target() -> None:
    clock = Clock()
    g = CaptureGuide(capture_interval_s=0.4, clock=clock)
    g.capturing = True
    first = g.step(frame(face()), 1, 0, 2)
    assert first.sample is not None and first.sample.source == "camera frame 1" and not first.done
    assert not first.measure  # the next one is not due yet
    clock.t += 0.1
    early = g.step(frame(face()), 2, 1, 2)
    assert early.sample is None and early.tone == "good" and not early.measure
    clock.t += 0.4
    stale = g.step(frame(face(fresh=False)), 3, 1, 2)  # due, but not measured on this frame
    assert stale.sample is None and stale.measure  # ask the loop for a new measurement
    last = g.step(frame(face()), 4, 1, 2)
    assert last.sample is not None and last.done and last.text.startswith("Done")


class Service:
    """Records each ``verify`` call; its result is the call's arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def verify(self, name, face, *, scorer, log_event=True):
        self.calls.append((name, face, scorer, log_event))
        return SimpleNamespace(score=0.5, face=face)


def test_tracked_verifier_scores_the_largest_face_when_fresh() -> None:
    service = Service()
    v = TrackedVerifier(service, "Ada", "distance")  # type: ignore[arg-type]
    none = v.step(frame())
    assert (none.result, none.box) == (None, None) and service.calls == []
    big, small = face((0, 0, 100, 100)), face((200, 0, 240, 40))
    fresh = v.step(frame(big, small))  # the loop lists the largest face first
    assert fresh.box == (0.0, 0.0, 100.0, 100.0) and fresh.result.face is big.face
    assert service.calls == [("Ada", big.face, "distance", False)]  # no audit event per frame
    stale = v.step(frame(face((1, 0, 101, 100), fresh=False)))
    assert stale.result is None and stale.box == (1.0, 0.0, 101.0, 100.0) and len(service.calls) == 1


def test_wants_measure_when_due_and_rate_limits_the_advice() -> None:
    clock = Clock()
    g = CaptureGuide(remeasure_s=0.2, clock=clock)
    assert g.wants_measure(Guidance("Good: capturing…", "good", measure=True))
    assert not g.wants_measure(Guidance("Good: press Start capture", "info"))
    bad = Guidance("Hold still", "neutral", remeasure=True)
    assert g.wants_measure(bad)
    clock.t += 0.1
    assert not g.wants_measure(bad)  # asked for 0.1 s ago
    assert g.wants_measure(Guidance("Good: capturing…", "good", measure=True))  # a due sample is not limited
    clock.t += 0.15
    assert g.wants_measure(bad)
