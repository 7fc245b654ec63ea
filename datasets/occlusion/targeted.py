"""Targeted occlusion augmentations: Pytel, Kayhan & van Gemert, "Tilting at windmills: Data augmentation for deep
pose estimation does not help with occlusions", ICPR 2020 (arXiv:2010.10451) -- the `tilting` space. Keypoint blur /
cutout, multi-keypoint cutout, part cutout / blur and PartMix, each with label removal on or off. Crop transforms as
in datasets/occlusion/crop.py; written by hand: no augmentation library implements them.

A keypoint transform acts on a random visible (v=2, inside the crop) joint; a part transform on a random part with
at least two labelled joints inside the crop, over the smallest rectangle holding them. Label removal zeroes the
target weight of every labelled joint the region covers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from datasets.occlusion.crop import (Crop, Occlusion, blurred, clip_box, covered, ellipse_mask, image_mean, paint,
                                     rect_mask, remove_labels)
from datasets.skeletons import Skeleton

KEYPOINT_BLUR_KERNEL = 9
PART_BLUR_KERNEL, PART_BLUR_SIGMA = 31, 5.0


def visible_joints(crop: Crop) -> np.ndarray:
    return np.flatnonzero((crop.visibility == 2) & crop.inside())


def part_box(crop: Crop, joints) -> tuple[int, int, int, int] | None:
    """Smallest pixel rectangle over the part's labelled joints inside the crop; None with fewer than two."""
    joints = np.asarray(joints)
    usable = joints[(crop.visibility[joints] > 0) & crop.inside()[joints]]
    if len(usable) < 2:
        return None
    xy = crop.keypoints[usable]
    x0, y0 = np.floor(xy.min(axis=0))
    x1, y1 = np.floor(xy.max(axis=0)) + 1
    return clip_box(x0, y0, x1, y1, crop.image.shape[:2])


def keypoint_circle(crop: Crop, joint: int, radius: float):
    cx, cy = crop.keypoints[joint]
    mask = ellipse_mask(crop.image.shape[:2], (cx, cy), (radius, radius))
    return mask, clip_box(cx - radius, cy - radius, cx + radius + 1, cy + radius + 1, crop.image.shape[:2])


def radius_of(crop: Crop, radius_ratio: float) -> float:
    """A circle radius that scales with the person: a fraction of the body box's longer side."""
    x0, y0, x1, y1 = crop.body_box
    return max(radius_ratio * max(x1 - x0, y1 - y0), 1.0)


@dataclass(frozen=True)
class KeypointOcclusion:
    """Blur (kernel 9) or cut out (image-mean circle) around `max_keypoints` random visible joints: 1 for keypoint
    blur / cutout, up to 5 for the multi-keypoint variant."""

    mode: str = "cutout"  # "cutout" or "blur"
    p: float = 0.5
    radius_ratio: float = 0.08
    max_keypoints: int = 1
    label_removal: bool = False

    def __post_init__(self):
        if self.mode not in ("cutout", "blur"):
            raise ValueError(f"keypoint occlusion mode must be 'cutout' or 'blur', got {self.mode!r}")
        if not 0 <= self.p <= 1 or self.radius_ratio <= 0 or self.max_keypoints < 1:
            raise ValueError("keypoint occlusion needs p in [0, 1], radius_ratio > 0 and max_keypoints >= 1")

    def __call__(self, crop: Crop, rng: np.random.Generator) -> Crop:
        if self.p <= 0 or rng.random() >= self.p:
            return crop
        candidates = visible_joints(crop)
        if len(candidates) == 0:
            return crop
        n = min(int(rng.integers(1, self.max_keypoints + 1)), len(candidates))
        radius = radius_of(crop, self.radius_ratio)
        image, occlusions = crop.image, list(crop.occlusions)
        union = np.zeros(crop.image.shape[:2], bool)
        fill = image_mean(crop.image)
        for joint in rng.choice(candidates, size=n, replace=False):
            mask, box = keypoint_circle(crop, int(joint), radius)
            if self.mode == "blur":
                image = paint(image, mask, blurred(image, box, KEYPOINT_BLUR_KERNEL))
                occlusions.append(Occlusion(box, None, joint=int(joint), kind="blur", shape="circle"))
            else:
                image = paint(image, mask, fill)
                occlusions.append(Occlusion(box, int(fill.mean().round()), joint=int(joint), kind="mean",
                                            shape="circle"))
            union |= mask
        weight = remove_labels(crop, covered(crop, union)) if self.label_removal else crop.target_weight
        return crop.replace(image=image, occlusions=tuple(occlusions), target_weight=weight)


@dataclass(frozen=True)
class PartOcclusion:
    """Cut out (image mean) or blur (kernel 31, sigma 5) the rectangle over a random body part; or, for PartMix,
    paste the same part's rectangle from another person's crop (`donor`), resized to fit."""

    skeleton: Skeleton
    mode: str = "cutout"  # "cutout", "blur" or "partmix"
    p: float = 0.5
    parts: tuple[str, ...] = ()  # () = every part of the skeleton
    label_removal: bool = False
    donor: Callable[[np.random.Generator], Crop] | None = None  # PartMix: draws another sample's crop

    def __post_init__(self):
        if self.mode not in ("cutout", "blur", "partmix"):
            raise ValueError(f"part occlusion mode must be 'cutout', 'blur' or 'partmix', got {self.mode!r}")
        for name in self.parts:
            self.skeleton.part(name)  # raises on an unknown part
        if not 0 <= self.p <= 1:
            raise ValueError(f"part occlusion p must be in [0, 1], got {self.p}")

    def part_names(self) -> tuple[str, ...]:
        return self.parts or tuple(name for name, _ in self.skeleton.parts)

    def __call__(self, crop: Crop, rng: np.random.Generator) -> Crop:
        if self.p <= 0 or rng.random() >= self.p:
            return crop
        names = [n for n in self.part_names() if part_box(crop, self.skeleton.part(n)) is not None]
        if not names:
            return crop
        name = names[int(rng.integers(len(names)))]
        box = part_box(crop, self.skeleton.part(name))
        mask = rect_mask(crop.image.shape[:2], box)
        if self.mode == "partmix":
            image = self._paste(crop, name, box, rng)
            if image is None:
                return crop
            occlusion = Occlusion(box, None, part=name, kind="paste")
        elif self.mode == "blur":
            image = paint(crop.image, mask, blurred(crop.image, box, PART_BLUR_KERNEL, PART_BLUR_SIGMA))
            occlusion = Occlusion(box, None, part=name, kind="blur")
        else:
            fill = image_mean(crop.image)
            image = paint(crop.image, mask, fill)
            occlusion = Occlusion(box, int(fill.mean().round()), part=name, kind="mean")
        weight = remove_labels(crop, covered(crop, mask)) if self.label_removal else crop.target_weight
        return crop.replace(image=image, occlusions=crop.occlusions + (occlusion,), target_weight=weight)

    def _paste(self, crop: Crop, name: str, box, rng: np.random.Generator) -> np.ndarray | None:
        if self.donor is None:
            raise ValueError("PartMix needs a donor: a function drawing another sample's crop")
        donor = self.donor(rng)
        source = part_box(donor, self.skeleton.part(name))
        if source is None or box[2] <= box[0] or box[3] <= box[1]:
            return None
        patch = donor.image[source[1]:source[3], source[0]:source[2]]
        image = crop.image.copy()
        image[box[1]:box[3], box[0]:box[2]] = cv2.resize(patch, (box[2] - box[0], box[3] - box[1]),
                                                         interpolation=cv2.INTER_LINEAR)
        return image


TARGETED = ("keypoint-blur", "keypoint-cutout", "multi-keypoint", "part-cutout", "part-blur", "partmix")


def targeted_augmentation(name: str, skeleton: Skeleton, p: float = 0.5, label_removal: bool = False,
                          radius_ratio: float = 0.08, max_keypoints: int = 5, parts: tuple[str, ...] = (),
                          donor=None):
    """The augmentation paper's transforms by name (the `tilting` space's vocabulary)."""
    if name == "keypoint-blur":
        return KeypointOcclusion("blur", p, radius_ratio, 1, label_removal)
    if name == "keypoint-cutout":
        return KeypointOcclusion("cutout", p, radius_ratio, 1, label_removal)
    if name == "multi-keypoint":
        return KeypointOcclusion("cutout", p, radius_ratio, max_keypoints, label_removal)
    if name in ("part-cutout", "part-blur", "partmix"):
        mode = {"part-cutout": "cutout", "part-blur": "blur", "partmix": "partmix"}[name]
        return PartOcclusion(skeleton, mode, p, parts, label_removal, donor)
    raise ValueError(f"unknown targeted augmentation {name!r}; choose from {', '.join(TARGETED)}")
