"""A reader of dlib's binary serialization of a DNN (``.dat`` files of ``dlib::serialize``).

Plain Python + NumPy, no dlib: enough of the format for the layers of dlib's face
recognition ResNet (``con_4``, ``affine_``, ``relu_``, ``add_prev_``, ``avg_pool_2``,
``max_pool_2``, ``fc_2``, ``input_rgb_image_sized``, ``loss_metric_2``).

Primitives:
    integer  one control byte (low 4 bits: number of value bytes; 0x80: negative),
             then that many little-endian bytes of the magnitude;
    string   an integer length, then that many bytes;
    float    two integers, mantissa m and exponent e: the value is m * 2**e;
    bool     one ASCII byte, ``'1'`` or ``'0'``;
    tensor   integer version 2, four integer sizes (n, k, nr, nc), then n*k*nr*nc
             little-endian float32 values;
    alias    (a view into a layer's parameter tensor) integer version 1, four sizes.

Layout: the loss layer first (version, its settings), then one version integer per
``add_layer``/tag/skip wrapper from the output inwards, then, from the input outwards, each
layer's settings and parameters followed by the wrapper's bookkeeping (three bools and three
empty tensors; the innermost wrapper also records its sample-expansion factor).
Tag and skip wrappers carry no settings, so which earlier output an ``add_prev_`` adds is
fixed by the network definition, not by the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from faceapp.errors import ModelError


class DlibFormatError(ModelError):
    """The bytes are not a dlib serialization this reader understands."""


@dataclass(frozen=True)
class DlibLayer:
    """One layer of a dlib network, in file order (input outwards).

    ``settings``: ints/floats of the layer (filter counts, strides, paddings, means, ...);
    ``params``: named float32 arrays (``filters`` (out, in, kh, kw), ``biases`` (out,),
    ``gamma``/``beta`` (C,), ``weights`` (inputs, outputs)).
    """

    tag: str
    settings: dict[str, float | int] = field(default_factory=dict)
    params: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class DlibNetwork:
    """A parsed ``.dat``: the loss layer's settings and the layers from the input outwards."""

    loss: DlibLayer
    layers: tuple[DlibLayer, ...]

    def tags(self) -> list[str]:
        return [layer.tag for layer in self.layers]


class _Reader:
    """Cursor over the bytes; every read checks the bounds."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def _take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise DlibFormatError(f"truncated dlib file: need {n} bytes at offset {self.pos}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def integer(self) -> int:
        at = self.pos
        ctrl = self._take(1)[0]
        size = ctrl & 0x0F
        if ctrl & 0x70 or size > 8:
            raise DlibFormatError(f"bad integer control byte 0x{ctrl:02x} at offset {at}")
        value = int.from_bytes(self._take(size), "little")
        return -value if ctrl & 0x80 else value

    def string(self) -> str:
        n = self.integer()
        if n < 0 or n > 1 << 20:
            raise DlibFormatError(f"bad string length {n} at offset {self.pos}")
        try:
            return bytes(self._take(n)).decode("ascii")
        except UnicodeDecodeError:
            raise DlibFormatError(f"non-ASCII string at offset {self.pos - n}") from None

    def floating(self) -> float:
        mantissa = self.integer()
        exponent = self.integer()
        return float(np.ldexp(np.float64(mantissa), exponent))

    def boolean(self) -> bool:
        at = self.pos
        c = self._take(1)[0]
        if c not in (0x30, 0x31):
            raise DlibFormatError(f"bad bool byte 0x{c:02x} at offset {at}")
        return c == 0x31

    def tensor(self) -> np.ndarray:
        """(n, k, nr, nc) float32 (a copy, native byte order)."""
        at = self.pos
        version = self.integer()
        if version != 2:
            raise DlibFormatError(f"tensor version {version} at offset {at} (this reader knows 2)")
        shape = tuple(self.integer() for _ in range(4))
        if any(s < 0 for s in shape):
            raise DlibFormatError(f"negative tensor size {shape} at offset {at}")
        count = int(np.prod(shape, dtype=np.int64))
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias(self) -> tuple[int, int, int, int]:
        at = self.pos
        version = self.integer()
        if version != 1:
            raise DlibFormatError(f"alias tensor version {version} at offset {at} (this reader knows 1)")
        shape = tuple(self.integer() for _ in range(4))
        return shape  # type: ignore[return-value]


def _split(params: np.ndarray, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    flat = params.reshape(-1)
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    if sum(sizes) != flat.size:
        raise DlibFormatError(f"parameter tensor of {flat.size} values does not hold {shapes}")
    out, start = [], 0
    for s, n in zip(shapes, sizes, strict=True):
        out.append(flat[start : start + n].reshape(s).copy())
        start += n
    return out


def _read_details(r: _Reader, tag: str) -> DlibLayer:
    if tag == "input_rgb_image_sized":
        means = [r.floating() for _ in range(3)]
        rows, cols = r.integer(), r.integer()
        return DlibLayer(tag, {"mean_r": means[0], "mean_g": means[1], "mean_b": means[2],
                               "rows": rows, "cols": cols})
    if tag == "con_4":
        params = r.tensor()
        nf, nr, nc, sy, sx, py, px = (r.integer() for _ in range(7))
        f_shape, b_shape = r.alias(), r.alias()
        for _ in range(4):  # learning-rate and weight-decay multipliers (training only)
            r.floating()
        if f_shape[0] != nf or f_shape[2:] != (nr, nc) or int(np.prod(b_shape)) != nf:
            raise DlibFormatError(f"con_4: filter shape {f_shape} / bias {b_shape} vs {nf} {nr}x{nc} filters")
        filters, biases = _split(params, f_shape, (nf,))
        settings = {"filters": nf, "rows": nr, "cols": nc, "stride_y": sy, "stride_x": sx,
                    "pad_y": py, "pad_x": px}
        return DlibLayer(tag, settings, {"filters": filters, "biases": biases})
    if tag == "affine_":
        params = r.tensor()
        g_shape, b_shape = r.alias(), r.alias()
        mode = r.integer()
        channels = int(np.prod(g_shape))
        if int(np.prod(b_shape)) != channels:
            raise DlibFormatError(f"affine_: gamma {g_shape} and beta {b_shape} differ")
        gamma, beta = _split(params, (channels,), (channels,))
        return DlibLayer(tag, {"mode": mode, "channels": channels}, {"gamma": gamma, "beta": beta})
    if tag in ("relu_", "add_prev_"):
        return DlibLayer(tag)
    if tag in ("avg_pool_2", "max_pool_2"):
        nr, nc, sy, sx, py, px = (r.integer() for _ in range(6))
        return DlibLayer(tag, {"rows": nr, "cols": nc, "stride_y": sy, "stride_x": sx,
                               "pad_y": py, "pad_x": px})
    if tag == "fc_2":
        outputs, inputs = r.integer(), r.integer()
        params = r.tensor()
        w_shape, b_shape = r.alias(), r.alias()
        bias_mode = r.integer()
        for _ in range(4):
            r.floating()
        n_w = int(np.prod(w_shape))
        if n_w != inputs * outputs:
            raise DlibFormatError(f"fc_2: weights {w_shape} do not hold {inputs}x{outputs}")
        n_b = params.size - n_w
        weights = _split(params.reshape(-1)[:n_w], (inputs, outputs))[0]
        out: dict[str, np.ndarray] = {"weights": weights}
        if n_b:
            out["biases"] = params.reshape(-1)[n_w:].copy()
        return DlibLayer(tag, {"outputs": outputs, "inputs": inputs, "bias_mode": bias_mode}, out)
    raise DlibFormatError(f"unknown dlib layer {tag!r} (this reader knows the face ResNet's layers)")


def parse_dlib_network(data: bytes) -> DlibNetwork:
    """Parse a serialized dlib DNN (see the module docstring for the layout).

    Raises:
        DlibFormatError: truncated bytes, an unknown layer, or inconsistent shapes.
    """
    r = _Reader(data)
    if r.integer() != 1:
        raise DlibFormatError("not a dlib network with a loss layer (version 1 expected first)")
    loss_tag = r.string()
    if loss_tag != "loss_metric_2":
        raise DlibFormatError(f"loss layer {loss_tag!r}: this reader knows loss_metric_2")
    loss = DlibLayer(loss_tag, {"margin": r.floating(), "distance_threshold": r.floating()})
    # wrapper versions, output inwards, up to the input layer's name
    input_tag = "input_rgb_image_sized"
    for _ in range(100_000):
        at = r.pos
        value = r.integer()
        if value == len(input_tag) and bytes(r.data[r.pos : r.pos + value]) == input_tag.encode():
            r.pos = at
            break
        if value not in (1, 2, 3):
            raise DlibFormatError(f"unexpected wrapper version {value} at offset {at}")
    else:
        raise DlibFormatError("no input layer found")
    layers = [_read_details(r, r.string())]
    first = True
    while not r.at_end():
        tag = r.string()
        layers.append(_read_details(r, tag))
        for _ in range(3):
            r.boolean()
        for _ in range(3):
            r.tensor()
        if first:
            r.integer()  # the innermost wrapper's sample-expansion factor
            first = False
    return DlibNetwork(loss=loss, layers=tuple(layers))


def read_dlib_network(path: str | os.PathLike[str]) -> DlibNetwork:
    """Parse a ``.dat`` file (raises ModelError when missing, DlibFormatError when malformed)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ModelError(f"{path}: cannot read the dlib model ({err.strerror or err})") from None
    try:
        return parse_dlib_network(data)
    except DlibFormatError as err:
        raise DlibFormatError(f"{path}: {err}") from None
