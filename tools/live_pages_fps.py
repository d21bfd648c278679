"""Frames processed per second on each live page, in a real window, with a video as camera.

The main window is opened on a fresh SQLite gallery with the app's model and detector
settings (``FaceService.open``), one person enrolled from the video's first frames (so that
Verify has someone to check and Recognize someone to find), and the video played as the
camera (``VideoFileSource``, looping, real time). Each page is shown in turn; after a warm-up
its frame worker's counters are read over a fixed time: processed frames per second of wall
time, frames dropped while the worker was busy, mean processing time per frame.

Run under Xvfb for a real (xcb) window::

    PYTHONPATH=$PWD xvfb-run -a /work/main/.venv/bin/python tools/live_pages_fps.py \\
        --video ../shared/data/face_videos/face_recognition_examples/short_hamilton_clip.mp4

``--capture`` also measures Enroll while capturing (a sample every 0.4 s: the face is
re-measured on the frame after each sample is due); ``--liveness`` Verify with the liveness
check on (its own challenge follower, see ``faceapp.liveness``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PERSON = "Video Person"


def _spin(app: Any, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.002)


def _enroll_from_video(service: Any, video: Path) -> int:
    from faceapp.vision.video import read_video_frames

    faces = []
    for frame in read_video_frames(video, max_frames=120)[::10]:
        found = [f for f in service.analyze(frame) if f.quality.ok]
        if found:
            faces.append(max(found, key=lambda f: f.detection.area))
        if len(faces) == 3:
            break
    if not faces:
        raise SystemExit(f"{video}: no enrollable face in the first frames")
    service.enroll_faces(PERSON, faces)
    return len(faces)


def measure(app: Any, page: Any, seconds: float, warmup: float) -> dict[str, Any]:
    _spin(app, warmup)
    worker = page.worker
    worker.reset_stats()
    t0 = time.monotonic()
    latencies: list[float] = []
    embedded: list[int] = []

    def on_result(r: Any) -> None:
        latencies.append(r.latency_s)
        live = r.value if hasattr(r.value, "n_embedded") else getattr(r.value, "live", None)
        if live is not None:
            embedded.append(int(live.n_embedded))

    worker.resultReady.connect(on_result)
    _spin(app, seconds)
    worker.resultReady.disconnect(on_result)
    elapsed = time.monotonic() - t0
    processed, dropped, failed = worker.processed, worker.dropped, worker.failed
    return {
        "fps": round(processed / elapsed, 2),
        "processed": processed,
        "dropped": dropped,
        "failed": failed,
        "ms_per_frame": round(1000.0 * sum(latencies) / max(1, len(latencies)), 2),
        "embedded_per_frame": round(sum(embedded) / len(embedded), 3) if embedded else None,
        "seconds": round(elapsed, 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", required=True, type=Path)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--capture", action="store_true", help="also Enroll while capturing")
    ap.add_argument("--liveness", action="store_true", help="also Verify with liveness on")
    args = ap.parse_args(argv)

    from PySide6.QtWidgets import QApplication

    from faceapp.bench import bench_key_environment
    from faceapp.gui.main_window import MainWindow
    from faceapp.gui.settings import GuiSettings, SettingsStore
    from faceapp.services import FaceService

    app = QApplication.instance() or QApplication(sys.argv[:1])
    # a throw-away gallery: a random passphrase, no OS keyring (as the bench's)
    with bench_key_environment(), tempfile.TemporaryDirectory(prefix="faceapp-live-fps-") as tmp:
        service = FaceService.open(db_url=f"sqlite:///{Path(tmp) / 'g.sqlite'}")
        n = _enroll_from_video(service, args.video)
        settings = GuiSettings(camera=str(args.video.resolve()), loop=True, liveness=False)
        window = MainWindow(settings, store=SettingsStore.at_path(str(Path(tmp) / "s.ini")),
                            service=service, owns_service=True, camera_on=True)
        window.resize(1280, 800)
        window.show()
        out: dict[str, Any] = {"video": str(args.video), "enrolled_samples": n,
                               "platform": app.platformName(), "pages": {}}
        try:
            for name in ("recognize", "enroll", "verify"):
                page = getattr(window, f"{name}_page")
                window.show_page(page)
                if name == "verify":
                    _spin(app, 0.5)  # the people list loads in the background
                    page.set_claimed(PERSON)
                out["pages"][name] = measure(app, page, args.seconds, args.warmup)
                if name == "enroll" and args.capture:
                    page.name_edit.setText("Someone")
                    page.target_spin.setValue(50)
                    page.capture_button.setChecked(True)
                    out["pages"]["enroll_capturing"] = measure(app, page, args.seconds, 0.5)
                    out["pages"]["enroll_capturing"]["samples"] = len(page.samples())
                    page.set_capturing(False)
                if name == "verify":
                    out["pages"][name]["decision"] = page.decision()
                    if args.liveness:
                        from faceapp.vision.liveness import ChallengeConfig

                        # an attempt that outlasts the measurement (the clip does not act the
                        # challenge out; a finished attempt ignores frames)
                        timeout = 2 * (args.seconds + args.warmup)
                        page.liveness_config = ChallengeConfig(action_timeout_s=timeout,
                                                               require_identity=True)
                        page.liveness_check.setChecked(True)
                        out["pages"]["verify_liveness"] = measure(app, page, args.seconds, args.warmup)
                        out["pages"]["verify_liveness"]["finished"] = page.liveness_result() is not None
        finally:
            window.shutdown()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
