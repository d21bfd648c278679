"""The passive liveness score: window features, a logistic model over them, its threshold.

A *window* is ``window`` consecutive frames of one tracked face (one frame for a still).
Its features are the medians of the per-frame cues (:class:`FrameCues`), the planar-motion
residual, the head-pose range and a still-image flag (:func:`window_features`). The score
is P(bona fide) of an L2-regularised logistic regression on the standardised features and
their pairwise products (:func:`quadratic_expand`: the cues matter differently for stills
and clips, and together: low parallax is only suspicious when the head moved; on the
calibration data this halves the held-out attacks' scores' overlap with bona fide, see
README), fitted on calibration data
(:mod:`faceapp.liveness.calibrate`), and the decision threshold comes from the same data
(APCER target on out-of-fold scores). Both are stored in one JSON file with the data's
provenance (``models/liveness.json``); nothing here is typed in by hand.

Why a hand-written fit: nine features and a few hundred samples need ~20 lines of
Newton-Raphson (IRLS); scikit-learn would add a large dependency for that one call.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceapp.config import PROJECT_ROOT
from faceapp.errors import CalibrationError
from faceapp.vision.liveness.passive import FrameCues, planar_residual

FORMAT = "faceapp-liveness-v2"
DEFAULT_MODEL_PATH = PROJECT_ROOT / "models" / "liveness.json"
ENV_LIVENESS_MODEL = "FACEAPP_LIVENESS_MODEL"

FEATURES: tuple[str, ...] = (
    *(f"{n}_median" for n in FrameCues.names()),
    "planar_residual",
    "pose_range",
    "still",
)


def window_features(cues: np.ndarray, landmarks: np.ndarray, yaw_pitch: np.ndarray) -> np.ndarray:
    """Features of one window.

    Args:
        cues: (K, 6) per-frame cues (:meth:`FrameCues.as_array`) of the sampled frames, K >= 1.
        landmarks: (T, 5, 2) landmarks of the face on the frames used for motion (T >= 1).
        yaw_pitch: (T, 2) head yaw and pitch in degrees on the same frames.
    Returns:
        (len(FEATURES),) float64. A window of one frame is a still: motion features 0,
        ``still`` = 1.
    """
    c = np.asarray(cues, dtype=np.float64).reshape(-1, len(FrameCues.names()))
    if len(c) == 0:
        raise ValueError("a window needs at least one frame with cues")
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
    yp = np.asarray(yaw_pitch, dtype=np.float64).reshape(-1, 2)
    still = len(lm) < 2
    if still:
        motion = [0.0, 0.0]
    else:
        rng = np.percentile(yp, 90, axis=0) - np.percentile(yp, 10, axis=0)
        motion = [planar_residual(lm), float(np.hypot(*rng))]
    return np.asarray([*np.median(c, axis=0), *motion, 1.0 if still else 0.0], dtype=np.float64)


# ---------------------------------------------------------------------------- logistic fit


def quadratic_expand(z: np.ndarray) -> np.ndarray:
    """Degree-2 expansion: (N, D) -> (N, D + D(D+1)/2) float64, the inputs followed by
    ``z_i * z_j`` for i <= j in row-major order of the upper triangle."""
    zz = np.asarray(z, dtype=np.float64)
    squeeze = zz.ndim == 1
    zz = zz.reshape(1, -1) if squeeze else zz
    iu = np.triu_indices(zz.shape[1])
    out = np.concatenate([zz, (zz[:, :, None] * zz[:, None, :])[:, iu[0], iu[1]]], axis=1)
    return out[0] if squeeze else out


def n_expanded(d: int) -> int:
    return d + d * (d + 1) // 2


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, weights: np.ndarray | None = None,
                 max_iter: int = 100, tol: float = 1e-10) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton-Raphson (IRLS).

    Minimises ``sum_i w_i * logloss(y_i, sigmoid(x_i·β + b)) + l2/2 * |β|²`` (the bias is
    not penalised).

    Args:
        x: (N, D) float features (standardise them first).
        y: (N,) labels in {0, 1}.
        l2: ridge strength (> 0 keeps the problem strictly convex, also when separable).
        weights: (N,) non-negative sample weights (default 1).
    Returns:
        (β of shape (D,), b) float64.
    """
    xx = np.asarray(x, dtype=np.float64)
    yy = np.asarray(y, dtype=np.float64)
    n, d = xx.shape
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    a = np.c_[xx, np.ones(n)]
    theta = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(a @ theta)))
        grad = a.T @ (w * (p - yy)) + reg * theta
        hess = (a * (w * p * (1 - p))[:, None]).T @ a + np.diag(reg) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if float(np.abs(step).max()) < tol:
            break
    return theta[:-1], float(theta[-1])


def balanced_weights(labels: Sequence[int], kinds: Sequence[str]) -> np.ndarray:
    """Sample weights giving bona fide and every attack type the same total weight.

    Args:
        labels: 1 bona fide, 0 attack.
        kinds: the sample's type (e.g. "genuine", "print", "screen", "replay").
    """
    kinds_arr = np.asarray(kinds)
    lab = np.asarray(labels)
    w = np.zeros(len(lab))
    attack_types = sorted(set(kinds_arr[lab == 0].tolist()))
    for k in sorted(set(kinds_arr.tolist())):
        m = kinds_arr == k
        share = 0.5 if k in set(kinds_arr[lab == 1].tolist()) else 0.5 / max(1, len(attack_types))
        w[m] = share * len(lab) / m.sum()
    return w


# ---------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class PassiveModel:
    """Standardisation + logistic weights + the calibrated threshold.

    ``z = (f - mean) / std``; ``q = (quadratic_expand(z) - mean2) / std2``;
    ``score(f) = sigmoid(q · coef + intercept)`` in [0, 1], higher = more likely a live
    face; live when ``score >= threshold``. ``provenance``: where the calibration data came
    from, how many samples, the threshold rule, the metrics and the command.
    """

    features: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mean2: tuple[float, ...]
    std2: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float
    window: int
    cue_every: int
    provenance: dict[str, object] = field(default_factory=dict)

    def score(self, features: np.ndarray) -> np.ndarray:
        """(N, D) or (D,) features -> (N,) or scalar-shaped float64 scores in [0, 1]."""
        f = np.asarray(features, dtype=np.float64)
        z = (f - np.asarray(self.mean)) / np.asarray(self.std)
        q = (quadratic_expand(z) - np.asarray(self.mean2)) / np.asarray(self.std2)
        return 1.0 / (1.0 + np.exp(-(q @ np.asarray(self.coef) + self.intercept)))

    def to_dict(self) -> dict[str, object]:
        return {
            "format": FORMAT,
            "features": list(self.features),
            "mean": list(self.mean),
            "std": list(self.std),
            "mean2": list(self.mean2),
            "std2": list(self.std2),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "threshold": self.threshold,
            "window": self.window,
            "cue_every": self.cue_every,
            "provenance": self.provenance,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (temp file + rename)."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(tmp, out)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> PassiveModel:
        """Read a model file (default: ``$FACEAPP_LIVENESS_MODEL`` or ``models/liveness.json``).

        Raises:
            CalibrationError: missing, unreadable, of another format or feature set.
        """
        p = Path(path) if path is not None else Path(os.environ.get(ENV_LIVENESS_MODEL, DEFAULT_MODEL_PATH))
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CalibrationError(
                f"{p}: no liveness model; run `faceapp liveness-calibrate` to make one") from None
        except (OSError, ValueError) as err:
            raise CalibrationError(f"{p}: unreadable liveness model ({err})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CalibrationError(f"{p}: not a {FORMAT} file")
        try:
            model = cls(
                features=tuple(str(f) for f in data["features"]),
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
                mean2=tuple(float(v) for v in data["mean2"]),
                std2=tuple(float(v) for v in data["std2"]),
                coef=tuple(float(v) for v in data["coef"]),
                intercept=float(data["intercept"]),
                threshold=float(data["threshold"]),
                window=int(data["window"]),
                cue_every=int(data["cue_every"]),
                provenance=dict(data.get("provenance", {})),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CalibrationError(f"{p}: malformed liveness model ({err})") from None
        if model.features != FEATURES:
            raise CalibrationError(f"{p}: made for features {model.features}, this version uses {FEATURES}")
        q = n_expanded(len(FEATURES))
        if not (len(model.mean) == len(model.std) == len(FEATURES)
                and len(model.mean2) == len(model.std2) == len(model.coef) == q):
            raise CalibrationError(f"{p}: inconsistent vector lengths")
        values = (*model.mean, *model.mean2, *model.coef, model.intercept, model.threshold)
        if not all(math.isfinite(v) for v in values) or min(model.std) <= 0 or min(model.std2) <= 0 \
                or model.window < 1 or model.cue_every < 1:
            raise CalibrationError(f"{p}: non-finite or invalid values")
        return model
