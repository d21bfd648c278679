"""Open-set score normalisation without a cohort: a small learned model of the cohort statistics.

Adaptive s-norm (:mod:`faceapp.nn.score_norm`) standardises a cosine similarity by how each
face scores against the ``top_k`` nearest faces of a cohort of other people::

    s'(p, g) = ½ [ (s − μ_g) / σ_g  +  (s − μ_p) / σ_p ]

It lifts open-set identification a lot (LFW DevTest DIR at FPIR 1e-2 0.775 → 0.861) but needs
the cohort's embeddings at run time: templates of thousands of real people, which an app that
protects faces should not ship. ``μ`` and ``σ`` are, however, smooth functions of the embedding
(how crowded the face space is around it), so a small network learns them from a cohort once,
at build time (:mod:`faceapp.training.open_set`), and the app ships only its weights:
**no face and no template of anyone**. :class:`LearnedNormaliser` is that network
(128 → H → H → 2, tanh, plain NumPy: the gallery uses it without torch).

The normalised score is put back on the cosine scale by an affine map ``α s' + β``, fitted when
the normaliser is built so that the model's calibrated τ at FAR 1e-2 and 1e-3 (cosine, pairs of
the training people) are the same numbers for the normalised score on the same pairs, so the
slider's scale and a τ chosen before stay meaningful. The map is monotone, so it changes no
ranking and no DIR/FPIR figure.

The app decides **1:1 and 1:K** on the normalised score when the model has a normaliser
(verification too: on held-out LFW DevTrain identities it raised TAR at FAR 1e-3 from 0.945
to 0.964 and at FAR 1e-4 from 0.823 to 0.889, ``tools/choose_verify_norm.py``), and the model's
``calibration.json`` is measured on the same normalised scores (``faceapp calibrate-model``).

File (``score_norm.npz`` beside the model): the layer weights as float32 arrays and a JSON
``meta`` (format, ``model_id``, ``alpha``, ``beta``, the target scalers, ``top_k``, provenance).
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from faceapp.errors import ModelError
from faceapp.nn.score_norm import MIN_STD, CohortStats, s_norm_matrix, s_norm_pairs

logger = logging.getLogger(__name__)

NORMALISER_FILE = "score_norm.npz"
NORMALISER_FORMAT = 1
LAYERS = ("w1", "b1", "w2", "b2", "w3", "b3")

class ScoreNormaliser(Protocol):
    """What the app's decisions need to normalise cosine similarities: 1:K search
    (:meth:`normalise`), 1:1 verification and calibration pairs (:meth:`normalise_pairs`);
    see :class:`RawScores`."""

    @property
    def name(self) -> str:
        """``cosine`` (no normalisation) or ``learned-snorm``."""
        ...

    @property
    def active(self) -> bool:
        """False for :class:`RawScores`: callers may skip the re-scoring entirely."""
        ...

    def normalise(self, probes: np.ndarray, templates: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """(P, D) float32 unit probes, (M, D) float32 unit templates, (P, M) cosine similarities
        -> (P, M) float64 normalised similarities (higher = more alike)."""
        ...

    def normalise_pairs(self, a: np.ndarray, b: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Row-wise pairs: (N, D), (N, D) float32 unit rows, (N,) cosine similarities of
        (a[i], b[i]) -> (N,) float64 normalised similarities."""
        ...


class RawScores:
    """No normalisation: the cosine similarity is the score (a model without a normaliser)."""

    name = "cosine"
    active = False

    def normalise(self, probes: np.ndarray, templates: np.ndarray, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores, dtype=np.float64)

    def normalise_pairs(self, a: np.ndarray, b: np.ndarray, scores: np.ndarray) -> np.ndarray:
        return np.asarray(scores, dtype=np.float64)


RAW_SCORES = RawScores()


class LearnedNormaliser:
    """Adaptive s-norm with μ, σ predicted from the embedding (module docstring).

    Args:
        layers: ``w1`` (D, H), ``b1`` (H,), ``w2`` (H, H), ``b2`` (H,), ``w3`` (H, 2), ``b3`` (2,);
            the network maps a unit embedding to standardised (μ, log σ).
        meta: ``model_id``, ``alpha``, ``beta``, ``mu_mean``, ``mu_scale``, ``logstd_mean``,
            ``logstd_scale`` (the de-standardisation), plus provenance.
    Raises:
        ModelError: missing, misshapen or non-finite weights or a non-positive ``alpha``.
    """

    name = "learned-snorm"
    active = True

    def __init__(self, layers: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        try:
            w = {k: np.asarray(layers[k], dtype=np.float32) for k in LAYERS}
            d, h = w["w1"].shape
            shapes = {"b1": (h,), "w2": (h, h), "b2": (h,), "w3": (h, 2), "b3": (2,)}
            bad = [k for k, s in shapes.items() if w[k].shape != s]
            self.alpha = float(meta["alpha"])
            self.beta = float(meta["beta"])
            self._scale = tuple(float(meta[k]) for k in
                                ("mu_mean", "mu_scale", "logstd_mean", "logstd_scale"))
            self.model_id = str(meta["model_id"])
        except (KeyError, TypeError, ValueError) as err:
            raise ModelError(f"malformed score normaliser ({err!r})") from None
        if bad:
            raise ModelError(f"score normaliser layers of the wrong shape: {', '.join(bad)}")
        values = [*w.values(), np.asarray([self.alpha, self.beta, *self._scale])]
        if not all(np.isfinite(v).all() for v in values):
            raise ModelError("score normaliser holds NaN or inf")
        if self.alpha <= 0:
            raise ModelError(f"score normaliser map must increase (alpha {self.alpha} <= 0)")
        self._w = w
        self.dim = int(d)
        self.meta = dict(meta)

    def stats(self, x: np.ndarray) -> CohortStats:
        """Predicted μ and σ of (N, D) or (D,) float unit embeddings (σ floored at
        :data:`~faceapp.nn.score_norm.MIN_STD`), as a cohort would measure them."""
        xs = np.atleast_2d(np.asarray(x, dtype=np.float32))
        if xs.ndim != 2 or xs.shape[1] != self.dim:
            raise ValueError(f"expected (N, {self.dim}) embeddings, got shape {np.shape(x)}")
        w = self._w
        h = np.tanh(xs @ w["w1"] + w["b1"])
        h = np.tanh(h @ w["w2"] + w["b2"])
        out = (h @ w["w3"] + w["b3"]).astype(np.float64)
        m0, ms, l0, ls = self._scale
        return CohortStats(out[:, 0] * ms + m0, np.maximum(np.exp(out[:, 1] * ls + l0), MIN_STD))

    def z_scores(self, probes: np.ndarray, templates: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """s' of a (P, M) cosine matrix (before the map to the cosine scale), float64: the
        cohort s-norm formula (:func:`~faceapp.nn.score_norm.s_norm_matrix`) on predicted stats."""
        return s_norm_matrix(scores, self.stats(probes), self.stats(templates))

    def z_pairs(self, a: np.ndarray, b: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """s' of row-wise pairs: (N, D), (N, D), (N,) cosine -> (N,) float64 (before the map)."""
        return s_norm_pairs(scores, self.stats(a), self.stats(b))

    def normalise(self, probes: np.ndarray, templates: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """``α s' + β``: the normalised similarity on the cosine scale (P, M) float64."""
        return self.alpha * self.z_scores(probes, templates, scores) + self.beta

    def normalise_pairs(self, a: np.ndarray, b: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Row-wise pairs: (N, D), (N, D), (N,) cosine -> (N,) float64 on the cosine scale."""
        return self.alpha * self.z_pairs(a, b, scores) + self.beta

    def with_map(self, alpha: float, beta: float, **meta: Any) -> LearnedNormaliser:
        """The same network with the map ``alpha s' + beta`` (and extra ``meta`` entries)."""
        return LearnedNormaliser(self._w, {**self.meta, **meta, "alpha": alpha, "beta": beta})

    # ------------------------------------------------------------------ file
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the weights and ``meta`` as an ``.npz`` (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {**self.meta, "format": NORMALISER_FORMAT, "model_id": self.model_id,
                "alpha": self.alpha, "beta": self.beta}
        tmp = path.with_name(path.name + ".partial.npz")
        np.savez(tmp, **self._w, meta=np.asarray(json.dumps(meta, sort_keys=True)))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], model_id: str) -> LearnedNormaliser:
        """Read :meth:`save`'s file.

        Raises:
            ModelError: unreadable or malformed file, or made for another model.
        """
        try:
            with np.load(path, allow_pickle=False) as z:
                layers = {k: np.asarray(z[k]) for k in LAYERS}
                meta = json.loads(str(z["meta"]))
            if not isinstance(meta, dict) or meta.get("format") != NORMALISER_FORMAT:
                raise ValueError("unknown format")
        except (OSError, KeyError, TypeError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise ModelError(f"{path}: not a faceapp score normaliser ({err})") from None
        if meta.get("model_id") != model_id:
            raise ModelError(f"{path}: score normaliser of model {meta.get('model_id')!r}, not "
                             f"{model_id!r}; build it again for this model (faceapp make-normaliser)")
        try:
            return cls(layers, meta)
        except ModelError as err:
            raise ModelError(f"{path}: {err}") from None


def normaliser_path_for(model_path: str | os.PathLike[str]) -> Path:
    """``score_norm.npz`` in the model file's folder."""
    return Path(model_path).with_name(NORMALISER_FILE)


def normaliser_for(model_path: str | os.PathLike[str], model_id: str) -> ScoreNormaliser:
    """The model's normaliser if its folder has one for this ``model_id``, else
    :data:`RAW_SCORES` (logged: a missing file is normal for a model trained here, an unusable
    one is a warning; 1:K then decides on cosine similarity)."""
    path = normaliser_path_for(model_path)
    if not path.exists():
        logger.info("no score normaliser beside %s: 1:K decides on cosine similarity", model_path)
        return RAW_SCORES
    try:
        return LearnedNormaliser.load(path, model_id)
    except ModelError as err:
        logger.warning("score normaliser not used: %s", err)
        return RAW_SCORES
