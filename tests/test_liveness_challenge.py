"""The liveness challenge state machine and the 5-point head pose, on scripted sequences
(an injected clock: every update carries its frame time; nothing waits)."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from faceapp.vision.liveness import (
    Action,
    Challenge,
    ChallengeConfig,
    DegenerateLandmarks,
    FaceObservation,
    HeadPose,
    Status,
    head_pose,
    parse_actions,
    random_actions,
    sequence_count,
)
from faceapp.vision.liveness.pose import NOSE_DEPTH_EYE, NOSE_DEPTH_MOUTH, _frontal_nose_ratio

FPS = 10.0


# ---------------------------------------------------------------------- head pose
def _project(yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0,
             scale: float = 100.0, shift: tuple[float, float] = (300.0, 200.0)) -> np.ndarray:
    """Five landmarks of the module's face model (eye distance 1, eye-to-mouth 1.1, nose
    depth 0.55) rotated by yaw (about y), then pitch (about x), then roll, orthographic."""
    m = NOSE_DEPTH_EYE / NOSE_DEPTH_MOUTH
    r0 = _frontal_nose_ratio()
    # person-frame x to the image right (unmirrored camera), y down, z towards the camera
    pts = np.array([[-0.5, 0, 0], [0.5, 0, 0], [0, r0 * m, NOSE_DEPTH_EYE],
                    [-0.4, m, 0], [0.4, m, 0]], dtype=np.float64)
    y, p, r = (math.radians(v) for v in (yaw_deg, pitch_deg, roll_deg))
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    out = pts @ ry.T @ rx.T
    xy = out[:, :2]
    rz = np.array([[math.cos(r), -math.sin(r)], [math.sin(r), math.cos(r)]])
    return xy @ rz.T * scale + np.asarray(shift)


@pytest.mark.parametrize("yaw", [-40.0, -15.0, 0.0, 10.0, 35.0])
def test_head_pose_recovers_pure_yaw(yaw: float) -> None:
    pose = head_pose(_project(yaw_deg=yaw))
    assert pose.yaw == pytest.approx(yaw, abs=1e-6)
    assert pose.pitch == pytest.approx(0.0, abs=1e-6)
    assert pose.roll == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("pitch", [-25.0, -8.0, 12.0, 30.0])
def test_head_pose_recovers_pure_pitch(pitch: float) -> None:
    pose = head_pose(_project(pitch_deg=pitch))
    assert pose.pitch == pytest.approx(pitch, abs=1e-6)
    assert pose.yaw == pytest.approx(0.0, abs=1e-6)


def test_head_pose_is_roll_scale_and_shift_invariant_and_reports_roll() -> None:
    ref = head_pose(_project(yaw_deg=20.0, pitch_deg=10.0))
    moved = head_pose(_project(yaw_deg=20.0, pitch_deg=10.0, roll_deg=25.0, scale=37.0, shift=(5.0, -80.0)))
    assert moved.yaw == pytest.approx(ref.yaw, abs=1e-6)
    assert moved.pitch == pytest.approx(ref.pitch, abs=1e-6)
    assert moved.roll == pytest.approx(ref.roll + 25.0, abs=1e-6)
    assert head_pose(_project(roll_deg=-30.0)).roll == pytest.approx(-30.0, abs=1e-6)
    assert moved.eye_distance == pytest.approx(ref.eye_distance * 37.0 / 100.0, rel=1e-9)


def test_head_pose_mirrored_flips_yaw_and_roll_not_pitch() -> None:
    pts = _project(yaw_deg=20.0, pitch_deg=-10.0, roll_deg=8.0)
    a = head_pose(pts)
    mirror = pts.copy()
    mirror[:, 0] = 1000.0 - mirror[:, 0]
    mirror = mirror[[1, 0, 2, 4, 3]]  # what a detector reports in the mirrored image
    b = head_pose(mirror, mirrored=True)
    assert (b.yaw, b.pitch, b.roll) == pytest.approx((a.yaw, a.pitch, a.roll), abs=1e-6)
    c = head_pose(mirror)
    assert (c.yaw, c.pitch, c.roll) == pytest.approx((-a.yaw, a.pitch, -a.roll), abs=1e-6)


def test_head_pose_rejects_degenerate_landmarks() -> None:
    with pytest.raises(DegenerateLandmarks):
        head_pose(np.zeros((5, 2)))
    flat = np.array([[0, 0], [10, 0], [5, 0], [2, 0], [8, 0]], dtype=np.float64)
    with pytest.raises(DegenerateLandmarks):
        head_pose(flat)


# ---------------------------------------------------------------------- actions
def test_parse_actions_and_errors() -> None:
    assert parse_actions("turn_left, blink,LOOK-UP") == (Action.TURN_LEFT, Action.BLINK, Action.LOOK_UP)
    with pytest.raises(ValueError, match="nod"):
        parse_actions("turn_left,nod")
    with pytest.raises(ValueError):
        parse_actions(" , ")


def test_random_actions_follow_the_rules_and_are_seeded() -> None:
    for seed in range(200):
        seq = random_actions(random.Random(seed), 4)
        assert len(seq) == 4
        assert all(a is not b for a, b in itertools.pairwise(seq))
        assert seq.count(Action.BLINK) <= 1
    assert random_actions(random.Random(7), 3) == random_actions(random.Random(7), 3)
    drawn = {random_actions(random.Random(s), 2) for s in range(2000)}
    assert len(drawn) == sequence_count(2)  # every allowed sequence is reachable


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_sequence_count_matches_brute_force(n: int) -> None:
    brute = sum(
        1 for seq in itertools.product(list(Action), repeat=n)
        if all(a is not b for a, b in itertools.pairwise(seq)) and seq.count(Action.BLINK) <= 1
    )
    assert sequence_count(n) == brute


# ---------------------------------------------------------------------- state machine
def _face(yaw: float = 0.0, pitch: float = 0.0, *, track: int = 1, area: float = 10_000.0,
          eyes: float = 1.0, identity: str = "unknown") -> FaceObservation:
    pose = HeadPose(yaw=yaw, pitch=pitch, roll=0.0, yaw_offset=0.0, pitch_offset=0.0, eye_distance=60.0)
    return FaceObservation(track_id=track, pose=pose, area=area, eye_openness=eyes,
                           identity=identity)  # type: ignore[arg-type]


class Script:
    """Feeds frames at FPS with an explicit clock; records every state."""

    def __init__(self, challenge: Challenge) -> None:
        self.c = challenge
        self.t = 0.0
        self.states = []

    def run(self, frames: int, *faces: FaceObservation):
        for _ in range(frames):
            self.states.append(self.c.update(self.t, list(faces)))
            self.t += 1.0 / FPS
        return self.c.state


def _started(actions: tuple[Action, ...], **cfg: object) -> Script:
    s = Script(Challenge(actions, ChallengeConfig(**cfg)))  # type: ignore[arg-type]
    state = s.run(5, _face())
    assert state.status is Status.RUNNING and state.current is actions[0]
    return s


def test_full_sequence_passes_in_order_with_rearm_between_actions() -> None:
    s = _started((Action.TURN_LEFT, Action.LOOK_DOWN, Action.BLINK))
    assert s.run(3, _face(yaw=25)).current is Action.LOOK_DOWN
    st = s.run(3, _face(yaw=25))  # still turned: must come back to neutral first
    assert st.status is Status.REARM and st.completed == (Action.TURN_LEFT,)
    s.run(2, _face())
    st = s.run(2, _face(pitch=-15))
    assert st.current is Action.BLINK and st.completed == (Action.TURN_LEFT, Action.LOOK_DOWN)
    s.run(2, _face())
    s.run(2, _face(eyes=0.4))
    st = s.run(1, _face(eyes=1.0))
    assert st.status is Status.PASSED and st.done
    assert st.completed == (Action.TURN_LEFT, Action.LOOK_DOWN, Action.BLINK)
    # once passed, nothing changes it
    assert s.run(3, _face(yaw=-40), _face(track=2)).status is Status.PASSED


def test_baseline_is_the_persons_own_neutral_pose() -> None:
    s = Script(Challenge((Action.TURN_RIGHT,)))
    s.run(5, _face(yaw=12, pitch=5))  # camera off to one side: 12° is this person's frontal
    assert s.run(3, _face(yaw=4)).status is Status.RUNNING  # only -8° relative: not enough
    assert s.run(2, _face(yaw=-6)).status is Status.PASSED  # -18° relative


def test_one_frame_of_pose_is_not_enough() -> None:
    s = _started((Action.TURN_LEFT,), hold_frames=3)
    s.run(2, _face(yaw=30))
    s.run(1, _face())
    assert s.c.state.status is Status.RUNNING
    assert s.run(3, _face(yaw=30)).status is Status.PASSED


def test_timeout_fails_only_after_the_window() -> None:
    s = _started((Action.TURN_LEFT, Action.TURN_RIGHT), action_timeout_s=2.0)
    st = s.run(19, _face(yaw=5))
    assert st.status is Status.RUNNING and 0.0 < st.time_left_s <= 0.2
    st = s.run(3, _face(yaw=5))
    assert st.status is Status.FAILED and st.reason == "timeout:turn_left"
    assert st.completed == ()


def test_wrong_action_fails() -> None:
    s = _started((Action.TURN_LEFT, Action.LOOK_UP))
    st = s.run(2, _face(yaw=-25))
    assert st.status is Status.FAILED and st.reason == "wrong_action:turn_right"


def test_wrong_order_fails_after_a_correct_first_step() -> None:
    s = _started((Action.TURN_LEFT, Action.LOOK_UP))
    s.run(2, _face(yaw=25))
    s.run(2, _face())
    st = s.run(2, _face(pitch=-15))
    assert st.reason == "wrong_action:look_down" and st.completed == (Action.TURN_LEFT,)


def test_blinks_during_a_turn_request_are_not_wrong() -> None:
    s = _started((Action.TURN_LEFT,))
    s.run(2, _face(eyes=0.2))
    s.run(2, _face(eyes=1.0))
    assert s.run(2, _face(yaw=25)).status is Status.PASSED


def test_slow_eye_closure_is_not_a_blink() -> None:
    s = _started((Action.BLINK,), blink_max_s=0.5)
    s.run(10, _face(eyes=0.3))  # closed for 1 s
    assert s.run(1, _face()).status is Status.RUNNING
    s.run(2, _face(eyes=0.3))
    assert s.run(1, _face()).status is Status.PASSED


def test_unmeasured_eyes_never_blink() -> None:
    s = _started((Action.BLINK,), action_timeout_s=1.0)
    st = s.run(20, _face(eyes=math.nan), )
    assert st.reason == "timeout:blink"


def test_face_lost_after_grace_but_short_gaps_are_fine() -> None:
    s = _started((Action.TURN_LEFT,))
    s.run(4, )  # 0.4 s without a face: within the 0.5 s grace
    assert s.c.state.status is Status.RUNNING
    assert s.run(2, _face(yaw=25)).status is Status.PASSED
    s = _started((Action.TURN_LEFT,))
    st = s.run(7)
    assert st.status is Status.FAILED and st.reason == "face_lost"


def test_face_swapped_mid_challenge_fails() -> None:
    s = _started((Action.TURN_LEFT, Action.TURN_RIGHT))
    s.run(2, _face(yaw=25))
    s.run(2, _face())
    st = s.run(7, _face(yaw=-25, track=2))  # another track does the second step
    assert st.status is Status.FAILED and st.reason == "face_swapped"


def test_second_face_fails_but_a_small_background_face_does_not() -> None:
    s = _started((Action.TURN_LEFT,))
    s.run(5, _face(), _face(track=9, area=1_000.0))  # 10 % of the tracked face: ignored
    assert s.c.state.status is Status.RUNNING
    s.run(2, _face(), _face(track=9, area=6_000.0))
    assert s.c.state.status is Status.RUNNING  # 2 frames < second_face_frames
    st = s.run(1, _face(), _face(track=9, area=6_000.0))
    assert st.status is Status.FAILED and st.reason == "second_face"


def test_second_face_during_baseline_fails() -> None:
    s = Script(Challenge((Action.TURN_LEFT,)))
    st = s.run(3, _face(), _face(track=2, area=9_000.0))
    assert st.reason == "second_face"


def test_identity_mismatch_fails_and_required_identity_must_be_seen() -> None:
    s = _started((Action.TURN_LEFT,))
    st = s.run(1, _face(identity="mismatch"))
    assert st.reason == "identity_mismatch"
    s = _started((Action.TURN_LEFT,), require_identity=True)
    st = s.run(2, _face(yaw=25))
    assert st.reason == "identity_unverified"
    s = _started((Action.TURN_LEFT,), require_identity=True)
    s.run(1, _face(identity="match"))
    assert s.run(2, _face(yaw=25)).status is Status.PASSED


def test_no_face_or_no_frontal_face_times_out_at_the_start() -> None:
    s = Script(Challenge((Action.TURN_LEFT,), ChallengeConfig(start_timeout_s=1.0)))
    assert s.run(12).reason == "no_face"
    s = Script(Challenge((Action.TURN_LEFT,), ChallengeConfig(start_timeout_s=1.0)))
    assert s.run(12, _face(yaw=45)).reason == "no_frontal_face"


def test_time_must_not_go_backwards_and_fail_ends_it() -> None:
    c = Challenge((Action.BLINK,))
    c.update(1.0, [_face()])
    with pytest.raises(ValueError):
        c.update(0.5, [_face()])
    with pytest.raises(ValueError):
        c.update(math.nan, [])
    assert c.fail("ended").reason == "ended"
    assert c.update(2.0, [_face()]).status is Status.FAILED
    with pytest.raises(ValueError):
        Challenge(())
    with pytest.raises(ValueError):
        ChallengeConfig(blink_closed_ratio=0.9, blink_open_ratio=0.8)
