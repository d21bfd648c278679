"""``faceapp gui``: open the desktop app."""

from __future__ import annotations

import argparse
import contextlib


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
        help="quit once the app is ready (window usable with People listed, then the model "
        "and the gallery's index loaded), printing the start-up timings as one JSON line "
        "(used by `faceapp bench startup`)",
    )
    p.set_defaults(func=_run)


def _preload_native_libraries() -> None:
    """Import triton (when installed; torch imports it later) now, in the main thread,
    before Qt starts: it bundles its own LLVM, and loading it for the first time in a
    worker thread once Mesa's LLVM is loaded (Qt's GL under X11, e.g. while a video plays)
    crashes the process. About 0.3 s; torch and the models are then loaded in a worker
    (see faceapp.gui.app.run)."""
    with contextlib.suppress(ImportError):
        import triton  # noqa: F401


def _run(args: argparse.Namespace) -> int:
    # Imported only when the GUI is asked for: the other commands must not need Qt.
    from faceapp.gui.app import run

    return run(
        camera=args.camera,
        db=args.db,
        model=args.model,
        device=args.device,
        preload=_preload_native_libraries,
        exit_when_ready=args.exit_when_ready,
    )
