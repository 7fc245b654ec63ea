"""Heatmap codec: keypoints <-> Gaussian heatmaps, the single place coordinates change scale.

Encode and decode live together (MMPose's codec idea) so their conventions cannot drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class HeatmapCodec:
    input_hw: tuple[int, int]
    sigma: float = 2.0
    stride: int = 4

    @property
    def heatmap_hw(self) -> tuple[int, int]:
        return self.input_hw[0] // self.stride, self.input_hw[1] // self.stride

    def encode(self, keypoints: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """keypoints (K, 2) in input pixels, weights (K,) -> heatmaps (K, h, w) float32, target weights (K,).

        A joint whose Gaussian centre falls outside the heatmap gets weight 0.
        """
        h, w = self.heatmap_hw
        centers = keypoints / self.stride
        inside = (centers[:, 0] >= 0) & (centers[:, 0] <= w - 1) & (centers[:, 1] >= 0) & (centers[:, 1] <= h - 1)
        target_weight = (weights > 0) & inside
        xs = np.arange(w, dtype=np.float32)
        ys = np.arange(h, dtype=np.float32)
        gx = np.exp(-((xs[None, :] - centers[:, :1]) ** 2) / (2 * self.sigma**2))
        gy = np.exp(-((ys[None, :] - centers[:, 1:2]) ** 2) / (2 * self.sigma**2))
        heatmaps = (gy[:, :, None] * gx[:, None, :]).astype(np.float32)
        heatmaps *= target_weight[:, None, None]
        return heatmaps, target_weight.astype(np.float32)

    def decode(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """heatmaps (N, K, h, w) -> keypoints (N, K, 2) in input pixels, scores (N, K).

        Argmax plus the classic quarter-pixel shift towards the higher neighbour.
        """
        n, k, h, w = heatmaps.shape
        flat = heatmaps.reshape(n, k, -1)
        scores, idx = flat.max(dim=-1)
        x = (idx % w).float()
        y = torch.div(idx, w, rounding_mode="floor").float()
        xi, yi = x.long(), y.long()
        hm = heatmaps.reshape(n * k, h, w)
        rows = torch.arange(n * k)
        xi_f, yi_f = xi.reshape(-1), yi.reshape(-1)
        right = hm[rows, yi_f, (xi_f + 1).clamp(max=w - 1)]
        left = hm[rows, yi_f, (xi_f - 1).clamp(min=0)]
        down = hm[rows, (yi_f + 1).clamp(max=h - 1), xi_f]
        up = hm[rows, (yi_f - 1).clamp(min=0), xi_f]
        interior_x = (xi_f > 0) & (xi_f < w - 1)
        interior_y = (yi_f > 0) & (yi_f < h - 1)
        dx = torch.where(interior_x, torch.sign(right - left), torch.zeros_like(right)) * 0.25
        dy = torch.where(interior_y, torch.sign(down - up), torch.zeros_like(down)) * 0.25
        coords = torch.stack([x + dx.reshape(n, k), y + dy.reshape(n, k)], dim=-1) * self.stride
        return coords, scores
