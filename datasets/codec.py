"""Heatmap codec: keypoints <-> Gaussian heatmaps, the single place coordinates change scale.

Encode and decode live together (MMPose's codec idea) so their conventions cannot drift apart.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class HeatmapCodec:
    input_hw: tuple[int, int]
    sigma: float = 2.0
    stride: int = 4
    refine: str = "dark"  # sub-pixel decoding: "shift" (quarter-cell shift) or "dark"

    def __post_init__(self):
        if self.refine not in ("shift", "dark"):
            raise ValueError(f"unknown heatmap refinement {self.refine!r}; choose 'shift' or 'dark'")

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
        gy *= target_weight[:, None]  # a zero-weight joint's map is zero
        # Separable: one (K, h, 1) x (K, 1, w) float32 outer product, no (K, h, w) float64 intermediate.
        heatmaps = np.multiply(gy.astype(np.float32)[:, :, None], gx.astype(np.float32)[:, None, :])
        return heatmaps, target_weight.astype(np.float32)

    def encode_occlusion(self, keypoints: np.ndarray, occluded: np.ndarray) -> np.ndarray:
        """OASNet's occlusion-heatmap target (h, w): the occluded joints' Gaussians summed and clamped to 1."""
        gaussians, _ = self.encode(keypoints, np.asarray(occluded, np.float32))
        return np.minimum(gaussians.sum(axis=0), 1.0).astype(np.float32)

    def decode(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """heatmaps (N, K, h, w) -> keypoints (N, K, 2) in input pixels, scores (N, K).

        "shift": argmax plus the classic quarter-pixel shift towards the higher neighbour.
        "dark": argmax refined by DARK (Zhang et al. 2020): a second-order Taylor step on the
        log of the Gaussian-smoothed heatmap, which recovers sub-pixel maxima of low-resolution heatmaps.
        """
        if self.refine == "dark":
            return self._decode_dark(heatmaps)
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

    def _decode_dark(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, k, h, w = heatmaps.shape
        flat = heatmaps.reshape(n, k, -1)
        scores, idx = flat.max(dim=-1)
        x = (idx % w).float()
        y = torch.div(idx, w, rounding_mode="floor").float()
        logmap = torch.log(_modulate(heatmaps.float(), self.sigma).clamp(min=1e-10))
        # Pad by 2 so the second differences exist at every argmax; replicate keeps borders flat.
        padded = torch.nn.functional.pad(logmap.reshape(n * k, 1, h, w), (2, 2, 2, 2), mode="replicate")[:, 0]
        rows = torch.arange(n * k)
        px, py = x.long().reshape(-1) + 2, y.long().reshape(-1) + 2

        def at(dy: int, dx: int) -> torch.Tensor:
            return padded[rows, py + dy, px + dx]

        center = at(0, 0)
        dx = 0.5 * (at(0, 1) - at(0, -1))
        dy = 0.5 * (at(1, 0) - at(-1, 0))
        dxx = 0.25 * (at(0, 2) - 2 * center + at(0, -2))
        dyy = 0.25 * (at(2, 0) - 2 * center + at(-2, 0))
        dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
        det = dxx * dyy - dxy**2
        ok = det.abs() > 1e-12
        safe = torch.where(ok, det, torch.ones_like(det))
        off_x = torch.where(ok, -(dyy * dx - dxy * dy) / safe, torch.zeros_like(det))
        off_y = torch.where(ok, -(dxx * dy - dxy * dx) / safe, torch.zeros_like(det))
        # A Newton step longer than a cell means the local quadratic model is wrong: keep the argmax there.
        sane = (off_x.abs() <= 1) & (off_y.abs() <= 1)
        off_x, off_y = off_x * sane, off_y * sane
        coords = torch.stack([x + off_x.reshape(n, k), y + off_y.reshape(n, k)], dim=-1) * self.stride
        return coords, scores


def _modulate(heatmaps: torch.Tensor, sigma: float) -> torch.Tensor:
    """DARK's distribution modulation: Gaussian-blur each map, then rescale it to its original maximum."""
    n, k, h, w = heatmaps.shape
    radius = int(math.ceil(3 * sigma))
    coords = torch.arange(-radius, radius + 1, dtype=heatmaps.dtype)
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    maps = heatmaps.reshape(n * k, 1, h, w)
    padded = torch.nn.functional.pad(maps, (radius, radius, radius, radius), mode="replicate")
    blurred = torch.nn.functional.conv2d(padded, kernel.view(1, 1, 1, -1))
    blurred = torch.nn.functional.conv2d(blurred, kernel.view(1, 1, -1, 1)).reshape(n, k, h, w)
    original_max = heatmaps.amax(dim=(2, 3), keepdim=True)
    blurred_max = blurred.amax(dim=(2, 3), keepdim=True).clamp(min=1e-10)
    return blurred * original_max / blurred_max
