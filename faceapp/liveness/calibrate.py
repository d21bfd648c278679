"""Calibrate the passive liveness model from data and report ISO/IEC 30107-3 error rates.

Data (see ``../shared/data/liveness/README.md``):

* bona fide: windows of the genuine clips (``tvl_live_replay/real.mp4``, the
  ``liveportrait_blinks`` and ``sadtalker_hdtf_blink`` clips) and LFW photos as stills
  (news photographs: direct camera captures of live people);
* attacks, generated (:mod:`faceapp.liveness.attacks`): LFW photos printed / shown on a
  screen and moved by hand (clips and stills), the genuine clips replayed on a screen;
* attacks and bona fide recorded by others, **held out** (never fitted): ``fake.mp4``
  (screen replay), ``image_F1.jpg`` (print), ``image_F2.jpg`` (tablet), ``image_T1.jpg``
  (live still).

Protocol: samples are grouped by source (a clip and its replays form one group, an LFW
identity one group) and the groups dealt into ``folds`` folds. Each fold is scored by a
model fitted on the other folds; the operating threshold τ minimises ACER (the mean of the
worst attack type's APCER and the BPCER) on those out-of-fold scores, and BPCER is also
reported at the thresholds that hold every attack type's APCER to 5 % and 1 %. The model
stored is then fitted on all calibration samples and keeps that τ. APCER is per
attack type (print, screen, replay), BPCER over bona fide samples, both with counts; the
held-out recordings are scored by the stored model.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import os
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from faceapp.config import PROJECT_ROOT
from faceapp.errors import FaceappError
from faceapp.liveness import attacks
from faceapp.liveness.model import FEATURES, PassiveModel, balanced_weights, fit_logistic, quadratic_expand
from faceapp.liveness.session import CueCollector, FaceFollower
from faceapp.vision.images import load_image
from faceapp.vision.liveness import DegenerateLandmarks, head_pose
from faceapp.vision.video import iter_video_frames

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2
GENUINE_CLIPS = (
    "tvl_live_replay/real.mp4",
    "liveportrait_blinks/d0.mp4",
    "liveportrait_blinks/d6.mp4",
    "liveportrait_blinks/d13.mp4",
    "sadtalker_hdtf_blink/WDA_AlexandriaOcasioCortez_000.mp4",
)
HELD_OUT = (
    ("tvl_live_replay/fake.mp4", "replay", 0),
    ("silentface_samples/image_F1.jpg", "print", 0),
    ("silentface_samples/image_F2.jpg", "screen", 0),
    ("silentface_samples/image_T1.jpg", "genuine", 1),
)
ATTACK_KINDS = ("print", "screen", "replay")


@dataclass(frozen=True)
class Sample:
    """One window (or still) with its features. ``label``: 1 bona fide, 0 attack;
    ``group``: samples of one group are never split between folds."""

    kind: str
    label: int
    group: str
    source: str
    still: bool
    features: np.ndarray


@dataclass(frozen=True)
class CalibrationConfig:
    """``window`` / ``cue_every``: frames per window and cue sampling; ``n_print`` /
    ``n_screen``: generated clips (one LFW identity each, ``clip_frames`` frames) per
    attack type; ``n_stills``: LFW photos used as bona fide stills; ``folds``; ``l2``:
    ridge strength; ``target_apcer``: kept in the provenance (the report always gives BPCER
    at APCER 5 % and 1 %); ``seed``."""

    window: int = 30
    cue_every: int = 3
    n_print: int = 60
    n_screen: int = 60
    n_stills: int = 120
    clip_frames: int = 30
    folds: int = 5
    l2: float = 1.0
    target_apcer: float = 0.05
    seed: int = 0


# ---------------------------------------------------------------------------- features


def frames_features(frames: Iterable[np.ndarray], follower: FaceFollower, window: int,
                    cue_every: int) -> list[np.ndarray]:
    """Window features of the largest tracked face of a frame sequence."""
    follower.reset()
    col = CueCollector(window, cue_every)
    for i, frame in enumerate(frames, 1):
        faces = follower.step(frame)
        if not faces:
            continue
        track_id, det = faces[0]
        try:
            pose = head_pose(det.landmarks_array())
        except DegenerateLandmarks:
            continue
        col.add(i, frame, track_id, det, pose.yaw, pose.pitch)
    return col.features()


def still_features(image: np.ndarray, follower: FaceFollower) -> list[np.ndarray]:
    """Features of the largest face of one image (``[]`` when none)."""
    follower.reset()
    return frames_features([image], follower, 1, 1)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FeatureCache:
    """Features per source in one ``.npz`` per key under ``root`` (outside git)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def get(self, key: str, make: Callable[[], list[np.ndarray]]) -> list[np.ndarray]:
        name = hashlib.sha1(key.encode()).hexdigest()[:16] + ".npz"
        path = self.root / name
        if path.exists():
            with np.load(path) as z:
                return list(z["f"])
        feats = make()
        arr = np.asarray(feats, dtype=np.float64).reshape(-1, len(FEATURES))
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, f=arr)
        tmp.replace(path)
        return list(arr)


def _portable(path: Path) -> str:
    """``path`` relative to the checkout when it lies beside it (``../shared/data/...``)."""
    try:
        return os.path.relpath(path.resolve(), PROJECT_ROOT)
    except ValueError:
        return str(path)


def _lfw_people(lfw: Path) -> list[str]:
    people = sorted(p.name for p in lfw.iterdir() if p.is_dir())
    if not people:
        raise FaceappError(f"{lfw}: no LFW person folders")
    return people


def drawn_people(lfw: Path, cfg: CalibrationConfig) -> list[str]:
    """The LFW people calibration uses: print, then screen, then bona fide stills."""
    return random.Random(cfg.seed).sample(_lfw_people(lfw), cfg.n_print + cfg.n_screen + cfg.n_stills)


def collect_samples(data: Path, lfw: Path, cfg: CalibrationConfig, follower: FaceFollower,
                    cache: FeatureCache, progress: Callable[[str], None] = lambda s: None,
                    ) -> tuple[list[Sample], list[Sample], dict[str, object]]:
    """(calibration samples, held-out samples, provenance)."""
    cal: list[Sample] = []
    held: list[Sample] = []
    media: dict[str, str] = {}
    w, ce = cfg.window, cfg.cue_every
    tag = f"v{GENERATOR_VERSION}-w{w}-c{ce}"  # generated media
    rtag = f"w{w}-c{ce}"  # recorded media (independent of the generator)
    for rel in GENUINE_CLIPS:
        path = data / rel
        if not path.exists():
            raise FaceappError(f"{path}: genuine clip missing")
        media[rel] = _sha256(path)
        progress(f"genuine {rel}")
        feats = cache.get(f"{rtag}:genuine:{rel}:{media[rel]}",
                          lambda p=path: frames_features(iter_video_frames(p), follower, w, ce))
        cal += [Sample("genuine", 1, rel, rel, False, f) for f in feats]
        progress(f"replay {rel}")

        def make_replay(p: Path = path, r: str = rel) -> list[np.ndarray]:
            rng = np.random.default_rng([cfg.seed, 1, *r.encode()])
            out: list[np.ndarray] = []
            chunk: list[np.ndarray] = []
            for frame in iter_video_frames(p, max_side=480):
                chunk.append(frame)
                if len(chunk) == w:
                    out += frames_features(attacks.replay_attack(chunk, rng), follower, w, ce)
                    chunk = []
            return out

        feats = cache.get(f"{tag}:replay:{rel}:{media[rel]}:{cfg.seed}", make_replay)
        cal += [Sample("replay", 0, rel, rel + "#replay", False, f) for f in feats]
    chosen = drawn_people(lfw, cfg)
    kinds = ["print"] * cfg.n_print + ["screen"] * cfg.n_screen + ["genuine"] * cfg.n_stills
    for i, (name, kind) in enumerate(zip(chosen, kinds, strict=True)):
        photo_path = sorted((lfw / name).iterdir())[0]
        if i % 20 == 0:
            progress(f"lfw {kind} {i}/{len(chosen)}")
        photo = load_image(photo_path)
        if kind == "genuine":
            feats = cache.get(f"{rtag}:still:{photo_path.name}",
                              lambda im=photo: still_features(im, follower))
            cal += [Sample("genuine", 1, "lfw:" + name, photo_path.name, True, f) for f in feats]
            continue
        gen = attacks.print_attack if kind == "print" else attacks.screen_attack

        def make(ph: np.ndarray = photo, g: Callable[..., list[np.ndarray]] = gen, k: str = kind,
                 n: str = name) -> list[np.ndarray]:
            r = np.random.default_rng([cfg.seed, 2, *f"{k}:{n}".encode()])
            clip = g(ph, r, cfg.clip_frames)
            feats = frames_features(clip, follower, w, ce)
            feats += still_features(clip[len(clip) // 2], follower)  # the same attack as a still
            return feats

        feats = cache.get(f"{tag}:{kind}:{photo_path.name}:{cfg.seed}", make)
        for j, f in enumerate(feats):
            is_still = bool(f[FEATURES.index("still")] > 0.5)
            cal.append(Sample(kind, 0, "lfw:" + name, f"{photo_path.name}#{kind}{j}", is_still, f))
    for rel, kind, label in HELD_OUT:
        path = data / rel
        if not path.exists():
            raise FaceappError(f"{path}: held-out sample missing")
        media[rel] = _sha256(path)
        progress(f"held out {rel}")
        if path.suffix.lower() == ".mp4":
            feats = cache.get(f"{rtag}:held:{rel}:{media[rel]}",
                              lambda p=path: frames_features(iter_video_frames(p), follower, w, ce))
        else:
            feats = cache.get(f"{rtag}:held:{rel}:{media[rel]}",
                              lambda p=path: still_features(load_image(p), follower))
        held += [Sample(kind, label, rel, rel, path.suffix.lower() != ".mp4", f) for f in feats]
    provenance: dict[str, object] = {
        "media_sha256": media,
        "lfw_root": _portable(lfw),
        "data_root": _portable(data),
        "lfw_people": {"print": cfg.n_print, "screen": cfg.n_screen, "genuine_stills": cfg.n_stills,
                       "drawn_with": f"random.Random({cfg.seed}).sample(sorted person folders)"},
        "generator_version": GENERATOR_VERSION,
    }
    return cal, held, provenance


# ---------------------------------------------------------------------------- metrics


def threshold_at_apcer(attack_scores: dict[str, np.ndarray], target: float) -> float:
    """The lowest τ at which every attack type's APCER (share of its attacks with score >= τ)
    is at most ``target``: for each type the (⌊target·n⌋+1)-th highest score, just above it."""
    tau = -math.inf
    for scores in attack_scores.values():
        s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
        if s.size == 0:
            continue
        allowed = math.floor(target * s.size + 1e-9)
        if allowed >= s.size:
            continue
        tau = max(tau, float(np.nextafter(s[allowed], np.inf)))
    return tau if math.isfinite(tau) else 0.0


def threshold_min_acer(scores: np.ndarray, kinds: Sequence[str], labels: Sequence[int]) -> float:
    """The τ minimising ACER = (max over attack types of APCER + BPCER) / 2, with live =
    ``score >= τ``; candidates are the observed scores (ties: the lowest τ)."""
    s = np.asarray(scores, dtype=np.float64)
    k = np.asarray(kinds)
    lab = np.asarray(labels)
    gen = s[lab == 1]
    attacks_by_kind = [s[(k == kind) & (lab == 0)] for kind in ATTACK_KINDS]
    attacks_by_kind = [a for a in attacks_by_kind if a.size]
    best_tau, best = 0.0, math.inf
    for t in np.unique(s):
        apcer = max((float((a >= t).mean()) for a in attacks_by_kind), default=0.0)
        bpcer = float((gen < t).mean()) if gen.size else 0.0
        acer = (apcer + bpcer) / 2
        if acer < best - 1e-12:
            best, best_tau = acer, float(t)
    return best_tau


def error_rates(scores: np.ndarray, kinds: Sequence[str], labels: Sequence[int], tau: float
                ) -> dict[str, dict[str, float | int]]:
    """{"bpcer": {...}, "<attack>": {...}}: errors, n and rate at ``score >= τ`` = live."""
    s = np.asarray(scores)
    k = np.asarray(kinds)
    lab = np.asarray(labels)
    out: dict[str, dict[str, float | int]] = {}
    gen = lab == 1
    if gen.any():
        err = int((s[gen] < tau).sum())
        out["bpcer"] = {"errors": err, "n": int(gen.sum()), "rate": err / int(gen.sum())}
    for kind in ATTACK_KINDS:
        m = (k == kind) & (lab == 0)
        if m.any():
            err = int((s[m] >= tau).sum())
            out[kind] = {"errors": err, "n": int(m.sum()), "rate": err / int(m.sum())}
    return out


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std < 1e-9] = 1.0
    return mean, std


Fit = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]


def _fit(samples: Sequence[Sample], l2: float) -> Fit:
    """(mean, std, mean2, std2, coef, intercept) of the model of :class:`PassiveModel`."""
    x = np.stack([s.features for s in samples])
    y = np.array([s.label for s in samples])
    mean, std = _standardise(x)
    q = quadratic_expand((x - mean) / std)
    mean2, std2 = _standardise(q)
    coef, b = fit_logistic((q - mean2) / std2, y, l2=l2,
                           weights=balanced_weights(y.tolist(), [s.kind for s in samples]))
    return mean, std, mean2, std2, coef, b


def _score(fit: Fit, samples: Sequence[Sample]) -> np.ndarray:
    mean, std, mean2, std2, coef, b = fit
    q = (quadratic_expand((np.stack([s.features for s in samples]) - mean) / std) - mean2) / std2
    return 1.0 / (1.0 + np.exp(-(q @ coef + b)))


def assign_folds(samples: Sequence[Sample], folds: int, seed: int) -> np.ndarray:
    """Fold of each sample: genuine clips dealt one per fold (with their replays), LFW
    identities shuffled and dealt round-robin."""
    groups = sorted({s.group for s in samples})
    clips = [g for g in groups if not g.startswith("lfw:")]
    lfw = [g for g in groups if g.startswith("lfw:")]
    random.Random(seed).shuffle(lfw)
    fold_of = {g: i % folds for i, g in enumerate(clips)}
    fold_of.update({g: i % folds for i, g in enumerate(lfw)})
    return np.array([fold_of[s.group] for s in samples])


@dataclass(frozen=True)
class CalibrationReport:
    model: PassiveModel
    report: dict[str, object]

    def markdown(self) -> str:
        r = self.report
        lines = [
            f"Operating threshold τ = {r['threshold']:.4f}: the minimum of ACER = (max APCER over attack "
            f"types + BPCER) / 2 on out-of-fold scores ({r['folds']}-fold cross-validation grouped by "
            "source); rows are out-of-fold except the held-out recordings (scored by the stored model).",
            "",
            "| set | samples | errors | rate |",
            "| --- | ---: | ---: | ---: |",
        ]

        def row(name: str, d: dict[str, float | int]) -> str:
            return f"| {name} | {d['n']} | {d['errors']} | {100 * float(d['rate']):.1f} % |"

        oof = r["out_of_fold"]
        assert isinstance(oof, dict)
        for key, label in (("bpcer", "BPCER, bona fide (clip windows + LFW stills)"),
                           ("print", "APCER print (generated from LFW)"),
                           ("screen", "APCER screen (generated from LFW)"),
                           ("replay", "APCER replay (genuine clips re-rendered)")):
            if key in oof:
                lines.append(row(label, oof[key]))
        held = r["held_out"]
        assert isinstance(held, dict)
        for src, d in held.items():
            kind = "BPCER" if d["label"] == 1 else "APCER"
            lines.append(f"| {kind} held out: {src} ({d['kind']}) | {d['n']} | {d['errors']} | "
                         f"{100 * d['errors'] / max(1, d['n']):.1f} % |")
        for key in ("bpcer_at_apcer_5", "bpcer_at_apcer_1"):
            d = r[key]
            assert isinstance(d, dict)
            lines.append(f"| BPCER at APCER {key[-1]} % (τ = {d['threshold']:.4f}) | {d['n']} | "
                         f"{d['errors']} | {100 * d['rate']:.1f} % |")
        return "\n".join(lines)


def calibrate(samples: Sequence[Sample], held: Sequence[Sample], cfg: CalibrationConfig,
              provenance: dict[str, object]) -> CalibrationReport:
    """Cross-validate, choose τ, fit the final model, score the held-out recordings."""
    if not samples:
        raise FaceappError("no calibration samples")
    folds = assign_folds(samples, cfg.folds, cfg.seed)
    oof = np.full(len(samples), np.nan)
    for k in range(cfg.folds):
        test = folds == k
        train = [s for s, f in zip(samples, folds, strict=True) if f != k]
        if not test.any() or len({s.label for s in train}) < 2:
            continue
        oof[test] = _score(_fit(train, cfg.l2), [s for s, t in zip(samples, test, strict=True) if t])
    kinds = [s.kind for s in samples]
    labels = np.array([s.label for s in samples])

    def attack_scores() -> dict[str, np.ndarray]:
        return {k: oof[(np.asarray(kinds) == k) & (labels == 0)] for k in ATTACK_KINDS}

    tau = threshold_min_acer(oof, kinds, labels.tolist())
    rates = error_rates(oof, kinds, labels.tolist(), tau)
    at = {}
    for target, key in ((0.05, "bpcer_at_apcer_5"), (0.01, "bpcer_at_apcer_1")):
        t = threshold_at_apcer(attack_scores(), target)
        b = error_rates(oof, kinds, labels.tolist(), t)["bpcer"]
        at[key] = {**b, "threshold": t}
    final = _fit(samples, cfg.l2)
    mean, std, mean2, std2, coef, b = final
    held_report: dict[str, dict[str, object]] = {}
    if held:
        hs = _score(final, held)
        for s, sc in zip(held, hs, strict=True):
            d = held_report.setdefault(s.source, {"kind": s.kind, "label": s.label, "n": 0, "errors": 0,
                                                  "scores": []})
            d["n"] = int(d["n"]) + 1  # type: ignore[call-overload]
            wrong = sc < tau if s.label == 1 else sc >= tau
            d["errors"] = int(d["errors"]) + int(wrong)  # type: ignore[call-overload]
            d["scores"].append(round(float(sc), 4))  # type: ignore[union-attr]
    counts = {k: int(sum(1 for s in samples if s.kind == k)) for k in ("genuine", *ATTACK_KINDS)}
    report: dict[str, object] = {
        "threshold": tau,
        "target_apcer": cfg.target_apcer,
        "folds": cfg.folds,
        "samples": counts,
        "out_of_fold": rates,
        **at,
        "held_out": held_report,
        "linear_coefficients": dict(zip(FEATURES, (round(float(c), 4) for c in coef[: len(FEATURES)]),
                                        strict=True)),
    }
    prov = {
        **provenance,
        "config": cfg.__dict__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "threshold_rule": "minimum ACER = (max over attack types of APCER + BPCER) / 2 on "
                          f"out-of-fold scores ({cfg.folds} folds, grouped by source)",
        "metrics": json.loads(json.dumps(report, default=float)),
    }
    model = PassiveModel(
        features=FEATURES, mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std),
        mean2=tuple(float(v) for v in mean2), std2=tuple(float(v) for v in std2),
        coef=tuple(float(v) for v in coef), intercept=float(b), threshold=float(tau),
        window=cfg.window, cue_every=cfg.cue_every, provenance=prov,
    )
    return CalibrationReport(model, report)
