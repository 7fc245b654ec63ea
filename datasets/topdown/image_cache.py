"""Decoded-image regions for the top-down dataset: a bytes-bounded LRU cache of decoded regions and reduced JPEG
decoding (libjpeg's 1/2, 1/4, 1/8 DCT scaling through OpenCV's IMREAD_REDUCED_COLOR_*).

An image is decoded once into the region any crop of its persons can sample (a `RegionPlan`, computed by the
dataset from its augmentation's reach), at the largest reduction that still leaves every such crop at least one
decoded pixel per output pixel. `read_crop` serves a crop from the cache, or decodes and caches the plan's region,
or (for a crop the plan did not foresee) warps the whole decoded image; `read_full` is the plain path. Pixels are
(H, W, 3) uint8 RGB; matrices 2x3 image -> crop in full-resolution pixels. Every decode goes through
image_check.decode_bgr: a truncated file, or one of another size than the annotation's, raises ImageFault.
Measurements: BENCHMARKS.md; equivalence with the plain path: tests/datasets/test_pipeline_speed.py.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from datasets.topdown.geometry import warp_image
from datasets.topdown.image_check import decode_bgr, is_jpeg


def read_full(path: str, matrix: np.ndarray, output_hw: tuple[int, int], image_wh=None) -> np.ndarray:
    """The plain path: the whole image decoded and warped. ImageFault (image_check.py) when the file is not the
    image of the annotation's `image_wh` (width, height; None where unknown)."""
    return warp_image(cv2.cvtColor(decode_bgr(path, image_wh), cv2.COLOR_BGR2RGB), matrix, output_hw)


def read_crop(cache: "RegionCache", key: int, path: str, crop_size, matrix: np.ndarray, output_hw: tuple[int, int],
              max_reduction: int, plan: Callable[[], "RegionPlan"], image_wh=None) -> np.ndarray:
    """The crop `matrix` draws from image `path` (cache key `key`), `crop_size` (w, h) source pixels, into
    `output_hw`; `plan()` gives the image's RegionPlan on a cache miss. ImageFault (image_check.py) when the file
    is not the image of the annotation's `image_wh` (width, height; None where unknown): checked on every decode.

    A sample's pixels depend only on the sample (its plan region or the whole image), never on what the cache
    happens to hold, so a sample stays a pure function of (seed, epoch, index)."""
    hw = output_hw
    limit = _reduction(crop_size, hw, max_reduction) if reducible(path) else 1
    entry = cache.get(key)
    if entry is not None and entry.reduction <= limit:
        m = _reduced_matrix(matrix, entry.reduction)
        if _covers(entry, _needed_rect(m, hw)):
            cache.hits += 1
            return _warp_rgba(entry.pixels, _shifted(m, entry.x0, entry.y0), hw)
    cache.misses += 1
    region_plan = plan()
    reduction = min(region_plan.reduction, limit)
    image = decode_bgr(path, image_wh, reduction)
    m = _reduced_matrix(matrix, reduction)
    h, w = image.shape[:2]
    x0, y0, x1, y1 = region_plan.rect(reduction)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if reduction == region_plan.reduction and x1 > x0 and y1 > y0 and \
            _contains((x0, y0, x1, y1), _needed_rect(m, hw), (h, w)):
        if cache.max_bytes > 0:
            # RGBA: OpenCV's bilinear warp of 4-channel images is twice as fast as of 3-channel ones, same values.
            region = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_BGR2RGBA)
            cache.put(key, CachedRegion(region, x0, y0, reduction, (h, w)))
            return _warp_rgba(region, _shifted(m, x0, y0), hw)
        return _warp_bgr(image[y0:y1, x0:x1], _shifted(m, x0, y0), hw)  # the same origin, nothing converted
    # A crop the plan did not foresee (never under the dataset's own augmentation): the whole decoded image.
    return _warp_bgr(image, m, hw)


def plan_region(geoms, scale_range: tuple[float, float], max_rotation: float, output_hw: tuple[int, int],
                max_reduction: int) -> "RegionPlan":
    """The RegionPlan of an image whose persons' unaugmented crops are `geoms` (CropGeometry), each drawn at any
    scale in `scale_range` and rotation up to `max_rotation` radians; `max_reduction` 1 for a non-JPEG."""
    scale_lo, scale_hi = scale_range
    reduction = max_reduction
    x0 = y0 = math.inf
    x1 = y1 = -math.inf
    for g in geoms:
        hx, hy = _rotated_half_extent(g.size, max_rotation)
        x0, x1 = min(x0, g.center[0] - scale_hi * hx), max(x1, g.center[0] + scale_hi * hx)
        y0, y1 = min(y0, g.center[1] - scale_hi * hy), max(y1, g.center[1] + scale_hi * hy)
        reduction = min(reduction, _reduction(g.size * scale_lo, output_hw, max_reduction))
    return RegionPlan((x0, y0, x1, y1), reduction)


def reducible(path: str) -> bool:
    """JPEG content only (image_check.is_jpeg, not the file name: a PNG saved as .jpg is common): libjpeg scales in
    the DCT; other formats would be decoded whole and resized."""
    return is_jpeg(str(path))


@dataclass(frozen=True)
class CachedRegion:
    """Part of a decoded image: `pixels` (RGBA, for the faster warp) start at (x0, y0) of the image decoded at
    1/`reduction` scale, whose size is `image_hw`."""

    pixels: np.ndarray
    x0: int
    y0: int
    reduction: int
    image_hw: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return self.pixels.nbytes


class RegionCache:
    """A least-recently-used map file index -> CachedRegion holding at most `max_bytes` of pixels, so a worker's
    memory plateaus however many epochs it runs. Counts the crops it served (`hits`) and the decodes (`misses`)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[int, CachedRegion] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __reduce__(self):
        # Pickled (a spawned worker, a Ray task), a cache arrives empty with the same budget.
        return RegionCache, (self.max_bytes,)

    def get(self, key: int) -> CachedRegion | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: int, entry: CachedRegion) -> None:
        if entry.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.nbytes -= old.nbytes
            self._entries[key] = entry
            self.nbytes += entry.nbytes
            while self.nbytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self.nbytes -= evicted.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.nbytes = 0


@dataclass(frozen=True)
class RegionPlan:
    """The image region (x0, y0, x1, y1 in full-image pixels) any crop of its persons can sample, and the largest
    JPEG reduction that leaves each of those crops at least one decoded pixel per output pixel."""

    bounds: tuple[float, float, float, float]
    reduction: int

    def rect(self, reduction: int) -> tuple[int, int, int, int]:
        """The bounds in the pixels of the image decoded at 1/`reduction`, with a margin for bilinear sampling."""
        x0, y0, x1, y1 = self.bounds
        if not all(math.isfinite(v) for v in self.bounds):
            return 0, 0, 0, 0
        off = (reduction - 1) / 2
        return (math.floor((x0 - off) / reduction) - 2, math.floor((y0 - off) / reduction) - 2,
                math.ceil((x1 - off) / reduction) + 3, math.ceil((y1 - off) / reduction) + 3)


def _warp_rgba(rgba: np.ndarray, matrix: np.ndarray, output_hw: tuple[int, int]) -> np.ndarray:
    """warp_image of an RGBA image, returned as (H, W, 3) RGB."""
    return cv2.cvtColor(warp_image(rgba, matrix, output_hw), cv2.COLOR_RGBA2RGB)


def _warp_bgr(bgr: np.ndarray, matrix: np.ndarray, output_hw: tuple[int, int]) -> np.ndarray:
    """warp_image of a BGR image (or a view into one), returned as (H, W, 3) RGB: the same values as warping the
    RGB or RGBA image, without converting more than the crop."""
    return cv2.cvtColor(warp_image(bgr, matrix, output_hw), cv2.COLOR_BGR2RGB)


def _reduction(size, output_hw: tuple[int, int], max_reduction: int) -> int:
    """The largest power of two <= max_reduction that keeps at least one source pixel per output pixel of a crop
    of `size` (w, h) source pixels."""
    spacing = min(float(size[0]) / output_hw[1], float(size[1]) / output_hw[0])
    reduction = 1
    while reduction * 2 <= min(spacing, max_reduction):
        reduction *= 2
    return reduction


def _reduced_matrix(matrix: np.ndarray, reduction: int) -> np.ndarray:
    """image -> crop matrix re-expressed for the image decoded at 1/reduction: decoded pixel u is the mean of
    full pixels [r u, r u + r), centred at r u + (r - 1) / 2."""
    if reduction == 1:
        return matrix
    out = matrix.astype(np.float64, copy=True)
    out[:, 2] += out[:, :2].sum(axis=1) * ((reduction - 1) / 2)
    out[:, :2] *= reduction
    return out


def _shifted(matrix: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """The matrix for a sub-image whose pixel (0, 0) is the image's (x0, y0)."""
    if x0 == 0 and y0 == 0:
        return matrix
    out = matrix.astype(np.float64, copy=True)
    out[:, 2] += out[:, 0] * x0 + out[:, 1] * y0
    return out


def _needed_rect(matrix: np.ndarray, output_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Source pixels (x0, y0, x1, y1; x1/y1 exclusive) that a bilinear warp by `matrix` into `output_hw` reads,
    with a pixel of margin for OpenCV's 1/32-pixel fixed-point coordinates."""
    h, w = output_hw
    inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
    corners = np.array([[0.0, 0.0], [w - 1.0, 0.0], [0.0, h - 1.0], [w - 1.0, h - 1.0]])
    src = corners @ inverse[:, :2].T + inverse[:, 2]
    low, high = np.floor(src.min(axis=0)), np.floor(src.max(axis=0))
    return int(low[0]) - 1, int(low[1]) - 1, int(high[0]) + 3, int(high[1]) + 3


def _covers(entry: CachedRegion, needed: tuple[int, int, int, int]) -> bool:
    """Whether the cached region holds every image pixel of `needed` (pixels outside the image read as 0 either way)."""
    ph, pw = entry.pixels.shape[:2]
    return _contains((entry.x0, entry.y0, entry.x0 + pw, entry.y0 + ph), needed, entry.image_hw)


def _contains(rect, needed, image_hw: tuple[int, int]) -> bool:
    """Whether `rect` holds every pixel of `needed` that lies on an image of `image_hw`."""
    h, w = image_hw
    x0, y0, x1, y1 = max(needed[0], 0), max(needed[1], 0), min(needed[2], w), min(needed[3], h)
    if x1 <= x0 or y1 <= y0:
        return True
    return x0 >= rect[0] and y0 >= rect[1] and x1 <= rect[2] and y1 <= rect[3]


def _rotated_half_extent(size, max_rotation: float) -> tuple[float, float]:
    """Half the width and height of the bounding box of a (w, h) rectangle rotated by any angle in
    [-max_rotation, max_rotation] radians."""
    w, h = float(size[0]), float(size[1])
    if max_rotation >= math.pi / 2:
        radius = 0.5 * math.hypot(w, h)
        return radius, radius
    a = min(math.atan2(h, w), max_rotation)
    b = min(math.atan2(w, h), max_rotation)
    return 0.5 * (w * math.cos(a) + h * math.sin(a)), 0.5 * (w * math.sin(b) + h * math.cos(b))
