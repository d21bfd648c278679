"""``faceapp bench``: how fast faceapp is on this machine, against baselines measured in the
same run.

Three parts, each a JSON-ready dict with stable keys (dotted paths below):

* **frame** (``frame.fps``, ``frame.latency_ms_p50``, ``frame.latency_ms_p95``): real videos
  (``../shared/data/face_videos/**/*.mp4`` or ``--video``), scaled to 640 px wide, played
  through :class:`faceapp.services.live.LiveRecognizer` with a small gallery (faces enrolled from the
  first frames of each video, plus LFW people as distractors) in a temporary SQLite file,
  matched through :class:`faceapp.services.FaceService`. Frames are delivered in real time
  at the video's own rate, as by a camera, with the GUI's policy (frames arriving while
  ``process`` runs are dropped, the newest is taken next): ``fps`` = frames decided per
  second of video, latency = time from a frame's arrival to its decision (p50, p95);
  ``capacity_fps`` = frames per second of ``process`` time. The baseline
  (``frame.baseline_*``) is the naive per-frame pipeline played the same way: full-resolution
  detection and embedding of every face on every frame (``LiveConfig.naive()``).
  ``frame.liveness`` (``ms_mean``, ``ms_p95``, ``live_capacity_fps_with_liveness``): what the
  liveness session adds per frame on the same videos letterboxed to 640×480
  (:func:`bench_liveness`).
* **embed** (``embed.per_s_b1``, ``embed.per_s_b32``): aligned crops embedded per second by
  the model (as configured, flip-TTA included), against facenet-pytorch's
  InceptionResnetV1 (random weights, 160×160) in the same run (``embed.baseline_*``).
* **gallery** (``gallery.search_ms_1e4`` … ``_1e6``, ``gallery.open_s_1e5``/``_1e6``):
  :func:`faceapp.gallery.bench.bench_gallery` (1:K search per probe against a naive NumPy
  float32 search, and cold opening of a SQLite gallery).
* **startup** (``startup.window_s_1e5``, ``startup.ready_s_1e5``, ``startup.first_paint_s_1e5``,
  ``startup.window_s_empty``, ``startup.ready_s_empty``, ...): seconds from launching
  ``faceapp gui`` (a child process, offscreen Qt) until its main window is usable with a
  10⁵-template gallery of the model (shown, answering, People list filled), and until it
  is ready (model and search index loaded too, the model pages enabled), against the same
  app on an empty gallery in the same run; see :func:`bench_startup`. Target (usable
  window): ``STARTUP_TARGET_S``.

``quick=True`` shrinks every size (for tests and CI): the keys stay, ``quick`` is true and
``gallery.templates`` / ``startup.templates`` tell the sizes actually used. Nothing runs at import.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceapp import __version__
from faceapp.config import PROJECT_ROOT, DetectorConfig, resolve_paths
from faceapp.errors import CalibrationError, CameraError, FaceappError, ModelError
from faceapp.nn.checkpoint import LoadedModel, load_checkpoint
from faceapp.nn.pipeline import FacePipeline
from faceapp.services.live import FrameResult, LiveConfig, LiveRecognizer
from faceapp.vision.detection import FaceDetector
from faceapp.vision.images import load_image
from faceapp.vision.tracking import iou_matrix, max_weight_assignment
from faceapp.vision.video import iter_video_frames

log = logging.getLogger(__name__)

PARTS = ("frame", "embed", "gallery", "startup", "encryption")
SCHEMA_VERSION = 1
FRAME_MAX_SIDE = 640
DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
GALLERY_SIZES = {"1e4": 10_000, "1e5": 100_000, "1e6": 1_000_000}
QUICK_GALLERY_SIZES = {"1e4": 1_000, "1e5": 2_000, "1e6": 4_000}


# ---------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch threads and library versions."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for name in ("facenet_pytorch", "sqlalchemy", "av"):
        with contextlib.suppress(Exception):
            mod = __import__(name)
            versions[name] = str(getattr(mod, "__version__", "?"))
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        versions["facenet_pytorch"] = version("facenet-pytorch")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "faceapp": __version__,
        "versions": versions,
    }


# ---------------------------------------------------------------------------- helpers


def _percentile(values: Sequence[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values, dtype=np.float64), q)), 3) if values else float("nan")


def _time_call(fn: Callable[[], object], *, min_reps: int, min_seconds: float, warmup: bool = True) -> float:
    """Median seconds of one call (after one warm-up call unless ``warmup`` is false)."""
    if warmup:
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) >= 10 * min_reps and time.perf_counter() - start >= min_seconds:
            break
    return float(np.median(times))


def default_videos() -> list[Path]:
    """The sample videos in ``../shared/data/face_videos`` (sorted), if any."""
    root = DATA_DIR / "face_videos"
    return sorted(root.rglob("*.mp4")) if root.is_dir() else []


def load_model(model_path: str | os.PathLike[str] | None) -> tuple[LoadedModel, Path]:
    path = resolve_paths(model=model_path).model_path
    if not path.is_file():
        raise ModelError(
            f"{path}: model file not found (train one with `faceapp train`, or pass --model CKPT)"
        )
    return load_checkpoint(path), path


# ---------------------------------------------------------------------------- embed


def bench_embed(model: LoadedModel, *, quick: bool = False, seed: int = 0) -> dict[str, Any]:
    """Embeddings per second at batch 1 and 32: ``model`` vs InceptionResnetV1 (random)."""
    from facenet_pytorch import InceptionResnetV1

    reps, seconds = (1, 0.0) if quick else (20, 3.0)
    warm = not quick
    rng = np.random.default_rng(seed)
    size = model.encoder.input_size
    crops32 = rng.integers(0, 256, size=(32, size, size, 3), dtype=np.uint8)
    encoder = model.encoder.eval()
    ours_b1 = _time_call(lambda: encoder.embed(crops32[:1]), min_reps=reps * 5, min_seconds=seconds)
    ours_b32 = _time_call(lambda: encoder.embed(crops32), min_reps=reps, min_seconds=seconds, warmup=warm)

    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        net = InceptionResnetV1(pretrained=None, classify=False).eval()
    finally:
        torch.random.set_rng_state(gen_state)
    base32 = rng.integers(0, 256, size=(32, 160, 160, 3), dtype=np.uint8)

    def baseline(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
            x = (x - 127.5) / 128.0  # facenet-pytorch's fixed_image_standardization
            return net(x).numpy()

    base_b1 = _time_call(lambda: baseline(base32[:1]), min_reps=reps * 5, min_seconds=seconds)
    base_b32 = _time_call(lambda: baseline(base32), min_reps=reps, min_seconds=seconds, warmup=warm)
    cfg = model.encoder.config
    out = {
        "per_s_b1": round(1.0 / ours_b1, 2),
        "per_s_b32": round(32.0 / ours_b32, 2),
        "baseline_per_s_b1": round(1.0 / base_b1, 2),
        "baseline_per_s_b32": round(32.0 / base_b32, 2),
        "model": {
            "model_id": model.model_id,
            "backbone": cfg.backbone,
            "input_size": cfg.input_size,
            "embedding_dim": cfg.embedding_dim,
            "flip_tta": cfg.flip_tta,
            "parameters": int(sum(p.numel() for p in encoder.parameters())),
        },
        "baseline_model": "facenet-pytorch InceptionResnetV1, random weights, 160x160 -> 512-D",
        "baseline_parameters": int(sum(p.numel() for p in net.parameters())),
    }
    out["ratio_b1"] = round(out["per_s_b1"] / out["baseline_per_s_b1"], 2)
    out["ratio_b32"] = round(out["per_s_b32"] / out["baseline_per_s_b32"], 2)
    return out


# ---------------------------------------------------------------------------- gallery


LFW_FIT_PEOPLE = 150
"""People of LFW (with >= 2 images, up to 3 each) embedded to fit the LFW-like galleries."""


def lfw_embeddings(model: LoadedModel, *, people: int = LFW_FIT_PEOPLE,
                   lfw_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(M, D) embeddings of real LFW faces by ``model`` (largest face of each image) and
    their (M,) person labels; cached per model in the user cache folder (0600)."""
    from faceapp.gallery.selfcheck import cache_dir
    from faceapp.vision.images import load_image

    root = lfw_dir or DATA_DIR / "lfw" / "lfw-deepfunneled"
    cache = cache_dir() / f"lfw-embeddings-{model.model_id}-{people}.npz"
    with contextlib.suppress(OSError, ValueError, KeyError), np.load(cache) as data:
        return data["emb"], data["labels"]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: LFW not found")
    pipeline = FacePipeline(FaceDetector(DetectorConfig()), model)
    emb: list[np.ndarray] = []
    labels: list[int] = []
    chosen = 0
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(person.glob("*.jpg"))
        if len(images) < 2:
            continue
        for img in images[:3]:
            faces = pipeline.analyze(load_image(img))
            if faces:
                emb.append(max(faces, key=lambda f: f.detection.area).embedding)
                labels.append(chosen)
        chosen += 1
        if chosen >= people:
            break
    out = np.stack(emb).astype(np.float32), np.asarray(labels, dtype=np.int64)
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(cache.with_suffix(".partial"), os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, emb=out[0], labels=out[1])
        os.replace(cache.with_suffix(".partial"), cache)
    return out


def bench_gallery_part(dim: int, *, quick: bool = False, seed: int = 0,
                       model: LoadedModel | None = None) -> dict[str, Any]:
    """Search and open times from :func:`faceapp.gallery.bench.bench_gallery`, under stable
    keys, on LFW-like galleries (fitted to ``model``'s embeddings of real LFW faces) when a
    model and LFW are there, else on random unit vectors; plus random vectors at 10⁶."""
    from faceapp.gallery.bench import bench_gallery, fit_embeddings

    sizes = QUICK_GALLERY_SIZES if quick else GALLERY_SIZES
    open_keys = ("1e5", "1e6")
    base = None
    why_random = ""
    try:
        if model is None:
            model, _ = load_model(None)
        emb, labels = lfw_embeddings(model, people=12 if quick else LFW_FIT_PEOPLE)
        base = fit_embeddings(emb, labels, dim, f"LFW-like: Gaussian fit of {emb.shape[0]} real "
                              f"LFW embeddings ({int(labels.max()) + 1} people) by model "
                              f"{model.model_id} (D={emb.shape[1]}), new templates as probes")
    except (FaceappError, OSError, ValueError) as err:
        why_random = f"random unit vectors ({err})"
        log.warning("gallery bench on random vectors: %s", err)
    raw = bench_gallery(
        tuple(sizes.values()),
        dim=dim,
        seed=seed,
        open_sizes=tuple(sizes[k] for k in open_keys),
        probes=5 if quick else 30,
        base=base,
    )
    random_raw = bench_gallery((sizes["1e6"],), dim=dim, seed=seed, open_sizes=(),
                               probes=5 if quick else 30, candidates=False)
    by_n_search = {int(r["templates"]): r for r in raw["search"]}
    by_n_open = {int(r["templates"]): r for r in raw["open"]}
    out: dict[str, Any] = {"templates": dict(sizes), "dim": dim,
                           "data": raw["data"] if base is not None else why_random}
    agree = True
    for key, n in sizes.items():
        r = by_n_search[n]
        out[f"search_ms_{key}"] = r["index_ms"]["median"]
        out[f"baseline_search_ms_{key}"] = r["naive_ms"]["median"]
        out[f"ratio_{key}"] = round(r["naive_ms"]["median"] / max(r["index_ms"]["median"], 1e-9), 2)
        out[f"backend_{key}"] = r["backend"]
        out[f"rows_reranked_{key}"] = r["default"]["rows_reranked_median"]
        for name, b in r["backends"].items():
            if "ms" in b:
                out.setdefault("backends", {}).setdefault(name, {})[f"search_ms_{key}"] = b["ms"]["median"]
                out["backends"][name][f"ratio_{key}"] = b["ratio_vs_baseline"]
        out[f"candidates_{key}"] = {
            k: (v["median"] if isinstance(v, dict) else v) for k, v in r.get("candidates", {}).items()}
        agree &= bool(r.get("agree", False))
    (rr,) = random_raw["search"]
    out["random_search_ms_1e6"] = rr["index_ms"]["median"]
    out["random_baseline_search_ms_1e6"] = rr["naive_ms"]["median"]
    out["random_ratio_1e6"] = round(rr["naive_ms"]["median"] / max(rr["index_ms"]["median"], 1e-9), 2)
    agree &= bool(rr.get("agree", False))
    for key in open_keys:
        r = by_n_open[sizes[key]]
        out[f"open_s_{key}"] = r["open_from_snapshot_s"]
        out[f"open_rows_s_{key}"] = r["open_from_rows_s"]
    out["same_top_k_as_baseline"] = agree
    with contextlib.suppress(OSError):
        out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    out["raw"] = raw
    out["raw_random"] = random_raw
    return out


# ---------------------------------------------------------------------------- frame


def _open_bench_service(pipeline: FacePipeline, model_path: Path, db_url: str) -> Any:
    from faceapp.gallery.database import open_database
    from faceapp.nn.calibration import Calibration
    from faceapp.services import FaceService

    calibration = None
    with contextlib.suppress(CalibrationError):
        calibration = Calibration.load_for(model_path, pipeline.model_id)
    return FaceService(open_database(db_url), pipeline, calibration, owns_engine=True)


def _enroll_bench_gallery(
    service: Any, videos: dict[Path, list[np.ndarray]], *, distractors: int, lfw_dir: Path
) -> dict[str, Any]:
    """One person per video (its largest face passing the quality gate in up to 3 early
    frames) plus ``distractors`` LFW people (one image each)."""
    enrolled: list[str] = []
    for path, frames in videos.items():
        faces = []
        for frame in frames[:60:10]:
            found = [f for f in service.analyze(frame) if f.quality.ok]
            if found:
                faces.append(max(found, key=lambda f: f.detection.area))
            if len(faces) == 3:
                break
        if faces:
            name = f"{path.stem} (largest face)"
            service.enroll_faces(name, faces)
            enrolled.append(name)
        else:
            log.warning("%s: no enrollable face in the first frames", path)
    if lfw_dir.is_dir() and distractors > 0:
        for person in sorted(p for p in lfw_dir.iterdir() if p.is_dir()):
            if len(enrolled) >= len(videos) + distractors:
                break
            images = sorted(person.glob("*.jpg"))[:1]
            try:
                service.enroll(person.name.replace("_", " "), images, largest=True)
                enrolled.append(person.name)
            except FaceappError as err:
                log.debug("distractor %s skipped: %s", person.name, err)
    templates = sum(p.n_templates for p in service.list_people())
    return {"people": len(enrolled), "templates": templates}


def _bench_threshold(service: Any, scorer: str) -> tuple[float, str]:
    """τ from the model's calibration; without one, the 99th percentile of the enrolled
    gallery's impostor scores (a FAR of 1 % on this gallery), so that nothing is typed in."""
    try:
        return float(service.threshold(scorer)), "calibration"
    except CalibrationError:
        scores, same = service.gallery_scores(scorer)
        impostor = scores[~same]
        if impostor.size == 0:
            raise CalibrationError("no calibration and too few people to measure τ") from None
        return float(np.quantile(impostor, 0.99)), "gallery impostor scores, FAR 1% (no calibration file)"


@dataclass
class Playback:
    """One real-time playback: ``results[i]`` is the decision for source frame ``indices[i]``,
    ``latency_ms[i]`` the time from that frame's arrival to its decision."""

    results: list[FrameResult]
    indices: list[int]
    latency_ms: list[float]
    process_ms: list[float]
    frames: int
    seconds: float

    @property
    def dropped(self) -> int:
        return self.frames - len(self.results)


def play_realtime(recognizer: LiveRecognizer, frames: Sequence[np.ndarray], rate: float) -> Playback:
    """Feed ``frames`` as a camera at ``rate`` frames/s would, with the GUI's policy: while
    ``process`` runs, arriving frames are dropped; when it returns, the newest frame is
    taken (or the next one awaited). Latency counts from a frame's arrival."""
    period = 1.0 / rate
    n = len(frames)
    out = Playback([], [], [], [], n, 0.0)
    last = -1
    t0 = time.perf_counter()
    while last < n - 1:
        now = time.perf_counter()
        j = min(n - 1, int((now - t0) / period))
        if j <= last:
            time.sleep(max(0.0, t0 + (last + 1) * period - now))
            continue
        t = time.perf_counter()
        out.results.append(recognizer.process(frames[j]))
        done = time.perf_counter()
        out.indices.append(j)
        out.process_ms.append((done - t) * 1000.0)
        out.latency_ms.append((done - (t0 + j * period)) * 1000.0)
        last = j
    out.seconds = max(time.perf_counter() - t0, n * period)
    return out


def _stage_means(results: Sequence[FrameResult]) -> dict[str, float]:
    if not results:
        return {}
    keys = results[0].timings.to_dict().keys()
    return {k: round(float(np.mean([r.timings.to_dict()[k] for r in results])), 3) for k in keys}


def _compare(ours: Sequence[FrameResult], base: Sequence[FrameResult]) -> tuple[float, float]:
    """(share of the baseline's faces that the live loop also reports (IoU >= 0.5),
    share of those with the same decision: same person, or both Unknown), over paired
    frames (the same source frame processed by both)."""
    total = matched = same = 0
    for a, b in zip(ours, base, strict=True):
        total += len(b.faces)
        if not a.faces or not b.faces:
            continue
        pairs = max_weight_assignment(iou_matrix([f.box for f in a.faces], [f.box for f in b.faces]), 0.5)
        matched += len(pairs)
        same += sum(a.faces[i].person == b.faces[j].person for i, j in pairs)
    recall = matched / total if total else float("nan")
    agreement = same / matched if matched else float("nan")
    return round(recall, 4), round(agreement, 4)


def _video_rate(path: Path) -> float:
    import av

    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate
            return float(rate) if rate else 30.0
    except (OSError, av.FFmpegError) as err:
        raise CameraError(f"{path}: cannot open video ({err})") from None


def _summarise(plays: Sequence[Playback]) -> dict[str, Any]:
    lat = [v for p in plays for v in p.latency_ms]
    busy = sum(sum(p.process_ms) for p in plays) / 1000.0
    processed = sum(len(p.results) for p in plays)
    results = [r for p in plays for r in p.results]
    return {
        "fps": round(processed / sum(p.seconds for p in plays), 3),
        "latency_ms_p50": _percentile(lat, 50),
        "latency_ms_p95": _percentile(lat, 95),
        "latency_ms_max": round(max(lat), 3) if lat else float("nan"),
        "capacity_fps": round(processed / busy, 3) if busy else float("nan"),
        "processed": processed,
        "dropped": sum(p.dropped for p in plays),
        "stages_ms_mean": _stage_means(results),
        "faces_per_frame": round(float(np.mean([len(r.faces) for r in results])), 4) if results else 0.0,
        "embedded_per_frame": round(float(np.mean([r.n_embedded for r in results])), 4) if results else 0.0,
        "detect_fraction": round(float(np.mean([r.detected for r in results])), 4) if results else 0.0,
    }


def bench_frame(
    model: LoadedModel,
    model_path: Path,
    *,
    videos: Sequence[Path] = (),
    quick: bool = False,
    max_frames: int | None = None,
    config: LiveConfig = LiveConfig(),
    distractors: int | None = None,
) -> dict[str, Any]:
    """The live loop on real videos played in real time against the naive per-frame
    pipeline played the same way (see :func:`play_realtime`)."""
    paths = [Path(v) for v in videos] or default_videos()
    if not paths:
        raise CameraError(f"no video to play: none given and none in {DATA_DIR / 'face_videos'}")
    if max_frames is None and quick:
        max_frames = 12
    if distractors is None:
        distractors = 2 if quick else 20

    decoded: dict[Path, list[np.ndarray]] = {}
    rates: dict[Path, float] = {}
    decode_s = 0.0
    for p in paths:
        t = time.perf_counter()
        decoded[p] = list(iter_video_frames(p, max_side=FRAME_MAX_SIDE, max_frames=max_frames))
        decode_s += time.perf_counter() - t
        rates[p] = _video_rate(p)
    n_decoded = sum(len(f) for f in decoded.values())

    pipeline = FacePipeline(FaceDetector(DetectorConfig()), model)
    per_video: list[dict[str, Any]] = []
    ours: list[Playback] = []
    base: list[Playback] = []
    new_face_ms: list[float] = []
    with tempfile.TemporaryDirectory(prefix="faceapp-bench-frame-") as tmp:
        service = _open_bench_service(pipeline, model_path, f"sqlite:///{Path(tmp) / 'bench.sqlite'}")
        try:
            gallery = _enroll_bench_gallery(
                service, decoded, distractors=distractors, lfw_dir=DATA_DIR / "lfw" / "lfw-deepfunneled"
            )
            tau, tau_source = _bench_threshold(service, config.scorer)
            live_cfg = replace(config, threshold=tau)
            base_cfg = LiveConfig.naive(threshold=tau, scorer=config.scorer, top_k=config.top_k)
            with (
                LiveRecognizer.from_service(service, live_cfg) as live,
                LiveRecognizer.from_service(service, base_cfg) as naive,
            ):
                # warm-up (first calls allocate and tune kernels), then start clean
                first = next(iter(decoded.values()))[:3]
                for f in first:
                    live.process(f)
                naive.process(first[0])
                for path, frames in decoded.items():
                    live.reset()
                    mine = play_realtime(live, frames, rates[path])
                    new_face_ms += live.stats.new_face_latency_ms
                    naive.reset()
                    theirs = play_realtime(naive, frames, rates[path])
                    ours.append(mine)
                    base.append(theirs)
                    per_video.append(
                        {
                            "path": str(path),
                            "frames": len(frames),
                            "rate": round(rates[path], 3),
                            "live": {k: v for k, v in _summarise([mine]).items() if k != "stages_ms_mean"},
                            "baseline": {
                                k: v for k, v in _summarise([theirs]).items() if k != "stages_ms_mean"
                            },
                        }
                    )
        finally:
            service.close()

    # decisions compared on the source frames both loops processed
    paired_ours: list[FrameResult] = []
    paired_base: list[FrameResult] = []
    for mine, theirs in zip(ours, base, strict=True):
        by_index = dict(zip(mine.indices, mine.results, strict=True))
        for j, r in zip(theirs.indices, theirs.results, strict=True):
            if j in by_index:
                paired_ours.append(by_index[j])
                paired_base.append(r)
    recall, agreement = _compare(paired_ours, paired_base)
    s_ours, s_base = _summarise(ours), _summarise(base)
    h, w = next(iter(decoded.values()))[0].shape[:2]
    out: dict[str, Any] = {
        "fps": s_ours["fps"],
        "latency_ms_p50": s_ours["latency_ms_p50"],
        "latency_ms_p95": s_ours["latency_ms_p95"],
        "latency_ms_max": s_ours["latency_ms_max"],
        "capacity_fps": s_ours["capacity_fps"],
        "new_face_latency_ms_p50": _percentile(new_face_ms, 50),
        "new_face_latency_ms_p95": _percentile(new_face_ms, 95),
        "baseline_fps": s_base["fps"],
        "baseline_latency_ms_p50": s_base["latency_ms_p50"],
        "baseline_latency_ms_p95": s_base["latency_ms_p95"],
        "baseline_capacity_fps": s_base["capacity_fps"],
        "fps_ratio": round(s_ours["fps"] / s_base["fps"], 2) if s_base["fps"] else float("nan"),
        "latency_p95_ratio": round(s_base["latency_ms_p95"] / max(s_ours["latency_ms_p95"], 1e-9), 2),
        "frames": n_decoded,
        "processed": s_ours["processed"],
        "dropped": s_ours["dropped"],
        "baseline_processed": s_base["processed"],
        "baseline_dropped": s_base["dropped"],
        "frame_size": f"{w}x{h}",
        "videos": per_video,
        "decode_ms_per_frame": round(1000.0 * decode_s / max(1, n_decoded), 3),
        "stages_ms_mean": s_ours["stages_ms_mean"],
        "baseline_stages_ms_mean": s_base["stages_ms_mean"],
        "detect_fraction": s_ours["detect_fraction"],
        "embedded_per_frame": s_ours["embedded_per_frame"],
        "faces_per_frame": s_ours["faces_per_frame"],
        "baseline_faces_per_frame": s_base["faces_per_frame"],
        "paired_frames": len(paired_base),
        "face_recall_vs_baseline": recall,
        "decision_agreement_vs_baseline": agreement,
        "gallery_people": gallery["people"],
        "gallery_templates": gallery["templates"],
        "threshold": round(tau, 5),
        "threshold_source": tau_source,
        "config": {k: v for k, v in asdict(config).items() if k != "threshold"},
    }
    out["liveness"] = bench_liveness(list(decoded.values()), live_capacity_fps=s_ours["capacity_fps"])
    return out


LIVENESS_FRAME = (640, 480)
LIVENESS_TARGET_MS = 15.0


def _letterbox(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``frame`` scaled to fit ``size`` = (w, h) and centred on black (H, W, 3) uint8."""
    from PIL import Image

    w, h = size
    k = min(w / frame.shape[1], h / frame.shape[0])
    nw, nh = max(1, round(frame.shape[1] * k)), max(1, round(frame.shape[0] * k))
    small = np.asarray(Image.fromarray(frame).resize((nw, nh), Image.BILINEAR))
    out = np.zeros((h, w, 3), dtype=np.uint8)
    y0, x0 = (h - nh) // 2, (w - nw) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = small
    return out


def bench_liveness(videos: Sequence[Sequence[np.ndarray]], *, live_capacity_fps: float) -> dict[str, Any]:
    """What liveness adds per frame on top of the live loop's detection and tracking (head
    pose, blink cue, passive cues on every ``cue_every``-th frame, the challenge step), on
    the videos letterboxed to 640×480; ``live_capacity_fps_with_liveness``: the live loop's
    capacity (frames per second of process time) with that cost added."""
    from faceapp.liveness.model import PassiveModel
    from faceapp.liveness.session import FaceFollower, LivenessSession, draw_actions

    model = PassiveModel.load()
    follower = FaceFollower.create()
    per_frame: list[float] = []
    for frames in videos:
        session = LivenessSession(model, follower, draw_actions("auto", 0))
        follower.reset()
        for i, frame in enumerate(frames):
            res = session.process(_letterbox(frame, LIVENESS_FRAME), i / 30.0)
            if res.box is not None and i > 0:  # the first frame warms up
                per_frame.append(res.liveness_ms)
    mean = float(np.mean(per_frame)) if per_frame else float("nan")
    with_live = float("nan")
    if live_capacity_fps > 0 and per_frame:
        with_live = 1000.0 / (1000.0 / live_capacity_fps + mean)
    return {
        "frame_size": f"{LIVENESS_FRAME[0]}x{LIVENESS_FRAME[1]}",
        "frames_with_face": len(per_frame),
        "ms_mean": round(mean, 3),
        "ms_p50": _percentile(per_frame, 50),
        "ms_p95": _percentile(per_frame, 95),
        "target_ms": LIVENESS_TARGET_MS,
        "cue_every": model.cue_every,
        "live_capacity_fps_with_liveness": round(with_live, 2),
    }


# ---------------------------------------------------------------------------- all


def run_bench(
    parts: Sequence[str] = PARTS,
    *,
    model_path: str | os.PathLike[str] | None = None,
    videos: Sequence[str | os.PathLike[str]] = (),
    quick: bool = False,
    max_frames: int | None = None,
    config: LiveConfig = LiveConfig(),
    server_url: str | None = None,
) -> dict[str, Any]:
    """Run the chosen parts (``server_url``: ``encryption`` on that PostgreSQL server);
    returns ``{"schema", "quick", "machine", <part>: {...}}``."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown benchmark parts {sorted(unknown)} (known: {', '.join(PARTS)})")
    out: dict[str, Any] = {"schema": SCHEMA_VERSION, "quick": quick, "machine": machine_info()}
    model: LoadedModel | None = None
    path: Path | None = None
    if "frame" in parts or "embed" in parts or "startup" in parts or "encryption" in parts:
        model, path = load_model(model_path)
        out["model"] = {"path": str(path), "model_id": model.model_id}
    if "embed" in parts:
        assert model is not None
        log.info("bench embed")
        out["embed"] = bench_embed(model, quick=quick)
    if "frame" in parts:
        assert model is not None and path is not None
        log.info("bench frame")
        out["frame"] = bench_frame(
            model, path, videos=[Path(v) for v in videos], quick=quick, max_frames=max_frames, config=config
        )
    if "gallery" in parts:
        dim = model.embedding_dim if model is not None else 128
        log.info("bench gallery (D=%d)", dim)
        with bench_key_environment():
            out["gallery"] = bench_gallery_part(dim, quick=quick, model=model)
    if "startup" in parts:
        assert model is not None and path is not None
        log.info("bench startup")
        with bench_key_environment():
            out["startup"] = bench_startup(model, path, quick=quick)
    if "encryption" in parts:
        assert model is not None and path is not None
        log.info("bench encryption")
        out["encryption"] = bench_encryption(model, path, quick=quick, server_url=server_url)
    out["command"] = " ".join(sys.argv) if sys.argv and sys.argv[0] else ""
    return out


# ---------------------------------------------------------------------------- startup


def build_startup_gallery(
    path: Path, n: int, *, model_id: str, dim: int, per_person: int = 4, seed: int = 0
) -> dict[str, Any]:
    """A SQLite gallery at ``path`` with ``n`` synthetic unit templates of ``model_id``
    (``per_person`` per person, D = ``dim``; no crops), made with the gallery bench's
    generator and bulk insert. ``n = 0``: an empty gallery. Returns its sizes."""
    from faceapp.gallery.bench import synthetic_gallery
    from faceapp.gallery.database import open_database, write_session
    from faceapp.gallery.repository import GalleryRepository

    t0 = time.perf_counter()
    engine = open_database(f"sqlite:///{path}")
    n_people = 0
    try:
        if n > 0:
            emb, pids = synthetic_gallery(n, dim, per_person, seed)
            n_people = int(pids[-1]) + 1
            with write_session(engine) as s:
                s.connection().exec_driver_sql(
                    "INSERT INTO person (id, name, created, updated) VALUES (?, ?, ?, ?)",
                    [
                        (i + 1, f"person {i:07d}", "2024-01-01 00:00:00.000000", "2024-01-01 00:00:00.000000")
                        for i in range(n_people)
                    ],
                )
                GalleryRepository(s).bulk_add_templates(pids + 1, emb, model_id)
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        engine.dispose()
    return {"templates": n, "people": n_people, "build_s": round(time.perf_counter() - t0, 3)}


STARTUP_TARGET_S = 3.0
"""Issue 6: the main window is usable at most this long after launch (10⁵ templates)."""
STARTUP_TEMPLATES = 100_000
QUICK_STARTUP_TEMPLATES = 2_000
STARTUP_STAGES = (
    ("python_qt", None, "run"),
    ("preload", "run", "preloaded"),
    ("window", "preloaded", "window_shown"),
    ("gallery", "window_shown", "gallery"),
    ("people", "gallery", "people"),
    ("settle", "people", "usable"),
    ("model", "usable", "service"),
    ("ready", "service", "ready"),
)
"""(name, from mark, to mark) of the start-up stages reported in ``startup.stages_s_*``
(progressive start: the window is usable at ``usable``, then the model loads until
``service``; they add up to ``ready``)."""


def launch_app(
    db: Path, model_path: Path, *, workdir: Path, timeout: float = 300.0
) -> dict[str, Any]:
    """Start ``faceapp gui --exit-when-ready`` on ``db`` in a child process (offscreen Qt,
    fresh settings in ``workdir``, the camera pointed at a missing file so that no device is
    opened) and return its start-up record (see ``faceapp.gui.app.StartupProbe``): marks in
    seconds since the spawn, plus ``parent_ready_s`` (when the parent read the record) and
    ``exit_s`` (when the child had exited)."""
    env = dict(os.environ)
    env.update(
        QT_QPA_PLATFORM="offscreen",
        XDG_CONFIG_HOME=str(workdir / "config"),
        PYTHONUNBUFFERED="1",
    )
    cmd = [
        sys.executable, "-m", "faceapp", "gui",
        "--db", str(db), "--model", str(model_path),
        "--camera", str(workdir / "no-camera.mp4"),
        "--exit-when-ready",
    ]  # fmt: skip
    with tempfile.TemporaryFile(mode="w+") as err:
        t0 = time.time()
        env["FACEAPP_LAUNCH_T0"] = repr(t0)
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=workdir
        )
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        record: dict[str, Any] | None = None
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                with contextlib.suppress(ValueError):
                    parsed = json.loads(line)
                    if isinstance(parsed, dict) and "startup" in parsed:
                        record = parsed["startup"]
                        record["parent_ready_s"] = round(time.time() - t0, 4)
            code = proc.wait()
            exit_s = round(time.time() - t0, 4)
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        stderr = err.read()
    if record is None or code != 0 or record.get("exit_code") != 0:
        tail = "\n".join(stderr.strip().splitlines()[-5:])
        reason = (record or {}).get("error") or tail or f"exit code {code}"
        raise FaceappError(f"the app did not start on {db}: {reason}")
    record["exit_s"] = exit_s
    return record


def _stages(seconds: dict[str, float]) -> dict[str, float]:
    out = {}
    for name, start, stop in STARTUP_STAGES:
        if stop in seconds and (start is None or start in seconds):
            out[name] = round(seconds[stop] - (seconds[start] if start else 0.0), 3)
    return out


def _median(values: Sequence[float]) -> float:
    return round(float(np.median(values)), 3) if values else float("nan")


def bench_startup(
    model: LoadedModel,
    model_path: Path,
    *,
    quick: bool = False,
    launches: int | None = None,
    templates: int | None = None,
) -> dict[str, Any]:
    """Seconds from launching ``faceapp gui`` to a usable main window (``window_s_*``) and
    to a ready app (``ready_s_*``), with a 10⁵-template gallery (``_1e5``) and, as the
    baseline in the same run, an empty one (``_empty``); medians over ``launches`` launches
    each (default 3; 1 with ``quick``, whose gallery has ``QUICK_STARTUP_TEMPLATES``
    templates).

    *Usable* (the start-up is progressive): the main window is shown and answers, and the
    People list is filled from the gallery (``templates_listed_*``, ``people_listed_*``):
    People works. *Ready*: then the model and the gallery's search index are loaded too
    (``templates_loaded_*`` = its size, checked against the gallery built), the model pages
    (Enroll, Verify, Recognize, Calibrate) are enabled, and no start-up task is left.
    ``first_paint_s_*``: the main window is painted. ``cpu_s_*`` / ``ready_cpu_s_*``: CPU
    seconds the app used until usable / ready (all threads; less sensitive than wall time
    to other load on the machine). Without ``quick`` every gallery gets one untimed launch
    first (it writes the index snapshot, as any first launch does, and warms the OS file
    cache); its time to ready is ``first_launch_s_1e5``. With ``quick`` the single launch
    is also the first one.
    """
    n = templates if templates is not None else (QUICK_STARTUP_TEMPLATES if quick else STARTUP_TEMPLATES)
    launches = launches if launches is not None else (1 if quick else 3)
    key = "1e5"
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    out: dict[str, Any] = {
        "templates": {key: n, "empty": 0},
        "target_s": STARTUP_TARGET_S,
        "launches": launches,
        "model_id": model.model_id,
    }
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="faceapp-bench-startup-") as tmp:
        work = Path(tmp)
        for name, size in (("empty", 0), (key, n)):
            db = work / f"gallery_{name}.sqlite"
            built = build_startup_gallery(db, size, model_id=model.model_id, dim=model.embedding_dim)
            out[f"people_{name}"] = built["people"]
            out[f"build_s_{name}"] = built["build_s"]
            first: dict[str, Any] | None = None
            if not quick:
                log.info("bench startup: first launch (%s)", name)
                first = launch_app(db, model_path, workdir=work)
            records = []
            for i in range(launches):
                log.info("bench startup: launch %d/%d (%s)", i + 1, launches, name)
                records.append(launch_app(db, model_path, workdir=work))
            runs[name] = records
            first = first or records[0]
            out[f"first_launch_s_{name}"] = round(first["seconds"]["ready"], 3)
    for name, records in runs.items():
        secs = [r["seconds"] for r in records]
        out[f"window_s_{name}"] = _median([s["usable"] for s in secs])
        out[f"ready_s_{name}"] = _median([s["ready"] for s in secs])
        out[f"first_paint_s_{name}"] = _median([s["first_paint"] for s in secs])
        out[f"window_shown_s_{name}"] = _median([s["window_shown"] for s in secs])
        out[f"cpu_s_{name}"] = _median([r["cpu_s"]["usable"] for r in records])
        out[f"ready_cpu_s_{name}"] = _median([r["cpu_s"]["ready"] for r in records])
        out[f"exit_s_{name}"] = _median([r["exit_s"] for r in records])
        stages = [_stages(s) for s in secs]
        out[f"stages_s_{name}"] = {k: _median([st[k] for st in stages]) for k in stages[0]}
        loaded = {int(r.get("templates_loaded", -1)) for r in records}
        listed = {int(r.get("templates_listed", -1)) for r in records}
        out[f"templates_loaded_{name}"] = loaded.pop() if len(loaded) == 1 else sorted(loaded)
        out[f"templates_listed_{name}"] = listed.pop() if len(listed) == 1 else sorted(listed)
        out[f"people_listed_{name}"] = int(records[0].get("people_listed", -1))
    out["meets_target"] = bool(out[f"window_s_{key}"] <= STARTUP_TARGET_S)
    out["overhead_s_1e5_vs_empty"] = round(out[f"window_s_{key}"] - out["window_s_empty"], 3)
    out["ready_overhead_s_1e5_vs_empty"] = round(out[f"ready_s_{key}"] - out["ready_s_empty"], 3)
    out["load_average"] = {
        "before": [round(x, 2) for x in load_before],
        "after": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else [],
    }
    out["raw"] = runs
    return out


# ---------------------------------------------------------------------------- encryption

ENCRYPTION_TEMPLATES = 100_000
QUICK_ENCRYPTION_TEMPLATES = 2_000
ENCRYPTION_TARGET_RATIO = 1.10
"""Issue 14: an encrypted gallery at most 10 % slower than a plaintext one, end to end."""


@contextlib.contextmanager
def bench_key_environment() -> Any:
    """The bench's throw-away galleries get a random passphrase (unless
    ``$FACEAPP_PASSPHRASE`` is set) and never touch the OS keyring; child processes
    (``bench startup``) inherit both. The environment is restored afterwards."""
    import secrets

    saved = {k: os.environ.get(k) for k in ("FACEAPP_PASSPHRASE", "FACEAPP_KEYRING")}
    os.environ.setdefault("FACEAPP_PASSPHRASE", secrets.token_urlsafe(24))
    os.environ["FACEAPP_KEYRING"] = "off"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _lfw_probe_sets(lfw_dir: Path, people: int) -> list[tuple[str, list[Path], Path]]:
    """(name, 2 enrolment images, 1 other probe image) of the first LFW people with 3+."""
    out = []
    for person in sorted(p for p in lfw_dir.iterdir() if p.is_dir()):
        images = sorted(person.glob("*.jpg"))
        if len(images) >= 3:
            out.append((person.name.replace("_", " "), images[:2], images[2]))
        if len(out) == people:
            break
    return out


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


ENCRYPTION_MODES = ("plain", "sqlcipher", "fields")
"""``plain``: no encryption; ``sqlcipher``: the file encrypted, templates in clear inside it
(the default of the previous release); ``fields``: the default now, the file encrypted and
every template and crop sealed with its person's key. On a server gallery (``--db``) there is
no file encryption: ``plain`` vs ``fields`` only."""


def _encryption_run(mode: str, work: Path, pipeline: FacePipeline, model: LoadedModel,
                    model_path: Path, n: int, faces: dict[str, tuple[list[Any], Any]],
                    tau: float | None, server_url: str | None = None) -> dict[str, Any]:
    """One gallery (in ``mode``, see :data:`ENCRYPTION_MODES`) through build, cold opens,
    enrolment, verification, recognition and a deletion of already analysed faces; seconds
    per step (the gallery's share of the work: the face analysis is the same for every mode
    and timed once outside). ``server_url``: an empty PostgreSQL database instead of a file
    (no snapshot there: ``open_snapshot_s`` is the second cold open from the rows)."""
    from faceapp.gallery.bench import _drop_from_page_cache, synthetic_gallery
    from faceapp.gallery.database import DatabaseConfig, open_database, write_session
    from faceapp.gallery.repository import GalleryRepository
    from faceapp.nn.calibration import Calibration
    from faceapp.services import FaceService

    db = work / f"{mode}.sqlite"
    url = server_url or str(db)
    config = DatabaseConfig(encrypt=mode != "plain", field_encryption=mode == "fields")
    calibration = None
    with contextlib.suppress(CalibrationError):
        calibration = Calibration.load_for(model_path, pipeline.model_id)
    out: dict[str, Any] = {"mode": mode, "encrypted": mode != "plain"}

    def build() -> None:
        engine = open_database(url, config)
        try:
            emb, pids = synthetic_gallery(n, model.embedding_dim, 4, 0)
            with write_session(engine) as s:
                from faceapp.gallery.orm import Person

                s.execute(Person.__table__.insert(), [
                    {"id": i + 1, "name": f"person {i:07d}", "created": _BENCH_TIME,
                     "updated": _BENCH_TIME} for i in range(int(pids[-1]) + 1)])
                if server_url:  # ids given explicitly: move the sequence past them
                    s.connection().exec_driver_sql(
                        "SELECT setval(pg_get_serial_sequence('person', 'id'), "
                        f"{int(pids[-1]) + 1})")
                GalleryRepository(s).bulk_add_templates(pids + 1, emb, pipeline.model_id)
            if not server_url:
                with engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            engine.dispose()

    out["build_s"] = _timed(build)
    files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]

    def cold_open() -> Any:
        if not server_url:
            _drop_from_page_cache([*files, *db.parent.glob(f"{db.name}.index-*")])
        t = time.perf_counter()
        svc = FaceService(open_database(url, config), pipeline, calibration, owns_engine=True)
        svc.load_index()
        return svc, time.perf_counter() - t

    svc, out["open_rows_s"] = cold_open()  # from the rows (then a snapshot is written)
    svc.close()
    svc, out["open_snapshot_s"] = cold_open()
    try:
        out["enroll_s"] = _timed(lambda: [svc.enroll_faces(name, enrol)
                                          for name, (enrol, _) in faces.items()])
        out["verify_s"] = _timed(lambda: [svc.verify(name, probe, threshold=tau)
                                          for name, (_, probe) in faces.items()])
        out["recognize_s"] = _timed(lambda: [svc.recognize(probe, threshold=tau)
                                             for _, probe in faces.values()])
        out["delete_s"] = _timed(lambda: svc.delete_person(next(iter(faces))))
    finally:
        svc.close()
    if not server_url:
        out["db_mb"] = round(db.stat().st_size / 2**20, 1)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


_BENCH_TIME = datetime(2024, 1, 1, tzinfo=UTC)


def bench_encryption(model: LoadedModel, model_path: Path, *, quick: bool = False,
                     server_url: str | None = None) -> dict[str, Any]:
    """Cost of encryption at rest: the same work on a plaintext and on an encrypted gallery
    of ``ENCRYPTION_TEMPLATES`` synthetic templates (10⁵) in one run: cold open from the
    rows and from the (sealed) snapshot with the OS page cache dropped, enrolment of real
    LFW people (2 images each), verification and recognition of another image of each, and
    a verifiable deletion (VACUUM of the whole file). The faces are analysed once (real
    MTCNN + model, ``face_analysis_s``, the same work whatever the storage) and the gallery
    steps timed per mode; ``ratio_*`` = encrypted / plaintext; ``end_to_end_s`` = face
    analysis + open (snapshot) + enrol + verify + recognize; target of ``ratio_end_to_end``
    ≤ ``ENCRYPTION_TARGET_RATIO``. The KDF runs with its real defaults
    (Argon2id 64 MiB, t=3) unless ``$FACEAPP_KDF`` says otherwise: it is part of an open.

    Three modes (:data:`ENCRYPTION_MODES`): ``plain``, ``sqlcipher`` (``sqlcipher_only``) and
    ``fields`` (``encrypted``, the default: SQLCipher + per-person field keys);
    ``ratio_*`` = fields / plain, ``fields_ratio_*`` = fields / sqlcipher (the cost of the
    field encryption alone). ``server_url``: the same on scratch databases of that PostgreSQL
    server (``plain`` vs ``fields``; the role needs CREATEDB)."""
    n = QUICK_ENCRYPTION_TEMPLATES if quick else ENCRYPTION_TEMPLATES
    sets = _lfw_probe_sets(DATA_DIR / "lfw" / "lfw-deepfunneled", 2 if quick else 10)
    if not sets:
        raise FaceappError(f"no LFW people with 3 images under {DATA_DIR / 'lfw'}")
    pipeline = FacePipeline(FaceDetector(DetectorConfig()), model)
    with contextlib.suppress(FaceappError):  # warm-up (first MTCNN/torch calls are slow)
        pipeline.analyze(load_image(sets[0][2]))
    # the face analysis (MTCNN, alignment, embedding) does not depend on the gallery: done
    # and timed once; a probe is analysed twice in the real flow (verify, then recognize)
    faces: dict[str, tuple[list[Any], Any]] = {}
    t0 = time.perf_counter()
    for name, images, probe in sets:
        found = [max(pipeline.analyze(load_image(p)), key=lambda f: f.detection.area,
                     default=None) for p in [*images, probe, probe]]
        if all(f is not None and f.quality.ok for f in found[:2]) and found[2] is not None:
            faces[name] = (found[:2], found[2])
    analysis_s = time.perf_counter() - t0
    if not faces:
        raise FaceappError("no LFW probe set passed the quality gate")
    tau: float | None = None  # the model's calibrated τ; without one, a FAR of 1 % measured
    try:  # on the probes against (impostor) synthetic templates: the cost is the same
        from faceapp.nn.calibration import Calibration

        Calibration.load_for(model_path, pipeline.model_id).threshold("distance")
    except (CalibrationError, ModelError):
        from faceapp.gallery.bench import synthetic_gallery

        emb, _ = synthetic_gallery(min(n, 20_000), model.embedding_dim, 4, 0)
        probes = np.stack([np.asarray(p.embedding, np.float32) for _, p in faces.values()])
        tau = float(np.quantile(probes @ emb.T, 0.99))
    # ABC CBA order (ABC with quick), the fastest of each mode's runs per step: other load on
    # the machine and warm-up effects hit every mode alike
    modes = ("plain", "fields") if server_url else ENCRYPTION_MODES
    order = modes if quick else (*modes, *modes[::-1])
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    with bench_key_environment(), tempfile.TemporaryDirectory(prefix="faceapp-bench-crypto-") as tmp:
        for i, mode in enumerate(order):
            log.info("bench encryption: %s gallery of %d templates", mode, n)
            work = Path(tmp) / f"run{i}"
            work.mkdir()
            if server_url:
                from faceapp.bench_server import scratch_databases

                with scratch_databases(server_url, [n]) as (url,):
                    runs[mode].append(_encryption_run(mode, work, pipeline, model, model_path, n,
                                                      faces, tau, url))
            else:
                runs[mode].append(_encryption_run(mode, work, pipeline, model, model_path, n,
                                                  faces, tau))
            shutil.rmtree(work)
    best = {m: {k: (min(r[k] for r in rs) if isinstance(rs[0][k], float) else rs[0][k])
                for k in rs[0]} for m, rs in runs.items()}
    plain, enc = best["plain"], best["fields"]
    from faceapp.gallery.crypto import KdfParams, derive_key

    kdf_s = _timed(lambda: derive_key("bench", os.urandom(16), KdfParams.from_env()))
    for r in best.values():
        r["end_to_end_s"] = round(analysis_s + sum(
            r[k] for k in ("open_snapshot_s", "enroll_s", "verify_s", "recognize_s")), 4)
    out: dict[str, Any] = {"templates": n, "people_enrolled": len(faces),
                           "backend": "postgresql" if server_url else "sqlite",
                           "face_analysis_s": round(analysis_s, 4),
                           "kdf_s": round(kdf_s, 4),
                           "kdf": os.environ.get("FACEAPP_KDF") or "argon2id:m=65536,t=3,p=4",
                           "target_ratio": ENCRYPTION_TARGET_RATIO}
    steps = ("build_s", "open_rows_s", "open_snapshot_s", "enroll_s", "verify_s",
             "recognize_s", "delete_s", "end_to_end_s")
    for key in steps:
        out[f"ratio_{key.removesuffix('_s')}"] = round(enc[key] / max(plain[key], 1e-9), 3)
    if "sqlcipher" in best:  # the cost of the field encryption alone, on top of SQLCipher
        for key in steps:
            out[f"fields_ratio_{key.removesuffix('_s')}"] = round(
                enc[key] / max(best["sqlcipher"][key], 1e-9), 3)
        out["sqlcipher_only"] = best["sqlcipher"]
    out["within_target"] = out["ratio_end_to_end"] <= ENCRYPTION_TARGET_RATIO
    out["plain"], out["encrypted"] = plain, enc
    out["runs_per_mode"] = len(runs["plain"])
    return out
