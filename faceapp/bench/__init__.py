"""``faceapp bench``: how fast faceapp is on this machine, against baselines measured in the
same run. One module per benchmark; each part of the report is a JSON-ready dict with
stable keys (dotted paths in each module's docstring):

* :mod:`~faceapp.bench.frame`: the live loop on real video vs the per-frame pipeline
  (``frame.fps``, ``frame.latency_ms_p50``/``_p95``), with :mod:`~faceapp.bench.liveness`
  (``frame.liveness``);
* :mod:`~faceapp.bench.embed`: embeddings per second vs InceptionResnetV1 (``embed.*``);
* :mod:`~faceapp.bench.gallery`: 1:K search per backend vs naive NumPy, cold gallery
  opening (``gallery.*``); :mod:`~faceapp.bench.server`: search inside PostgreSQL
  (pgvector HNSW) vs in memory (``bench gallery --db URL``);
* :mod:`~faceapp.bench.startup`: ``faceapp gui`` to a usable / ready window, 10⁵
  templates vs an empty gallery (``startup.*``); the launched app's own record is
  :mod:`~faceapp.bench.startup_marks` (Qt-free; the Qt half is
  ``faceapp.gui.app.StartupProbe``);
* :mod:`~faceapp.bench.encryption`: encrypted vs plaintext gallery (``encryption.*``);
* :mod:`~faceapp.bench.report`: :func:`run_bench` (the parts into one report), JSON and
  the text summary; :mod:`~faceapp.bench.machine`: the ``machine`` block.

Shared pieces: :mod:`~faceapp.bench.inputs` (the model, the real data folder: videos,
LFW), :mod:`~faceapp.bench.synthetic` (throw-away galleries, written through the gallery's
ORM and repository), :mod:`~faceapp.bench.stats` (timing helpers).

The names below are re-exported **lazily** (imported on first use): importing
``faceapp.bench.startup_marks`` (the GUI does, at start-up) must not load numpy, torch or
the gallery. Nothing runs at import.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES: dict[str, tuple[str, ...]] = {
    "report": ("PARTS", "SCHEMA_VERSION", "run_bench", "summary", "to_json"),
    "machine": ("machine_info",),
    "inputs": ("LFW_FIT_PEOPLE", "data_root", "default_videos", "lfw_base_embeddings", "lfw_embeddings",
               "load_model"),
    "synthetic": ("EmbeddingModel", "bench_key_environment", "fill_gallery", "fit_embeddings",
                  "lfw_like_gallery", "realistic_gallery", "synthetic_gallery"),
    "embed": ("bench_embed",),
    "frame": ("Playback", "bench_frame", "play_realtime"),
    "liveness": ("LIVENESS_TARGET_MS", "bench_liveness"),
    "gallery": ("GALLERY_SIZES", "QUICK_GALLERY_SIZES", "bench_gallery", "bench_gallery_part", "naive_top_k"),
    "server": ("bench_server_gallery", "scratch_databases"),
    "startup": ("QUICK_STARTUP_TEMPLATES", "STARTUP_STAGES", "STARTUP_TARGET_S", "STARTUP_TEMPLATES",
                "bench_startup", "build_startup_gallery", "launch_app"),
    "startup_marks": ("LAUNCH_T0_ENV", "StartupMarks", "process_start_time"),
    "encryption": ("ENCRYPTION_TARGET_RATIO", "bench_encryption"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
