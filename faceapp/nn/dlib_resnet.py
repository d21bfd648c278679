"""dlib's face recognition ResNet (``dnn_face_recognition_ex``'s ``anet_type``) in plain PyTorch.

Input (N, 3, 150, 150) float32 = (RGB pixel - per-channel mean) / 256; output (N, 128) float32,
dlib's face descriptor (not unit length; norms are about 1.3-1.6).

Layout: conv 7x7/32 stride 2 -> affine -> ReLU -> max-pool 3x3/2; residual stages of
32 (3 blocks), 64 (1 down + 3), 128 (1 down + 2), 256 (1 down + 2), 256 (1 down); global
average pool; fully connected 256 -> 128 without bias. A block is conv3x3 -> affine -> ReLU ->
conv3x3 -> affine, added to its skip, then ReLU; a "down" block has stride 2 in its first
conv and a 2x2/2 average pool on the skip. Every stride-2 conv and pool has padding 0, every
stride-1 3x3 conv padding 1. "affine" is dlib's per-channel scale and shift (batch norm
folded). When the two inputs of an add differ in shape, the smaller is zero-padded *at the
end* (channels, rows and columns), as dlib's ``add_prev`` does: in the first 256-channel
down block the conv path is 3x3 and the pooled skip 4x4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (channels, blocks, first block is a "down" block), input side first
STAGES: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False),
    (64, 4, True),
    (128, 3, True),
    (256, 3, True),
    (256, 1, True),
)
INPUT_SIZE = 150
EMBEDDING_DIM = 128
# dlib's input_rgb_image_sized<150> means, R, G, B (the .dat records them too)
PIXEL_MEAN = (122.782, 117.001, 104.298)
PIXEL_SCALE = 256.0


class Affine(nn.Module):
    """Per-channel scale and shift: (N, C, H, W) -> gamma[c] * x + beta[c]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: (N, C1, H1, W1) + (N, C2, H2, W2) -> (N, max C, max H, max W),
    each input zero-padded at the end of every dimension it is short in."""
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(x: torch.Tensor) -> torch.Tensor:
        dc, dh, dw = c - x.shape[1], h - x.shape[2], w - x.shape[3]
        return F.pad(x, (0, dw, 0, dh, 0, dc)) if dc or dh or dw else x

    return pad(a) + pad(b)


class DlibBlock(nn.Module):
    """Residual block: (N, C_in, H, W) -> (N, C_out, H', W') (H' = H, or the down-sampled size)."""

    def __init__(self, in_channels: int, out_channels: int, down: bool) -> None:
        super().__init__()
        stride = 2 if down else 1
        self.down = down
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=0 if down else 1)
        self.affine1 = Affine(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        self.affine2 = Affine(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_zero_padded(y, skip))


class DlibResNet(nn.Module):
    """The backbone + fc of dlib's face descriptor network: (N, 3, 150, 150) -> (N, 128).

    The input must already be normalised ((pixel - PIXEL_MEAN) / 256, RGB order).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.affine1 = Affine(32)
        blocks: list[nn.Module] = []
        in_ch = 32
        for channels, n_blocks, first_down in STAGES:
            for i in range(n_blocks):
                blocks.append(DlibBlock(in_ch, channels, down=first_down and i == 0))
                in_ch = channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(in_ch, EMBEDDING_DIM, bias=False)
        self.out_channels = EMBEDDING_DIM

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, 150, 150) -> (N, 32, 35, 35): the stem."""
        return F.max_pool2d(F.relu(self.affine1(self.conv1(x))), 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.blocks(self.features(x))
        return self.fc(z.mean(dim=(2, 3)))


def convolution_layers(net: DlibResNet) -> list[tuple[nn.Conv2d, Affine]]:
    """(conv, affine) pairs in dlib's file order (input outwards): the stem, then per block
    conv1/affine1, conv2/affine2."""
    pairs: list[tuple[nn.Conv2d, Affine]] = [(net.conv1, net.affine1)]
    for block in net.blocks:
        if not isinstance(block, DlibBlock):
            raise TypeError(f"unexpected block {type(block).__name__}")
        pairs += [(block.conv1, block.affine1), (block.conv2, block.affine2)]
    return pairs
