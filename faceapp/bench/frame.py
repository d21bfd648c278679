"""``faceapp bench frame``: the live loop on real video against the naive per-frame pipeline.

Stable keys: ``frame.fps``, ``frame.latency_ms_p50``, ``frame.latency_ms_p95``,
``frame.pages.{recognize,enroll,verify}.{fps,capacity_fps,latency_ms_p50,latency_ms_p95}``.
Real videos
(``DATA/face_videos/**/*.mp4`` or ``--video``), scaled to 640 px wide, are played through
:class:`faceapp.services.live.LiveRecognizer` with a small gallery (faces enrolled from the
first frames of each video, plus LFW people as distractors) in a temporary SQLite file,
matched through :class:`faceapp.services.FaceService`. Frames are delivered in real time
at the video's own rate, as by a camera, with the GUI's policy (frames arriving while
``process`` runs are dropped, the newest is taken next): ``fps`` = frames decided per
second of video, latency = time from a frame's arrival to its decision (p50, p95);
``capacity_fps`` = frames per second of ``process`` time. The baseline
(``frame.baseline_*``) is the naive per-frame pipeline played the same way: full-resolution
detection and embedding of every face on every frame (``LiveConfig.naive()``).
``frame.pages``: the same videos played the same way through the loop configured as each
live page (:mod:`faceapp.bench.pages`): ``recognize`` is the live loop above; ``enroll``
tracks without a matcher and captures samples; ``verify`` tracks without a matcher and
scores the largest face against the person enrolled from the video's first frames.
``frame.liveness``: what the liveness session adds per frame (:mod:`faceapp.bench.liveness`).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from faceapp.bench.inputs import default_videos, lfw_root
from faceapp.bench.liveness import bench_liveness
from faceapp.bench.pages import EnrollLoop, FrameLoop, VerifyLoop
from faceapp.bench.stats import percentile
from faceapp.config import DetectorConfig
from faceapp.errors import CalibrationError, CameraError, FaceappError
from faceapp.nn.checkpoint import LoadedModel
from faceapp.nn.pipeline import FacePipeline
from faceapp.services.live import FrameResult, LiveConfig, LiveRecognizer
from faceapp.services.live_pages import TrackedVerifier
from faceapp.vision.detection import FaceDetector
from faceapp.vision.tracking import iou_matrix, max_weight_assignment
from faceapp.vision.video import iter_video_frames

logger = logging.getLogger(__name__)

FRAME_MAX_SIDE = 640


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
    frames) plus ``distractors`` LFW people (one image each); ``by_video``: the person of
    each video that has one."""
    enrolled: list[str] = []
    by_video: dict[Path, str] = {}
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
            by_video[path] = name
        else:
            logger.warning("%s: no enrollable face in the first frames", path)
    if lfw_dir.is_dir() and distractors > 0:
        for person in sorted(p for p in lfw_dir.iterdir() if p.is_dir()):
            if len(enrolled) >= len(videos) + distractors:
                break
            images = sorted(person.glob("*.jpg"))[:1]
            try:
                service.enroll(person.name.replace("_", " "), images, largest=True)
                enrolled.append(person.name)
            except FaceappError as err:
                logger.debug("distractor %s skipped: %s", person.name, err)
    templates = sum(p.n_templates for p in service.list_people())
    return {"people": len(enrolled), "templates": templates, "by_video": by_video}


def _bench_threshold(service: Any, scorer: str) -> tuple[float, str]:
    """τ of the recognition loops, as the app takes it: the calibration's 1:K point for the
    enrolled gallery's size (``identification_threshold``; Verify keeps the service's own 1:1
    τ); without a calibration, the 99th percentile of the enrolled gallery's impostor scores
    (a FAR of 1 % on this gallery), so that nothing is typed in."""
    try:
        service.load_index()  # the 1:K τ follows the number of people in the index
        return float(service.identification_threshold(scorer)), "calibration"
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


def play_realtime(recognizer: FrameLoop, frames: Sequence[np.ndarray], rate: float) -> Playback:
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
        "latency_ms_p50": percentile(lat, 50),
        "latency_ms_p95": percentile(lat, 95),
        "latency_ms_max": round(max(lat), 3) if lat else float("nan"),
        "capacity_fps": round(processed / busy, 3) if busy else float("nan"),
        "processed": processed,
        "dropped": sum(p.dropped for p in plays),
        "stages_ms_mean": _stage_means(results),
        "faces_per_frame": round(float(np.mean([len(r.faces) for r in results])), 4) if results else 0.0,
        "embedded_per_frame": round(float(np.mean([r.n_embedded for r in results])), 4) if results else 0.0,
        "detect_fraction": round(float(np.mean([r.detected for r in results])), 4) if results else 0.0,
    }


PAGE_KEYS = ("fps", "capacity_fps", "latency_ms_p50", "latency_ms_p95", "latency_ms_max", "processed",
             "dropped", "faces_per_frame", "embedded_per_frame")
"""The figures of each page in ``frame.pages`` (each page adds its own counts)."""


def _page_summary(plays: Sequence[Playback]) -> dict[str, Any]:
    """The :data:`PAGE_KEYS` of one page's playbacks (NaN figures when it played nothing)."""
    if not plays:
        return {k: float("nan") for k in PAGE_KEYS} | {"processed": 0, "dropped": 0, "frames": 0}
    s = _summarise(plays)
    return {k: s[k] for k in PAGE_KEYS} | {"frames": sum(p.frames for p in plays)}


def bench_frame(
    model: LoadedModel,
    model_path: Path,
    *,
    videos: Sequence[Path] = (),
    quick: bool = False,
    max_frames: int | None = None,
    config: LiveConfig = LiveConfig(),
    distractors: int | None = None,
    data_dir: Path,
) -> dict[str, Any]:
    """The live loop on real videos (``videos``, default: those under ``data_dir``) played
    in real time against the naive per-frame pipeline played the same way (see
    :func:`play_realtime`); LFW people of ``data_dir`` are the gallery's distractors."""
    paths = [Path(v) for v in videos] or default_videos(data_dir)
    if not paths:
        raise CameraError(f"no video to play: none given and none in {data_dir / 'face_videos'}")
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
    pages: dict[str, list[Playback]] = {"enroll": [], "verify": []}
    enroll_counts = {"samples": 0, "enrolments": 0}
    verify_counts = {"scored": 0, "matched": 0}
    with tempfile.TemporaryDirectory(prefix="faceapp-bench-frame-") as tmp:
        service = _open_bench_service(pipeline, model_path, f"sqlite:///{Path(tmp) / 'bench.sqlite'}")
        try:
            gallery = _enroll_bench_gallery(
                service, decoded, distractors=distractors, lfw_dir=lfw_root(data_dir)
            )
            tau, tau_source = _bench_threshold(service, config.scorer)
            if tau_source != "calibration":  # no calibration: Verify decides with this τ too
                service.use_threshold(config.scorer, tau)
            verify_tau = float(service.threshold(config.scorer))
            live_cfg = replace(config, threshold=tau)
            base_cfg = LiveConfig.naive(threshold=tau, scorer=config.scorer, top_k=config.top_k)
            with (
                LiveRecognizer.from_service(service, live_cfg) as live,
                LiveRecognizer.from_service(service, base_cfg) as naive,
                LiveRecognizer(service.pipeline, None, config) as tracking,  # Enroll, Verify
            ):
                # warm-up (first calls allocate and tune kernels), then start clean
                first = next(iter(decoded.values()))[:3]
                for f in first:
                    live.process(f)
                    tracking.process(f)
                naive.process(first[0])
                for path, frames in decoded.items():
                    live.reset()
                    mine = play_realtime(live, frames, rates[path])
                    new_face_ms += live.stats.new_face_latency_ms
                    naive.reset()
                    theirs = play_realtime(naive, frames, rates[path])
                    ours.append(mine)
                    base.append(theirs)
                    enroll = EnrollLoop(tracking)
                    enroll.reset()
                    pages["enroll"].append(play_realtime(enroll, frames, rates[path]))
                    enroll_counts["samples"] += enroll.samples
                    enroll_counts["enrolments"] += enroll.enrolments
                    claimed = gallery["by_video"].get(path)
                    if claimed is not None:
                        verify = VerifyLoop(tracking, TrackedVerifier(service, claimed, config.scorer))
                        verify.reset()
                        pages["verify"].append(play_realtime(verify, frames, rates[path]))
                        verify_counts["scored"] += verify.scored
                        verify_counts["matched"] += verify.matched
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
        "new_face_latency_ms_p50": percentile(new_face_ms, 50),
        "new_face_latency_ms_p95": percentile(new_face_ms, 95),
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
        "pages": {
            "recognize": _page_summary(ours),
            "enroll": _page_summary(pages["enroll"]) | enroll_counts,
            "verify": _page_summary(pages["verify"]) | verify_counts,
        },
        "gallery_people": gallery["people"],
        "gallery_templates": gallery["templates"],
        "threshold": round(tau, 5),
        "threshold_source": tau_source,
        "verify_threshold": round(verify_tau, 5),
        "config": {k: v for k, v in asdict(config).items() if k != "threshold"},
    }
    out["liveness"] = bench_liveness(list(decoded.values()), live_capacity_fps=s_ours["capacity_fps"])
    return out
