"""The int8 copy of the rows and both first passes: scores within their proven error bound
of float64 brute force, the kernel choice refuses a pass that breaks its bound, and the
search through either pass returns the exact top-k."""

from __future__ import annotations

import math

import numpy as np
import pytest

from faceapp.gallery.matching import GalleryIndex
from faceapp.gallery.quantized import (
    Int8Rows,
    NumpyFirstPass,
    TorchInt8FirstPass,
    choose_first_pass,
    default_first_pass,
    quantize_rows,
    self_check,
)

PASSES = [NumpyFirstPass, TorchInt8FirstPass]


def unit_rows(rng, n, d):
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("d", [1, 7, 8, 33, 128])
def test_quantize_rows_bound_and_padding(d):
    rng = np.random.default_rng(d)
    emb = unit_rows(rng, 50, d)
    emb[0] = 0.0  # a zero row keeps a usable scale
    rows = quantize_rows(emb)
    assert rows.q8.dtype == np.int8 and rows.q8.shape == (50, -(-d // 8) * 8)
    assert np.all(rows.q8[:, d:] == 0)
    assert rows.scale[0] > 0 and np.all(rows.q8[0] == 0)
    for i in range(50):  # loop: every element within half a step of its row's scale
        for k in range(d):
            step = float(rows.scale[i])
            assert abs(float(emb[i, k]) - step * int(rows.q8[i, k])) <= step / 2 + 1e-7
    assert np.abs(rows.q8).max() == 127


@pytest.mark.parametrize("make", PASSES)
@pytest.mark.parametrize("d", [8, 33, 128])
@pytest.mark.parametrize("seed", range(3))
def test_first_pass_within_its_bound_of_brute_force(make, d, seed):
    rng = np.random.default_rng(seed)
    emb = unit_rows(rng, 300, d)
    rows = quantize_rows(emb)
    fp = make()
    for probe in (emb[3] + 0.05 * rng.standard_normal(d), rng.standard_normal(d), -emb[5]):
        p = (probe / np.linalg.norm(probe)).astype(np.float32)
        got = fp.scores(rows, p)
        assert got.shape == (300,) and got.dtype == np.float32
        bound = fp.error_bound(rows, p)
        for i in range(300):
            exact = math.fsum(float(a) * float(b) for a, b in zip(emb[i], p, strict=True))
            assert abs(float(got[i]) - exact) <= bound
        # the bound is meaningful: not vacuous on the score scale
        assert bound < 0.1


@pytest.mark.parametrize("make", PASSES)
def test_self_check_passes_for_the_real_kernels(make):
    assert self_check(make()) <= 1.0


class _TooOptimistic(NumpyFirstPass):
    """Real scores, but a bound a hundred times too small: must be refused."""

    name = "too-optimistic"

    def error_bound(self, rows: Int8Rows, probe: np.ndarray) -> float:
        return super().error_bound(rows, probe) / 100


class _Broken(NumpyFirstPass):
    name = "broken"

    def scores(self, rows: Int8Rows, probe: np.ndarray) -> np.ndarray:
        out = super().scores(rows, probe)
        out[7] = np.nan
        return out


def _unavailable():
    raise RuntimeError("no such kernel")


def test_choice_refuses_passes_that_break_their_bound():
    assert self_check(_TooOptimistic()) > 1.0
    assert self_check(_Broken()) == math.inf
    chosen = choose_first_pass([_unavailable, _Broken, _TooOptimistic])
    assert type(chosen) is NumpyFirstPass
    assert choose_first_pass([TorchInt8FirstPass]).name == "torch-int8"
    assert default_first_pass() is default_first_pass()


@pytest.mark.parametrize("make", PASSES)
@pytest.mark.parametrize("seed", range(4))
def test_identify_through_either_pass_equals_exact(make, seed):
    rng = np.random.default_rng(100 + seed)
    d = int(rng.choice([16, 33, 64]))
    n_people = 400
    pids = np.repeat(np.arange(n_people), rng.integers(1, 4, n_people))
    base = unit_rows(rng, 1, d)[0]
    emb = base + 0.3 * unit_rows(rng, pids.shape[0], d)  # crowded: many near ties
    fast = GalleryIndex("m", d, quantize_min_rows=1, first_pass=make())
    exact = GalleryIndex("m", d, quantize_min_rows=10**12)
    for index in (fast, exact):
        index.add(np.arange(pids.shape[0]), pids, emb, model_id="m")
    for probe in (base, emb[10], rng.standard_normal(d)):
        (a,) = fast.identify(probe, model_id="m", threshold=0.5, k=5)
        (b,) = exact.identify(probe, model_id="m", threshold=0.5, k=5)
        assert [c.person_id for c in a.candidates] == [c.person_id for c in b.candidates]
        np.testing.assert_allclose([c.score for c in a.candidates], [c.score for c in b.candidates],
                                   atol=1e-6)
