"""Verify page (1:1): is the person in front of the camera who they claim to be?

Frames go through the live loop every live page runs (:class:`~faceapp.gui.workers.LiveSession`:
detection every few frames, tracking in between, embedding only new or changed faces), on
the frame worker, without 1:K matching. Each new embedding of the largest tracked face is
scored against the claimed person (:class:`~faceapp.services.live_pages.TrackedVerifier`:
``service.verify(name, face, scorer=...)``, the face being the loop's ``FaceEmbedding``); the
decision is the median of the last few scores against τ, so one bad frame does not flip it.
ACCEPT / REJECT is shown only once enough frames were scored. While the window is filling,
the page asks the loop to measure the face again on every frame (a decision in a few frames);
once full, a still face is re-scored when the loop re-embeds it (it moved or turned, or every
``unknown_refresh_every`` frames).

With **Liveness check** on (Settings: on by default), an attempt is a
:class:`~faceapp.services.liveness.LiveVerifier` run instead, on the same live loop's tracked
faces (no face follower of its own): a random challenge is drawn, its
prompt drawn over the video (arrow / eye icon, text, one dot per action, countdown), the
identity checked on the challenge frames, and ACCEPT shown only when identity and liveness
both passed; REJECT lists what failed. *Start challenge* (Alt+S) begins a new attempt.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from faceapp.errors import FaceappError
from faceapp.gui.context import AppContext
from faceapp.gui.page import Page, heading
from faceapp.gui.scoring import ScoreWindow, accepts
from faceapp.gui.video_view import BAD, GOOD, NEUTRAL, Overlay, Prompt, VideoView
from faceapp.gui.workers import LiveSession, ProcessedFrame, TrackedLoop, describe_error
from faceapp.services.live_pages import TrackedVerifier

if TYPE_CHECKING:  # the liveness stack (torch, MTCNN) is imported on first use, not at start-up
    from faceapp.services.liveness import Action, ChallengeConfig, LiveVerifier

log = logging.getLogger(__name__)

ACCEPT = "ACCEPT"
REJECT = "REJECT"
WAITING = "…"


@dataclass(frozen=True)
class LiveStep:
    """What the worker returns for one frame of a liveness attempt: the
    :class:`~faceapp.services.liveness.LiveVerifyStep`."""

    step: Any


ARROWS = {"turn_left": "left", "turn_right": "right", "look_up": "up", "look_down": "down", "blink": "blink"}


@dataclass(frozen=True)
class VerifyFrame:
    """What the worker returns for one frame: the service's ``VerifyResult`` of the largest
    tracked face (``None`` when the frame holds no face, or when that face was not embedded
    again on this frame), its tracked box (``None``: no face) and the live loop's
    ``FrameResult``."""

    result: Any
    box: tuple[float, float, float, float] | None
    live: Any = None


class VerifyPage(Page):
    """Claimed person + scorer + live camera -> fused ACCEPT / REJECT.

    Signals: ``decisionChanged(str, float)`` with ``"ACCEPT"``, ``"REJECT"`` or ``"…"``
    and the fused score.

    ``live_config``: the ``services.live.LiveConfig`` of the live loop (``None``: its
    defaults); change it with :meth:`set_live_config`.
    """

    title = "Verify"
    needs_model = True
    live = True
    decisionChanged = Signal(str, float)

    def __init__(self, ctx: AppContext, parent: QWidget | None = None) -> None:
        super().__init__(ctx, parent)
        self._window = ScoreWindow(ctx.settings.window)
        self._decision = WAITING

        self.worker = self.start_frame_worker(self._on_result)
        self.loop = TrackedLoop(
            self.worker,
            lambda close: ctx.run_task(lambda _p, _s: close(), label="Closing the live loop"),
            lambda _session: self._install(),
        )
        self._claim: tuple[Any, str, str, float | None] | None = None  # service, name, scorer, τ
        self._attempt: Callable[[LiveSession], Callable[[np.ndarray], Any]] | None = None
        self._last_overlay = ("", NEUTRAL)

        self.view = VideoView()
        self.person_combo = QComboBox()
        self.person_combo.setMinimumContentsLength(16)
        self.scorer_combo = QComboBox()
        self.window_spin = QSpinBox()
        self.window_spin.setRange(1, 60)
        self.window_spin.setValue(ctx.settings.window)
        self.window_spin.setSuffix(" frames")
        self.reset_button = QPushButton("Reset")
        self.liveness_check = QCheckBox("&Liveness check")
        self.liveness_check.setToolTip("Ask for a random head movement / blink and check the face is "
                                       "not a photo or a screen before accepting")
        self.liveness_check.setChecked(bool(getattr(ctx.settings, "liveness", False)))
        self.start_button = QPushButton("&Start challenge")
        self.liveness_label = QLabel()
        self.liveness_label.setWordWrap(True)
        # liveness attempt settings (tests replace them): the actions (None = random per
        # attempt), the clock giving each frame's time in seconds, the challenge config
        self.liveness_actions: tuple[Action, ...] | None = None
        self.liveness_clock: Callable[[], float] = time.monotonic
        self.liveness_config: ChallengeConfig | None = None
        self._verifier: LiveVerifier | None = None
        self._live_result: Any = None
        self.decision_label = QLabel(WAITING)
        self.decision_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        font = QFont(self.decision_label.font())
        font.setPointSizeF(font.pointSizeF() * 2.6)
        font.setBold(True)
        self.decision_label.setFont(font)
        self.decision_label.setMinimumHeight(70)
        self.score_label = QLabel()
        self.score_label.setWordWrap(True)
        self.tau_label = QLabel()
        self.tau_label.setWordWrap(True)
        self.count_label = QLabel()

        form = QFormLayout()
        form.addRow("Claimed person", self.person_combo)
        form.addRow("Scorer", self.scorer_combo)
        form.addRow("Fuse over", self.window_spin)
        form.addRow("", self.liveness_check)
        side = QVBoxLayout()
        side.addWidget(heading("Verify (1:1)"))
        side.addLayout(form)
        side.addWidget(self.decision_label)
        side.addWidget(self.score_label)
        side.addWidget(self.tau_label)
        side.addWidget(self.count_label)
        side.addWidget(self.liveness_label)
        side.addWidget(self.start_button)
        side.addWidget(self.reset_button)
        side.addStretch(1)
        self.lay_out_video_and_panel(self.view, side, 360)

        self.person_combo.currentTextChanged.connect(lambda _t: self._reconfigure())
        self.scorer_combo.currentTextChanged.connect(lambda _t: self._reconfigure())
        self.window_spin.valueChanged.connect(self._on_window_size)
        self.reset_button.clicked.connect(self.reset)
        self.start_button.clicked.connect(self.start_challenge)
        self.liveness_check.toggled.connect(lambda _on: self._reconfigure())
        ctx.galleryChanged.connect(self.refresh_people)
        ctx.thresholdChanged.connect(self._show_threshold)
        ctx.settingsChanged.connect(self._on_settings)
        self.on_service_changed(self.service)

    # state --------------------------------------------------------------------------------
    def decision(self) -> str:
        return self._decision

    def fused_score(self) -> float:
        return self._window.fused()

    def scores(self) -> list[float]:
        return self._window.scores()

    def threshold(self) -> float | None:
        """The τ decisions are judged against: the service's, shared with every page."""
        scorer = self.scorer_combo.currentText()
        return self.ctx.threshold(scorer, report=False) if self.service is not None and scorer else None

    def set_claimed(self, name: str) -> None:
        self.person_combo.setCurrentIndex(self.person_combo.findText(name))

    def set_scorer(self, scorer: str) -> None:
        self.scorer_combo.setCurrentIndex(self.scorer_combo.findText(scorer))

    @property
    def live_config(self) -> Any:
        return self.loop.config

    def set_live_config(self, config: Any) -> None:
        """Use ``config`` (a ``services.live.LiveConfig``, ``None`` = defaults) from the next frame."""
        self.loop.set_config(config)
        self._install()

    def live_session(self) -> LiveSession | None:
        """The live loop in use (``None`` until the first frame after a (re)configuration)."""
        return self.loop.current

    # configuration ------------------------------------------------------------------------
    def on_service_changed(self, service: Any) -> None:
        self.loop.retire()
        self.refill_scorers(self.scorer_combo)
        self.refresh_people()

    def liveness_on(self) -> bool:
        return self.liveness_check.isChecked()

    def liveness_result(self) -> Any:
        """The last liveness attempt's ``LiveVerifyResult`` (``None`` while none finished)."""
        return self._live_result

    def _on_settings(self, settings: Any) -> None:
        self.liveness_check.setChecked(bool(getattr(settings, "liveness", False)))
        self.window_spin.setValue(settings.window)
        if settings.scorer and self.scorer_combo.findText(settings.scorer) >= 0:
            self.scorer_combo.setCurrentText(settings.scorer)
        self._reconfigure()

    def refresh_people(self) -> None:
        """Reload the names (background); keeps the current choice when it still exists."""
        service = self.service
        if service is None:
            self.person_combo.clear()
            self._reconfigure()
            return
        self.ctx.run_task(
            lambda _p, _s: service.people_names(),
            label="Loading people",
            on_result=self._set_people,
        )

    def _set_people(self, names: list[str]) -> None:
        current = self.person_combo.currentText()
        self.person_combo.blockSignals(True)
        self.person_combo.clear()
        self.person_combo.addItems(names)
        if current in names:
            self.person_combo.setCurrentText(current)
        self.person_combo.blockSignals(False)
        self._reconfigure()

    def _on_window_size(self, size: int) -> None:
        self._window.resize(size)
        self._update_decision()

    def _reconfigure(self) -> None:
        """Person, scorer or τ changed: new processing callable, empty window."""
        service = self.service
        name = self.person_combo.currentText()
        scorer = self.scorer_combo.currentText()
        self._window.clear()
        tau = self.ctx.threshold(scorer) if service is not None and scorer else None
        self._claim = None
        self._attempt = None
        self._last_overlay = ("", NEUTRAL)
        self._verifier = None
        self._live_result = None
        self.view.set_prompt(None)
        self.start_button.setEnabled(self.liveness_on() and service is not None and bool(name))
        self.liveness_label.setText("")
        if service is None or not name or not scorer:
            self.worker.set_process(None)
            msg = self.no_service_text() if service is None else "Enroll someone first."
            self.view.set_banner(msg if service is None or not name else "", NEUTRAL)
        elif self.liveness_on():
            self._start_attempt(service, name, scorer)
        else:
            self._claim = (service, name, scorer)
            self._install()
            self.loop.request_measure()  # a new claim: the window fills from fresh measurements
            self.view.set_banner("")
        self._show_threshold(tau)

    def _show_threshold(self, tau: float | None = None) -> None:
        """The τ label and the decision after a τ change here or anywhere (the scores in the
        window are judged against the service's τ; nothing is measured again)."""
        scorer = self.scorer_combo.currentText()
        tau = tau if tau is not None else self.threshold()
        if tau is None:
            self.tau_label.setText("τ: not calibrated for this scorer (see Calibrate)")
        else:
            self.tau_label.setText(f"τ = {tau:.4f} ({scorer})")
        self._update_decision()

    def _install(self) -> None:
        """Put the current claim's (or liveness attempt's) processing on the live loop."""
        session = self.loop.current
        if session is None:
            self.worker.set_process(None)  # built at the next frame (see on_frame)
        elif self._attempt is not None:
            self.worker.set_process(self._attempt(session))
        elif self._claim is not None:
            self.worker.set_process(self._verify_process(session, *self._claim))

    @staticmethod
    def _verify_process(session: LiveSession, service: Any, name: str, scorer: str
                        ) -> Callable[[np.ndarray], VerifyFrame | None]:
        """Score the live loop's largest tracked face, on each of its new embeddings
        (:class:`~faceapp.services.live_pages.TrackedVerifier`: the service's τ)."""
        verifier = TrackedVerifier(service, name, scorer)

        def process(frame: np.ndarray) -> VerifyFrame | None:
            live = session.process(frame)
            if live is None:  # processed by a session closed meanwhile
                return None
            step = verifier.step(live)
            return VerifyFrame(step.result, step.box, live)

        return process

    def reset(self) -> None:
        if self.liveness_on():
            self._reconfigure()
            return
        self._window.clear()
        self._last_overlay = ("", NEUTRAL)
        self.loop.request_measure()
        self._update_decision()

    # liveness -----------------------------------------------------------------------------
    def start_challenge(self) -> None:
        """A new liveness attempt (a new random challenge), with liveness turned on."""
        if not self.liveness_on():
            self.liveness_check.setChecked(True)  # toggling reconfigures: a new attempt
        else:
            self._reconfigure()

    def _start_attempt(self, service: Any, name: str, scorer: str) -> None:
        from faceapp.services.liveness import ChallengeConfig, LiveVerifier, draw_actions, tracked_faces

        actions = self.liveness_actions if self.liveness_actions is not None else draw_actions("auto", None)
        config = self.liveness_config or ChallengeConfig(require_identity=True)
        clock = self.liveness_clock
        holder: dict[str, LiveVerifier] = {}

        def attempt(session: LiveSession) -> Callable[[np.ndarray], LiveStep | None]:
            def process(frame: np.ndarray) -> LiveStep | None:
                live = session.process(frame)  # the page's live loop follows the faces
                if live is None:  # processed by a session closed meanwhile
                    return None
                # built on the worker thread at the first frame (loads the passive model)
                if "v" not in holder:
                    holder["v"] = LiveVerifier(service, name, actions, scorer=scorer,
                                               config=config, tracked=True)  # the service's τ
                return LiveStep(holder["v"].process(frame, clock(), tracked_faces(live)))

            return process

        self._attempt = attempt
        self._install()
        self.view.set_banner("")
        self.view.set_prompt(Prompt("Look straight at the camera", "", 0, len(actions)))
        self.liveness_label.setText("Challenge: " + ", ".join(a.prompt.lower() for a in actions))
        self.decision_label.setText(WAITING)
        self.decision_label.setStyleSheet("color: #999999;")
        self.score_label.setText("Follow the prompts on the video.")
        self._set_decision(WAITING, math.nan)

    def _on_live_step(self, step: Any) -> None:
        if self._live_result is not None:
            return
        fl = step.frame
        st = fl.challenge
        if fl.box is not None:
            self.view.set_overlays([Overlay(fl.box, "", NEUTRAL)])
        else:
            self.view.set_overlays([])
        if step.result is None:
            if st is not None:
                cur = st.current
                arrow = ARROWS[cur.value] if cur is not None and st.status.value == "running" else ""
                self.view.set_prompt(Prompt(st.prompt, arrow, len(st.completed), len(st.actions),
                                            st.time_left_s))
            else:
                self.view.set_prompt(Prompt("Hold still: checking the face", "", 0, 0))
            return
        res = step.result
        self._live_result = res
        self.view.set_prompt(None)
        ok = res.accepted
        self.view.set_overlays([Overlay(fl.box, "", GOOD if ok else BAD)] if fl.box is not None else [])
        decision, color = (ACCEPT, "#2ecc71") if ok else (REJECT, "#e74c3c")
        self.decision_label.setText(decision)
        self.decision_label.setStyleSheet(f"color: {color};")
        ident = "passed" if res.identity_ok else "FAILED"
        live = "passed" if res.live else "FAILED"
        self.score_label.setText(f"identity {ident} ({res.identity_matches}/{res.identity_checks} checks), "
                                 f"liveness {live}")
        self.liveness_label.setText("\n".join(res.reasons) if res.reasons else
                                    "Every action seen, passive checks passed.")
        self._set_decision(decision, res.best_score)

    def _set_decision(self, decision: str, score: float) -> None:
        if decision != self._decision:
            self._decision = decision
            self.decisionChanged.emit(decision, score)

    # live loop ----------------------------------------------------------------------------
    def on_frame(self, frame: np.ndarray) -> None:
        self.view.set_frame(frame)
        if self._claim is not None or self._attempt is not None:
            try:
                self.loop.session(self.service)
            except FaceappError as err:
                self.view.set_banner(describe_error(err), BAD)
                return
        self.worker.submit(frame)

    def on_camera_stopped(self) -> None:
        self.view.set_overlays([])
        self.loop.request_reset()
        self.reset()

    def _on_result(self, result: ProcessedFrame) -> None:
        if isinstance(result.value, LiveStep):
            self._on_live_step(result.value.step)
            return
        vf: VerifyFrame | None = result.value
        if vf is None:
            return
        if vf.box is None:
            self.view.set_banner("No face: look at the camera", NEUTRAL)
            self.view.set_overlays([])
            return
        self.view.set_banner("")
        if vf.result is None:  # the face was tracked, its last score stands
            if len(self._window) < self._window.size:
                self.loop.request_measure()
            text, color = self._last_overlay
            self.view.set_overlays([Overlay(vf.box, text, color)])
            return
        score = float(vf.result.score)
        self._window.add(score)
        if len(self._window) < self._window.size:
            self.loop.request_measure()  # fill the window from the next frames
        self._update_decision()
        tau = self.threshold()
        ok = tau is not None and accepts(score, tau)
        self._last_overlay = (f"{score:.3f}", GOOD if ok else BAD)
        self.view.set_overlays([Overlay(vf.box, *self._last_overlay)])

    def _update_decision(self) -> None:
        if self.liveness_on():
            return  # the liveness attempt decides (see _on_live_step)
        n, size = len(self._window), self._window.size
        self.count_label.setText(f"{n} / {size} frames scored")
        tau = self.threshold()
        if not self._window.ready() or tau is None:
            decision, color = WAITING, "#999999"
            fused = self._window.fused()
            self.score_label.setText(
                "Collecting frames…" if tau is not None else "No threshold for this scorer."
            )
        else:
            fused = self._window.fused()
            ok = accepts(fused, tau)
            decision, color = (ACCEPT, "#2ecc71") if ok else (REJECT, "#e74c3c")
            rel = "≥" if ok else "<"
            self.score_label.setText(f"median score {fused:.4f} {rel} τ {tau:.4f}")
        self.decision_label.setText(decision)
        self.decision_label.setStyleSheet(f"color: {color};")
        if decision != self._decision:
            self._decision = decision
            self.decisionChanged.emit(decision, fused)

    # life cycle ---------------------------------------------------------------------------
    def activated(self) -> None:
        self.loop.request_reset()  # frames were missed while another page was shown
        self.reset()

    def drain(self) -> None:
        self.worker.stop()
        self.worker.start()

    def shutdown(self) -> None:
        self.worker.stop()  # no frame in flight any more: the live loop can close here
        self.loop.shutdown()
