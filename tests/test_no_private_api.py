"""faceapp uses no private PyTorch or NumPy API: a private operator carries no promise on any
CPU (``torch._weight_int8pack_mm`` crashed on AVX-512 machines and broke its bound)."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "faceapp"
PRIVATE = re.compile(
    r"\btorch\s*\.\s*_[A-Za-z]"  # torch._anything (torch._C, torch._weight_int8pack_mm, ...)
    r"|\btorch\s*\.\s*ops\s*\."  # torch.ops.aten.* / torch.ops.quantized.*: internal operators
    r"|\b(?:np|numpy)\s*\.\s*_?core\b"  # np.core / numpy._core
    r"|\bfrom\s+torch\._|\bimport\s+torch\._"
    r"|\bfrom\s+numpy\.(?:_?core)\b|\bimport\s+numpy\.(?:_?core)\b"
    r"|_weight_int8pack"
)


def test_no_private_torch_or_numpy_api_in_faceapp():
    hits = []
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20  # the package is really there
    for path in files:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if PRIVATE.search(line):
                hits.append(f"{path.relative_to(PACKAGE.parent)}:{lineno}: {line.strip()}")
    assert not hits, "private API used:\n" + "\n".join(hits)


def test_the_pattern_catches_what_it_should():
    for bad in ("torch._weight_int8pack_mm(a, b, c)", "x = torch._C._nn", "np.core._multiarray_umath",
                "from numpy._core import umath", "import torch._dynamo", "torch.ops.aten.mm(a, b)"):
        assert PRIVATE.search(bad), bad
    for good in ("torch.mv(a, b)", "np.dot(a, b)", "torch.__version__", "faiss.IndexScalarQuantizer"):
        assert not PRIVATE.search(good), good
