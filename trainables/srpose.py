"""SRPose (Wang, Liu, Tang and Wu, "Lightweight Super-Resolution Head for Human Pose Estimation", ACM MM 2023),
written by hand from the paper and the authors' configuration (haonanwang0522/SRPose,
`configs/top_down/srpose/coco/hrnet_w32_srpose_coco_256x192.py` and its TopDownSRPoseHead).

HRNet-W32 with all four stage-4 branches kept (multi-scale output: 32, 64, 128, 256 channels at 1/4 .. 1/32), then a
coarse-to-fine head over them, lowest resolution first:

- stage 0 (1/32): a 1x1 "low-resolution" heatmap head (with ReLU), whose heatmaps are fed back into the features;
- stages 1..3 (1/16, 1/8, 1/4): the previous stage's features refined (depthwise 3x3 + 1x1, BN, ReLU), upsampled to
  this branch's size, concatenated with the branch (1x1, BN, ReLU), fused (1x1) and passed through two ConvNeXt
  blocks;
- every stage's features go through a super-resolution head: a 1x1 keypoint encoder (E channels per joint, ReLU), a
  per-joint (grouped) convolution to r^2 channels per joint and a pixel shuffle by r. (E, r, kernel) per stage:
  (16, 8, 3), (8, 4, 5), (4, 2, 7), (4, 4, 9) -> heatmaps at 1/4, 1/4, 1/4 and 1/1.

Training supervises all five heatmaps (the 1/32 one at weight 1e-4, `stage_weights`), each against the target at
its own resolution; inference computes only the last SR head and reads its full-resolution heatmaps (output stride
1: `OUTPUT_STRIDE`, which the trial's codec takes).
"""
from __future__ import annotations

import torch
from torch import nn

OUTPUT_STRIDE = 1
EMBEDDINGS = (16, 8, 4, 4)  # per-joint embedding channels of each stage's SR head
UPSAMPLE = (8, 4, 2, 4)  # each SR head's pixel-shuffle factor
KERNELS = (3, 5, 7, 9)  # each SR head's per-joint convolution


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7, BN, pointwise MLP (4x, GELU) as linear layers over channels, residual: (N, C, h, w) kept."""

    def __init__(self, channels: int):
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.BatchNorm2d(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        return x + self.mlp(y).permute(0, 3, 1, 2)


class SRHead(nn.Module):
    """Keypoint encoder + per-joint sub-pixel convolution: (N, c, h, w) -> (N, K, r h, r w)."""

    def __init__(self, channels: int, num_keypoints: int, embedding: int, factor: int, kernel: int):
        super().__init__()
        self.in_channels = channels
        self.encoder = nn.Sequential(nn.Conv2d(channels, embedding * num_keypoints, 1), nn.ReLU(inplace=True))
        self.converge = nn.Conv2d(embedding * num_keypoints, factor**2 * num_keypoints, kernel, padding=kernel // 2,
                                  groups=num_keypoints)
        self.shuffle = nn.PixelShuffle(factor)
        nn.init.normal_(self.converge.weight, std=0.001)  # the authors' init: early heatmaps near zero
        nn.init.zeros_(self.converge.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.converge(self.encoder(x)))


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SRPose(nn.Module):
    """HRNet-W32 + SRPose head: (N, 3, H, W) -> (N, K, H, W) heatmaps; with `all_outputs=True` the five supervised
    heatmaps (N, K, H/32, W/32), three at (N, K, H/4, W/4) and the final (N, K, H, W)."""

    multi_output = True
    stage_weights = (1e-4, 1.0, 1.0, 1.0, 1.0)
    training_only = ("sr_heads",)  # the intermediate SR heads: supervision only (the authors' table omits them)

    def __init__(self, num_keypoints: int, width: int = 32, pretrained: bool = False, **_):
        super().__init__()
        import timm

        self.backbone = timm.create_model(f"hrnet_w{width}", pretrained=pretrained, features_only=True,
                                          feature_location="", out_indices=(1, 2, 3, 4))
        channels = [width * 2**i for i in range(4)][::-1]  # lowest resolution first: 256, 128, 64, 32
        self.lr_head = nn.Sequential(nn.Conv2d(channels[0], num_keypoints, 1), nn.ReLU(inplace=True))
        self.lr_fuse = nn.Sequential(nn.Conv2d(num_keypoints, channels[0], 1), nn.ReLU(inplace=True))
        self.lateral = nn.ModuleList(conv_bn_relu(c, c) for c in channels)
        self.refine = nn.ModuleList(nn.Sequential(
            nn.Conv2d(a, a, 3, padding=1, groups=a), conv_bn_relu(a, b)) for a, b in zip(channels, channels[1:]))
        self.fuse = nn.ModuleList(nn.Conv2d(2 * c, c, 1) for c in channels[1:])
        self.blocks = nn.ModuleList(nn.Sequential(ConvNeXtBlock(c), ConvNeXtBlock(c)) for c in channels[1:])
        sr_heads = [SRHead(c, num_keypoints, e, r, k) for c, e, r, k in zip(channels, EMBEDDINGS, UPSAMPLE, KERNELS)]
        self.sr_heads = nn.ModuleList(sr_heads[:-1])
        self.head = sr_heads[-1]  # the full-resolution head inference reads (and OASNet's `head`)

    def forward_stages(self, x: torch.Tensor, early: bool = True) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(the intermediate heatmaps, lowest resolution first, when `early`; the 1/4 features the final head
        reads)."""
        branches = self.backbone(x)[::-1]  # 1/32, 1/16, 1/8, 1/4
        heatmaps = []
        coarse = self.lr_head(branches[0])
        features = self.lateral[0](branches[0]) + self.lr_fuse(coarse)
        if early:
            heatmaps += [coarse, self.sr_heads[0](features)]
        for i in range(1, 4):
            up = nn.functional.interpolate(self.refine[i - 1](features), size=branches[i].shape[-2:], mode="nearest")
            features = self.blocks[i - 1](self.fuse[i - 1](torch.cat([up, self.lateral[i](branches[i])], 1)))
            if early and i < 3:
                heatmaps.append(self.sr_heads[i](features))
        return heatmaps, features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x, early=False)[1]

    def forward(self, x: torch.Tensor, all_outputs: bool = False):
        early, features = self.forward_stages(x, early=all_outputs)
        final = self.head(features)
        return [*early, final] if all_outputs else final
