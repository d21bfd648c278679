"""``faceapp bench [frame|embed|gallery|startup|encryption|all] [--json] [--video PATH]
[--model CKPT] [--data DIR] [--quick]``.

Measures the live loop on real video, embedding throughput, 1:K search / gallery opening
and the desktop app's start-up, each against a baseline measured in the same run (see
:mod:`faceapp.bench`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

CHOICES = ("frame", "embed", "gallery", "startup", "encryption", "all")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "bench",
        help="measure speed: live frame loop, embeddings/s, gallery search, app start-up (vs baselines)",
        description="Speed on this machine against baselines measured in the same run. "
        "JSON keys: frame.fps, frame.latency_ms_p50/p95, "
        "frame.pages.PAGE.fps, frame.pages.PAGE.capacity_fps, frame.pages.PAGE.latency_ms_p50/p95 "
        "for PAGE in recognize, enroll, verify (the clip "
        "played in real time through the live loop configured as each live page: Recognize's "
        "matcher; Enroll capturing samples; Verify scoring the largest face against the person "
        "enrolled from the video's first frames), embed.per_s_b1/b32, "
        "embed.baseline_per_s_b1/b32, gallery.search_ms_1e4/1e5/1e6, "
        "gallery.baseline_search_ms_1e4/1e5/1e6, gallery.open_s_1e5/1e6, "
        "startup.window_s_1e5 (seconds to a usable main window with 10^5 templates: People "
        "listed), startup.ready_s_1e5 (to the model and index loaded, model pages enabled), "
        "startup.first_paint_s_1e5, startup.window_s_empty, startup.ready_s_empty, "
        "encryption.ratio_end_to_end (encrypted / plaintext gallery of 10^5 templates: open + "
        "enrol + verify + recognize; also ratio_open_rows, ratio_enroll, ratio_delete...) "
        "(+ ratios, machine).",
    )
    p.add_argument("part", nargs="?", default="all", choices=CHOICES, help="what to measure (default all)")
    p.add_argument("--json", action="store_true", help="print the full JSON result")
    p.add_argument(
        "--video",
        action="append",
        default=[],
        metavar="PATH",
        help="video to play (repeatable; default: DATA/face_videos/**/*.mp4)",
    )
    p.add_argument(
        "--data", type=Path, metavar="DATA",
        help="the real data folder: face videos, LFW (default: $FACEAPP_DATA or ../shared/data "
        "beside the checkout)",
    )
    p.add_argument(
        "--model", metavar="CKPT", help="model checkpoint (default: $FACEAPP_MODEL or models/default.pt)"
    )
    p.add_argument(
        "--quick", action="store_true", help="small sizes, a few frames (CI smoke run; figures are rough)"
    )
    p.add_argument("--max-frames", type=int, metavar="N", help="play at most N frames of each video")
    p.add_argument(
        "--threads", type=int, metavar="N", help="torch intra-op threads (default: torch's choice)"
    )
    p.add_argument("--detect-every", type=int, metavar="N", help="live loop: run the detector every N frames")
    p.add_argument(
        "--detect-max-side",
        type=int,
        metavar="PX",
        help="live loop: longer side of the frame the detector sees (0 = full size)",
    )
    p.add_argument("--db", metavar="URL",
                   help="gallery: benchmark search inside this PostgreSQL server (pgvector HNSW) "
                        "against the in-memory index; encryption: field encryption on a gallery "
                        "there vs one in clear. One scratch database per run is created "
                        "and dropped (the role needs CREATEDB)")
    p.add_argument("--sizes", metavar="N,N", default="100000",
                   help="gallery with --db: template counts (default 100000)")
    p.add_argument("--probes", type=int, default=200, metavar="N",
                   help="gallery with --db: probes per size (default 200)")
    p.add_argument("--lfw", type=Path, metavar="DIR",
                   help="gallery with --db: embed LFW images of DIR with --model and give the "
                        "gallery their statistics (default: Gaussian, HNSW's worst case)")
    p.add_argument("--out", type=Path, metavar="FILE", help="also write the JSON to FILE")
    p.set_defaults(func=_run)


def _run_server(args: argparse.Namespace) -> int:
    from faceapp.bench import bench_server_gallery, lfw_base_embeddings, scratch_databases, to_json

    sizes = [int(x) for x in str(args.sizes).split(",") if x.strip()]
    base = None
    if args.lfw is not None:
        cache = Path.home() / ".cache" / "faceapp" / f"bench_lfw_{Path(args.model or 'default').stem}.npy"
        base = lfw_base_embeddings(args.lfw, args.model, cache=cache)
    with scratch_databases(args.db, sizes) as urls:
        result = {"gallery_server": bench_server_gallery(urls, sizes, base=base, probes=args.probes)}
    print(to_json(result, args.out))
    return 0


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    if args.db and args.part == "gallery":
        return _run_server(args)

    import torch

    from faceapp.bench import PARTS, run_bench, summary, to_json
    from faceapp.services.live import LiveConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    config = LiveConfig()
    if args.detect_every is not None:
        config = replace(config, detect_every=args.detect_every)
    if args.detect_max_side is not None:
        config = replace(config, detect_max_side=args.detect_max_side)
    parts = PARTS if args.part == "all" else (args.part,)
    result = run_bench(
        parts,
        model_path=args.model,
        videos=args.video,
        quick=args.quick,
        max_frames=args.max_frames,
        config=config,
        data_dir=args.data,
        server_url=args.db if args.part == "encryption" else None,
    )
    text = to_json(result, args.out)
    print(text if args.json else summary(result))
    return 0
