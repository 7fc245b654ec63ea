"""Stacked Hourglass (Newell, Yang and Deng, "Stacked Hourglass Networks for Human Pose Estimation", ECCV 2016),
written by hand from the paper and the authors' Torch model (umich-vl/pose-hg-train `hg.lua`, the network behind
the published 25.1 M parameters that HRNet's comparison table quotes).

Image (N, 3, H, W) -> a stem at 1/4 resolution (7x7 stride-2 convolution, residual, max-pool, two residuals:
64 -> 128 -> 256 channels), then `stacks` hourglasses of depth 4 at 256 channels. Every stack ends in its own 1x1
heatmap head; all but the last feed their features and heatmaps back into the next stack through 1x1 convolutions
("intermediate supervision": the loss applies to every stack's heatmaps, evaluation reads the last). Residual is
the pre-activation bottleneck (BN-ReLU-conv 1x1 to half the channels, 3x3, 1x1 back; a 1x1 skip where the width
changes). Upsampling is nearest-neighbour to the skip branch's size, so any input that is a multiple of 32 works
(the paper's input is 256x256; an odd level is floored by the max-pool and restored by the upsampling).
"""
from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    """Pre-activation bottleneck residual of hg.lua: (N, c_in, h, w) -> (N, c_out, h, w)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        mid = c_out // 2
        self.branch = nn.Sequential(
            nn.BatchNorm2d(c_in), nn.ReLU(inplace=True), nn.Conv2d(c_in, mid, 1),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, padding=1),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, c_out, 1))
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branch(x) + self.skip(x)


class Hourglass(nn.Module):
    """One hourglass of `depth` levels at `channels`: per level a skip residual at this resolution and, after a 2x2
    max-pool, a residual, the next level (a residual at the bottom), a residual, upsampled and added to the skip."""

    def __init__(self, depth: int, channels: int):
        super().__init__()
        self.skip = Residual(channels, channels)
        self.down = Residual(channels, channels)
        self.inner = Hourglass(depth - 1, channels) if depth > 1 else Residual(channels, channels)
        self.up = Residual(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.up(self.inner(self.down(nn.functional.max_pool2d(x, 2))))
        return self.skip(x) + nn.functional.interpolate(low, size=x.shape[-2:], mode="nearest")


class StackedHourglass(nn.Module):
    """`stacks` hourglasses with intermediate supervision; (N, 3, H, W) -> (N, K, H/4, W/4) heatmaps of the last
    stack, or with `all_outputs=True` the list of every stack's heatmaps (first to last, each (N, K, H/4, W/4)).

    `features(x)` (the last stack's 1/4-resolution features, 256 channels) and `head` (its 1x1 heatmap convolution)
    are what OASNet erases and reconstructs (trainables/oasnet.py: the module after the last stack, as in its paper);
    `forward_stages` gives the earlier stacks' heatmaps with them."""

    multi_output = True

    def __init__(self, stacks: int, num_keypoints: int, channels: int = 256, depth: int = 4, **_):
        super().__init__()
        if stacks < 1:
            raise ValueError(f"a stacked hourglass needs >= 1 stack, got {stacks}")
        self.stacks = stacks
        self.stage_weights = (1.0,) * stacks
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            Residual(64, 128), nn.MaxPool2d(2), Residual(128, 128), Residual(128, channels))
        self.hourglasses = nn.ModuleList(Hourglass(depth, channels) for _ in range(stacks))
        self.lins = nn.ModuleList(nn.Sequential(
            Residual(channels, channels), nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True)) for _ in range(stacks))
        heads = [nn.Conv2d(channels, num_keypoints, 1) for _ in range(stacks)]
        self.heads = nn.ModuleList(heads[:-1])  # the earlier stacks' heads; the last is `head`
        self.head = heads[-1]
        self.feature_back = nn.ModuleList(nn.Conv2d(channels, channels, 1) for _ in range(stacks - 1))
        self.heatmap_back = nn.ModuleList(nn.Conv2d(num_keypoints, channels, 1) for _ in range(stacks - 1))

    def forward_stages(self, x: torch.Tensor, early: bool = True) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(the earlier stacks' heatmaps, the last stack's features); `early` is accepted for the SRPose interface
        (every stack's heatmaps feed the next, so they are always computed)."""
        x = self.stem(x)
        heatmaps = []
        for i in range(self.stacks - 1):
            features = self.lins[i](self.hourglasses[i](x))
            heatmaps.append(self.heads[i](features))
            x = x + self.feature_back[i](features) + self.heatmap_back[i](heatmaps[-1])
        return heatmaps, self.lins[-1](self.hourglasses[-1](x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[1]

    def forward(self, x: torch.Tensor, all_outputs: bool = False):
        early, features = self.forward_stages(x)
        final = self.head(features)
        return [*early, final] if all_outputs else final
