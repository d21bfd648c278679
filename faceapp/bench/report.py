"""``faceapp bench``: run the chosen parts into one report, and write it (JSON, or the
short text summary the CLI prints).

The report is ``{"schema", "quick", "machine", "model", <part>: {...}, "command"}``, one
JSON-ready dict with stable keys per part (dotted paths in each part's module):
:mod:`~faceapp.bench.frame` (and :mod:`~faceapp.bench.liveness`),
:mod:`~faceapp.bench.embed`, :mod:`~faceapp.bench.gallery`, :mod:`~faceapp.bench.startup`,
:mod:`~faceapp.bench.encryption`. ``quick=True`` shrinks every size (for tests and CI):
the keys stay, ``quick`` is true and ``gallery.templates`` / ``startup.templates`` tell the
sizes actually used. The in-server search benchmark (``bench gallery --db``) has its own
report (:mod:`~faceapp.bench.server`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from faceapp.bench.embed import bench_embed
from faceapp.bench.encryption import bench_encryption
from faceapp.bench.frame import bench_frame
from faceapp.bench.gallery import bench_gallery_part
from faceapp.bench.inputs import data_root, load_model
from faceapp.bench.machine import machine_info
from faceapp.bench.startup import bench_startup
from faceapp.bench.synthetic import bench_key_environment
from faceapp.nn.checkpoint import LoadedModel
from faceapp.services.live import LiveConfig

logger = logging.getLogger(__name__)

PARTS = ("frame", "embed", "gallery", "startup", "encryption")
SCHEMA_VERSION = 1


def run_bench(
    parts: Sequence[str] = PARTS,
    *,
    model_path: str | os.PathLike[str] | None = None,
    videos: Sequence[str | os.PathLike[str]] = (),
    quick: bool = False,
    max_frames: int | None = None,
    config: LiveConfig = LiveConfig(),
    data_dir: str | os.PathLike[str] | None = None,
    server_url: str | None = None,
) -> dict[str, Any]:
    """Run the chosen parts; returns ``{"schema", "quick", "machine", <part>: {...}}``.
    ``data_dir``: the real data (face videos, LFW; default: as configured, see
    :func:`faceapp.bench.inputs.data_root`); ``server_url``: ``encryption`` on scratch
    databases of that PostgreSQL server."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown benchmark parts {sorted(unknown)} (known: {', '.join(PARTS)})")
    data = data_root(data_dir)
    out: dict[str, Any] = {"schema": SCHEMA_VERSION, "quick": quick, "machine": machine_info()}
    model: LoadedModel | None = None
    path: Path | None = None
    if "frame" in parts or "embed" in parts or "startup" in parts or "encryption" in parts:
        model, path = load_model(model_path)
        out["model"] = {"path": str(path), "model_id": model.model_id}
    if "embed" in parts:
        assert model is not None
        logger.info("bench embed")
        out["embed"] = bench_embed(model, quick=quick)
    if "frame" in parts:
        assert model is not None and path is not None
        logger.info("bench frame")
        with bench_key_environment():  # its gallery is a throw-away one too
            out["frame"] = bench_frame(
                model, path, videos=[Path(v) for v in videos], quick=quick, max_frames=max_frames,
                config=config, data_dir=data,
            )
    if "gallery" in parts:
        dim = model.embedding_dim if model is not None else 128
        logger.info("bench gallery (D=%d)", dim)
        with bench_key_environment():
            out["gallery"] = bench_gallery_part(dim, data_dir=data, quick=quick, model=model)
    if "startup" in parts:
        assert model is not None and path is not None
        logger.info("bench startup")
        with bench_key_environment():
            out["startup"] = bench_startup(model, path, quick=quick)
    if "encryption" in parts:
        assert model is not None and path is not None
        logger.info("bench encryption")
        out["encryption"] = bench_encryption(model, path, data_dir=data, quick=quick,
                                             server_url=server_url)
    out["command"] = " ".join(sys.argv) if sys.argv and sys.argv[0] else ""
    return out


def to_json(result: dict[str, Any], out: Path | None = None) -> str:
    """``result`` as indented JSON (paths and NumPy scalars as plain values), also written
    to ``out`` when given."""
    text = json.dumps(result, indent=2, default=_jsonable)
    if out is not None:
        out.write_text(text + "\n")
    return text


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


def summary(r: dict[str, Any]) -> str:
    """The report of :func:`run_bench` as the short text ``faceapp bench`` prints (a few
    lines per part, the baseline beside each figure)."""
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
        for name, pg in f.get("pages", {}).items():
            extra = {"enroll": f"; {pg.get('samples')} samples, {pg.get('enrolments')} enrolments",
                     "verify": f"; {pg.get('scored')} scores, {pg.get('matched')} accepted"}.get(name, "")
            lines.append(
                f"  page {name:<9}: {_fmt(pg['fps'])} fps (capacity {_fmt(pg['capacity_fps'])}), latency "
                f"p50 {_fmt(pg['latency_ms_p50'])} ms, p95 {_fmt(pg['latency_ms_p95'])} ms{extra}"
            )
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
