"""``faceapp`` command line: every operation of the app, JSON output with ``--json``.

Each command group lives in its own module exposing ``register(subparsers)``; a
registered sub-command sets ``func(args) -> int`` (the exit code). Expected failures
(:class:`~faceapp.errors.FaceappError`) are printed as one ``error: ...`` line, never
as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from faceapp import __version__
from faceapp.errors import FaceappError

_COMMAND_MODULES = (
    "faceapp.cli.vision_cmds",
    "faceapp.cli.train_cmds",
    "faceapp.cli.gallery_cmds",
    "faceapp.cli.keys_cmds",
    "faceapp.cli.audit_cmds",
    "faceapp.cli.live_cmds",
    "faceapp.cli.liveness_cmds",
    "faceapp.cli.gui_cmds",
    "faceapp.cli.bench_cmds",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faceapp",
        description="Offline face verification (1:1) and recognition (1:K).",
    )
    parser.add_argument("--version", action="version", version=f"faceapp {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except FaceappError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (e.g. `faceapp watch ... | head`): stop quietly, and keep
        # Python from failing again while flushing stdout at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
