"""Timing and summary helpers shared by the benchmarks: medians, percentiles, repeated
calls, the load average. Nothing here knows what is measured."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import numpy as np


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile rounded to 3 decimals; NaN (not measured) when empty."""
    return round(float(np.percentile(np.asarray(values, dtype=np.float64), q)), 3) if values else float("nan")


def median(values: Sequence[float]) -> float:
    """The median rounded to 3 decimals; NaN (not measured) when empty."""
    return round(float(np.median(values)), 3) if values else float("nan")


def ms_summary(seconds: Sequence[float], keys: Sequence[str] = ("median", "p90", "min")) -> dict[str, float]:
    """``seconds`` in milliseconds, summarised by ``keys`` (``median``, ``min``, ``max`` or
    ``pNN``, a percentile), each rounded to 3 decimals."""
    arr = np.asarray(seconds) * 1000.0
    out = {}
    for key in keys:
        if key == "median":
            value = np.median(arr)
        elif key in ("min", "max"):
            value = arr.min() if key == "min" else arr.max()
        else:
            value = np.percentile(arr, float(key.removeprefix("p")))
        out[key] = round(float(value), 3)
    return out


def timed(fn: Callable[[], object]) -> float:
    """Seconds of one call of ``fn``."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def time_call(fn: Callable[[], object], *, min_reps: int, min_seconds: float, warmup: bool = True) -> float:
    """Median seconds of one call (after one warm-up call unless ``warmup`` is false)."""
    if warmup:
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_seconds:
        times.append(timed(fn))
        if len(times) >= 10 * min_reps and time.perf_counter() - start >= min_seconds:
            break
    return float(np.median(times))


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (2 decimals); [] where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):  # pragma: no cover - not Unix
        return []
