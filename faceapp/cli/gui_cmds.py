"""``faceapp gui``: open the desktop app."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "gui",
        help="open the desktop app (enroll, verify, recognize, people, calibrate)",
        description="Open the desktop app. Flags override the saved settings for this run.",
    )
    p.add_argument(
        "--camera",
        metavar="N|PATH",
        help="camera number (0 = first), or a video file / image folder played as a camera",
    )
    p.add_argument("--db", metavar="URL|FILE", help="gallery database (SQLAlchemy URL or file)")
    p.add_argument("--model", metavar="CKPT", help="model checkpoint (default models/default.pt)")
    p.add_argument("--device", default="cpu", help="torch device for the model (default cpu)")
    p.add_argument(
        "--exit-when-ready",
        action="store_true",
        help="quit as soon as the window is usable (model and gallery loaded), printing the "
        "start-up timings as one JSON line (used by `faceapp bench startup`)",
    )
    p.set_defaults(func=_run)


def _preload_model_stack() -> None:
    """Import torch / torchvision / MTCNN now, in the main thread (see faceapp.gui.app.run)."""
    import faceapp.nn.pipeline  # noqa: F401


def _run(args: argparse.Namespace) -> int:
    # Imported only when the GUI is asked for: the other commands must not need Qt.
    from faceapp.gui.app import run

    return run(
        camera=args.camera,
        db=args.db,
        model=args.model,
        device=args.device,
        preload=_preload_model_stack,
        exit_when_ready=args.exit_when_ready,
    )
