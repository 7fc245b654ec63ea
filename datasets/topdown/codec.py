"""Heatmap codec: keypoints <-> Gaussian heatmaps, the single place coordinates change scale; plus the crop's
normalisation and flip-test unflipping, the other two conventions a model's input and output share with it.

Encode and decode live together (MMPose's codec idea) so their conventions cannot drift apart. The encoder has two
back ends with one formula (`_gaussians`): numpy for the CPU pipeline (one sample, `HeatmapCodec.encode`) and torch
for the device pipeline (a batch, `HeatmapCodec.encode_torch`, datasets/topdown/gpu.py); likewise `normalise` (one
uint8 crop) and `normalise_batch` (a device batch) share IMAGENET_MEAN / IMAGENET_STD.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import torch

DECODINGS = ("dark", "shift")  # the TrialConfig `data.decode` values

# ImageNet statistics in 0..255 grey levels (the pretrained backbones' input convention), RGB order.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255


@dataclass(frozen=True, init=False)
class HeatmapCodec:
    """Keypoints in input pixels <-> (K, h, w) Gaussian heatmaps at 1/`stride` of the input (`input_hw` is
    (height, width)); `sigma` in heatmap cells. `decode` picks the sub-pixel refinement: "dark" (DARK, Zhang et al.
    2020) or "shift" (the quarter-cell shift); the same values as TrialConfig `data.decode`. ValueError otherwise.
    The choice is kept as `decoding` (`decode` is the method)."""

    input_hw: tuple[int, int]
    sigma: float = 2.0
    stride: int = 4
    decoding: str = "dark"

    def __init__(self, input_hw: tuple[int, int], sigma: float = 2.0, stride: int = 4, decode: str = "dark"):
        if decode not in DECODINGS:
            raise ValueError(f"unknown heatmap refinement {decode!r}; choose 'shift' or 'dark'")
        for name, value in (("input_hw", tuple(input_hw)), ("sigma", sigma), ("stride", stride),
                            ("decoding", decode)):
            object.__setattr__(self, name, value)

    @property
    def heatmap_hw(self) -> tuple[int, int]:
        return self.input_hw[0] // self.stride, self.input_hw[1] // self.stride

    def encode(self, keypoints: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """keypoints (K, 2) in input pixels, weights (K,) -> heatmaps (K, h, w) float32, target weights (K,).

        A joint whose Gaussian centre falls outside the heatmap gets weight 0.
        """
        gy, gx, target_weight = _gaussians(np, keypoints, weights, self.heatmap_hw, self.stride, self.sigma,
                                           dtype=np.float32)
        # Separable: one (K, h, 1) x (K, 1, w) float32 outer product, no (K, h, w) float64 intermediate.
        heatmaps = np.multiply(gy.astype(np.float32)[:, :, None], gx.astype(np.float32)[:, None, :])
        return heatmaps, target_weight.astype(np.float32)

    def encode_torch(self, keypoints: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`encode` for a batch on any device: keypoints (B, K, 2) in input pixels, weights (B, K) -> heatmaps
        (B, K, h, w) float32, target weights (B, K) float32 on the keypoints' device. The same arithmetic as the
        numpy back end (float64 Gaussians around the unrounded keypoint / stride, their float32 outer product), so
        the two agree to float32 rounding (tests/datasets/test_gpu_augment.py)."""
        keypoints = keypoints.to(torch.float64)
        gy, gx, target_weight = _gaussians(torch, keypoints, weights.to(keypoints.device), self.heatmap_hw,
                                           self.stride, self.sigma, dtype=torch.float64, device=keypoints.device)
        heatmaps = gy.float()[..., :, None] * gx.float()[..., None, :]
        return heatmaps, target_weight.float()

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
        if self.decoding == "dark":
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
        """DARK as its reference implementations compute it (MMPose's `refine_keypoints_dark` with `gaussian_blur`,
        DarkPose's `taylor` with `gaussian_blur`): blur with a zero border, log, and one Newton step from the
        argmax, taken only where the 5x5 stencil lies inside the map (1 < x < w - 2, 1 < y < h - 2); nearer the
        edge the argmax stays. tests/datasets/test_dark_decoding.py compares it band by band of distance to the edge."""
        n, k, h, w = heatmaps.shape
        flat = heatmaps.reshape(n, k, -1)
        scores, idx = flat.max(dim=-1)
        xi = (idx % w).reshape(-1)
        yi = torch.div(idx, w, rounding_mode="floor").reshape(-1)
        radius = dark_blur_radius(self.sigma)
        logmap = torch.log(_modulate(heatmaps.float(), radius).clamp(min=1e-10))
        # Padded only so that the stencil can be read at every argmax; the step is taken inside alone.
        padded = torch.nn.functional.pad(logmap.reshape(n * k, h, w), (2, 2, 2, 2))
        inside = (xi > 1) & (xi < w - 2) & (yi > 1) & (yi < h - 2)
        rows = torch.arange(n * k, device=heatmaps.device)
        px, py = xi + 2, yi + 2

        def at(dy: int, dx: int) -> torch.Tensor:
            return padded[rows, py + dy, px + dx]

        center = at(0, 0)
        dx = 0.5 * (at(0, 1) - at(0, -1))
        dy = 0.5 * (at(1, 0) - at(-1, 0))
        dxx = 0.25 * (at(0, 2) - 2 * center + at(0, -2))
        dyy = 0.25 * (at(2, 0) - 2 * center + at(-2, 0))
        dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
        det = dxx * dyy - dxy**2
        ok = inside & (det != 0)
        safe = torch.where(ok, det, torch.ones_like(det))
        zero = torch.zeros_like(det)
        # The references take the step whatever its length. Beyond the blur's radius the smoothed map holds nothing
        # of the argmax's neighbourhood, so longer steps (noise: a near-singular Hessian) are clipped to it; shorter
        # ones, every step on a clean map, are the references' own.
        off_x = torch.where(ok, -(dyy * dx - dxy * dy) / safe, zero).clamp(-radius, radius)
        off_y = torch.where(ok, -(dxx * dy - dxy * dx) / safe, zero).clamp(-radius, radius)
        coords = torch.stack([xi.float() + off_x, yi.float() + off_y], dim=-1).reshape(n, k, 2) * self.stride
        return coords, scores


def dark_blur_radius(sigma: float) -> int:
    """The half-width of DARK's modulation kernel: the references' 6 sigma - 1 taps (11 for sigma 2, 17 for 3)."""
    return max(1, int(round(3 * sigma)) - 1)


def _modulate(heatmaps: torch.Tensor, radius: int) -> torch.Tensor:
    """DARK's distribution modulation: each map Gaussian-blurred with a zero border (OpenCV's kernel of
    2 radius + 1 taps, its sigma derived from the size, as the references' cv2.GaussianBlur(.., (k, k), 0)), then
    rescaled to its original maximum."""
    h, w = heatmaps.shape[-2:]
    kernel = torch.from_numpy(cv2.getGaussianKernel(2 * radius + 1, 0).ravel()).to(heatmaps.device, heatmaps.dtype)
    # The separable blur as two banded matrix products (taps beyond the border dropped: the zero border): the same
    # sums as a zero-padded convolution, 40x faster on one CPU core than conv2d's single-channel path.
    blurred = _band(h, kernel, radius) @ heatmaps @ _band(w, kernel, radius)
    original_max = heatmaps.amax(dim=(2, 3), keepdim=True)
    blurred_max = blurred.amax(dim=(2, 3), keepdim=True).clamp(min=1e-10)
    return blurred * original_max / blurred_max


def _gaussians(xp, keypoints, weights, heatmap_hw: tuple[int, int], stride: int, sigma: float, **arange):
    """The encoder's one formula, for numpy or torch (`xp`): keypoints (..., K, 2) in input pixels -> the separable
    Gaussians gy (..., K, h) and gx (..., K, w) around keypoint / stride, and the target weight (..., K) bool:
    weight > 0 and the centre on the map. A zero-weight joint's gy is zero, so its map is zero."""
    h, w = heatmap_hw
    centers = keypoints / stride
    cx, cy = centers[..., 0:1], centers[..., 1:2]
    inside = (cx[..., 0] >= 0) & (cx[..., 0] <= w - 1) & (cy[..., 0] >= 0) & (cy[..., 0] <= h - 1)
    target_weight = (weights > 0) & inside
    gx = xp.exp(-((xp.arange(w, **arange) - cx) ** 2) / (2 * sigma**2))
    gy = xp.exp(-((xp.arange(h, **arange) - cy) ** 2) / (2 * sigma**2)) * target_weight[..., None]
    return gy, gx, target_weight


def _band(n: int, kernel: torch.Tensor, radius: int) -> torch.Tensor:
    """(n, n) matrix M with M[i, j] = kernel[j - i + radius] where |j - i| <= radius (symmetric: the kernel is)."""
    offset = torch.arange(n, device=kernel.device)[None, :] - torch.arange(n, device=kernel.device)[:, None]
    return torch.where(offset.abs() <= radius, kernel[(offset + radius).clamp(0, 2 * radius)], kernel.new_zeros(()))


def unflip_heatmaps(heatmaps: torch.Tensor, flip_index: list[int], stride: int) -> torch.Tensor:
    """Heatmaps (N, K, h, w) predicted on a mirrored crop, mapped back to the unmirrored crop (flip test).

    The mirror sends input pixel x to W - 1 - x; with heatmap cell j at input pixel stride * j, reversing the
    columns lands a peak (stride - 1) / stride of a cell to the left of where it belongs, so the maps are shifted
    right by that much with linear interpolation (HRNet rounds this shift to a whole cell). `flip_index` is the
    skeleton's left/right permutation.
    """
    maps = heatmaps.flip(-1)[:, flip_index]
    shift = (stride - 1) / stride
    left = torch.cat([maps[..., :1], maps[..., :-1]], dim=-1)  # value one cell to the left (edge replicated)
    return (1 - shift) * maps + shift * left


_CPU = torch.device("cpu")


@lru_cache(maxsize=8)
def _mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """IMAGENET_MEAN and IMAGENET_STD as (3, 1, 1) float32 tensors on `device` (broadcast over a batch too)."""
    return (torch.from_numpy(IMAGENET_MEAN).view(3, 1, 1).to(device),
            torch.from_numpy(IMAGENET_STD).view(3, 1, 1).to(device))


def normalise(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB crop -> contiguous (3, H, W) float32 (x - mean) / std: the same float32 values as
    numpy's (image - mean) / std, with one uint8 transpose and two in-place passes instead of four float
    temporaries."""
    mean, std = _mean_std(_CPU)
    chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
    return chw.float().sub_(mean).div_(std)


def normalise_batch(crops: torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """(B, 3, H, W) float crops in grey levels -> (crop - mean) / std on their device, the same float32
    arithmetic as `normalise`, optionally in NHWC memory."""
    mean, std = _mean_std(crops.device)
    out = (crops - mean) / std
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out
