"""Decision thresholds τ measured by evaluation, stored in ``calibration.json`` beside the model.

Format::

    {"format_version": 1, "model_id": "...", "created": "...", "source": {...},
     "scorers": {"distance": {"far_0.01": τ, "far_0.001": τ, "eer": τ, "accuracy": τ,
                              "metrics": {...}}, "head_l1": {...}, ...},
     "overrides": {"distance": τ}}

``source`` records where the thresholds come from: ``faceapp calibrate`` writes the data
folder, the people file, and the numbers of images, genuine and impostor pairs (>= 1e5
impostor pairs, so that FAR 1e-3 and 1e-4 are measured); ``far_0.0001`` exists only in
such files, ``far_1e-05`` only in those made from >= 1e6 impostor pairs. Thresholds apply to
similarity scores (accept when score >= τ, see :mod:`faceapp.nn.scoring`).
``overrides`` holds a τ the user chose (GUI calibrate page, ``--threshold`` persisted).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faceapp.errors import CalibrationError, ModelMismatch

CALIBRATION_FILE = "calibration.json"
FORMAT_VERSION = 1
OPERATING_POINTS = ("far_0.01", "far_0.001", "far_0.0001", "far_1e-05", "eer", "accuracy")
DEFAULT_POINT = "far_0.01"


def calibration_path_for(model_path: str | os.PathLike[str]) -> Path:
    """``calibration.json`` in the model file's folder."""
    return Path(model_path).with_name(CALIBRATION_FILE)


@dataclass
class Calibration:
    """Thresholds per scorer and operating point for one ``model_id``."""

    model_id: str
    scorers: dict[str, dict[str, Any]] = field(default_factory=dict)
    overrides: dict[str, float] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    def threshold(self, scorer: str, point: str = DEFAULT_POINT) -> float:
        """τ for ``scorer``: the user's override if any, else the calibrated ``point``."""
        if scorer in self.overrides:
            return float(self.overrides[scorer])
        entry = self.scorers.get(scorer)
        if entry is None:
            known = ", ".join(sorted(self.scorers)) or "none"
            raise CalibrationError(f"no calibration for scorer {scorer!r} (calibrated: {known})")
        if point not in entry:
            raise CalibrationError(f"scorer {scorer!r} has no threshold for {point!r}")
        return float(entry[point])

    def calibrated_threshold(self, scorer: str, point: str = DEFAULT_POINT) -> float:
        """τ from evaluation, ignoring any override."""
        return Calibration(self.model_id, self.scorers, {}, self.source).threshold(scorer, point)

    def check_model(self, model_id: str) -> None:
        if model_id != self.model_id:
            raise ModelMismatch(
                f"calibration is for model {self.model_id}, the loaded model is {model_id}: "
                "run `faceapp evaluate` for this model"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "model_id": self.model_id,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "source": self.source,
            "scorers": self.scorers,
            "overrides": self.overrides,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Calibration:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise CalibrationError(
                f"{path}: no calibration file (run `faceapp evaluate` on this model)"
            ) from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CalibrationError(f"{path}: unreadable calibration file ({err})") from None
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            raise CalibrationError(f"{path}: unknown calibration format")
        try:
            return cls(
                model_id=str(data["model_id"]),
                scorers={str(k): dict(v) for k, v in data.get("scorers", {}).items()},
                overrides={str(k): float(v) for k, v in data.get("overrides", {}).items()},
                source=dict(data.get("source", {})),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CalibrationError(f"{path}: malformed calibration file ({err})") from None

    @classmethod
    def load_for(cls, model_path: str | os.PathLike[str], model_id: str) -> Calibration:
        """The calibration beside ``model_path``, checked against ``model_id``."""
        cal = cls.load(calibration_path_for(model_path))
        cal.check_model(model_id)
        return cal
