"""One checkpoint file per model: encoder weights, heads and every piece of metadata.

Format (a plain dict, loadable with ``torch.load(..., weights_only=True)``)::

    format: "faceapp-checkpoint", format_version: 1,
    encoder_config: EncoderConfig.to_dict(), state_dict: encoder weights,
    heads: {"head_l1": {"mode", "dim", "state_dict"}, ...},
    alignment: AlignmentTemplate.to_dict(), normalisation: {"mean", "std", "scale"},
    training: {...}, metrics: {...}, provenance: {...} (where imported weights come from,
    their licence), model_id: str, created: ISO time, faceapp_version

``alignment`` is the template crops are aligned to for this model: the scaled ArcFace
template for models trained here, dlib's 150-px chip for the imported dlib ResNet.

``model_id`` is the first 16 hex digits of the SHA-256 of the encoder weights (keys sorted,
raw bytes): templates made by different weights are never compared, and a damaged
weight tensor is detected on load.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from faceapp import __version__
from faceapp.errors import ModelError, ModelMismatch
from faceapp.nn.encoder import Encoder, EncoderConfig
from faceapp.nn.heads import HEAD_MODES, BinaryVerificationHead
from faceapp.vision.alignment import AlignmentTemplate

log = logging.getLogger(__name__)

FORMAT = "faceapp-checkpoint"
FORMAT_VERSION = 1


def weights_id(state_dict: dict[str, torch.Tensor]) -> str:
    """16 hex digits of SHA-256 over the tensors (sorted keys, contiguous CPU bytes)."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


@dataclass
class LoadedModel:
    """A model ready for inference (encoder in eval mode) plus its metadata."""

    encoder: Encoder
    model_id: str
    heads: dict[str, BinaryVerificationHead] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def template(self) -> AlignmentTemplate:
        """The checkpoint's alignment template (the scaled ArcFace one when it records none)."""
        recorded = self.meta.get("alignment")
        if isinstance(recorded, dict):
            try:
                template = AlignmentTemplate.from_dict(recorded)
            except ValueError as err:
                raise ModelMismatch(f"checkpoint alignment template: {err}") from None
            if template.size == self.encoder.input_size:
                return template
        return AlignmentTemplate.for_size(self.encoder.input_size)

    @property
    def embedding_dim(self) -> int:
        return self.encoder.embedding_dim


def create_untrained_model(config: EncoderConfig = EncoderConfig(), seed: int = 0) -> LoadedModel:
    """A randomly initialised model (deterministic per seed), for tests and as a training start."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        enc = Encoder(config).eval()
    finally:
        torch.random.set_rng_state(gen_state)
    return LoadedModel(encoder=enc, model_id=weights_id(enc.state_dict()), meta={})


def save_checkpoint(
    path: str | os.PathLike[str],
    encoder: Encoder,
    *,
    heads: dict[str, BinaryVerificationHead] | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    template: AlignmentTemplate | None = None,
    provenance: dict[str, Any] | None = None,
) -> str:
    """Write a checkpoint atomically (temp file + rename). Returns the ``model_id``.

    ``template``: where the landmarks land in this model's crops (default: the ArcFace
    template scaled to the input size); its size must be the encoder's input size.
    """
    path = Path(path)
    state = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    model_id = weights_id(state)
    template = template or AlignmentTemplate.for_size(encoder.input_size)
    if template.size != encoder.input_size:
        raise ModelError(
            f"alignment template size {template.size} != encoder input size {encoder.input_size}"
        )
    blob: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "encoder_config": encoder.config.to_dict(),
        "state_dict": state,
        "heads": {
            name: {
                "mode": h.mode,
                "dim": h.dim,
                "state_dict": {k: v.detach().cpu().clone() for k, v in h.state_dict().items()},
            }
            for name, h in (heads or {}).items()
        },
        "alignment": template.to_dict(),
        "normalisation": {
            k: v for k, v in encoder.config.to_dict().items() if k in ("mean", "std", "scale")
        },
        "provenance": provenance or {},
        "training": training or {},
        "metrics": metrics or {},
        "extra": extra or {},
        "model_id": model_id,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "faceapp_version": __version__,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return model_id


def read_checkpoint_dict(path: str | os.PathLike[str], device: str = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict, validated for format (raises :class:`ModelError`)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    try:
        blob = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # torch/zipfile/pickle raise many types for damaged files
        raise ModelError(f"{path}: not a readable faceapp checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelError(f"{path}: not a faceapp checkpoint")
    version = blob.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelError(
            f"{path}: checkpoint format version {version}, this faceapp reads version {FORMAT_VERSION}"
        )
    return blob


def load_checkpoint(path: str | os.PathLike[str], device: str = "cpu") -> LoadedModel:
    """Load a model for inference.

    Raises:
        ModelError: missing, corrupt, truncated or foreign file.
        ModelMismatch: the weights do not match the architecture or the recorded ``model_id``.
    """
    path = Path(path)
    blob = read_checkpoint_dict(path, device)
    try:
        config = EncoderConfig.from_dict(blob["encoder_config"])
        encoder = Encoder(config)
        encoder.load_state_dict(blob["state_dict"], strict=True)
    except ModelError:
        raise
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise ModelMismatch(f"{path}: weights do not fit the recorded architecture ({err})") from None
    encoder.to(device).eval()
    model_id = weights_id(blob["state_dict"])
    if model_id != blob.get("model_id"):
        raise ModelMismatch(
            f"{path}: weights hash {model_id} differs from the recorded model_id {blob.get('model_id')} "
            "(file damaged or edited)"
        )
    heads: dict[str, BinaryVerificationHead] = {}
    for name, h in blob.get("heads", {}).items():
        if h.get("mode") not in HEAD_MODES or h.get("dim") != config.embedding_dim:
            raise ModelMismatch(
                f"{path}: head {name} does not fit the encoder (mode {h.get('mode')}, dim {h.get('dim')})"
            )
        head = BinaryVerificationHead(config.embedding_dim, h["mode"])
        try:
            head.load_state_dict(h["state_dict"], strict=True)
        except RuntimeError as err:
            raise ModelMismatch(f"{path}: head {name} weights are damaged ({err})") from None
        heads[name] = head.to(device).eval()
    meta = {k: v for k, v in blob.items() if k not in ("state_dict", "heads")}
    return LoadedModel(encoder=encoder, model_id=model_id, heads=heads, meta=meta, path=path)


def add_head(
    path: str | os.PathLike[str], head: BinaryVerificationHead, metrics: dict[str, Any] | None = None
) -> None:
    """Store (or replace) a trained head inside an existing checkpoint, atomically."""
    path = Path(path)
    blob = read_checkpoint_dict(path)
    if head.dim != blob["encoder_config"]["embedding_dim"]:
        raise ModelMismatch(
            f"{path}: head dim {head.dim} != embedding dim {blob['encoder_config']['embedding_dim']}"
        )
    blob.setdefault("heads", {})[head.name] = {
        "mode": head.mode,
        "dim": head.dim,
        "state_dict": {k: v.detach().cpu().clone() for k, v in head.state_dict().items()},
    }
    if metrics:
        blob.setdefault("metrics", {})[head.name] = metrics
    tmp = path.with_name(path.name + ".partial")
    torch.save(blob, tmp)
    os.replace(tmp, path)
