"""Every search backend on this machine against brute force, for D in {8, 16, 33, 64, 128,
512} and 1 row to above the two-pass threshold; each backend forced on its own; the scan
bounds and the self-check (in-process and in a child process, crash included); the
fallback to the exact search."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import stat
import sys

import numpy as np
import pytest

from faceapp.gallery import quantized, selfcheck
from faceapp.gallery.matching import QUANTIZE_MIN_ROWS, GalleryIndex
from faceapp.gallery.quantized import (
    ExactBackend,
    FaissSQ8Backend,
    NumpyInt8Backend,
    get_backend,
    quantize_probe,
    quantize_rows,
)
from faceapp.gallery.selfcheck import check_backend, choose_backend, run_check_command, verdict

HAVE_FAISS = importlib.util.find_spec("faiss") is not None
AVAILABLE = [ExactBackend, NumpyInt8Backend] + ([FaissSQ8Backend] if HAVE_FAISS else [])
IDS = [b.name for b in AVAILABLE]
DIMS = [8, 16, 33, 64, 128, 512]
MODEL = "m"


@pytest.fixture(autouse=True)
def _fresh_choices():
    selfcheck.clear_choices()
    yield
    selfcheck.clear_choices()


def unit_rows(rng, n, d):
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_force(emb, pids, probe, k):
    """float64 scores, per-person maximum with a dict, sorted: (people, scores)."""
    p = probe.astype(np.float64) / np.linalg.norm(probe.astype(np.float64))
    scores = emb.astype(np.float64) @ p
    best: dict[int, float] = {}
    for pid, s in zip(pids.tolist(), scores.tolist(), strict=True):
        best[pid] = max(best.get(pid, -math.inf), s)
    ranked = sorted(best.items(), key=lambda kv: -kv[1])[:k]
    return [p for p, _ in ranked], [s for _, s in ranked]


def gallery(rng, n, d):
    """``n`` rows in clusters (several templates per person, crowded people): (emb, pids)."""
    n_people = max(1, n // 3)
    centers = unit_rows(rng, max(1, n_people // 8 + 1), d)
    pids = np.sort(rng.integers(0, n_people, n))
    emb = centers[pids % centers.shape[0]] + 0.35 * unit_rows(rng, n, d)
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    return emb.astype(np.float32), pids


def check_against_brute_force(index, emb, pids, rng, k=5):
    d = emb.shape[1]
    probes = [emb[0] + 0.05 * rng.standard_normal(d), emb[-1], rng.standard_normal(d)]
    for probe in probes:
        probe = probe.astype(np.float32)
        (res,) = index.identify(probe, model_id=MODEL, threshold=0.5, k=k)
        people, scores = brute_force(emb, pids, probe, k)
        assert [c.person_id for c in res.candidates] == people
        np.testing.assert_allclose([c.score for c in res.candidates], scores, atol=2e-6)


@pytest.mark.parametrize("make", AVAILABLE, ids=IDS)
@pytest.mark.parametrize("d", DIMS)
def test_every_backend_equals_brute_force_over_widths_and_sizes(make, d):
    rng = np.random.default_rng(d)
    for n in (1, 2, 7, 64, 1000, 6000):
        emb, pids = gallery(rng, n, d)
        index = GalleryIndex(MODEL, d, quantize_min_rows=1, backend=make())
        index.add(np.arange(n), pids, emb, model_id=MODEL)
        check_against_brute_force(index, emb, pids, rng)
        if make is not ExactBackend:
            assert index.last_search["backend"].startswith(make.name)


@pytest.mark.parametrize("make", AVAILABLE, ids=IDS)
@pytest.mark.parametrize("d", [8, 33, 512])
def test_around_the_default_threshold(make, d):
    """Just below the threshold the exact path runs, just above it the two-pass one."""
    rng = np.random.default_rng(1000 + d)
    for n in (QUANTIZE_MIN_ROWS - 1, QUANTIZE_MIN_ROWS + 1):
        emb, pids = gallery(rng, n, d)
        index = GalleryIndex(MODEL, d, backend=make())
        index.add(np.arange(n), pids, emb, model_id=MODEL)
        index.last_search = {}
        check_against_brute_force(index, emb, pids, rng, k=3)
        two_pass = n >= QUANTIZE_MIN_ROWS and make is not ExactBackend
        assert bool(index.last_search) == two_pass


@pytest.mark.parametrize("name", sorted({b.name for b in AVAILABLE} | {"faiss-sq8"}))
def test_each_backend_forced_by_name_on_its_own(name, monkeypatch):
    """$FACEAPP_SEARCH_BACKEND forces one backend; faiss-sq8 where FAISS is missing (or fails
    its check) falls back to the exact search with the same answers."""
    monkeypatch.setenv(quantized.ENV_BACKEND, name)
    rng = np.random.default_rng(3)
    emb, pids = gallery(rng, 3000, 33)
    index = GalleryIndex(MODEL, 33, quantize_min_rows=1)
    index.add(np.arange(3000), pids, emb, model_id=MODEL)
    check_against_brute_force(index, emb, pids, rng)
    used = index._search_backend().name
    assert used == name or (name == "faiss-sq8" and not HAVE_FAISS and used == "exact")
    if used != "exact":
        assert index.last_search["backend"] == used


def test_unknown_backend_name_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="numpy-int8"):
        GalleryIndex(MODEL, 8, backend="int4-magic")
    with pytest.raises(ValueError, match="unknown search backend"):
        get_backend("nope")


@pytest.mark.parametrize("d", [1, 7, 8, 33, 128])
def test_quantize_rows_and_probe_by_loops(d):
    rng = np.random.default_rng(d)
    emb = unit_rows(rng, 40, d)
    emb[0] = 0.0
    codes = quantize_rows(emb)
    assert codes.q8.dtype == np.int8 and codes.q8.shape == (40, d)
    assert np.abs(codes.q8).max() == 127  # the largest |value| maps to ±127
    for i in range(40):
        err2 = sum((float(emb[i, j]) - codes.scale * int(codes.q8[i, j])) ** 2 for j in range(d))
        assert math.sqrt(err2) <= codes.radius[i] <= math.sqrt(err2) * (1 + 1e-4) + 1e-6
        for j in range(d):
            assert abs(float(emb[i, j]) - codes.scale * int(codes.q8[i, j])) <= codes.scale * 0.5001
    q, s, rho = quantize_probe(emb[3])
    assert np.all(q == np.rint(q)) and np.abs(q).max() == 127
    assert math.sqrt(sum((float(a) - s * float(b)) ** 2 for a, b in zip(emb[3], q, strict=True))) <= rho


@pytest.mark.parametrize("make", AVAILABLE[1:], ids=IDS[1:])
@pytest.mark.parametrize("d", DIMS)
def test_scan_scores_within_their_bound_of_float64(make, d):
    """check_backend: every returned score within the bound, no row left out above the floor."""
    result = check_backend(make(), d, 3000, seed=d)
    assert result["ok"], result
    assert 0.05 < result["worst"] <= 1.0  # the bound is met, and not vacuous


class _Shifted(NumpyInt8Backend):
    """Real scores plus a shift far beyond its bound."""

    name = "shifted"

    def prepare(self, emb):
        inner = super().prepare(emb)

        class Rows:
            def __len__(self):
                return len(inner)

            def scan(self, probe):
                s = inner.scan(probe)
                s.scores = s.scores + np.float32(0.2) * (np.arange(s.scores.shape[0]) % 2)
                return s

        return Rows()


class _TooFew(NumpyInt8Backend):
    """Returns fewer rows than asked."""

    name = "too-few"

    def prepare(self, emb):
        inner = super().prepare(emb)

        class Rows:
            def __len__(self):
                return len(inner)

            def scan(self, probe):
                s = inner.scan(probe)
                top = s.top

                def fewer(m):
                    rows, approx, floor = top(m)
                    return rows[: max(0, len(rows) - 1)], approx[: max(0, len(rows) - 1)], floor

                s.top = fewer
                return s

        return Rows()


def test_self_check_refuses_wrong_backends_and_search_stays_exact():
    assert not check_backend(_Shifted(), 16, 2000)["ok"]
    assert not check_backend(_TooFew(), 16, 2000)["ok"]
    rng = np.random.default_rng(9)
    emb, pids = gallery(rng, 2000, 16)
    index = GalleryIndex(MODEL, 16, quantize_min_rows=1, backend=_TooFew())
    index.add(np.arange(2000), pids, emb, model_id=MODEL)
    check_against_brute_force(index, emb, pids, rng)  # a short answer: the exact search runs
    assert index.last_search["backend"] == "too-few, then exact"


class _FakeNative(NumpyInt8Backend):
    name = "fake-native"
    native = True


def _crash(backend, dim, n):
    """A check whose child process dies of a segmentation fault."""
    return run_check_command([sys.executable, "-c", "import ctypes; ctypes.string_at(0)"])


def test_a_crashing_native_check_falls_back_to_exact_with_one_log_line(monkeypatch, caplog):
    monkeypatch.setitem(quantized.BACKENDS, "fake-native", _FakeNative)
    monkeypatch.setattr(selfcheck, "AUTO_ORDER", ("fake-native",))
    with caplog.at_level(logging.WARNING, logger="faceapp.gallery.selfcheck"):
        chosen = choose_backend("auto", 24, 500, runner=_crash)
    assert chosen.name == "exact"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "fake-native" in warnings[0].getMessage()
    assert "signal" in warnings[0].getMessage()  # says how it failed
    # the crash was remembered: no second child, no second warning, the app keeps working
    caplog.clear()
    calls = []
    with caplog.at_level(logging.WARNING, logger="faceapp.gallery.selfcheck"):
        again = choose_backend("auto", 24, 500, runner=lambda *a: calls.append(a) or {"ok": True})
    assert again.name == "exact" and calls == []
    rng = np.random.default_rng(4)
    emb, pids = gallery(rng, 500, 24)
    monkeypatch.setattr(selfcheck, "_run_child", _crash)
    index = GalleryIndex(MODEL, 24, quantize_min_rows=1, backend="auto")
    index.add(np.arange(500), pids, emb, model_id=MODEL)
    check_against_brute_force(index, emb, pids, rng)
    assert index._search_backend().name == "exact"


def test_verdicts_are_cached_per_machine_outside_the_repo(monkeypatch, tmp_path):
    monkeypatch.setenv(selfcheck.ENV_CACHE_DIR, str(tmp_path / "cache"))
    calls = []

    def runner(backend, dim, n):
        calls.append((dim, n))
        return {"ok": True, "worst": 0.5, "detail": "fake"}

    backend = _FakeNative()
    assert verdict(backend, 16, 100, runner=runner)["ok"]
    assert verdict(backend, 16, 4000, runner=runner)["ok"]  # same size class (<= 4096)
    assert calls == [(16, 4096)]
    selfcheck.clear_memo()
    assert verdict(backend, 16, 100, runner=runner)["ok"]  # from the file, not a new child
    assert calls == [(16, 4096)]
    verdict(backend, 16, 5000, runner=runner)  # next class, another width: checked again
    verdict(backend, 17, 100, runner=runner)
    assert calls == [(16, 4096), (16, 16384), (17, 4096)]
    path = tmp_path / "cache" / selfcheck.CACHE_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    (fingerprint,) = data
    assert fingerprint == selfcheck.machine_fingerprint()
    assert sorted(data[fingerprint]) == sorted(
        f"fake-native|{np.__version__}|d{d}|n{c}" for d, c in ((16, 4096), (16, 16384), (17, 4096))
    )
    # another machine (or version): the old verdicts are not trusted
    selfcheck.clear_memo()
    monkeypatch.setattr(selfcheck, "machine_fingerprint", lambda: "another-machine")
    verdict(backend, 16, 100, runner=runner)
    assert len(calls) == 4


def test_size_classes_and_check_sizes():
    assert selfcheck.size_class(1) == 4096 and selfcheck.size_class(4096) == 4096
    assert selfcheck.size_class(4097) == 16384 and selfcheck.size_class(10**6) == 4**10
    assert selfcheck.check_rows(128, 10**6) == 4**10  # the real size class at D = 128
    assert selfcheck.check_rows(512, 10**6) == selfcheck.MAX_CHECK_ELEMENTS // 512


@pytest.mark.skipif(not HAVE_FAISS, reason="faiss-cpu is not installed")
def test_faiss_passes_its_real_child_process_check():
    result = selfcheck._run_child(FaissSQ8Backend(), 33, 5000)
    assert result["ok"], result
    assert 0.05 < result["worst"] <= 1.0 and result["seconds"] > 0


def test_auto_skips_a_native_backend_slower_than_exact(monkeypatch, caplog):
    monkeypatch.setitem(quantized.BACKENDS, "fake-native", _FakeNative)
    monkeypatch.setattr(selfcheck, "AUTO_ORDER", ("fake-native",))

    def slow(backend, dim, n):
        return {"ok": True, "worst": 0.5, "detail": "fake", "speedup": 0.07}

    with caplog.at_level(logging.INFO, logger="faceapp.gallery.selfcheck"):
        assert choose_backend("auto", 20, 100_000, runner=slow).name == "exact"
    assert "slower than the exact search" in caplog.text
    selfcheck.clear_choices()
    assert choose_backend("fake-native", 20, 100_000, runner=slow).name == "fake-native"  # forced
    assert choose_backend("auto", 20, 500, runner=slow).name == "fake-native"  # too small to time


@pytest.mark.parametrize("make", AVAILABLE[1:], ids=IDS[1:])
def test_the_check_reports_a_speed_ratio(make):
    result = check_backend(make(), 16, 5000)
    assert result["ok"] and result["speedup"] > 0


@pytest.mark.skipif(not HAVE_FAISS, reason="faiss-cpu is not installed")
@pytest.mark.parametrize("level", ["NONE", "AVX2", "AVX512"])
def test_faiss_passes_at_every_simd_level(level, monkeypatch):
    """FAISS picks its kernels by CPU at run time; forcing each level in the child process
    runs the generic and AVX2 code on an AVX-512 machine too (a level the CPU lacks falls
    back to one it has). The answers are exact integers: the same verdict everywhere."""
    monkeypatch.setenv("FAISS_SIMD_LEVEL", level)
    for d in (8, 33, 128):
        result = selfcheck._run_child(FaissSQ8Backend(), d, 3000)
        assert result["ok"], (level, d, result)
