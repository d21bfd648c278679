"""The reader of dlib's serialization, on small hand-built byte strings (no dlib needed)."""

from __future__ import annotations

import numpy as np
import pytest

from faceapp.nn.dlib_format import DlibFormatError, _Reader, parse_dlib_network


# ------------------------------------------------------------------ a tiny writer for the tests
def enc_int(v: int) -> bytes:
    mag = abs(v)
    body = mag.to_bytes((mag.bit_length() + 7) // 8 or 1, "little")
    return bytes([len(body) | (0x80 if v < 0 else 0)]) + body


def enc_str(s: str) -> bytes:
    return enc_int(len(s)) + s.encode()


def enc_float(m: int, e: int) -> bytes:
    return enc_int(m) + enc_int(e)


def enc_tensor(a: np.ndarray) -> bytes:
    shape = ([*list(a.shape), 1, 1, 1, 1])[:4]
    return enc_int(2) + b"".join(enc_int(s) for s in shape) + a.astype("<f4").tobytes()


def enc_alias(shape: tuple[int, int, int, int]) -> bytes:
    return enc_int(1) + b"".join(enc_int(s) for s in shape)




def trailer() -> bytes:
    empty = enc_int(2) + enc_int(0) * 4
    return b"110" + empty * 3


def tiny_network(filters: np.ndarray, biases: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                 fc: np.ndarray) -> bytes:
    """loss -> fc -> relu -> affine -> con -> input, serialized as dlib does."""
    out = enc_int(1) + enc_str("loss_metric_2") + enc_float(10737418, -28) + enc_float(10066330, -24)
    out += enc_int(2) * 4 + enc_int(3)  # wrapper versions, output inwards
    out += enc_str("input_rgb_image_sized") + enc_float(16093282, -17) * 3 + enc_int(150) + enc_int(150)
    nf, nin, kh, kw = filters.shape
    out += enc_str("con_4") + enc_tensor(np.concatenate([filters.ravel(), biases]))
    out += b"".join(enc_int(v) for v in (nf, kh, kw, 2, 2, 0, 0))
    out += enc_alias((nf, nin, kh, kw)) + enc_alias((1, nf, 1, 1)) + enc_float(16, -4) * 3 + enc_float(0, 11)
    out += trailer() + enc_int(1)  # innermost wrapper: + sample expansion factor
    out += enc_str("affine_") + enc_tensor(np.concatenate([gamma, beta]))
    out += enc_alias((1, nf, 1, 1)) * 2 + enc_int(0) + trailer()
    out += enc_str("relu_") + trailer()
    n_in, n_out = fc.shape
    out += enc_str("fc_2") + enc_int(n_out) + enc_int(n_in) + enc_tensor(fc.reshape(n_in, n_out, 1, 1))
    out += enc_alias((n_in, n_out, 1, 1)) + enc_alias((0, 0, 0, 0)) + enc_int(1)
    out += enc_float(16, -4) * 3 + enc_float(0, 11) + trailer()
    return out


# ------------------------------------------------------------------ primitives
@pytest.mark.parametrize("value", [0, 1, 2, 127, 128, 255, 256, 4736, 70000, 2**40 + 3, -1, -28, -70000])
def test_integer_round_trip(value: int) -> None:
    r = _Reader(enc_int(value) + b"\xff")
    assert r.integer() == value and r.pos == len(enc_int(value))


def test_integer_bytes_are_little_endian_with_sign_bit() -> None:
    assert _Reader(b"\x02\x80\x12").integer() == 0x1280
    assert _Reader(b"\x81\x1c").integer() == -28
    assert _Reader(b"\x00").integer() == 0


@pytest.mark.parametrize(("m", "e"), [(10737418, -28), (10066330, -24), (16, -4), (0, 11), (-3, 2)])
def test_float_is_mantissa_times_power_of_two(m: int, e: int) -> None:
    got = _Reader(enc_float(m, e)).floating()
    assert got == m * 2.0**e


def test_tensor_and_string() -> None:
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2) - 7.5
    r = _Reader(enc_str("con_4") + enc_tensor(a) + b"1")
    assert r.string() == "con_4"
    t = r.tensor()
    assert t.dtype == np.float32 and t.shape == (2, 3, 2, 2)
    np.testing.assert_array_equal(t, a)
    assert r.boolean() is True and r.at_end()


@pytest.mark.parametrize(
    "data",
    [b"", b"\x02\x01", enc_int(2) + enc_int(1) * 3 + enc_int(4) + b"\x00" * 15, b"\x7f"],
    ids=["empty", "short-int", "short-tensor-data", "bad-control-byte"],
)
def test_truncated_or_malformed_bytes_raise(data: bytes) -> None:
    r = _Reader(data)
    with pytest.raises(DlibFormatError):
        r.tensor()


def test_bool_must_be_ascii_digit() -> None:
    with pytest.raises(DlibFormatError, match="bool"):
        _Reader(b"\x01").boolean()


# ------------------------------------------------------------------ a whole (tiny) network
def _tiny_arrays() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    filters = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    biases = rng.standard_normal(4).astype(np.float32)
    gamma = rng.standard_normal(4).astype(np.float32)
    beta = rng.standard_normal(4).astype(np.float32)
    fc = rng.standard_normal((4, 5)).astype(np.float32)
    return filters, biases, gamma, beta, fc


def test_parse_tiny_network() -> None:
    filters, biases, gamma, beta, fc = _tiny_arrays()
    net = parse_dlib_network(tiny_network(filters, biases, gamma, beta, fc))
    assert net.loss.settings["margin"] == pytest.approx(0.04, abs=1e-8)
    assert net.loss.settings["distance_threshold"] == pytest.approx(0.6, abs=1e-7)
    assert net.tags() == ["input_rgb_image_sized", "con_4", "affine_", "relu_", "fc_2"]
    inp = net.layers[0].settings
    assert inp["rows"] == inp["cols"] == 150 and inp["mean_r"] == pytest.approx(122.782, abs=1e-4)
    con = net.layers[1]
    assert con.settings == {"filters": 4, "rows": 3, "cols": 3, "stride_y": 2, "stride_x": 2,
                            "pad_y": 0, "pad_x": 0}
    np.testing.assert_array_equal(con.params["filters"], filters)  # (out, in, kh, kw) order
    np.testing.assert_array_equal(con.params["biases"], biases)
    np.testing.assert_array_equal(net.layers[2].params["gamma"], gamma)  # scale, then shift
    np.testing.assert_array_equal(net.layers[2].params["beta"], beta)
    np.testing.assert_array_equal(net.layers[4].params["weights"], fc)  # stored inputs x outputs
    assert "biases" not in net.layers[4].params


def test_cut_anywhere_is_a_clear_error() -> None:
    data = tiny_network(*_tiny_arrays())
    for cut in (1, 20, len(data) // 2, len(data) - 1):
        with pytest.raises(DlibFormatError):
            parse_dlib_network(data[:cut])


def test_unknown_layer_and_foreign_loss_are_refused() -> None:
    data = tiny_network(*_tiny_arrays())
    with pytest.raises(DlibFormatError, match="unknown dlib layer"):
        parse_dlib_network(data.replace(enc_str("relu_"), enc_str("prelu")))
    with pytest.raises(DlibFormatError, match="loss"):
        parse_dlib_network(data.replace(enc_str("loss_metric_2"), enc_str("loss_mmod_12")))
