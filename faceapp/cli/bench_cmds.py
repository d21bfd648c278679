"""``faceapp bench [frame|embed|gallery|startup|encryption|all] [--json] [--video PATH]
[--model CKPT] [--quick]``.

Measures the live loop on real video, embedding throughput, 1:K search / gallery opening
and the desktop app's start-up, each against a baseline measured in the same run (see
:mod:`faceapp.bench`).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

CHOICES = ("frame", "embed", "gallery", "startup", "encryption", "all")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "bench",
        help="measure speed: live frame loop, embeddings/s, gallery search, app start-up (vs baselines)",
        description="Speed on this machine against baselines measured in the same run. "
        "JSON keys: frame.fps, frame.latency_ms_p50/p95, embed.per_s_b1/b32, "
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
        help="video to play (repeatable; default: ../shared/data/face_videos/**/*.mp4)",
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
    from faceapp.bench_server import bench_server_gallery, lfw_base_embeddings, scratch_databases

    sizes = [int(x) for x in str(args.sizes).split(",") if x.strip()]
    base = None
    if args.lfw is not None:
        cache = Path.home() / ".cache" / "faceapp" / f"bench_lfw_{Path(args.model or 'default').stem}.npy"
        base = lfw_base_embeddings(args.lfw, args.model, cache=cache)
    with scratch_databases(args.db, sizes) as urls:
        result = {"gallery_server": bench_server_gallery(urls, sizes, base=base, probes=args.probes)}
    text = json.dumps(result, indent=2, default=_jsonable)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


def _run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    if args.db and args.part == "gallery":
        return _run_server(args)

    import torch

    from faceapp.bench import PARTS, run_bench
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
        server_url=args.db if args.part == "encryption" else None,
    )
    text = json.dumps(result, indent=2, default=_jsonable)
    if args.out:
        args.out.write_text(text + "\n")
    if args.json:
        print(text)
    else:
        print(_summary(result))
    return 0


def _jsonable(x: Any) -> Any:
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def _fmt(x: Any, unit: str = "") -> str:
    if isinstance(x, float) and not math.isfinite(x):
        return "n/a"
    return f"{x}{unit}"


def _summary(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['usable_cores']} usable cores, torch {m['versions']['torch']} "
        f"({m['torch_threads']} threads)" + ("  [--quick: rough figures]" if r["quick"] else ""),
    ]
    if "frame" in r:
        f = r["frame"]
        lines += [
            f"frame   ({f['frames']} frames {f['frame_size']} played in real time; decided: "
            f"live {f['processed']}, per-frame {f['baseline_processed']})",
            f"  live loop : {_fmt(f['fps'])} fps, latency p50 {_fmt(f['latency_ms_p50'])} ms, "
            f"p95 {_fmt(f['latency_ms_p95'])} ms; new face decided in p50 "
            f"{_fmt(f['new_face_latency_ms_p50'])} ms, p95 {_fmt(f['new_face_latency_ms_p95'])} ms",
            f"  per-frame : {_fmt(f['baseline_fps'])} fps, "
            f"latency p50 {_fmt(f['baseline_latency_ms_p50'])} ms, "
            f"p95 {_fmt(f['baseline_latency_ms_p95'])} ms",
            f"  speed-up  : x{_fmt(f['fps_ratio'])} fps; "
            f"faces found vs per-frame {_fmt(f['face_recall_vs_baseline'])}, "
            f"same decision {_fmt(f['decision_agreement_vs_baseline'])}",
        ]
        if "liveness" in f:
            lv = f["liveness"]
            lines.append(
                f"  liveness  : +{_fmt(lv['ms_mean'])} ms/frame mean, p95 {_fmt(lv['ms_p95'])} ms at "
                f"{lv['frame_size']} (target <= {lv['target_ms']} ms); live loop capacity with it "
                f"{_fmt(lv['live_capacity_fps_with_liveness'])} fps"
            )
    if "embed" in r:
        e = r["embed"]
        lines += [
            f"embed   (ours {e['model']['input_size']}px D={e['model']['embedding_dim']}"
            f"{' +flip' if e['model']['flip_tta'] else ''}; baseline InceptionResnetV1 160px)",
            f"  batch 1   : {e['per_s_b1']}/s vs {e['baseline_per_s_b1']}/s (x{e['ratio_b1']})",
            f"  batch 32  : {e['per_s_b32']}/s vs {e['baseline_per_s_b32']}/s (x{e['ratio_b32']})",
        ]
    if "gallery" in r:
        g = r["gallery"]
        lines.append(f"gallery (D={g['dim']}; ms per probe, index vs naive NumPy float32; {g['data']})")
        for key, n in g["templates"].items():
            others = ", ".join(f"{name} {b.get(f'search_ms_{key}', 'n/a')}"
                               for name, b in g.get("backends", {}).items())
            lines.append(
                f"  {n:>9,} : {g[f'search_ms_{key}']} ms vs {g[f'baseline_search_ms_{key}']} ms "
                f"(x{g[f'ratio_{key}']}, {g[f'backend_{key}']}; forced: {others})"
            )
        lines.append(f"  random vectors {g['templates']['1e6']:,} : {g['random_search_ms_1e6']} ms vs "
                     f"{g['random_baseline_search_ms_1e6']} ms (x{g['random_ratio_1e6']})")
        for key in ("1e5", "1e6"):
            n = g["templates"][key]
            lines.append(
                f"  open {n:>9,} : {g[f'open_s_{key}']} s (snapshot), {g[f'open_rows_s_{key}']} s (rows)"
            )
        lines.append(f"  same top-k as the baseline: {g['same_top_k_as_baseline']}")
    if "startup" in r:
        st = r["startup"]
        n = st["templates"]["1e5"]
        lines += [
            f"startup (faceapp gui to a usable window: People listed, then to ready: model and "
            f"index loaded; median of {st['launches']} launch(es); target {st['target_s']} s usable)",
            f"  {n:>9,} templates : usable {_fmt(st['window_s_1e5'])} s (first paint "
            f"{_fmt(st['first_paint_s_1e5'])} s, window shown {_fmt(st['window_shown_s_1e5'])} s, "
            f"{_fmt(st['cpu_s_1e5'])} CPU s), ready {_fmt(st['ready_s_1e5'])} s "
            f"({_fmt(st['ready_cpu_s_1e5'])} CPU s); first launch ready {_fmt(st['first_launch_s_1e5'])} s",
            f"  empty gallery     : usable {_fmt(st['window_s_empty'])} s (first paint "
            f"{_fmt(st['first_paint_s_empty'])} s, {_fmt(st['cpu_s_empty'])} CPU s), "
            f"ready {_fmt(st['ready_s_empty'])} s",
            "  stages (s)        : "
            + ", ".join(f"{k} {v}" for k, v in st["stages_s_1e5"].items()),
            f"  meets the target  : {st['meets_target']} (load average "
            f"{st['load_average']['before'][0]} before)",
        ]
    if "encryption" in r:
        c = r["encryption"]
        p, e = c["plain"], c["encrypted"]
        sq = c.get("sqlcipher_only")
        lines.append(f"encryption ({c.get('backend', 'sqlite')}, {c['templates']:,} templates, "
                     f"{c['people_enrolled']} LFW people; seconds, encrypted (default: per-person "
                     "field keys" + (" + SQLCipher" if sq else "") + ") vs plaintext"
                     + (" [vs SQLCipher only]" if sq else "") + f"; KDF {c['kdf']})")
        for key in ("open_rows", "open_snapshot", "enroll", "verify", "recognize", "delete",
                    "end_to_end"):
            extra = (f" [{sq[key + '_s']}, x{c['fields_ratio_' + key]}]" if sq else "")
            lines.append(f"  {key:<14}: {e[key + '_s']} vs {p[key + '_s']} (x{c['ratio_' + key]})"
                         + extra)
        lines.append(f"  face analysis : {c['face_analysis_s']} s (the same for both; in end_to_end); "
                     f"passphrase KDF {c['kdf_s']} s (in each encrypted open; none with a keyring)")
        lines.append(f"  within target : {c['within_target']} (end to end <= x{c['target_ratio']})")
    return "\n".join(lines)
