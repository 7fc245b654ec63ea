"""A top-down dataset: one sample per person record, cropped, augmented and encoded.

Training crops go through HRNet's geometric pipeline (half-body, random scale and rotation, horizontal flip with the
skeleton's flip pairs), then pixel-level photometric jitter (albumentations), then LJA on the final crop.
"""
from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

import albumentations
import cv2
import numpy as np
import torch

from datasets.annotations import PersonRecord
from datasets.codec import HeatmapCodec
from datasets.occlusion import LJA, Crop, LJAParams, covered_by_occlusions
from datasets.targeted import PartOcclusion
from datasets.skeletons import Skeleton
from datasets.topdown import CropGeometry, affine_matrix, box_to_crop, transform_points, warp_image

log = logging.getLogger(__name__)

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
    """

    def __init__(
        self,
        records: list[PersonRecord],
        skeleton: Skeleton,
        codec: HeatmapCodec,
        train: bool,
        augment: Augment = Augment(),
        lja: LJAParams | None = None,
        seed: int = 0,
        padding: float = 1.25,
        occlusions: Sequence = (),
        attack=None,
        siamese: bool = False,
    ):
        self.records = records
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

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def crop_geometry(self, index: int, rng: np.random.Generator | None) -> CropGeometry:
        record = self.records[index]
        geom = box_to_crop(record.bbox, self.codec.input_hw, self.padding)
        if rng is None:
            return geom
        a = self.augment
        if a.half_body_p > 0 and rng.random() < a.half_body_p:
            geom = self._half_body(record.keypoints, rng) or geom
        scale = float(np.clip(rng.normal() * a.scale_factor + 1, 1 - a.scale_factor, 1 + a.scale_factor))
        rotation = 0.0
        if rng.random() < a.rotation_p:
            rotation = float(np.clip(rng.normal() * a.rotation, -2 * a.rotation, 2 * a.rotation))
        return CropGeometry(geom.center, geom.size * scale, rotation)

    def _half_body(self, keypoints: np.ndarray, rng: np.random.Generator) -> CropGeometry | None:
        """HRNet's half-body crop: the upper or lower body's labelled joints, their box x 1.5, centred on their mean."""
        labelled = keypoints[:, 2] > 0
        if labelled.sum() <= self.augment.half_body_min_joints:
            return None
        upper = np.zeros_like(labelled)
        upper[list(self.skeleton.upper_body)] = True
        upper_joints, lower_joints = keypoints[labelled & upper, :2], keypoints[labelled & ~upper, :2]
        chosen = upper_joints if rng.random() < 0.5 and len(upper_joints) > 2 else \
            lower_joints if len(lower_joints) > 2 else upper_joints
        if len(chosen) < 2:
            return None
        low, high = chosen.min(axis=0), chosen.max(axis=0)
        fitted = box_to_crop((0, 0, *(high - low)), self.codec.input_hw, padding=1.5)
        return CropGeometry(chosen.mean(axis=0).astype(np.float64), fitted.size)

    def crop(self, index: int, epoch: int | None = None) -> Crop | None:
        """The sample's crop with its annotations after every transform (None when the image is unreadable)."""
        views = self.views(index, epoch)
        return None if views is None else views[1]

    def views(self, index: int, epoch: int | None = None) -> tuple[Crop, Crop] | None:
        """(clean, transformed): the same crop before and after the occlusion transforms and attack."""
        record = self.records[index]
        image = cv2.imread(str(record.file), cv2.IMREAD_COLOR)
        if image is None:
            if index not in self.skipped:
                log.warning("skipping unreadable image %s (annotation %s)", record.file, record.ann_id)
            self.skipped.add(index)
            return None
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch, index]) if self.train else None
        matrix = affine_matrix(self.crop_geometry(index, rng), self.codec.input_hw)
        keypoints = record.keypoints
        if rng is not None and self.augment.flip_p > 0 and rng.random() < self.augment.flip_p:
            # Flip the crop rather than the image: the same pixels, a fraction of the work.
            matrix = flip_matrix(self.codec.input_hw[1]) @ np.vstack([matrix, [0, 0, 1]])
            keypoints = keypoints[self.skeleton.flip_index]
        clean = self._plain_crop(record, image, matrix, keypoints)
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

    def _plain_crop(self, record: PersonRecord, image: np.ndarray, matrix: np.ndarray, keypoints: np.ndarray) -> Crop:
        """The warped crop with its keypoints and body box in crop pixels, before any pixel transform."""
        body_box = _box_bounds(transform_points(_box_corners(record.bbox), matrix))
        return Crop.of(warp_image(image, matrix, self.codec.input_hw), transform_points(keypoints[:, :2], matrix),
                       keypoints[:, 2].astype(np.int64), body_box)

    def donor_crop(self, rng: np.random.Generator) -> Crop:
        """An unaugmented crop of another random sample (PartMix's source of parts)."""
        for _ in range(10):
            index = int(rng.integers(len(self)))
            record = self.records[index]
            image = cv2.imread(str(record.file), cv2.IMREAD_COLOR)
            if image is not None:
                matrix = affine_matrix(self.crop_geometry(index, None), self.codec.input_hw)
                return self._plain_crop(record, cv2.cvtColor(image, cv2.COLOR_BGR2RGB), matrix, record.keypoints)
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


def _normalise(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(((image.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1))


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
