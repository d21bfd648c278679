"""Checks a search backend against exact arithmetic before the app uses it, in a child
process, for the gallery's real width and size class; remembers the verdict per machine.

A native kernel that is wrong on some CPU (reads out of bounds for some widths, breaks its
error bound, crashes) must neither take the app down nor name the wrong person. So, the
first time a backend is wanted for D dimensions and about N rows, :func:`verdict` runs
``python -m faceapp.gallery.selfcheck NAME D N`` (:func:`check_backend` on random unit rows
of that width, in the size class of N, plus extreme rows and probes) and reads its one JSON
line. A crash, a time-out, a wrong answer or a broken bound is a failed check; then
:func:`choose_backend` falls back to the exact search and logs one warning line. The check
also times the backend against the float32 brute force on the same rows: ``auto`` skips a
backend that is slower there (FAISS built without SIMD for this CPU, say).

Verdicts are cached in ``<cache dir>/search-selfcheck.json`` (``$FACEAPP_CACHE_DIR``, else
``$XDG_CACHE_HOME/faceapp``, else ``~/.cache/faceapp``; mode 0600), keyed by a fingerprint of
the machine (CPU model and flags, Python, NumPy, faceapp) and the backend's version, name,
D and size class: once per machine and version, not once per run.

Size classes are powers of 4 from 4⁶ = 4,096 rows (a gallery of N rows is checked with the
class's upper bound of rows, at most ``MAX_CHECK_ELEMENTS / D``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from faceapp import __version__
from faceapp.gallery.quantized import (
    AUTO,
    AUTO_ORDER,
    ENV_BACKEND,
    EXACT,
    ExactBackend,
    SearchBackend,
    get_backend,
)

log = logging.getLogger(__name__)

ENV_CACHE_DIR = "FACEAPP_CACHE_DIR"
CACHE_FILE = "search-selfcheck.json"
MIN_CLASS_ROWS = 4**6
MAX_CHECK_ELEMENTS = 1 << 27
"""Rows × D of the largest check (128 M: 1,048,576 rows at D = 128; 512 MB of float32)."""
CHECK_TIMEOUT_S = 300.0
MIN_SPEEDUP = 1.0
"""``auto`` uses a native backend only when its check measured it at least this much faster
than the float32 brute force (a name forced by the user is used whatever its speed)."""
TIMED_MIN_ROWS = 4**8
"""Size classes from which the speed measured by the check counts (65,536 rows: smaller
searches take tens of microseconds either way, and their timing is noise)."""
_CHECK_MS = (1, 7, 100)
"""Short-list sizes asked of the backend by the check."""


def cache_dir() -> Path:
    """Where faceapp keeps per-machine caches (outside the repository)."""
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "faceapp"


def size_class(n: int) -> int:
    """Upper bound of the size class of a gallery of ``n`` rows (a power of 4, >= 4096)."""
    c = MIN_CLASS_ROWS
    while c < n:
        c *= 4
    return c


def check_rows(dim: int, n: int) -> int:
    """How many rows the check of class ``size_class(n)`` uses at width ``dim``."""
    return max(64, min(size_class(n), MAX_CHECK_ELEMENTS // max(1, dim)))


def machine_fingerprint() -> str:
    """CPU model and flags, OS, Python, NumPy and faceapp versions, hashed."""
    cpu = ""
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((ln for ln in lines if ln.startswith("model name")), "")
        flags = next((ln for ln in lines if ln.startswith(("flags", "Features"))), "")
        cpu = model + "\n" + flags
    parts = [cpu, platform.machine(), platform.system(), platform.python_version(),
             np.__version__, __version__]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _key(backend: SearchBackend, dim: int, n: int) -> str:
    return f"{backend.name}|{backend.version()}|d{dim}|n{size_class(n)}"


# ---------------------------------------------------------------------------- the check


def _check_problem(dim: int, n: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Random unit rows (made in chunks) with extreme rows first, and probes."""
    rng = np.random.default_rng(seed)
    emb = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, 65_536):
        hi = min(n, lo + 65_536)
        block = rng.standard_normal((hi - lo, dim), dtype=np.float32)
        emb[lo:hi] = block / np.linalg.norm(block, axis=1, keepdims=True)
    e = min(n, 8, dim)
    emb[:e] = 0.0
    emb[:e, :e] = np.eye(e, dtype=np.float32)  # one ±1 entry: the largest code
    if n > 16:
        emb[8:16] = -1.0 / math.sqrt(dim)  # constant rows: every code at the same extreme
        emb[16] = 0.0  # a zero row (l2_normalize keeps zero rows zero)
    probes = [
        emb[min(n - 1, 20)] + 0.05 * rng.standard_normal(dim).astype(np.float32),
        np.ones(dim, dtype=np.float32),
        -np.ones(dim, dtype=np.float32),
        np.eye(1, dim, dim - 1, dtype=np.float32)[0],
        rng.standard_normal(dim).astype(np.float32),
    ]
    return emb, [(p / np.linalg.norm(p)).astype(np.float32) for p in probes]


def _exact64(emb: np.ndarray, probe: np.ndarray) -> np.ndarray:
    p = probe.astype(np.float64)
    out = np.empty(emb.shape[0], dtype=np.float64)
    for lo in range(0, emb.shape[0], 65_536):
        out[lo : lo + 65_536] = emb[lo : lo + 65_536].astype(np.float64) @ p
    return out


def check_backend(backend: SearchBackend, dim: int, n: int, seed: int = 0) -> dict[str, Any]:
    """Run ``backend`` on a random problem of ``dim`` columns and ``n`` rows against float64
    arithmetic. Returns ``{"ok", "worst", "detail"}``: ``worst`` is the largest error over
    its bound (of a returned score, or of a row left out above the floor); ok needs
    ``worst <= 1`` and well-formed answers."""
    emb, probes = _check_problem(dim, n, seed)
    prepared = backend.prepare(emb)
    worst = 0.0
    for probe in probes:
        exact = _exact64(emb, probe)
        scan = prepared.scan(probe)
        bound = float(scan.error_bound)
        if not (math.isfinite(bound) and bound > 0):
            return {"ok": False, "worst": math.inf, "detail": f"error bound {bound}"}
        for m in _CHECK_MS:
            rows, approx, floor = scan.top(m)
            want = min(m, n)
            if rows.shape != (want,) or approx.shape != (want,):
                return {"ok": False, "worst": math.inf,
                        "detail": f"asked {want} rows, got {rows.shape[0]}"}
            if np.unique(rows).shape[0] != want or rows.min() < 0 or rows.max() >= n:
                return {"ok": False, "worst": math.inf, "detail": "row ids out of range or repeated"}
            if not np.all(np.isfinite(approx)):
                return {"ok": False, "worst": math.inf, "detail": "non-finite scores"}
            worst = max(worst, float(np.abs(approx.astype(np.float64) - exact[rows]).max()) / bound)
            if want < n:
                if not math.isfinite(floor) or floor > float(approx.min()) + 1e-12:
                    return {"ok": False, "worst": math.inf, "detail": f"floor {floor} above its rows"}
                rest = np.ones(n, dtype=bool)
                rest[rows] = False
                over = float(exact[rest].max()) - floor
                worst = max(worst, over / bound)
    speedup = _speedup(prepared, emb, probes[0])
    return {"ok": worst <= 1.0, "worst": worst, "speedup": speedup,
            "detail": f"{n} rows x {dim}, {len(probes)} probes"}


def _speedup(prepared: Any, emb: np.ndarray, probe: np.ndarray, reps: int = 5) -> float:
    """Time of the float32 brute force over the time of the backend's first pass (scan +
    a short list of 112 rows, as for k = 5), best of ``reps`` each: above 1 the backend is
    faster here. Coarse on purpose: it only keeps ``auto`` off a kernel slower than NumPy
    (e.g. FAISS without SIMD: 13 times slower at 10⁶ rows)."""
    def best(fn: Any) -> float:
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    exact = best(lambda: emb @ probe)
    fast = best(lambda: prepared.scan(probe).top(min(emb.shape[0], 112)))
    return round(exact / max(fast, 1e-9), 3)


# ---------------------------------------------------------------------------- child + cache


def _run_child(backend: SearchBackend, dim: int, n: int) -> dict[str, Any]:
    """The check in a child process: a crash or hang there is a failed check here."""
    cmd = [sys.executable, "-m", "faceapp.gallery.selfcheck", backend.name, str(dim), str(n)]
    return run_check_command(cmd)


def run_check_command(cmd: Sequence[str], timeout: float = CHECK_TIMEOUT_S) -> dict[str, Any]:
    """Run a check command; its last stdout line is the JSON verdict."""
    t0 = time.monotonic()
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        return {"ok": False, "worst": math.inf, "detail": f"timed out after {timeout:.0f} s"}
    except OSError as err:
        return {"ok": False, "worst": math.inf, "detail": f"could not start: {err}"}
    seconds = round(time.monotonic() - t0, 2)
    if proc.returncode != 0:
        how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
               else f"exit status {proc.returncode}")
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [""]
        return {"ok": False, "worst": math.inf, "detail": f"crashed ({how}) {tail[0][:200]}".strip(),
                "seconds": seconds}
    try:
        out = json.loads((proc.stdout or "").strip().splitlines()[-1])
        result = {"ok": bool(out["ok"]), "worst": float(out["worst"]), "detail": str(out["detail"]),
                  "speedup": float(out.get("speedup", math.inf))}
    except (IndexError, KeyError, TypeError, ValueError):
        return {"ok": False, "worst": math.inf, "detail": "no verdict printed", "seconds": seconds}
    result["seconds"] = seconds
    return result


_LOCK = threading.Lock()
_MEMO: dict[str, dict[str, Any]] = {}


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".selfcheck-", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as err:
        log.info("could not save the search self-check verdicts to %s: %s", path, err)


def verdict(backend: SearchBackend, dim: int, n: int, *, runner=None) -> dict[str, Any]:
    """The cached or fresh self-check verdict of ``backend`` for ``dim`` and ``n`` rows.
    ``runner(backend, dim, n_check)`` replaces the child process (tests)."""
    key = _key(backend, dim, n)
    fingerprint = machine_fingerprint()
    path = cache_dir() / CACHE_FILE
    with _LOCK:
        memo_key = f"{path}|{fingerprint}|{key}"
        if memo_key in _MEMO:
            return _MEMO[memo_key]
        data = _read_cache(path)
        cached = data.get(fingerprint, {}).get(key)
        if isinstance(cached, dict) and "ok" in cached:
            _MEMO[memo_key] = cached
            return cached
        n_check = check_rows(dim, n)
        log.info("checking search backend %s for D=%d, %d rows in a child process",
                 backend.name, dim, n_check)
        result = (runner or _run_child)(backend, dim, n_check)
        result = {**result, "rows": n_check, "when": time.strftime("%Y-%m-%d %H:%M:%S")}
        data = _read_cache(path)  # again: another process may have written meanwhile
        data = {fingerprint: {**data.get(fingerprint, {}), key: result}}  # drop other machines
        _write_cache(path, data)
        _MEMO[memo_key] = result
        return result


def clear_memo() -> None:
    """Forget the verdicts read in this process (tests)."""
    with _LOCK:
        _MEMO.clear()


_CHOSEN: dict[tuple[str, int, int], SearchBackend] = {}


def choose_backend(name: str | None, dim: int, n: int, *, runner=None) -> SearchBackend:
    """The backend to search ``n`` rows of ``dim`` with. ``name``: ``None`` (from
    ``$FACEAPP_SEARCH_BACKEND``, default ``auto``), ``auto`` (the first of
    :data:`~faceapp.gallery.quantized.AUTO_ORDER` that is installed and passes its
    self-check, else exact) or a backend name (used if it passes, else exact). Native
    backends are self-checked (:func:`verdict`); a failure logs one warning line."""
    wanted = (name or os.environ.get(ENV_BACKEND) or AUTO).strip().lower()
    memo = (wanted, int(dim), size_class(n))
    with _LOCK:
        if memo in _CHOSEN:
            return _CHOSEN[memo]
    names = list(AUTO_ORDER) if wanted == AUTO else [wanted]
    chosen: SearchBackend = ExactBackend()
    for candidate in names:
        if candidate == EXACT:
            break
        backend = get_backend(candidate)
        why = backend.unavailable()
        if why is not None:
            (log.info if wanted == AUTO else log.warning)(
                "search backend %s unavailable (%s): using the exact search", candidate, why)
            continue
        if backend.native:
            v = verdict(backend, dim, n, runner=runner)
            if not v.get("ok"):
                log.warning("search backend %s failed its self-check for D=%d, %d rows (%s, "
                            "worst error/bound %s): using the exact search", candidate, dim,
                            v.get("rows", n), v.get("detail"), v.get("worst"))
                continue
            speedup = float(v.get("speedup", math.inf))
            if wanted == AUTO and size_class(n) >= TIMED_MIN_ROWS and speedup < MIN_SPEEDUP:
                log.info("search backend %s is slower than the exact search here for D=%d, "
                         "%d rows (x%.2f): using the exact search", candidate, dim,
                         v.get("rows", n), speedup)
                continue
        chosen = backend
        break
    with _LOCK:
        _CHOSEN[memo] = chosen
    return chosen


def clear_choices() -> None:
    """Forget the backends chosen in this process (tests)."""
    with _LOCK:
        _CHOSEN.clear()
        _MEMO.clear()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m faceapp.gallery.selfcheck NAME D N``: prints one JSON verdict line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3:
        print("usage: python -m faceapp.gallery.selfcheck BACKEND DIM ROWS", file=sys.stderr)
        return 2
    backend = get_backend(args[0])
    result = check_backend(backend, int(args[1]), int(args[2]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
