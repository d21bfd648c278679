"""The machine a benchmark ran on (``machine`` in every report): CPU, cores, torch threads,
library versions."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceapp import __version__


def machine_info() -> dict[str, Any]:
    """CPU model, cores, torch threads and library versions."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}
    for name in ("facenet_pytorch", "sqlalchemy", "av"):
        with contextlib.suppress(Exception):
            mod = __import__(name)
            versions[name] = str(getattr(mod, "__version__", "?"))
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        versions["facenet_pytorch"] = version("facenet-pytorch")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "faceapp": __version__,
        "versions": versions,
    }
