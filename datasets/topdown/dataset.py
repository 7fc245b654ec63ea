"""A top-down dataset: one sample per person record, cropped, augmented and encoded, in the order of an MMPose
pipeline: geometry (datasets/topdown/geometry.py, augment.py: half-body, random scale and rotation, then the flip
coin with the skeleton's flip pairs) -> pixels (image_cache.py: the warped crop) -> photometric jitter -> occlusion
transforms (datasets/occlusion: `build_occlusions`' list, then a test-time attack) -> targets (codec.py: heatmaps,
target weights, normalisation; OASNet's occlusion maps for a siamese pair).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import random
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from datasets.annotations import PersonRecord, RecordTable
from datasets.occlusion.crop import Crop, covered_by_occlusions
from datasets.occlusion.targeted import PartOcclusion
from datasets.skeletons import Skeleton
from datasets.topdown.augment import Augment, body_halves, half_body_geometry, photometric_transform, random_crop
from datasets.topdown.codec import IMAGENET_MEAN, IMAGENET_STD, HeatmapCodec, normalise
from datasets.topdown.geometry import (CropGeometry, affine_matrix, bounds, box_corners, box_to_crop, flip_matrix,
                                       transform_points)
from datasets.topdown.image_cache import RegionCache, RegionPlan, plan_region, read_crop, read_full, reducible
from datasets.topdown.image_check import ImageFault
from datasets.topdown.region_store import attach

log = logging.getLogger(__name__)

__all__ = ["TopDownDataset", "SampleGeometry", "collate_skip_none", "Augment", "IMAGENET_MEAN", "IMAGENET_STD"]

DEFAULT_CACHE_MB = 256  # per dataset and process: each data-loader worker holds its own cache


class TopDownDataset(torch.utils.data.Dataset):
    """Yields dicts with `image` (3, H, W) normalised float, `heatmaps`, `target_weight`, `index`.

    Randomness is a pure function of (seed, epoch, index), so a resumed epoch sees the same samples. A sample
    whose image is not the one its annotation describes (missing, unreadable, truncated, or of another size than
    the annotation's `width` x `height`: image_check.py) is skipped (returns None, dropped by `collate_skip_none`),
    counted in `skipped` and logged once with the reason (`faults`: index -> reason).

    The records are held as a RecordTable (a few numpy arrays), so forked data-loader workers share them with the
    parent instead of copying them page by page. With `fast` (the default) an image is decoded once into a
    per-dataset, bytes-bounded LRU of decoded regions (`cache_mb`; default 256 MiB or $OCCPOSE_IMAGE_CACHE_MB;
    0 turns it off), at a reduced JPEG scale (libjpeg's 1/2, 1/4, 1/8 DCT scaling, at most `max_reduction`) when
    every crop any augmentation can draw from the image still has at least one decoded pixel per output pixel.
    The cached region of an image covers every crop any augmentation can draw from its persons; a crop outside it
    is decoded afresh. The labels (keypoints, heatmaps, target weights) never depend on the fast path; without a
    reduced decode the pixels are the full-decode path's up to one grey level in a rare pixel (OpenCV's float32
    source coordinates round differently relative to a region's origin), and a sample never depends on what the
    cache holds. `region_store` (a directory region_store.py built, or a RegionStore) serves crops from regions
    pre-cropped on disk: the same pixels, no decode. `fast=False` is the plain path: the whole image decoded and
    warped for every sample.
    Measurements: BENCHMARKS.md; equivalence: tests/datasets/test_pipeline_speed.py.

    `augment` (training only) is the identity by default; `occlusions` are the training occlusion transforms in
    the order they run (a trial's come from datasets.occlusion.build_occlusions); `attack` a test-time attack run
    after them on every sample; `siamese` adds OASNet's clean/occluded pair.
    """

    def __init__(
        self,
        records: Sequence[PersonRecord] | RecordTable,
        skeleton: Skeleton,
        codec: HeatmapCodec,
        train: bool,
        augment: Augment = Augment(),
        seed: int = 0,
        padding: float = 1.25,
        occlusions: Sequence = (),
        attack=None,
        siamese: bool = False,
        fast: bool = True,
        cache_mb: float | None = None,
        max_reduction: int = 8,
        region_store=None,
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
        self.faults: dict[int, str] = {}
        self._photometric = photometric_transform(augment.photometric_p)
        # Training occlusion transforms, applied in this order (datasets.occlusion.build_occlusions assembles a
        # trial's); a PartMix without a donor takes its parts from this dataset's other samples.
        self.occlusions = tuple(dataclasses.replace(t, donor=self.donor_crop)
                                if isinstance(t, PartOcclusion) and t.mode == "partmix" and t.donor is None else t
                                for t in occlusions)
        self.attack = attack  # a test-time attack (datasets/occlusion/attacks.py), applied to every sample
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
        # Pre-cropped regions on disk (region_store.py): a crop warped from mapped pixels, no decode; exact.
        self.store, self._store_entry = attach(region_store, self) if fast else (None, None)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def crop_geometry(self, index: int, rng: np.random.Generator | None) -> CropGeometry:
        """The sample's crop: the unaugmented box crop, or (with a stream) the augmented one (augment.random_crop)."""
        geom = box_to_crop(self.records.bbox[index], self.codec.input_hw, self.padding)
        if rng is None:
            return geom
        return random_crop(geom, self.records.keypoints[index], self.augment, self.skeleton, self.codec.input_hw, rng)

    def crop(self, index: int, epoch: int | None = None) -> Crop | None:
        """The sample's crop with its annotations after every transform (None when the image is unreadable)."""
        views = self.views(index, epoch)
        return None if views is None else views[1]

    def sample_geometry(self, index: int, epoch: int | None = None) -> SampleGeometry:
        """The sample's random stream and its crop: geometry (half-body, scale, rotation), then the flip coin. The
        stream goes on to the pixel and occlusion transforms, so every path that draws a sample starts here."""
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index]) if self.train else None
        geom = self.crop_geometry(index, rng)
        matrix = affine_matrix(geom, self.codec.input_hw, udp=self.codec.udp)
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
        try:
            pixels = self._warped(index, geom, matrix)
        except ImageFault as fault:
            self.skip(index, str(fault))
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

    def skip(self, index: int, reason: str) -> None:
        """Count sample `index` as skipped because its image is faulty (`reason`), logging it the first time."""
        if index not in self.skipped:
            log.warning("skipping image %s (annotation %s): %s", self.records.file(index),
                        self.records.ann_id[index], reason)
        self.skipped.add(index)
        self.faults.setdefault(index, reason)

    def crop_of(self, index: int, pixels: np.ndarray, matrix: np.ndarray, keypoints: np.ndarray) -> Crop:
        """The Crop of already warped pixels, before any pixel transform: keypoints and body box in crop pixels
        (the labels always follow `matrix`, image -> crop)."""
        body_box = bounds(transform_points(box_corners(self.records.bbox[index]), matrix))
        return Crop.of(pixels, transform_points(keypoints[:, :2], matrix), keypoints[:, 2].astype(np.int64), body_box)

    # ------------------------------------------------------------------------------------------------------------
    # Pixels: the warped crop, from the cache, a reduced decode or the whole image

    def _warped(self, index: int, geom: CropGeometry, matrix: np.ndarray) -> np.ndarray:
        """The (H, W, 3) RGB crop `matrix` draws from the sample's image; ImageFault when the image is faulty."""
        hw, image_wh = self.codec.input_hw, self.records.size_of(index)
        if not self.fast:
            return read_full(self.records.file(index), matrix, hw, image_wh)
        file_index = int(self.records.file_index[index])
        path = self.records.path(file_index)
        if self.store is not None:
            pixels = self.store.read(int(self._store_entry[file_index]), geom.size, matrix, hw, self.max_reduction,
                                     image_wh)
            if pixels is not None:
                return pixels
        return read_crop(self.cache, file_index, path, geom.size, matrix, hw, self.max_reduction,
                         lambda: self._image_plan(file_index, path), image_wh)

    def _image_plan(self, file_index: int, path: str) -> RegionPlan:
        """Where, and how finely, any crop of the image's persons can sample it under this dataset's augmentation."""
        a, hw = self.augment, self.codec.input_hw
        geoms = []
        for index in self._by_image[self._image_starts[file_index]:self._image_starts[file_index + 1]]:
            geoms.append(box_to_crop(self.records.bbox[index], hw, self.padding))
            if self.train and a.half_body_p > 0:
                halves = body_halves(self.records.keypoints[index], self.skeleton, a.half_body_min_joints)
                if halves is not None:
                    geoms += [g for g in (half_body_geometry(half, hw) for half in halves) if g is not None]
        return plan_region(geoms, a.scale_range(self.train), a.max_rotation(self.train), hw,
                           self.max_reduction if reducible(path) else 1)

    def donor_crop(self, rng: np.random.Generator) -> Crop:
        """An unaugmented crop of another random sample (PartMix's source of parts)."""
        for _ in range(10):
            index = int(rng.integers(len(self)))
            geom = self.crop_geometry(index, None)
            matrix = affine_matrix(geom, self.codec.input_hw, udp=self.codec.udp)
            try:
                pixels = self._warped(index, geom, matrix)
            except ImageFault as fault:
                self.skip(index, str(fault))
                continue
            return self.crop_of(index, pixels, matrix, self.records.keypoints[index])
        raise RuntimeError("PartMix: ten random donor images in a row were faulty")

    def __getitem__(self, index: int):
        views = self.views(index)
        if views is None:
            return None
        clean, crop = views
        heatmaps, target_weight = self.codec.encode(crop.keypoints, crop.target_weight)
        sample = {"image": normalise(crop.image), "heatmaps": torch.from_numpy(heatmaps),
                  "target_weight": torch.from_numpy(target_weight), "index": index}
        if self.siamese:
            # OASNet's pair: `image` becomes the clean view, `image_occluded` the transformed one; the occlusion
            # targets mark the naturally occluded joints (v=1) and, in the occluded view, the covered ones too.
            _, clean_weight = self.codec.encode(clean.keypoints, clean.target_weight)
            natural = (clean.visibility == 1).astype(np.float32)
            occluded = np.maximum(natural, covered_by_occlusions(crop))
            natural_map = self.codec.encode_occlusion(clean.keypoints, natural)
            sample |= {"image": normalise(clean.image), "image_occluded": sample["image"],
                       "target_weight": torch.from_numpy(clean_weight),
                       "target_weight_occluded": torch.from_numpy(target_weight),
                       "occlusion": torch.from_numpy(natural_map), "natural_occlusion": torch.from_numpy(natural_map),
                       "occlusion_occluded": torch.from_numpy(self.codec.encode_occlusion(crop.keypoints, occluded))}
        return sample

    def inverse_matrix(self, index: int) -> np.ndarray:
        """Crop -> image mapping of an evaluation (unaugmented) crop."""
        return affine_matrix(self.crop_geometry(index, None), self.codec.input_hw, inverse=True, udp=self.codec.udp)

    def crop_area(self, index: int) -> float:
        size = self.crop_geometry(index, None).size
        return float(size[0] * size[1])


class SampleGeometry(NamedTuple):
    rng: np.random.Generator | None  # None for evaluation samples: no augmentation
    geom: CropGeometry
    matrix: np.ndarray  # (2, 3) image -> crop, flip included
    keypoints: np.ndarray  # (K, 3) in image pixels, flip pairs swapped when flipped
    flipped: bool


def collate_skip_none(batch):
    batch = [sample for sample in batch if sample is not None]
    if not batch:
        return None
    return torch.utils.data.default_collate(batch)
