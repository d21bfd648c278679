"""Liveness commands: ``liveness`` (is SOURCE a live face? passive checks and an optional
challenge) and ``liveness-calibrate`` (fit the passive model and its threshold from data,
print the ISO/IEC 30107-3 error table).

Exit codes: ``liveness`` 0 live, 1 not live, 2 an error (one ``error:`` line).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from faceapp.config import resolve_paths
from faceapp.errors import CameraError, FaceappError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("liveness", help="is the face in a video / camera / image (folder) live? "
                                        "passive checks plus an optional challenge")
    p.add_argument("source", help="video file, camera device (/dev/videoN), image folder or one image")
    add_challenge_options(p)
    p.add_argument("--model", metavar="CKPT",
                   help="encoder for the same-person check during a challenge (default models/default.pt)")
    p.add_argument("--no-identity", dest="identity", action="store_false",
                   help="do not check that the challenge is done by the person who started it")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_liveness)

    data = resolve_paths().data_dir  # $FACEAPP_DATA, else the default beside the checkout
    p = sub.add_parser("liveness-calibrate",
                       help="fit the passive liveness model + threshold from data; print APCER/BPCER")
    p.add_argument("--data", type=Path, default=data / "liveness",
                   help="the liveness media folder (default $FACEAPP_DATA/liveness, else "
                        "../shared/data/liveness)")
    p.add_argument("--lfw", type=Path, default=data / "lfw" / "lfw-deepfunneled",
                   help="LFW person folders (default DATA/lfw/lfw-deepfunneled, DATA as for --data)")
    p.add_argument("--out", type=Path, help="model file (default models/liveness.json)")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "faceapp" / "liveness",
                   help="feature cache outside git (default ~/.cache/faceapp/liveness)")
    p.add_argument("--report", type=Path, help="also write the Markdown table here")
    p.add_argument("--n-print", type=int, default=60)
    p.add_argument("--n-screen", type=int, default=60)
    p.add_argument("--n-stills", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_calibrate)


def add_challenge_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--challenge", default="auto", metavar="auto|none|ACTION,ACTION...",
                   help="auto: 3 random actions; none: passive checks only; or a list of "
                        "turn_left, turn_right, look_up, look_down, blink (default auto)")
    p.add_argument("--seed", type=int, help="seed of the auto challenge (default: random)")
    p.add_argument("--action-timeout", type=float, default=4.0, metavar="S",
                   help="seconds allowed per action (default 4)")
    p.add_argument("--fps", type=float, default=10.0,
                   help="frame rate assumed for an image folder (default 10)")
    p.add_argument("--max-seconds", type=float, default=30.0,
                   help="camera: stop after this long (default 30)")
    p.add_argument("--liveness-model", metavar="JSON",
                   help="passive model (default $FACEAPP_LIVENESS_MODEL or models/liveness.json)")


def add_verify_liveness_options(p: argparse.ArgumentParser) -> None:
    """``verify``'s camera + liveness options (added to the gallery command)."""
    g = p.add_argument_group("camera verification with liveness")
    g.add_argument("--camera", metavar="SOURCE",
                   help="verify from a video file, camera device (/dev/videoN) or image folder")
    g.add_argument("--liveness", action="store_true",
                   help="with --camera: ACCEPT only if the face is also live (challenge + passive)")
    g.add_argument("--challenge", default="auto", metavar="auto|none|ACTION,ACTION...",
                   help="liveness challenge (default auto: 3 random actions)")
    g.add_argument("--seed", type=int, help="seed of the auto challenge (default: random)")
    g.add_argument("--action-timeout", type=float, default=4.0, metavar="S",
                   help="seconds allowed per action (default 4)")
    g.add_argument("--fps", type=float, default=10.0, help="frame rate of an image folder (default 10)")
    g.add_argument("--max-seconds", type=float, default=30.0, help="camera: stop after this long")
    g.add_argument("--liveness-model", metavar="JSON", help="passive liveness model")


def verify_live(args: argparse.Namespace, open_service) -> int:  # type: ignore[no-untyped-def]
    """``verify NAME --camera SOURCE --liveness``: exit 0 ACCEPT, 1 REJECT."""
    from faceapp.services.liveness import IdentityChecker, decide

    if args.camera is None or not args.liveness:
        raise FaceappError("camera verification needs both --camera SOURCE and --liveness")
    if args.image is not None:
        raise FaceappError("give either IMAGE or --camera SOURCE, not both")
    with open_service(args) as svc:
        svc.person_templates(args.name)  # fails early (PersonNotFound) for an unknown name
        checker = IdentityChecker(svc, args.name, scorer=args.scorer, threshold=args.threshold)
        session = build_session(args, identity=checker)
        args.source = args.camera
        liveness = run_source(args, session, prompts=not args.json)
        res = decide(checker, liveness)
    if args.json:
        print(json.dumps(res.to_dict(), indent=2, ensure_ascii=False, allow_nan=False))
    else:
        verdict = "ACCEPT" if res.accepted else "REJECT"
        print(f"{verdict}: {args.name} — identity {'passed' if res.identity_ok else 'FAILED'} "
              f"({res.identity_matches}/{res.identity_checks} checks matched), liveness "
              f"{'passed' if res.live else 'FAILED'}")
        for r in res.reasons:
            print(f"  {r}")
    return 0 if res.accepted else 1


# ---------------------------------------------------------------------- sources
def _video_fps(path: str) -> float:
    import av

    try:
        with av.open(path) as c:
            if not c.streams.video:
                raise CameraError(f"{path}: no video stream")
            rate = c.streams.video[0].average_rate
            return float(rate) if rate else 30.0
    except (OSError, av.FFmpegError) as err:
        raise CameraError(f"{path}: cannot open video ({err})") from None


def open_source(source: str, fps: float,
                max_seconds: float) -> tuple[Iterator[tuple[float, np.ndarray]], bool]:
    """(frames with their time in seconds, is_live_camera) for a video file, a camera
    device, an image folder or a single image."""
    from faceapp.vision.images import IMAGE_SUFFIXES, load_image
    from faceapp.vision.video import iter_image_folder, iter_video_frames

    path = Path(source)
    if source.startswith("/dev/video"):
        def camera() -> Iterator[tuple[float, np.ndarray]]:
            t0 = time.monotonic()
            for frame in iter_video_frames(source, input_format="v4l2"):
                t = time.monotonic() - t0
                if t > max_seconds:
                    return
                yield t, frame
        return camera(), True
    if path.is_dir():
        return ((i / fps, f) for i, (_, f) in enumerate(iter_image_folder(path))), False
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return iter([(0.0, load_image(path))]), False
    if not path.exists():
        raise CameraError(f"{source}: no such file, folder or camera")
    rate = _video_fps(source)
    return ((i / rate, f) for i, f in enumerate(iter_video_frames(path))), False


def build_session(args: argparse.Namespace, identity=None):  # type: ignore[no-untyped-def]
    """A :class:`LivenessSession` from the challenge options (shared with ``verify``)."""
    import torch

    from faceapp.liveness.model import PassiveModel
    from faceapp.liveness.session import FaceFollower, LivenessSession, draw_actions
    from faceapp.vision.liveness import ChallengeConfig

    if args.action_timeout <= 0:
        raise FaceappError("--action-timeout must be positive")
    # the per-frame networks are tiny (O-Net on 48x48, one MTCNN pass every 10 frames): one
    # thread is faster than several competing for 2 cores (measured: 23 s vs 4.6 min on
    # real.mp4 while other jobs ran)
    torch.set_num_threads(1)
    try:
        actions = draw_actions(args.challenge, args.seed)
    except ValueError as err:
        raise FaceappError(f"--challenge: {err}") from None
    model = PassiveModel.load(args.liveness_model)
    follower = FaceFollower.create()
    cfg = ChallengeConfig(action_timeout_s=args.action_timeout,
                          start_timeout_s=max(6.0, args.action_timeout),
                          require_identity=identity is not None)
    return LivenessSession(model, follower, actions, challenge_config=cfg, identity=identity)


def run_source(args: argparse.Namespace, session, *, prompts: bool):  # type: ignore[no-untyped-def]
    """Feed the source into the session (printing the prompts of a challenge to stderr when
    asked) and return its :class:`LivenessResult`."""
    frames, _ = open_source(args.source, args.fps, args.max_seconds)
    last = ""
    for t, frame in frames:
        res = session.process(frame, t)
        if prompts and res.challenge is not None and res.challenge.prompt != last:
            last = res.challenge.prompt
            print(f"[{t:6.2f} s] {last}", file=sys.stderr)
        if session.done:
            break
    return session.finish()


# ---------------------------------------------------------------------- commands
def _liveness(args: argparse.Namespace) -> int:
    identity = None
    if args.identity and args.challenge.strip().lower() != "none":
        from faceapp.services.liveness import SameFaceChecker

        # the same person from the first to the last action: a face swapped in at the same
        # place keeps its box track, only its embedding tells
        identity = SameFaceChecker.from_model(args.model)
    session = build_session(args, identity=identity)
    result = run_source(args, session, prompts=not args.json)
    data = result.to_dict()
    if args.json:
        print(json.dumps(data, indent=2, allow_nan=False))
    else:
        verdict = "LIVE" if result.live else "NOT LIVE"
        score = "n/a" if data["passive_score"] is None else f"{data['passive_score']:.3f}"
        print(f"{verdict}: passive score {score} (threshold {result.threshold:.3f}), "
              f"challenge {','.join(data['challenge']) or 'none'} "  # type: ignore[arg-type]
              f"completed {len(result.completed)}/{len(result.challenge)}, {result.frames} frames")
        for r in result.reasons:
            print(f"  {r}")
    return 0 if result.live else 1


def _calibrate(args: argparse.Namespace) -> int:
    import torch

    from faceapp.liveness.calibrate import CalibrationConfig, FeatureCache, calibrate, collect_samples
    from faceapp.liveness.model import DEFAULT_MODEL_PATH
    from faceapp.liveness.session import FaceFollower

    if args.threads:
        torch.set_num_threads(args.threads)
    for p, what in ((args.data, "--data"), (args.lfw, "--lfw")):
        if not p.is_dir():
            raise FaceappError(f"{what} {p}: not a folder")
    cfg = CalibrationConfig(n_print=args.n_print, n_screen=args.n_screen, n_stills=args.n_stills,
                            seed=args.seed)
    follower = FaceFollower.create()
    samples, held, prov = collect_samples(
        args.data, args.lfw, cfg, follower, FeatureCache(args.cache),
        progress=lambda s: print(f"  {s}", file=sys.stderr, flush=True),
    )
    prov["command"] = "faceapp liveness-calibrate " + " ".join(sys.argv[2:])
    rep = calibrate(samples, held, cfg, prov)
    out = rep.model.save(args.out or DEFAULT_MODEL_PATH)
    table = rep.markdown()
    if args.report:
        args.report.write_text(table + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(rep.report, indent=2, default=float))
    else:
        print(table)
        print(f"model written to {out}")
    return 0
