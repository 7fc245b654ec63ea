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

import numpy as np
import torch

from datasets.topdown.dark import _modulate, argmax_rows, dark_blur_radius, dark_cells  # noqa: F401  udp.py

DECODINGS = ("dark", "shift")  # the TrialConfig `data.decode` values

# ImageNet statistics in 0..255 grey levels (the pretrained backbones' input convention), RGB order.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255


ENCODINGS = ("msra", "udp")  # the TrialConfig `data.codec` values


@dataclass(frozen=True, init=False)
class HeatmapCodec:
    """Keypoints in input pixels <-> (K, h, w) Gaussian heatmaps at 1/`stride` of the input (`input_hw` is
    (height, width)); `sigma` in heatmap cells. `decode` picks the sub-pixel refinement: "dark" (DARK, Zhang et al.
    2020) or "shift" (the quarter-cell shift); the same values as TrialConfig `data.decode`. `encoding`:
    "msra" (HRNet/SimpleBaseline: heatmap cell j at input pixel stride * j, an untruncated Gaussian, weight 0 when
    its centre is off the map) or "udp" (Huang et al., CVPR 2020, "The Devil is in the Details", as MMPose's
    UDPHeatmap: cell j at input pixel j (W_in - 1) / (W_hm - 1), the Gaussian cut to +-3 sigma around its rounded
    centre, weight 0 only when that window misses the map, decoded by DARK-UDP; the crop must then be warped with
    geometry.udp_affine_matrix, `HeatmapCodec.affine`). ValueError for other values. The refinement choice is kept
    as `decoding` (`decode` is the method)."""

    input_hw: tuple[int, int]
    sigma: float = 2.0
    stride: int = 4
    decoding: str = "dark"
    encoding: str = "msra"

    def __init__(self, input_hw: tuple[int, int], sigma: float = 2.0, stride: int = 4, decode: str = "dark",
                 encoding: str = "msra"):
        if decode not in DECODINGS:
            raise ValueError(f"unknown heatmap refinement {decode!r}; choose 'shift' or 'dark'")
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown heatmap encoding {encoding!r}; choose 'msra' or 'udp'")
        for name, value in (("input_hw", tuple(input_hw)), ("sigma", sigma), ("stride", stride),
                            ("decoding", decode), ("encoding", encoding)):
            object.__setattr__(self, name, value)

    @property
    def udp(self) -> bool:
        return self.encoding == "udp"

    @property
    def heatmap_hw(self) -> tuple[int, int]:
        return self.input_hw[0] // self.stride, self.input_hw[1] // self.stride

    def cells_per_pixel(self) -> tuple[float, float]:
        """(x, y) heatmap cells per input pixel: 1 / stride, or UDP's (W_hm - 1) / (W_in - 1)."""
        if not self.udp:
            return 1.0 / self.stride, 1.0 / self.stride
        (h, w), (in_h, in_w) = self.heatmap_hw, self.input_hw
        return (w - 1) / (in_w - 1), (h - 1) / (in_h - 1)

    def with_stride(self, stride: int) -> "HeatmapCodec":
        """The same codec at another output stride, sigma scaled to keep its width in input pixels (the target of
        a multi-resolution model's stage at that stride: SRPose)."""
        return HeatmapCodec(self.input_hw, self.sigma * self.stride / stride, stride, self.decoding, self.encoding)

    def affine(self, geom, inverse: bool = False) -> np.ndarray:
        """The 2x3 image -> crop matrix (or back) of crop geometry `geom` under this codec's encoding."""
        from datasets.topdown.geometry import affine_matrix

        return affine_matrix(geom, self.input_hw, inverse=inverse, udp=self.udp)

    def encode(self, keypoints: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """keypoints (K, 2) in input pixels, weights (K,) -> heatmaps (K, h, w) float32, target weights (K,).

        A joint whose Gaussian lies off the heatmap (msra: its centre; udp: its whole +-3 sigma window) gets
        weight 0.
        """
        gy, gx, target_weight = _gaussians(np, keypoints, weights, self, dtype=np.float32)
        # Separable: one (K, h, 1) x (K, 1, w) float32 outer product, no (K, h, w) float64 intermediate.
        heatmaps = np.multiply(gy.astype(np.float32)[:, :, None], gx.astype(np.float32)[:, None, :])
        return heatmaps, target_weight.astype(np.float32)

    def encode_torch(self, keypoints: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`encode` for a batch on any device: keypoints (B, K, 2) in input pixels, weights (B, K) -> heatmaps
        (B, K, h, w) float32, target weights (B, K) float32 on the keypoints' device. The same arithmetic as the
        numpy back end (float64 Gaussians around the unrounded keypoint / stride, their float32 outer product), so
        the two agree to float32 rounding (tests/datasets/test_gpu_augment.py)."""
        keypoints = keypoints.to(torch.float64)
        gy, gx, target_weight = _gaussians(torch, keypoints, weights.to(keypoints.device), self,
                                           dtype=torch.float64, device=keypoints.device)
        heatmaps = gy.float()[..., :, None] * gx.float()[..., None, :]
        return heatmaps, target_weight.float()

    def target_keypoints(self, heatmaps: torch.Tensor) -> torch.Tensor:
        """The exact inverse of `encode` on its own targets: heatmaps (N, K, h, w) -> keypoints (N, K, 2) in input
        pixels. Each target is a separable Gaussian of known sigma, so the log-ratio of two cells on the peak's row
        (column) gives its centre exactly: for cells a < b, c = (a + b) / 2 + sigma^2 (log g(b) - log g(a)) / (b - a).
        Zero maps (weight-0 joints) give arbitrary finite values. Used to re-encode targets at another stride."""
        n, k, h, w = heatmaps.shape
        flat = heatmaps.reshape(n * k, h * w).double()
        idx = flat.argmax(dim=1)
        ys, xs = torch.div(idx, w, rounding_mode="floor"), idx % w
        maps = flat.reshape(n * k, h, w).clamp(min=1e-300).log()
        rows = torch.arange(n * k, device=heatmaps.device)

        def centre(peak, size, read):
            a = (peak - 1).clamp(0, max(size - 2, 0))
            b = (a + 2).clamp(max=size - 1)
            b = torch.where(b == a, a + 1, b).clamp(max=size - 1)
            span = (b - a).clamp(min=1).double()
            return (a + b).double() / 2 + self.sigma**2 * (read(b) - read(a)) / span

        cx = centre(xs, w, lambda j: maps[rows, ys, j])
        cy = centre(ys, h, lambda j: maps[rows, j, xs])
        per_x, per_y = self.cells_per_pixel()
        return torch.stack([cx / per_x, cy / per_y], dim=-1).reshape(n, k, 2).float()

    def resample_targets(self, heatmaps: torch.Tensor, weights: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """This codec's targets (N, K, h, w) re-encoded at another resolution `hw` (one of input / stride): the
        keypoints `target_keypoints` recovers, encoded by `with_stride`'s codec - the supervision of a
        multi-resolution model's stages through the same codec. The same tensor when `hw` is the codec's own."""
        if tuple(hw) == tuple(heatmaps.shape[-2:]):
            return heatmaps
        stride = self.input_hw[0] // hw[0]
        if self.input_hw[0] % hw[0] or self.input_hw[1] // stride != hw[1]:
            raise ValueError(f"heatmaps of {tuple(hw)} are no stride of the {self.input_hw} input")
        with torch.no_grad():
            other, _ = self.with_stride(stride).encode_torch(self.target_keypoints(heatmaps), weights)
        return other.to(heatmaps.dtype)

    def unflip(self, heatmaps: torch.Tensor, flip_index: list[int]) -> torch.Tensor:
        """`unflip_heatmaps` under this codec's conventions (stride, encoding)."""
        return unflip_heatmaps(heatmaps, flip_index, self.stride, self.udp)

    def flip_average(self, heatmaps: torch.Tensor, flipped: torch.Tensor, flip_index: list[int]) -> torch.Tensor:
        """`flip_average` under this codec's conventions (stride, encoding)."""
        return flip_average(heatmaps, flipped, flip_index, self.stride, self.udp)

    def encode_occlusion(self, keypoints: np.ndarray, occluded: np.ndarray) -> np.ndarray:
        """OASNet's occlusion-heatmap target (h, w): the occluded joints' Gaussians summed and clamped to 1."""
        gaussians, _ = self.encode(keypoints, np.asarray(occluded, np.float32))
        return np.minimum(gaussians.sum(axis=0), 1.0).astype(np.float32)

    def decode(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """heatmaps (N, K, h, w) -> keypoints (N, K, 2) in input pixels, scores (N, K).

        "shift": argmax plus the classic quarter-pixel shift towards the higher neighbour.
        "dark": argmax refined by DARK (Zhang et al. 2020): a second-order Taylor step on the
        log of the Gaussian-smoothed heatmap, which recovers sub-pixel maxima of low-resolution heatmaps.
        With encoding "udp", "dark" is DARK-UDP (datasets/topdown/udp.py) and cells map to input pixels by UDP's
        (W_in - 1) / (W_hm - 1).
        """
        if self.decoding == "dark" and self.udp:
            from datasets.topdown.udp import decode_dark_udp

            cells, scores = decode_dark_udp(heatmaps, 2 * dark_blur_radius(self.sigma) + 1)
            return self._to_pixels(cells), scores
        if self.decoding == "dark":
            return self._decode_dark(heatmaps)
        n, k, h, w = heatmaps.shape
        scores, idx = (t.reshape(n, k) for t in argmax_rows(heatmaps.reshape(n * k, -1)))
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
        return self._to_pixels(torch.stack([x + dx.reshape(n, k), y + dy.reshape(n, k)], dim=-1)), scores

    def _to_pixels(self, cells: torch.Tensor) -> torch.Tensor:
        """(..., 2) heatmap cells -> input pixels."""
        per_x, per_y = self.cells_per_pixel()
        return cells / torch.tensor([per_x, per_y], dtype=cells.dtype, device=cells.device)

    def _decode_dark(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """DARK (datasets/topdown/dark.py) in input pixels."""
        cells, scores = dark_cells(heatmaps, self.sigma)
        return self._to_pixels(cells), scores


def _gaussians(xp, keypoints, weights, codec: HeatmapCodec, **arange):
    """The encoder's one formula, for numpy or torch (`xp`): keypoints (..., K, 2) in input pixels -> the separable
    Gaussians gy (..., K, h) and gx (..., K, w) around the keypoint in cells (`cells_per_pixel`), and the target
    weight (..., K) bool: weight > 0 and (msra) the centre on the map or (udp, MMPose's
    generate_udp_gaussian_heatmaps) the +-3 sigma window around the rounded centre touching it; udp cuts the
    Gaussian to that window. A zero-weight joint's gy is zero, so its map is zero."""
    h, w = codec.heatmap_hw
    sigma = codec.sigma
    per_x, per_y = codec.cells_per_pixel()
    cx, cy = keypoints[..., 0:1] * per_x, keypoints[..., 1:2] * per_y
    grid_x, grid_y = xp.arange(w, **arange), xp.arange(h, **arange)
    gx = xp.exp(-((grid_x - cx) ** 2) / (2 * sigma**2))
    gy = xp.exp(-((grid_y - cy) ** 2) / (2 * sigma**2))
    if codec.udp:
        radius = 3 * sigma
        mx, my = xp.trunc(cx + 0.5), xp.trunc(cy + 0.5)  # MMPose's (mu + 0.5).astype(int64)
        # MMPose casts the window's bounds to integers as well (truncation towards zero).
        left, right = xp.trunc(mx - radius), xp.trunc(mx + radius + 1)
        top, bottom = xp.trunc(my - radius), xp.trunc(my + radius + 1)
        inside = ((left[..., 0] < w) & (top[..., 0] < h) & (right[..., 0] >= 0) & (bottom[..., 0] >= 0))
        gx = gx * ((grid_x >= left) & (grid_x < right))
        gy = gy * ((grid_y >= top) & (grid_y < bottom))
    else:
        inside = (cx[..., 0] >= 0) & (cx[..., 0] <= w - 1) & (cy[..., 0] >= 0) & (cy[..., 0] <= h - 1)
    target_weight = (weights > 0) & inside
    return gy * target_weight[..., None], gx, target_weight


def unflip_heatmaps(heatmaps: torch.Tensor, flip_index: list[int], stride: int, udp: bool = False) -> torch.Tensor:
    """Heatmaps (N, K, h, w) predicted on a mirrored crop, mapped back to the unmirrored crop (flip test).

    The mirror sends input pixel x to W - 1 - x; with heatmap cell j at input pixel stride * j, reversing the
    columns lands a peak (stride - 1) / stride of a cell to the left of where it belongs, so the maps are shifted
    right by that much with linear interpolation (HRNet rounds this shift to a whole cell). `flip_index` is the
    skeleton's left/right permutation. Under UDP cell j sits at input pixel j (W - 1) / (w - 1), which the mirror
    sends exactly to cell w - 1 - j: no shift (nor at stride 1).
    """
    maps = heatmaps.flip(-1)[:, flip_index]
    shift = 0.0 if udp else (stride - 1) / stride
    left = torch.cat([maps[..., :1], maps[..., :-1]], dim=-1)  # value one cell to the left (edge replicated)
    return (1 - shift) * maps + shift * left


def flip_average(heatmaps: torch.Tensor, flipped: torch.Tensor, flip_index: list[int], stride: int,
                 udp: bool = False) -> torch.Tensor:
    """The flip test's heatmaps: the mean of `heatmaps` (N, K, h, w) and `flipped`, the maps predicted on the
    mirrored crops, mapped back by `unflip_heatmaps`: 0.5 (heatmaps + unflip_heatmaps(flipped, ...)).

    On the CPU the column reversal and the sub-pixel shift are one linear map of each row, done as one matrix
    product by `_unflip_matrix` after the joint swap (one copy), the mean folded into it (addmm): 2 passes over the
    maps instead of 9, 2.5x less time on one core (tests/benchmarks/coco_scale.py). Its sums equal unflip_heatmaps' to
    float32 rounding (one ulp: the product may fuse a multiply-add). Elsewhere (a GPU, whose float32 matrix
    products may run in TF32) the element-wise `unflip_heatmaps`."""
    if heatmaps.device.type != "cpu":
        return 0.5 * (heatmaps + unflip_heatmaps(flipped, flip_index, stride, udp))
    w = flipped.shape[-1]
    swapped = flipped.index_select(1, torch.as_tensor(flip_index, device=flipped.device))
    # 0.5 heatmaps + 0.5 (swapped @ P): halving is exact, so these are the floats of 0.5 (heatmaps + swapped @ P)
    mean = torch.addmm(heatmaps.reshape(-1, w), swapped.reshape(-1, w), _unflip_matrix(w, stride, udp, flipped.dtype),
                       beta=0.5, alpha=0.5)
    return mean.reshape(heatmaps.shape)


@lru_cache(maxsize=16)
def _unflip_matrix(w: int, stride: int, udp: bool, dtype: torch.dtype) -> torch.Tensor:
    """(w, w) P with unflip_heatmaps(maps) == maps[:, flip_index] @ P: row c is what unflip_heatmaps makes of a map
    row holding 1 in column c (the mirror, the shift, the replicated edge)."""
    eye = torch.eye(w, dtype=torch.float64)[None, None]
    return unflip_heatmaps(eye, [0], stride, udp)[0, 0].to(dtype)


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
