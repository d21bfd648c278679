"""The Siamese encoder: one backbone with shared weights -> linear projection -> L2-normalised embedding.

"Siamese" here means every input (anchor, positive, negative, probe, template) goes
through this single module; there is exactly one set of weights.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock

from faceapp.errors import ModelError, WeightsUnavailable

log = logging.getLogger(__name__)

BACKBONES = ("resnet", "inception_resnet_v1", "dlib_resnet")


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of an :class:`Encoder` (stored in every checkpoint).

    ``backbone``: "resnet" (compact ResNet built from torchvision's ``BasicBlock``; trains
    on a CPU) or "inception_resnet_v1" (facenet-pytorch's network, 160x160 input).
    ``width``: channels of the first ResNet stage (doubled at each of the 4 stages).
    ``layers``: BasicBlocks per stage. ``input_size``: side of the aligned square crop.
    ``flip_tta``: at inference, embed each crop and its mirror and average (then normalise).
    "dlib_resnet" is dlib's face recognition ResNet (:mod:`faceapp.nn.dlib_resnet`, 150x150
    input, 128-D; ``width``/``layers``/``dropout`` do not apply).
    Normalisation: ``(pixel / scale - mean) / std`` per channel (``mean``/``std`` a number
    or one per R, G, B channel); dlib's is ``scale=1, mean=(122.782, 117.001, 104.298), std=256``.
    """

    backbone: str = "resnet"
    input_size: int = 112
    embedding_dim: int = 128
    width: int = 32
    layers: tuple[int, int, int, int] = (2, 2, 2, 2)
    dropout: float = 0.0
    flip_tta: bool = False
    mean: float | tuple[float, float, float] = 0.5
    std: float | tuple[float, float, float] = 0.5
    scale: float = 255.0

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ModelError(f"unknown backbone {self.backbone!r} (known: {', '.join(BACKBONES)})")
        if self.backbone == "dlib_resnet":
            if self.input_size != 150 or self.embedding_dim != 128:
                raise ModelError(
                    f"the dlib ResNet takes 150x150 crops and gives 128-D embeddings, got "
                    f"input_size {self.input_size}, embedding_dim {self.embedding_dim}"
                )
        elif self.input_size % 16 != 0 or self.input_size < 32:
            raise ModelError(f"input_size must be a multiple of 16 and >= 32, got {self.input_size}")

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["layers"] = list(self.layers)
        for key in ("mean", "std"):
            if isinstance(d[key], tuple):
                d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> EncoderConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ModelError(f"checkpoint has unknown encoder settings: {sorted(unknown)}")
        kw = dict(d)
        if "layers" in kw:
            kw["layers"] = tuple(kw["layers"])  # type: ignore[arg-type]
        for key in ("mean", "std"):
            if isinstance(kw.get(key), list):
                kw[key] = tuple(float(v) for v in kw[key])  # type: ignore[union-attr]
        return cls(**kw)  # type: ignore[arg-type]


class CompactResNet(nn.Module):
    """ResNet for aligned faces: 3x3 stride-2 stem, 4 stages of torchvision ``BasicBlock``.

    Input (N, 3, S, S) float32 -> output (N, 8*width, S/16, S/16) feature map.
    """

    def __init__(self, width: int, layers: Sequence[int]) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages = []
        in_ch = width
        for i, n_blocks in enumerate(layers):
            out_ch = width * 2**i
            stride = 1 if i == 0 else 2
            blocks: list[nn.Module] = []
            for b in range(n_blocks):
                s = stride if b == 0 else 1
                down = None
                if s != 1 or in_ch != out_ch:
                    down = nn.Sequential(
                        nn.Conv2d(in_ch, out_ch, 1, stride=s, bias=False), nn.BatchNorm2d(out_ch)
                    )
                blocks.append(BasicBlock(in_ch, out_ch, stride=s, downsample=down))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.out_channels = in_ch
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init the last BN of each residual branch
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class Encoder(nn.Module):
    """Shared-weight face encoder.

    ``forward``: (N, 3, S, S) float32 normalised pixels -> (N, D) float32, unit L2 norm.
    ``embed``: (N, S, S, 3) uint8 RGB aligned crops -> (N, D) float32 numpy, eval mode, batched.
    """

    def __init__(self, config: EncoderConfig = EncoderConfig()) -> None:
        super().__init__()
        self.config = config
        if config.backbone == "resnet":
            self.backbone: nn.Module = CompactResNet(config.width, config.layers)
            spatial = config.input_size // 16
            feat = self.backbone.out_channels  # type: ignore[assignment]
            # ArcFace-style output layer: BN -> dropout -> flatten -> FC -> BN (keeps spatial layout)
            self.head = nn.Sequential(
                nn.BatchNorm2d(feat),
                nn.Dropout(config.dropout),
                nn.Flatten(),
                nn.Linear(feat * spatial * spatial, config.embedding_dim),
                nn.BatchNorm1d(config.embedding_dim),
            )
        elif config.backbone == "dlib_resnet":
            from faceapp.nn.dlib_resnet import DlibResNet

            self.backbone = DlibResNet()
            self.head = nn.Identity()
        else:
            from facenet_pytorch import InceptionResnetV1

            self.backbone = InceptionResnetV1(pretrained=None, classify=False)
            self.head = nn.Identity() if config.embedding_dim == 512 else nn.Linear(512, config.embedding_dim)

    @property
    def input_size(self) -> int:
        return self.config.input_size

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.raw(x), dim=1)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) normalised pixels -> (N, D) float32 before L2 normalisation (for the
        dlib ResNet: dlib's own face descriptor)."""
        return self.head(self.backbone(x))

    def preprocess(self, crops: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(N, S, S, 3) uint8 -> (N, 3, S, S) float32 normalised, on the encoder's device."""
        if isinstance(crops, np.ndarray) and not crops.flags.writeable:
            crops = crops.copy()  # torch cannot wrap a read-only array (a view of a frozen crop)
        t = torch.as_tensor(crops)
        if t.ndim != 4 or t.shape[-1] != 3 or t.shape[1] != self.input_size or t.shape[2] != self.input_size:
            raise ModelError(
                f"expected crops of shape (N, {self.input_size}, {self.input_size}, 3), got {tuple(t.shape)}"
            )
        device = next(self.parameters()).device
        x = t.to(device).permute(0, 3, 1, 2).float()  # never in place: crops may be float
        if self.config.scale != 1.0:
            x = x / self.config.scale
        return (x - _per_channel(self.config.mean, x)) / _per_channel(self.config.std, x)

    @torch.inference_mode()
    def embed(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Embeddings of aligned crops.

        Args:
            crops: (N, S, S, 3) uint8 RGB aligned faces (S = ``input_size``).
            batch_size: crops per forward pass.
        Returns:
            (N, D) float32, each row of unit L2 norm. Deterministic (eval mode).
        """
        was_training = self.training
        self.eval()
        try:
            crops = np.asarray(crops)
            if crops.ndim == 3:
                crops = crops[None]
            out = []
            for i in range(0, len(crops), batch_size):
                x = self.preprocess(crops[i : i + batch_size])
                if self.config.flip_tta:  # crops and mirrors in one forward pass
                    n = x.shape[0]
                    z = self(torch.cat([x, torch.flip(x, dims=[3])]))
                    z = F.normalize(z[:n] + z[n:], dim=1)
                else:
                    z = self(x)
                out.append(z.float().cpu().numpy())
            if not out:
                return np.zeros((0, self.embedding_dim), dtype=np.float32)
            return np.concatenate(out).astype(np.float32, copy=False)
        finally:
            self.train(was_training)


def _per_channel(value: float | tuple[float, ...], like: torch.Tensor) -> torch.Tensor | float:
    """A number, or a (1, C, 1, 1) tensor of per-channel values on ``like``'s device."""
    if isinstance(value, tuple):
        return torch.tensor(value, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    return value


def load_pretrained_inception(encoder: Encoder, source: str) -> None:
    """Load facenet-pytorch InceptionResnetV1 weights into ``encoder``'s backbone.

    Args:
        source: "vggface2" / "casia-webface" (facenet-pytorch's own download, needs the
            network or its torch-hub cache) or a path to a local state-dict file.
    Raises:
        WeightsUnavailable: offline and not cached, or the file is missing / unreadable.
    """
    if encoder.config.backbone != "inception_resnet_v1":
        raise ModelError("pretrained weights exist only for the inception_resnet_v1 backbone")
    from pathlib import Path

    path = Path(source)
    if path.exists():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for a bad file
            raise WeightsUnavailable(f"{path}: not a readable weights file ({err})") from None
        if not isinstance(state, dict):
            raise WeightsUnavailable(f"{path}: not a state dict of InceptionResnetV1 weights")
        state = {k: v for k, v in state.items() if not str(k).startswith("logits.")}
        try:
            missing, unexpected = encoder.backbone.load_state_dict(state, strict=False)
        except (RuntimeError, TypeError, ValueError, AttributeError) as err:  # shapes / non-tensors
            raise WeightsUnavailable(f"{path}: not InceptionResnetV1 weights ({err})") from None
        if unexpected or [m for m in missing if not m.startswith("logits")]:
            raise WeightsUnavailable(
                f"{path}: not InceptionResnetV1 weights (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        return
    if source not in ("vggface2", "casia-webface"):
        raise WeightsUnavailable(f"{source}: no such weights file, and not a known pretrained name")
    from facenet_pytorch import InceptionResnetV1

    try:
        net = InceptionResnetV1(pretrained=source, classify=False)
    except Exception as err:  # URLError, HTTPError, socket errors, RuntimeError from torch.hub
        raise WeightsUnavailable(
            f"cannot download the {source} weights of InceptionResnetV1 ({type(err).__name__}: {err}). "
            "This machine is offline: download the file elsewhere and pass its path instead."
        ) from None
    # A pretrained InceptionResnetV1 carries its training classifier (``logits.*``); the backbone
    # built with ``classify=False`` has none.
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("logits.")}
    encoder.backbone.load_state_dict(state)
