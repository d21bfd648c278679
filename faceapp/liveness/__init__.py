"""Liveness (presentation-attack detection) over a frame stream: the session that runs the
challenge and the passive checks (:mod:`.session`), the calibrated passive model
(:mod:`.model`), generated attacks (:mod:`.attacks`), calibration and ISO/IEC 30107-3
evaluation (:mod:`.calibrate`) and camera verification with liveness (:mod:`.verify`).

Per-frame cues and the challenge state machine are model-free and live in
:mod:`faceapp.vision.liveness`. Nothing is loaded at import.
"""
