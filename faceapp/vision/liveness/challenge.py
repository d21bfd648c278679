"""The active liveness challenge: a random sequence of actions, each to be seen in order,
within its time window, on one tracked face. A deterministic state machine.

The machine never reads a clock: every :meth:`Challenge.update` call carries the time of
its frame (seconds, any origin, non-decreasing), so tests drive it with scripted
sequences and no waiting. It knows nothing about images either: the caller turns each
frame into :class:`FaceObservation` s (track id, head pose, eye openness, identity state).

Life of a challenge::

    BASELINE --(frontal, still face for baseline_frames)--> RUNNING(action 0)
    RUNNING(i) --(action i seen, held hold_frames)--> REARM --(back to neutral)--> RUNNING(i+1)
    RUNNING(last) seen --> PASSED
    anything --(timeout / wrong action / face lost / face swapped / second face /
                identity mismatch)--> FAILED(reason)

* **baseline**: the person's own neutral pose (median yaw / pitch) and eye openness are
  taken from the first frontal frames, so actions are measured relative to that face and
  not to an average one;
* **wrong order**: while an action is asked for, a *different pose action* held for
  ``hold_frames`` frames fails the challenge (a recording that turns left when "right" is
  asked). Blinks are not counted as wrong actions (people blink all the time);
* **same face**: the face that gave the baseline must stay the only significant face and
  keep its track id; a new track (the old one gone: swap, or the tracker lost it), a second
  face whose area is at least ``second_face_area`` of the tracked one for
  ``second_face_frames`` frames, or the face missing for more than ``lost_grace_s`` fail;
* **identity**: observations may carry ``identity="match"`` / ``"mismatch"`` (decided by the
  caller on challenge frames, e.g. by the gallery); any mismatch fails, and
  ``require_identity`` asks for at least one match during the running phase.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from faceapp.vision.liveness.pose import HeadPose


class Action(StrEnum):
    """One thing the person is asked to do (directions in the person's own frame)."""

    TURN_LEFT = "turn_left"
    TURN_RIGHT = "turn_right"
    LOOK_UP = "look_up"
    LOOK_DOWN = "look_down"
    BLINK = "blink"

    @property
    def prompt(self) -> str:
        return _PROMPTS[self]

    @property
    def is_pose(self) -> bool:
        return self is not Action.BLINK


_PROMPTS = {
    Action.TURN_LEFT: "Turn your head to your left",
    Action.TURN_RIGHT: "Turn your head to your right",
    Action.LOOK_UP: "Look up",
    Action.LOOK_DOWN: "Look down",
    Action.BLINK: "Blink",
}

POSE_ACTIONS: tuple[Action, ...] = (Action.TURN_LEFT, Action.TURN_RIGHT, Action.LOOK_UP, Action.LOOK_DOWN)


def parse_actions(text: str) -> tuple[Action, ...]:
    """``"turn_left,blink"`` -> actions; raises ValueError naming the unknown ones."""
    names = [t.strip().lower().replace("-", "_") for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in {a.value for a in Action}]
    if bad or not names:
        valid = ", ".join(a.value for a in Action)
        raise ValueError(f"unknown action(s) {', '.join(bad) or '(none given)'}; valid: {valid}")
    return tuple(Action(n) for n in names)


def random_actions(rng: random.Random, n: int = 3, pool: Sequence[Action] = tuple(Action),
                   max_blinks: int = 1) -> tuple[Action, ...]:
    """``n`` actions drawn uniformly from ``pool``, never the same twice in a row, at most
    ``max_blinks`` blinks (a recording with natural blinks passes blink steps for free)."""
    if n < 1:
        raise ValueError("a challenge needs at least one action")
    out: list[Action] = []
    for _ in range(n):
        choices = [a for a in pool if (not out or a is not out[-1])
                   and not (a is Action.BLINK and out.count(Action.BLINK) >= max_blinks)]
        if not choices:
            raise ValueError(f"cannot draw {n} actions from {list(pool)}")
        out.append(rng.choice(choices))
    return tuple(out)


def sequence_count(n: int, pool: Sequence[Action] = tuple(Action), max_blinks: int = 1) -> int:
    """How many different challenges :func:`random_actions` can draw (by enumeration of the
    same rules); a recording made in advance shows one fixed sequence of head movements,
    so it matches a drawn challenge with probability at most ``1 / count`` of the
    pose-only sequences it could be aligned with (see README)."""

    def rec(prefix: tuple[Action, ...]) -> int:
        if len(prefix) == n:
            return 1
        return sum(rec((*prefix, a)) for a in pool
                   if (not prefix or a is not prefix[-1])
                   and not (a is Action.BLINK and prefix.count(Action.BLINK) >= max_blinks))

    return rec(())


class Status(StrEnum):
    BASELINE = "baseline"
    RUNNING = "running"
    REARM = "rearm"
    PASSED = "passed"
    FAILED = "failed"


Identity = Literal["match", "mismatch", "unknown"]


@dataclass(frozen=True)
class FaceObservation:
    """One face in one frame, as the challenge sees it.

    ``eye_openness``: the blink cue (:mod:`faceapp.vision.liveness.blink`), larger = more
    open, NaN when unmeasured; ``area``: face box area in pixels².
    """

    track_id: int
    pose: HeadPose
    area: float
    eye_openness: float = math.nan
    identity: Identity = "unknown"


@dataclass(frozen=True)
class ChallengeConfig:
    """What counts as each action and how long the person has (definitions of the actions,
    not decision thresholds on a score).

    Angles are degrees relative to the person's baseline pose (the defaults are what the
    head turns and nods of ``tvl_live_replay/real.mp4`` reach: its turn to the right peaks at
    only 11–15°, its frontal frames scatter by ±5° in pitch; the blink ratios come from the
    annotated blinks of ``liveportrait_blinks/d13.mp4``, see :mod:`.blink`); ``neutral_deg``: both yaw and
    pitch within it counts as "back to neutral"; ``action_timeout_s``: time allowed per action
    (from the moment it is asked, re-arming included); ``start_timeout_s``: to show a
    frontal face at the beginning; ``hold_frames``: consecutive frames an action must be seen;
    ``blink_closed_ratio``: eye openness below this fraction of the baseline counts as closed,
    and back above ``blink_open_ratio`` as reopened, within ``blink_max_s``.
    """

    yaw_deg: float = 10.0
    pitch_deg: float = 12.0
    neutral_deg: float = 7.0
    baseline_max_deg: float = 20.0
    baseline_frames: int = 5
    action_timeout_s: float = 4.0
    start_timeout_s: float = 6.0
    hold_frames: int = 2
    lost_grace_s: float = 0.5
    second_face_area: float = 0.25
    second_face_frames: int = 3
    blink_closed_ratio: float = 0.7
    blink_open_ratio: float = 0.85
    blink_max_s: float = 1.0
    require_identity: bool = False

    def __post_init__(self) -> None:
        if self.baseline_frames < 1 or self.hold_frames < 1 or self.second_face_frames < 1:
            raise ValueError("frame counts must be >= 1")
        if not 0 < self.blink_closed_ratio < self.blink_open_ratio:
            raise ValueError("need 0 < blink_closed_ratio < blink_open_ratio")


@dataclass(frozen=True)
class ChallengeState:
    """A snapshot after one update. ``index``: the action being asked for (``len(actions)``
    once passed); ``time_left_s``: of the current window (NaN outside RUNNING/REARM);
    ``reason``: why it failed (``""`` otherwise), e.g. ``"timeout:turn_left"``."""

    status: Status
    actions: tuple[Action, ...]
    index: int
    completed: tuple[Action, ...]
    time_left_s: float
    reason: str
    prompt: str
    track_id: int

    @property
    def done(self) -> bool:
        return self.status in (Status.PASSED, Status.FAILED)

    @property
    def current(self) -> Action | None:
        """The action asked for now (``None`` before the start and after the end)."""
        if self.status in (Status.RUNNING, Status.REARM):
            return self.actions[self.index]
        return None

    def to_dict(self) -> dict[str, object]:
        return {
            "status": self.status.value,
            "challenge": [a.value for a in self.actions],
            "completed": [a.value for a in self.completed],
            "index": self.index,
            "time_left_s": None if math.isnan(self.time_left_s) else round(self.time_left_s, 3),
            "reason": self.reason,
            "prompt": self.prompt,
        }


@dataclass
class _Blink:
    closed_since: float = math.nan

    def reset(self) -> None:
        self.closed_since = math.nan


@dataclass
class Challenge:
    """The state machine. Create one per attempt; feed it every frame in order.

    Args:
        actions: the sequence to perform (see :func:`random_actions`).
        config: :class:`ChallengeConfig`.
    """

    actions: tuple[Action, ...]
    config: ChallengeConfig = field(default_factory=ChallengeConfig)

    def __post_init__(self) -> None:
        if not self.actions:
            raise ValueError("a challenge needs at least one action")
        self._status = Status.BASELINE
        self._index = 0
        self._t0 = math.nan  # first update
        self._deadline = math.nan
        self._reason = ""
        self._track = -1
        self._last_seen = math.nan
        self._base: list[FaceObservation] = []
        self._yaw0 = self._pitch0 = 0.0
        self._open0 = math.nan
        self._streak: dict[Action, int] = {}
        self._second = 0
        self._blink = _Blink()
        self._identity_seen = False
        self._t_last = -math.inf

    # ------------------------------------------------------------------ public
    @property
    def state(self) -> ChallengeState:
        running = self._status in (Status.RUNNING, Status.REARM)
        left = self._deadline - self._t_last if running else math.nan
        if self._status is Status.BASELINE:
            prompt = "Look straight at the camera"
        elif running:
            prompt = self.actions[self._index].prompt
            if self._status is Status.REARM:
                prompt = "Face the camera again"
        elif self._status is Status.PASSED:
            prompt = "Done"
        else:
            prompt = f"Failed: {self._reason}"
        return ChallengeState(
            self._status, self.actions, self._index, self.actions[: self._index],
            max(0.0, left) if running else math.nan, self._reason, prompt, self._track,
        )

    def fail(self, reason: str) -> ChallengeState:
        """End the challenge from outside (e.g. the video ended: ``"ended"``)."""
        if not self.state.done:
            self._status, self._reason = Status.FAILED, reason
        return self.state

    def update(self, t: float, faces: Sequence[FaceObservation]) -> ChallengeState:
        """Advance with one frame.

        Args:
            t: the frame's time in seconds (non-decreasing across calls).
            faces: every face observed in the frame (any order; ``[]`` for none).
        Returns:
            The state after this frame; once PASSED or FAILED it no longer changes.
        Raises:
            ValueError: ``t`` went backwards or is not finite.
        """
        if not math.isfinite(t) or t < self._t_last:
            raise ValueError(f"frame time must be finite and non-decreasing, got {t} after {self._t_last}")
        if self.state.done:
            return self.state
        self._t_last = t
        if math.isnan(self._t0):
            self._t0 = t
        if self._status is Status.BASELINE:
            self._step_baseline(t, faces)
        else:
            self._step_running(t, faces)
        return self.state

    # ------------------------------------------------------------------ phases
    def _end(self, reason: str) -> None:
        self._status, self._reason = Status.FAILED, reason

    def _step_baseline(self, t: float, faces: Sequence[FaceObservation]) -> None:
        cfg = self.config
        if t - self._t0 > cfg.start_timeout_s:
            self._end("no_frontal_face" if faces else "no_face")
            return
        if not faces:
            self._base.clear()
            return
        main = max(faces, key=lambda f: f.area)
        if self._check_second_face(main, faces):
            return
        if any(f.identity == "mismatch" for f in faces if f.track_id == main.track_id):
            self._end("identity_mismatch")
            return
        frontal = abs(main.pose.yaw) <= cfg.baseline_max_deg and abs(main.pose.pitch) <= cfg.baseline_max_deg
        if not frontal or (self._base and self._base[-1].track_id != main.track_id):
            self._base.clear()
        if frontal:
            self._base.append(main)
        if len(self._base) >= cfg.baseline_frames:
            self._yaw0 = statistics.median(f.pose.yaw for f in self._base)
            self._pitch0 = statistics.median(f.pose.pitch for f in self._base)
            opens = [f.eye_openness for f in self._base if math.isfinite(f.eye_openness)]
            self._open0 = statistics.median(opens) if opens else math.nan
            self._track = main.track_id
            self._last_seen = t
            self._start_action(t, 0)

    def _start_action(self, t: float, index: int) -> None:
        self._index = index
        self._status = Status.RUNNING if index == 0 else Status.REARM
        self._deadline = t + self.config.action_timeout_s
        self._streak.clear()
        self._blink.reset()

    def _check_second_face(self, main: FaceObservation, faces: Sequence[FaceObservation]) -> bool:
        cfg = self.config
        others = [f for f in faces
                  if f.track_id != main.track_id and f.area >= cfg.second_face_area * main.area]
        self._second = self._second + 1 if others else 0
        if self._second >= cfg.second_face_frames:
            self._end("second_face")
            return True
        return False

    def _step_running(self, t: float, faces: Sequence[FaceObservation]) -> None:
        cfg = self.config
        mine = [f for f in faces if f.track_id == self._track]
        if not mine:
            if faces and t - self._last_seen > cfg.lost_grace_s:
                self._end("face_swapped")  # a face is there, but not the one that started
            elif t - self._last_seen > cfg.lost_grace_s:
                self._end("face_lost")
            elif t > self._deadline:
                self._end(f"timeout:{self.actions[self._index].value}")
            return
        face = mine[0]
        self._last_seen = t
        if self._check_second_face(face, faces):
            return
        if face.identity == "mismatch":
            self._end("identity_mismatch")
            return
        if face.identity == "match":
            self._identity_seen = True
        want = self.actions[self._index]
        dyaw = face.pose.yaw - self._yaw0
        dpitch = face.pose.pitch - self._pitch0
        if self._status is Status.REARM:
            if abs(dyaw) <= cfg.neutral_deg and abs(dpitch) <= cfg.neutral_deg:
                self._status = Status.RUNNING
            elif t > self._deadline:
                self._end(f"timeout:{want.value}")
            return
        seen = self._poses_seen(dyaw, dpitch)
        for a in POSE_ACTIONS:
            self._streak[a] = self._streak.get(a, 0) + 1 if a in seen else 0
        if want is Action.BLINK:
            done = self._blink_seen(t, face.eye_openness)
        else:
            done = self._streak[want] >= cfg.hold_frames
        wrong = [a for a in POSE_ACTIONS if a is not want and self._streak[a] >= cfg.hold_frames]
        if wrong and not done:
            self._end(f"wrong_action:{wrong[0].value}")
            return
        if done:
            if self._index + 1 == len(self.actions):
                if cfg.require_identity and not self._identity_seen:
                    self._end("identity_unverified")
                    return
                self._index += 1
                self._status = Status.PASSED
                return
            self._start_action(t, self._index + 1)
            return
        if t > self._deadline:
            self._end(f"timeout:{want.value}")

    def _poses_seen(self, dyaw: float, dpitch: float) -> set[Action]:
        cfg = self.config
        seen: set[Action] = set()
        # one dominant direction: a diagonal movement counts for the larger component only
        if abs(dyaw) / cfg.yaw_deg >= abs(dpitch) / cfg.pitch_deg:
            if dyaw >= cfg.yaw_deg:
                seen.add(Action.TURN_LEFT)
            elif dyaw <= -cfg.yaw_deg:
                seen.add(Action.TURN_RIGHT)
        elif dpitch >= cfg.pitch_deg:
            seen.add(Action.LOOK_UP)
        elif dpitch <= -cfg.pitch_deg:
            seen.add(Action.LOOK_DOWN)
        return seen

    def _blink_seen(self, t: float, openness: float) -> bool:
        cfg = self.config
        if not (math.isfinite(openness) and math.isfinite(self._open0) and self._open0 > 0):
            return False
        ratio = openness / self._open0
        if ratio < cfg.blink_closed_ratio:
            if math.isnan(self._blink.closed_since):
                self._blink.closed_since = t
            return False
        if math.isfinite(self._blink.closed_since) and ratio >= cfg.blink_open_ratio:
            ok = t - self._blink.closed_since <= cfg.blink_max_s
            self._blink.reset()
            return ok
        return False
