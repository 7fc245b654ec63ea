"""DARK-UDP decoding (Huang et al., CVPR 2020, "The Devil is in the Details: Delving into Unbiased Data Processing
for Human Pose Estimation"; the refinement MMPose's UDPHeatmap decodes with, `refine_keypoints_dark_udp`), in torch
for a batch. The UDP encoding and warp are the codec's (`HeatmapCodec(encoding="udp")`) and
geometry.udp_affine_matrix; tests/datasets/test_udp.py checks all three against MMPose's formulas.
"""
from __future__ import annotations

import numpy as np
import torch

from datasets.topdown import codec as _codec


def decode_dark_udp(heatmaps: torch.Tensor, kernel: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    """heatmaps (N, K, h, w) -> keypoints (N, K, 2) in heatmap cells, scores (N, K) (the maxima).

    From the argmax, one Newton step on the log of the modulated heatmap (DARK's blur with a zero border, `kernel`
    taps, rescaled to the map's maximum; clipped to [1e-3, 50] before the log), with UDP's one-cell stencils on
    the edge-padded map: gradient 0.5 (f(x+1) - f(x-1)), Hessian f(x+1) - 2 f(x) + f(x-1) and the mixed
    0.5 (f(x+1,y+1) - f(x+1,y) - f(x,y+1) + 2 f(x,y) - f(x-1,y) - f(x,y-1) + f(x-1,y-1)), regularised by float32's
    epsilon times the identity. Computed in float64. A map whose maximum is <= 0 keeps MMPose's -1 location."""
    n, k, h, w = heatmaps.shape
    maps = heatmaps.double()
    scores, idx = maps.reshape(n, k, -1).max(dim=-1)
    xs, ys = (idx % w).reshape(-1), torch.div(idx, w, rounding_mode="floor").reshape(-1)
    blurred = _codec._modulate(maps, (kernel - 1) // 2).clamp(1e-3, 50.0).log()
    pad = torch.nn.functional.pad(blurred.reshape(n * k, 1, h, w), (1, 1, 1, 1), mode="replicate")[:, 0]
    rows = torch.arange(n * k, device=heatmaps.device)
    px, py = xs + 1, ys + 1

    def at(dy: int, dx: int) -> torch.Tensor:
        return pad[rows, py + dy, px + dx]

    centre = at(0, 0)
    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = at(0, 1) - 2 * centre + at(0, -1)
    dyy = at(1, 0) - 2 * centre + at(-1, 0)
    dxy = 0.5 * (at(1, 1) - at(0, 1) - at(1, 0) + 2 * centre - at(0, -1) - at(-1, 0) + at(-1, -1))
    eps = float(np.finfo(np.float32).eps)
    a, d = dxx + eps, dyy + eps
    det = a * d - dxy * dxy
    # (H + eps I)^-1 g by the 2x2 inverse's closed form
    step_x = (d * dx - dxy * dy) / det
    step_y = (a * dy - dxy * dx) / det
    cells = torch.stack([xs.double() - step_x, ys.double() - step_y], dim=-1)
    cells = torch.where((scores.reshape(-1) > 0)[:, None], cells, torch.full_like(cells, -1.0))
    return cells.reshape(n, k, 2).float(), scores.to(heatmaps.dtype)
