"""A COCO-format top-down dataset: one sample per annotated person, cropped, augmented and encoded."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from datasets.codec import HeatmapCodec
from datasets.occlusion import LJAParams, limb_joint_augmentation
from datasets.skeletons import Skeleton
from datasets.topdown import CropGeometry, affine_matrix, box_to_crop, transform_points, warp_image

log = logging.getLogger(__name__)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255


@dataclass(frozen=True)
class Augment:
    """Geometric augmentation of the training crops (HRNet's defaults, rotation applied with p=0.6)."""

    scale_factor: float = 0.25
    rotation: float = 30.0
    rotation_p: float = 0.6


@dataclass(frozen=True)
class PersonRecord:
    ann_id: int
    image_id: int
    file: Path
    bbox: tuple[float, float, float, float]
    keypoints: np.ndarray  # (K, 3) x, y, v
    head_box: tuple[float, float, float, float] | None


def load_person_records(ann_file: Path, image_dir: Path, num_keypoints: int) -> list[PersonRecord]:
    try:
        data = json.loads(Path(ann_file).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read annotation file {ann_file}: {err}") from err
    files = {img["id"]: Path(image_dir) / img["file_name"] for img in data["images"]}
    records = []
    for ann in data["annotations"]:
        if ann.get("iscrowd", 0) or ann.get("num_keypoints", 0) == 0:
            continue
        kpts = np.asarray(ann["keypoints"], dtype=np.float32).reshape(-1, 3)
        if kpts.shape[0] != num_keypoints:
            raise ValueError(
                f"{ann_file}: annotation {ann['id']} has {kpts.shape[0]} keypoints, expected {num_keypoints}"
            )
        records.append(
            PersonRecord(
                ann_id=ann["id"],
                image_id=ann["image_id"],
                file=files[ann["image_id"]],
                bbox=tuple(ann["bbox"]),
                keypoints=kpts,
                head_box=tuple(ann["head_box"]) if "head_box" in ann else None,
            )
        )
    return records


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
    ):
        self.records = records
        self.skeleton = skeleton
        self.codec = codec
        self.train = train
        self.augment = augment
        self.lja = lja
        self.seed = seed
        self.padding = padding
        self.epoch = 0
        self.skipped: set[int] = set()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def crop_geometry(self, index: int, rng: np.random.Generator | None) -> CropGeometry:
        geom = box_to_crop(self.records[index].bbox, self.codec.input_hw, self.padding)
        if rng is None:
            return geom
        a = self.augment
        scale = float(np.clip(rng.normal() * a.scale_factor + 1, 1 - a.scale_factor, 1 + a.scale_factor))
        rotation = 0.0
        if rng.random() < a.rotation_p:
            rotation = float(np.clip(rng.normal() * a.rotation, -2 * a.rotation, 2 * a.rotation))
        return CropGeometry(geom.center, geom.size * scale, rotation)

    def __getitem__(self, index: int):
        record = self.records[index]
        image = cv2.imread(str(record.file), cv2.IMREAD_COLOR)
        if image is None:
            if index not in self.skipped:
                log.warning("skipping unreadable image %s (annotation %s)", record.file, record.ann_id)
            self.skipped.add(index)
            return None
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.train else None
        geom = self.crop_geometry(index, rng)
        matrix = affine_matrix(geom, self.codec.input_hw)
        crop = warp_image(image, matrix, self.codec.input_hw)
        keypoints = transform_points(record.keypoints[:, :2], matrix)
        visibility = record.keypoints[:, 2].astype(np.int64)
        if self.train and self.lja is not None:
            body_box = _box_bounds(transform_points(_box_corners(record.bbox), matrix))
            crop = limb_joint_augmentation(
                crop, keypoints, visibility, body_box, self.skeleton.limb_joints, self.lja, rng
            ).image
        heatmaps, target_weight = self.codec.encode(keypoints, (visibility > 0).astype(np.float32))
        tensor = torch.from_numpy(((crop.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1))
        return {
            "image": tensor,
            "heatmaps": torch.from_numpy(heatmaps),
            "target_weight": torch.from_numpy(target_weight),
            "index": index,
        }

    def inverse_matrix(self, index: int) -> np.ndarray:
        """Crop -> image mapping of an evaluation (unaugmented) crop."""
        return affine_matrix(self.crop_geometry(index, None), self.codec.input_hw, inverse=True)


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
