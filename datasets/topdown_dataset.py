"""A top-down dataset: one sample per person record, cropped, augmented and encoded.

Training crops go through HRNet's geometric pipeline (half-body, random scale and rotation, horizontal flip with the
skeleton's flip pairs), then pixel-level photometric jitter (albumentations), then LJA on the final crop.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import albumentations
import cv2
import numpy as np
import torch

from datasets.annotations import PersonRecord, RecordTable
from datasets.codec import HeatmapCodec
from datasets.occlusion import LJA, Crop, LJAConfig, covered_by_occlusions
from datasets.targeted import PartOcclusion
from datasets.skeletons import Skeleton
from datasets.topdown import CropGeometry, affine_matrix, box_to_crop, transform_points, warp_image

log = logging.getLogger(__name__)

DEFAULT_CACHE_MB = 256  # per dataset and process: each data-loader worker holds its own cache

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255


@dataclass(frozen=True)
class Augment:
    """Training augmentation; defaults are HRNet's COCO recipe except the scale factor (0.35 there)."""

    scale_factor: float = 0.25
    rotation: float = 30.0
    rotation_p: float = 0.6
    flip_p: float = 0.5
    half_body_p: float = 0.0  # HRNet: 0.3 on COCO/MPII
    half_body_min_joints: int = 8  # only persons with more labelled joints than this
    photometric_p: float = 0.0  # brightness/contrast/saturation jitter of the crop


def photometric_transform(p: float) -> albumentations.Compose:
    return albumentations.Compose([albumentations.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02,
                                                              p=1.0)], p=p)


class TopDownDataset(torch.utils.data.Dataset):
    """Yields dicts with `image` (3, H, W) normalised float, `heatmaps`, `target_weight`, `index`.

    Randomness is a pure function of (seed, epoch, index), so a resumed epoch sees the same samples. A sample
    whose image cannot be read is skipped (returns None, dropped by `collate_skip_none`) and counted.

    The records are held as a RecordTable (a few numpy arrays), so forked data-loader workers share them with the
    parent instead of copying them page by page. With `fast` (the default) an image is decoded once into a
    per-dataset, bytes-bounded LRU of decoded regions (`cache_mb`; default 256 MiB or $OCCPOSE_IMAGE_CACHE_MB;
    0 turns it off), at a reduced JPEG scale (libjpeg's 1/2, 1/4, 1/8 DCT scaling, at most `max_reduction`) when
    every crop any augmentation can draw from the image still has at least one decoded pixel per output pixel.
    The cached region of an image covers every crop any augmentation can draw from its persons; a crop outside it
    is decoded afresh. The labels (keypoints, heatmaps, target weights) never depend on the fast path; without a
    reduced decode the pixels are the full-decode path's up to one grey level in a rare pixel (OpenCV's float32
    source coordinates round differently relative to a region's origin), and a sample never depends on what the
    cache holds. `fast=False` is the plain path: the whole image decoded and warped for every sample.
    Measurements: BENCHMARKS.md; equivalence: tests/test_pipeline_speed.py.
    """

    def __init__(
        self,
        records: Sequence[PersonRecord] | RecordTable,
        skeleton: Skeleton,
        codec: HeatmapCodec,
        train: bool,
        augment: Augment = Augment(),
        lja: LJAConfig | None = None,
        seed: int = 0,
        padding: float = 1.25,
        occlusions: Sequence = (),
        attack=None,
        siamese: bool = False,
        fast: bool = True,
        cache_mb: float | None = None,
        max_reduction: int = 8,
    ):
        self.records = RecordTable.from_records(records)
        self.skeleton = skeleton
        self.codec = codec
        self.train = train
        self.augment = augment
        self.seed = seed
        self.padding = padding
        self.epoch = 0
        self.skipped: set[int] = set()
        self._photometric = photometric_transform(augment.photometric_p)
        # Training occlusion transforms in order (datasets/occlusion.py, targeted.py), LJA last as in the paper's
        # pipeline; a PartMix without a donor takes its parts from this dataset's other samples.
        transforms = [dataclasses.replace(t, donor=self.donor_crop)
                      if isinstance(t, PartOcclusion) and t.mode == "partmix" and t.donor is None else t
                      for t in occlusions]
        if lja is not None:
            transforms.append(LJA(lja, tuple(skeleton.limb_joints)))
        self.occlusions = tuple(transforms)
        self.attack = attack  # a test-time attack (datasets/attacks.py), applied to every sample
        self.siamese = siamese  # yield the clean and the occluded view (OASNet)
        self.fast = fast
        if cache_mb is None:
            cache_mb = float(os.environ.get("OCCPOSE_IMAGE_CACHE_MB", DEFAULT_CACHE_MB))
        self.cache = RegionCache(int(cache_mb * 2**20) if fast else 0)
        self.max_reduction = max(1, int(max_reduction)) if fast else 1
        # Records grouped by image (a stable argsort: arrays, no per-record objects), for the per-image region plan.
        self._by_image = np.argsort(self.records.file_index, kind="stable").astype(np.int64)
        self._image_starts = np.searchsorted(self.records.file_index[self._by_image],
                                             np.arange(self.records.num_files + 1))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def crop_geometry(self, index: int, rng: np.random.Generator | None) -> CropGeometry:
        geom = box_to_crop(self.records.bbox[index], self.codec.input_hw, self.padding)
        if rng is None:
            return geom
        a = self.augment
        if a.half_body_p > 0 and rng.random() < a.half_body_p:
            geom = self._half_body(self.records.keypoints[index], rng) or geom
        scale = min(max(rng.normal() * a.scale_factor + 1, 1 - a.scale_factor), 1 + a.scale_factor)
        rotation = 0.0
        if rng.random() < a.rotation_p:
            rotation = min(max(rng.normal() * a.rotation, -2 * a.rotation), 2 * a.rotation)
        return CropGeometry(geom.center, geom.size * float(scale), float(rotation))

    def _half_body(self, keypoints: np.ndarray, rng: np.random.Generator) -> CropGeometry | None:
        """HRNet's half-body crop: the upper or lower body's labelled joints, their box x 1.5, centred on their mean."""
        halves = self._body_halves(keypoints)
        if halves is None:
            return None
        upper_joints, lower_joints = halves
        chosen = upper_joints if rng.random() < 0.5 and len(upper_joints) > 2 else \
            lower_joints if len(lower_joints) > 2 else upper_joints
        return self._half_body_geometry(chosen)

    def _body_halves(self, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        labelled = keypoints[:, 2] > 0
        if labelled.sum() <= self.augment.half_body_min_joints:
            return None
        upper = np.zeros_like(labelled)
        upper[list(self.skeleton.upper_body)] = True
        return keypoints[labelled & upper, :2], keypoints[labelled & ~upper, :2]

    def _half_body_geometry(self, chosen: np.ndarray) -> CropGeometry | None:
        if len(chosen) < 2:
            return None
        low, high = chosen.min(axis=0), chosen.max(axis=0)
        fitted = box_to_crop((0, 0, *(high - low)), self.codec.input_hw, padding=1.5)
        return CropGeometry(chosen.mean(axis=0).astype(np.float64), fitted.size)

    def crop(self, index: int, epoch: int | None = None) -> Crop | None:
        """The sample's crop with its annotations after every transform (None when the image is unreadable)."""
        views = self.views(index, epoch)
        return None if views is None else views[1]

    def sample_geometry(self, index: int, epoch: int | None = None) -> SampleGeometry:
        """The sample's random stream and its crop: geometry (half-body, scale, rotation), then the flip coin. The
        stream goes on to the pixel and occlusion transforms, so every path that draws a sample starts here."""
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index]) if self.train else None
        geom = self.crop_geometry(index, rng)
        matrix = affine_matrix(geom, self.codec.input_hw)
        keypoints = self.records.keypoints[index]
        flipped = rng is not None and self.augment.flip_p > 0 and rng.random() < self.augment.flip_p
        if flipped:
            # Flip the crop rather than the image: the same pixels, a fraction of the work.
            matrix = flip_matrix(self.codec.input_hw[1]) @ np.vstack([matrix, [0, 0, 1]])
            keypoints = keypoints[self.skeleton.flip_index]
        return SampleGeometry(rng, geom, matrix, keypoints, flipped)

    def views(self, index: int, epoch: int | None = None) -> tuple[Crop, Crop] | None:
        """(clean, transformed): the same crop before and after the occlusion transforms and attack."""
        rng, geom, matrix, keypoints, _ = self.sample_geometry(index, epoch)
        pixels = self._warped(index, geom, matrix)
        if pixels is None:
            if index not in self.skipped:
                log.warning("skipping unreadable image %s (annotation %s)", self.records.file(index),
                            self.records.ann_id[index])
            self.skipped.add(index)
            return None
        clean = self.crop_of(index, pixels, matrix, keypoints)
        if rng is not None and self.augment.photometric_p > 0:
            self._photometric.set_random_state(rng, random.Random(int(rng.integers(2**31))))
            clean = clean.replace(image=self._photometric(image=clean.image)["image"])
        crop = clean
        if rng is not None:
            for transform in self.occlusions:
                crop = transform(crop, rng)
        if self.attack is not None:
            crop = self.attack(crop)
        return clean, crop

    def crop_of(self, index: int, pixels: np.ndarray, matrix: np.ndarray, keypoints: np.ndarray) -> Crop:
        """The Crop of already warped pixels, before any pixel transform: keypoints and body box in crop pixels
        (the labels always follow `matrix`, image -> crop)."""
        body_box = _box_bounds(transform_points(_box_corners(self.records.bbox[index]), matrix))
        return Crop.of(pixels, transform_points(keypoints[:, :2], matrix), keypoints[:, 2].astype(np.int64), body_box)

    # ------------------------------------------------------------------------------------------------------------
    # Pixels: the warped crop, from the cache, a reduced decode or the whole image

    def _warped(self, index: int, geom: CropGeometry, matrix: np.ndarray) -> np.ndarray | None:
        """The (H, W, 3) RGB crop `matrix` draws from the sample's image, or None when the image is unreadable."""
        hw = self.codec.input_hw
        if not self.fast:
            image = cv2.imread(str(self.records.file(index)), cv2.IMREAD_COLOR)
            return None if image is None else warp_image(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), matrix, hw)
        file_index = int(self.records.file_index[index])
        path = self.records.path(file_index)
        limit = _reduction(geom.size, hw, self.max_reduction) if _reducible(path) else 1
        entry = self.cache.get(file_index)
        if entry is not None and entry.reduction <= limit:
            m = _reduced_matrix(matrix, entry.reduction)
            if _covers(entry, _needed_rect(m, hw)):
                self.cache.hits += 1
                return _warp_rgba(entry.pixels, _shifted(m, entry.x0, entry.y0), hw)
        self.cache.misses += 1
        plan = self._image_plan(file_index, path)
        reduction = min(plan.reduction, limit)
        image = _decode_bgr(path, reduction)
        if image is None:
            return None
        m = _reduced_matrix(matrix, reduction)
        h, w = image.shape[:2]
        x0, y0, x1, y1 = plan.rect(reduction)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if reduction == plan.reduction and x1 > x0 and y1 > y0 and \
                _contains((x0, y0, x1, y1), _needed_rect(m, hw), (h, w)):
            if self.cache.max_bytes > 0:
                # RGBA: OpenCV's bilinear warp of 4-channel images is twice as fast as of 3-channel ones, same values.
                region = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_BGR2RGBA)
                self.cache.put(file_index, CachedRegion(region, x0, y0, reduction, (h, w)))
                return _warp_rgba(region, _shifted(m, x0, y0), hw)
            return _warp_bgr(image[y0:y1, x0:x1], _shifted(m, x0, y0), hw)  # the same origin, nothing converted
        # A crop the plan did not foresee (never under the dataset's own augmentation): the whole decoded image.
        # Either way a sample's pixels depend only on the sample (its plan region or the whole image), never on
        # what the cache happens to hold, so a sample stays a pure function of (seed, epoch, index).
        return _warp_bgr(image, m, hw)

    def _image_plan(self, file_index: int, path: str) -> "RegionPlan":
        """Where, and how finely, any crop of the image's persons can sample it under this dataset's augmentation."""
        a, out_h, out_w = self.augment, *self.codec.input_hw
        if self.train:
            scale_lo, scale_hi = 1 - a.scale_factor, 1 + a.scale_factor
            max_rotation = math.radians(2 * a.rotation) if a.rotation_p > 0 else 0.0
        else:
            scale_lo = scale_hi = 1.0
            max_rotation = 0.0
        reduction = self.max_reduction if _reducible(path) else 1
        x0 = y0 = math.inf
        x1 = y1 = -math.inf
        members = self._by_image[self._image_starts[file_index]:self._image_starts[file_index + 1]]
        for index in members:
            geoms = [box_to_crop(self.records.bbox[index], self.codec.input_hw, self.padding)]
            if self.train and a.half_body_p > 0:
                halves = self._body_halves(self.records.keypoints[index])
                if halves is not None:
                    geoms += [g for g in map(self._half_body_geometry, halves) if g is not None]
            for g in geoms:
                hx, hy = _rotated_half_extent(g.size, max_rotation)
                x0, x1 = min(x0, g.center[0] - scale_hi * hx), max(x1, g.center[0] + scale_hi * hx)
                y0, y1 = min(y0, g.center[1] - scale_hi * hy), max(y1, g.center[1] + scale_hi * hy)
                reduction = min(reduction, _reduction(g.size * scale_lo, (out_h, out_w), self.max_reduction))
        return RegionPlan((x0, y0, x1, y1), reduction)

    def donor_crop(self, rng: np.random.Generator) -> Crop:
        """An unaugmented crop of another random sample (PartMix's source of parts)."""
        for _ in range(10):
            index = int(rng.integers(len(self)))
            geom = self.crop_geometry(index, None)
            matrix = affine_matrix(geom, self.codec.input_hw)
            pixels = self._warped(index, geom, matrix)
            if pixels is not None:
                return self.crop_of(index, pixels, matrix, self.records.keypoints[index])
        raise RuntimeError("PartMix: ten random donor images in a row were unreadable")

    def __getitem__(self, index: int):
        views = self.views(index)
        if views is None:
            return None
        clean, crop = views
        heatmaps, target_weight = self.codec.encode(crop.keypoints, crop.target_weight)
        sample = {"image": _normalise(crop.image), "heatmaps": torch.from_numpy(heatmaps),
                  "target_weight": torch.from_numpy(target_weight), "index": index}
        if self.siamese:
            # OASNet's pair: `image` becomes the clean view, `image_occluded` the transformed one; the occlusion
            # targets mark the naturally occluded joints (v=1) and, in the occluded view, the covered ones too.
            _, clean_weight = self.codec.encode(clean.keypoints, clean.target_weight)
            natural = (clean.visibility == 1).astype(np.float32)
            occluded = np.maximum(natural, covered_by_occlusions(crop))
            natural_map = self.codec.encode_occlusion(clean.keypoints, natural)
            sample |= {"image": _normalise(clean.image), "image_occluded": sample["image"],
                       "target_weight": torch.from_numpy(clean_weight),
                       "target_weight_occluded": torch.from_numpy(target_weight),
                       "occlusion": torch.from_numpy(natural_map), "natural_occlusion": torch.from_numpy(natural_map),
                       "occlusion_occluded": torch.from_numpy(self.codec.encode_occlusion(crop.keypoints, occluded))}
        return sample

    def inverse_matrix(self, index: int) -> np.ndarray:
        """Crop -> image mapping of an evaluation (unaugmented) crop."""
        return affine_matrix(self.crop_geometry(index, None), self.codec.input_hw, inverse=True)

    def crop_area(self, index: int) -> float:
        size = self.crop_geometry(index, None).size
        return float(size[0] * size[1])


_MEAN_CHW = torch.from_numpy(IMAGENET_MEAN).view(3, 1, 1)
_STD_CHW = torch.from_numpy(IMAGENET_STD).view(3, 1, 1)


def _normalise(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> contiguous (3, H, W) float32 (x - mean) / std: the same float32 values as numpy's
    (image - mean) / std, with one uint8 transpose and two in-place passes instead of four float temporaries."""
    chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
    return chw.float().sub_(_MEAN_CHW).div_(_STD_CHW)


class SampleGeometry(NamedTuple):
    rng: np.random.Generator | None  # None for evaluation samples: no augmentation
    geom: CropGeometry
    matrix: np.ndarray  # (2, 3) image -> crop, flip included
    keypoints: np.ndarray  # (K, 3) in image pixels, flip pairs swapped when flipped
    flipped: bool


def flip_matrix(width: int) -> np.ndarray:
    """2x3 horizontal mirror of a crop `width` pixels wide (pixel x -> width - 1 - x, as cv2.flip)."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])


def collate_skip_none(batch):
    batch = [sample for sample in batch if sample is not None]
    if not batch:
        return None
    return torch.utils.data.default_collate(batch)


def _box_corners(bbox_xywh) -> np.ndarray:
    x, y, w, h = bbox_xywh
    return np.array([[x, y], [x + w, y], [x, y + h], [x + w, y + h]], dtype=np.float64)


def _box_bounds(points: np.ndarray) -> np.ndarray:
    return np.concatenate([points.min(axis=0), points.max(axis=0)])


# ----------------------------------------------------------------------------------------------------------------
# The decoded-region cache and the geometry of reduced decoding


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


_JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")
_REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}


def _reducible(path: str) -> bool:
    """JPEG only: libjpeg scales in the DCT; other formats would be decoded whole and resized."""
    return path.lower().endswith(_JPEG_SUFFIXES)


def _decode_bgr(path: str, reduction: int) -> np.ndarray | None:
    """The image as BGR uint8, decoded at 1/`reduction` scale (1, 2, 4, 8)."""
    return cv2.imread(path, _REDUCED_FLAGS[reduction] if reduction > 1 else cv2.IMREAD_COLOR)


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


def _union(a, b) -> tuple[int, int, int, int]:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


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
