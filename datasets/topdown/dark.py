"""DARK decoding (Zhang et al., CVPR 2020, "Distribution-Aware Coordinate Representation for Human Pose
Estimation") for a batch of heatmaps, as its reference implementations compute it: MMPose's
`refine_keypoints_dark` with `gaussian_blur`, DarkPose's `taylor` with `gaussian_blur`. The codec's "dark"
decoding (`HeatmapCodec.decode`) calls `dark_cells`; tests/datasets/test_dark_decoding.py compares it with a
re-statement of the references band by band of distance to the map's edge.

Cost: the step reads the blurred map on the 5x5 window around each argmax only, so only that window is blurred
(`dark_cells`); `dark_cells_full` blurs whole maps, the references' order of work, for the maps where the two
could differ (see `dark_cells`). On one CPU core a batch of 64 x 17 maps of 64 x 48 decodes in ~8 ms instead of
~49 ms (tests/benchmarks/coco_scale.py).
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import torch

# The window a step reads: the argmax and two cells on each side (the Hessian's differences two cells apart).
WINDOW = 5


def dark_blur_radius(sigma: float) -> int:
    """The half-width of DARK's modulation kernel: the references' 6 sigma - 1 taps (11 for sigma 2, 17 for 3)."""
    return max(1, int(round(3 * sigma)) - 1)


def dark_cells(heatmaps: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """heatmaps (N, K, h, w) -> keypoints (N, K, 2) x, y in heatmap cells (float32), scores (N, K) (the maxima).

    Blur with a zero border (OpenCV's kernel of 6 sigma - 1 taps), rescale to the map's maximum, floor at 1e-10,
    log, and one Newton step from the argmax, taken only where the 5x5 stencil lies inside the map
    (1 < x < w - 2, 1 < y < h - 2); nearer the edge the argmax stays.

    Only the 5x5 window around the argmax is blurred: its rows of the vertical band matrix times the map times its
    columns of the horizontal one, the same sums as blurring the whole map (`_modulate`) and reading the window,
    at 1/10 of the multiply-adds. The rescaling adds one constant to every log, which the step's differences
    cancel; it matters only through the 1e-10 floor. Where the floor cannot bind (the map's maximum a >= 1e-9 and
    every window value v >= 2e-10: the blurred maximum is at most a, so v a / max >= v) the window's own logs are
    used; the other maps (none positive, a neighbourhood near zero) go through `dark_cells_full`. The two agree
    to float32 rounding of the logs (the step differs by < 1e-4 cell)."""
    n, k, h, w = heatmaps.shape
    maps = heatmaps.float().reshape(n * k, h, w)
    scores, idx = argmax_rows(heatmaps.reshape(n * k, -1))
    if h < WINDOW or w < WINDOW:  # no cell has the whole stencil inside: nothing to refine
        return dark_cells_full(maps, sigma)[0].reshape(n, k, 2), scores.reshape(n, k)
    xi, yi = idx % w, torch.div(idx, w, rounding_mode="floor")
    radius = dark_blur_radius(sigma)
    band_h, band_w = _bands(h, w, radius, maps.device)
    span = torch.arange(WINDOW, device=maps.device)
    # The window's top-left corner, kept on the map (its values are used only where the stencil is inside).
    rows = (yi - 2).clamp(0, h - WINDOW)[:, None] + span
    cols = (xi - 2).clamp(0, w - WINDOW)[:, None] + span
    window = torch.bmm(torch.bmm(band_h[rows], maps), band_w[:, cols].permute(1, 0, 2))  # (N K, 5, 5)
    inside = (xi > 1) & (xi < w - 2) & (yi > 1) & (yi < h - 2)
    floor_free = (scores.float() >= 1e-9) & (window >= 2e-10).flatten(1).all(dim=1)
    logs = torch.log(window.clamp(min=1e-10))
    off_x, off_y = newton_step(lambda dy, dx: logs[:, 2 + dy, 2 + dx], inside, radius)
    cells = torch.stack([xi.float() + off_x, yi.float() + off_y], dim=-1)
    slow = (inside & ~floor_free).nonzero().reshape(-1)
    if len(slow):
        cells[slow] = dark_cells_full(maps[slow], sigma)[0]
    return cells.reshape(n, k, 2), scores.reshape(n, k)


def dark_cells_full(maps: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`dark_cells` on maps (M, h, w) with each whole map blurred and rescaled (the references' order of work):
    (M, 2) cells, (M,) scores."""
    m, h, w = maps.shape
    scores, idx = argmax_rows(maps.reshape(m, -1))
    xi, yi = idx % w, torch.div(idx, w, rounding_mode="floor")
    radius = dark_blur_radius(sigma)
    logmap = torch.log(_modulate(maps.float()[:, None], radius).clamp(min=1e-10))[:, 0]
    # Padded only so that the stencil can be read at every argmax; the step is taken inside alone.
    padded = torch.nn.functional.pad(logmap, (2, 2, 2, 2))
    inside = (xi > 1) & (xi < w - 2) & (yi > 1) & (yi < h - 2)
    rows = torch.arange(m, device=maps.device)
    off_x, off_y = newton_step(lambda dy, dx: padded[rows, yi + 2 + dy, xi + 2 + dx], inside, radius)
    return torch.stack([xi.float() + off_x, yi.float() + off_y], dim=-1), scores


def argmax_rows(flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, L) -> each row's maximum and the index of its first occurrence, as torch's max(dim=-1) gives them; on
    the CPU through numpy's vectorised argmax (8x faster there than torch's max with indices)."""
    if flat.device.type != "cpu" or flat.dtype not in (torch.float32, torch.float64):  # numpy has no bfloat16
        return flat.max(dim=-1)
    idx = torch.from_numpy(flat.detach().numpy().argmax(axis=1))
    return flat.gather(1, idx[:, None])[:, 0], idx


def newton_step(at, inside: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DARK's step -H^-1 g in cells from the log-map values `at(dy, dx)` around each argmax (central differences:
    g from neighbours, H from cells two apart); zero where the stencil is not `inside` or det H == 0."""
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
    return off_x, off_y


def _modulate(heatmaps: torch.Tensor, radius: int) -> torch.Tensor:
    """DARK's distribution modulation of (N, K, h, w) maps: each Gaussian-blurred with a zero border (OpenCV's
    kernel of 2 radius + 1 taps, its sigma derived from the size, as the references'
    cv2.GaussianBlur(.., (k, k), 0)), then rescaled to its original maximum."""
    h, w = heatmaps.shape[-2:]
    kernel = _kernel(radius, heatmaps.device, heatmaps.dtype)
    # The separable blur as two banded matrix products (taps beyond the border dropped: the zero border): the same
    # sums as a zero-padded convolution, 40x faster on one CPU core than conv2d's single-channel path.
    blurred = _band(h, kernel, radius) @ heatmaps @ _band(w, kernel, radius)
    original_max = heatmaps.amax(dim=(2, 3), keepdim=True)
    blurred_max = blurred.amax(dim=(2, 3), keepdim=True).clamp(min=1e-10)
    return blurred * original_max / blurred_max


def _kernel(radius: int, device, dtype) -> torch.Tensor:
    """OpenCV's Gaussian kernel of 2 radius + 1 taps, its sigma derived from the size (cv2.getGaussianKernel(k, 0))."""
    return torch.from_numpy(cv2.getGaussianKernel(2 * radius + 1, 0).ravel()).to(device, dtype)


def _band(n: int, kernel: torch.Tensor, radius: int) -> torch.Tensor:
    """(n, n) matrix M with M[i, j] = kernel[j - i + radius] where |j - i| <= radius (symmetric: the kernel is)."""
    offset = torch.arange(n, device=kernel.device)[None, :] - torch.arange(n, device=kernel.device)[:, None]
    return torch.where(offset.abs() <= radius, kernel[(offset + radius).clamp(0, 2 * radius)], kernel.new_zeros(()))


@lru_cache(maxsize=16)
def _bands(h: int, w: int, radius: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 vertical (h, h) and horizontal (w, w) band matrices of the blur, made once per shape."""
    kernel = _kernel(radius, device, torch.float32)
    return _band(h, kernel, radius), _band(w, kernel, radius)
