"""Training augmentation of a top-down crop: HRNet's geometric draws (half-body, random scale and rotation; the flip
coin is drawn by the dataset after them) and the photometric jitter of the warped crop.

The geometry follows HRNet's COCO/MPII training pipeline (Sun et al. 2019; the same draws as MMPose's
RandomHalfBody / RandomBBoxTransform): scale ~ clip(N(1, s), 1 - s, 1 + s), rotation ~ clip(N(0, r), -2r, 2r)
degrees with probability `rotation_p`, and the half-body crop over the upper or lower body's labelled joints.
Every draw takes the sample's numpy Generator, in a fixed order, so a sample is a pure function of its stream.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import albumentations
import numpy as np

from datasets.skeletons import Skeleton
from datasets.topdown.geometry import CropGeometry, box_to_crop


@dataclass(frozen=True)
class Augment:
    """Training augmentation parameters. The defaults are the identity (no augmentation at all); a recipe sets
    them: the trial's `data.*` section (the synthetic-CPU recipe), or HRNet's COCO/MPII numbers (scale 0.35,
    rotation 45 degrees with p 0.6, flip 0.5, half-body 0.3), which live with the other recipes in the trainer's
    presets, not here. Probabilities are in [0, 1].
    """

    scale_factor: float = 0.0  # s: scale ~ clip(N(1, s), 1 - s, 1 + s)
    rotation: float = 0.0  # r, degrees: rotation ~ clip(N(0, r), -2r, 2r) ...
    rotation_p: float = 0.0  # ... drawn with this probability, else 0
    flip_p: float = 0.0  # horizontal flip with the skeleton's flip pairs
    half_body_p: float = 0.0
    half_body_min_joints: int = 8  # only persons with more labelled joints than this get half-body
    photometric_p: float = 0.0  # brightness/contrast/saturation jitter of the crop

    def scale_range(self, train: bool) -> tuple[float, float]:
        """The smallest and largest scale a crop can be drawn at."""
        return (1 - self.scale_factor, 1 + self.scale_factor) if train else (1.0, 1.0)

    def max_rotation(self, train: bool) -> float:
        """The largest rotation a crop can be drawn at, in radians."""
        return math.radians(2 * self.rotation) if train and self.rotation_p > 0 else 0.0


def photometric_transform(p: float) -> albumentations.Compose:
    """Colour jitter of the uint8 RGB crop with probability p (labels untouched)."""
    return albumentations.Compose([albumentations.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02,
                                                              p=1.0)], p=p)


def random_crop(geom: CropGeometry, keypoints: np.ndarray, augment: Augment, skeleton: Skeleton,
                input_hw: tuple[int, int], rng: np.random.Generator) -> CropGeometry:
    """The augmented crop of a person whose unaugmented crop is `geom`: half-body (keypoints (K, 3) in image
    pixels with COCO visibility), then scale, then rotation, drawn in that order from `rng`."""
    a = augment
    if a.half_body_p > 0 and rng.random() < a.half_body_p:
        geom = _half_body(keypoints, a, skeleton, input_hw, rng) or geom
    scale = min(max(rng.normal() * a.scale_factor + 1, 1 - a.scale_factor), 1 + a.scale_factor)
    rotation = 0.0
    if rng.random() < a.rotation_p:
        rotation = min(max(rng.normal() * a.rotation, -2 * a.rotation), 2 * a.rotation)
    return CropGeometry(geom.center, geom.size * float(scale), float(rotation))


def _half_body(keypoints: np.ndarray, augment: Augment, skeleton: Skeleton, input_hw: tuple[int, int],
               rng: np.random.Generator) -> CropGeometry | None:
    """HRNet's half-body crop: the upper or lower body's labelled joints, their box x 1.5, centred on their mean."""
    halves = body_halves(keypoints, skeleton, augment.half_body_min_joints)
    if halves is None:
        return None
    upper_joints, lower_joints = halves
    chosen = upper_joints if rng.random() < 0.5 and len(upper_joints) > 2 else \
        lower_joints if len(lower_joints) > 2 else upper_joints
    return half_body_geometry(chosen, input_hw)


def body_halves(keypoints: np.ndarray, skeleton: Skeleton, min_joints: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(upper, lower): the labelled joints' (N, 2) image positions in each half of the skeleton; None unless the
    person has more than `min_joints` labelled joints."""
    labelled = keypoints[:, 2] > 0
    if labelled.sum() <= min_joints:
        return None
    upper = np.zeros_like(labelled)
    upper[list(skeleton.upper_body)] = True
    return keypoints[labelled & upper, :2], keypoints[labelled & ~upper, :2]


def half_body_geometry(chosen: np.ndarray, input_hw: tuple[int, int]) -> CropGeometry | None:
    """The crop over (N, 2) joint positions: their box padded by 1.5 at the input's aspect, centred on their mean;
    None with fewer than two joints."""
    if len(chosen) < 2:
        return None
    low, high = chosen.min(axis=0), chosen.max(axis=0)
    fitted = box_to_crop((0, 0, *(high - low)), input_hw, padding=1.5)
    return CropGeometry(chosen.mean(axis=0).astype(np.float64), fitted.size)
