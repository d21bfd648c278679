"""The GUI's live and calibration actions on the command line: ``watch`` (recognize every face
of a video, a camera device or an image folder with the live loop) and ``calibrate`` (τ for a
target false-accept rate, from the gallery's template pairs or a labelled pairs file).

Exit codes as in :mod:`faceapp.cli.gallery_cmds`: 0 success, 2 an error (one line).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from faceapp.cli import gallery_cmds
from faceapp.cli.gallery_cmds import _common, _decision_options, _emit
from faceapp.errors import CalibrationError, FaceappError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    with_model = _common(model=True)

    p = sub.add_parser(
        "watch", parents=[with_model],
        help="recognize the faces of a video file, camera device or image folder, frame by frame",
    )
    p.add_argument("source", help="video file, camera device (e.g. /dev/video0) or image folder")
    p.add_argument("--top-k", type=int, default=3, help="candidates per face (default 3)")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--per-frame", action="store_true",
                   help="detect and embed every face of every frame (slow; no tracking)")
    p.add_argument("--all-frames", action="store_true",
                   help="text output: print every frame, not only those whose labels changed")
    _decision_options(p)
    p.set_defaults(func=_watch)

    p = sub.add_parser(
        "calibrate", parents=[with_model],
        help="choose τ for a target false-accept rate (gallery pairs or a pairs file); --apply stores it",
    )
    p.add_argument("--pairs", metavar="FILE", help="labelled pairs (LFW pairs*.txt format) instead of "
                                                   "the gallery's template pairs")
    p.add_argument("--images", metavar="DIR", help="with --pairs: folder of one sub-folder per person")
    p.add_argument("--scorer", default="distance",
                   help="distance (cosine similarity; through the model's score normaliser when it has one) "
                   "or a head of the model, e.g. head_l1")
    p.add_argument("--far", type=float, default=0.01, help="target false-accept rate (default 0.01)")
    action = p.add_mutually_exclusive_group()
    action.add_argument("--apply", action="store_true", help="store τ in the gallery (used from then on)")
    action.add_argument("--reset", action="store_true",
                        help="remove the stored τ of the scorer (back to the model's calibration.json)")
    p.set_defaults(func=_calibrate)


# ---------------------------------------------------------------------- watch
def _frames(source: str) -> Iterator[np.ndarray]:
    from faceapp.vision.video import iter_image_folder, iter_video_frames

    path = Path(source)
    if path.is_dir():
        return (frame for _, frame in iter_image_folder(path))
    if source.startswith("/dev/video"):
        return iter_video_frames(source, input_format="v4l2")
    return iter_video_frames(path)


def _watch(args: argparse.Namespace) -> int:
    from faceapp.services.live import LiveConfig, LiveRecognizer

    if args.top_k < 1:
        raise FaceappError("--top-k must be at least 1")
    config = LiveConfig(top_k=args.top_k, scorer=args.scorer, threshold=args.threshold,
                        async_detect=False)  # a file is read as fast as it decodes: no frame waits
    if args.per_frame:
        config = LiveConfig.naive(top_k=args.top_k, scorer=args.scorer, threshold=args.threshold)
    frames = faces = 0
    last: tuple[str, ...] | None = None
    t0 = time.perf_counter()
    with gallery_cmds._open_service(args) as svc, LiveRecognizer.from_service(svc, config) as live:
        for frame in _frames(args.source):
            result = live.process(frame)
            frames += 1
            faces += len(result.faces)
            labels = tuple(f.label for f in result.faces)
            if args.json:
                print(json.dumps(result.to_dict(), ensure_ascii=False, allow_nan=False), flush=True)
            elif args.all_frames or labels != last:
                text = ", ".join(f"{f.label} {f.score:.3f}" if math.isfinite(f.score) else f.label
                                 for f in result.faces)
                print(f"frame {result.index}: {text or 'no face'}", flush=True)
            last = labels
            if args.max_frames is not None and frames >= args.max_frames:
                break
    seconds = time.perf_counter() - t0
    if frames == 0:
        raise FaceappError(f"{args.source}: no frames")
    if not args.json:
        print(f"{frames} frames, {faces} faces, {frames / max(seconds, 1e-9):.1f} frames/s")
    return 0


# ---------------------------------------------------------------------- calibrate
def _calibrate(args: argparse.Namespace) -> int:
    from faceapp.services.calibration import split_pairs, threshold_for_far

    if not 0.0 < args.far < 1.0:
        raise FaceappError(f"--far must be between 0 and 1, got {args.far}")
    if (args.pairs is None) != (args.images is None):
        raise FaceappError("--pairs and --images go together")
    with gallery_cmds._open_service(args) as svc:
        if args.reset:
            svc.set_threshold(args.scorer, None)
            try:
                now: float | None = svc.threshold(args.scorer)
            except CalibrationError:
                now = None  # the model has no calibration file for this scorer
            after = f"τ is now {now:.4f} (model calibration)" if now is not None else "no τ is set"
            _emit(args, {"scorer": args.scorer, "stored": None, "threshold": now},
                  f"stored τ of {args.scorer} removed; {after}")
            return 0
        skipped = 0
        if args.pairs is not None:
            result = svc.pair_scores(args.pairs, args.images, scorer=args.scorer)
            scores, same, skipped = result.scores, result.same, result.skipped
            origin = f"pairs file {Path(args.pairs).name}"
        else:
            raw, same_raw = svc.gallery_scores(scorer=args.scorer)
            scores, same = np.asarray(raw, dtype=np.float64), np.asarray(same_raw, dtype=bool)
            origin = "gallery template pairs"
        genuine, impostor = split_pairs(scores, same)
        chosen = threshold_for_far(genuine, impostor, args.far, origin=origin)
        tau, n_gen, n_imp = chosen.threshold, chosen.genuine, chosen.impostor
        if args.apply:
            svc.set_threshold(args.scorer, tau)
    far, tar = chosen.far, chosen.tar
    report = {"scorer": args.scorer, "origin": origin, **chosen.to_dict(), "pairs_left_out": skipped,
              "applied": bool(args.apply)}
    note = "" if report["far_measurable"] else (
        f" (only {n_imp} impostor pairs: FAR {args.far:g} cannot be measured)")
    text = (f"τ = {tau:.4f} for FAR <= {args.far:g} on {origin}: measured FAR {far:.4f}, TAR {tar:.3f} "
            f"({n_gen} genuine / {n_imp} impostor pairs){note}"
            + ("\nstored in the gallery" if args.apply else "\n(not stored: add --apply)"))
    _emit(args, report, text)
    return 0
