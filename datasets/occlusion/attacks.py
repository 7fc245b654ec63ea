"""Test-time occlusion attacks, applied to every evaluated person: the robustness protocol of Pytel, Kayhan &
van Gemert, "Tilting at windmills: Data augmentation for deep pose estimation does not help with occlusions",
ICPR 2020 (arXiv:2010.10451), the paper of the targeted augmentations (targeted.py).

Keypoint attacks cover a circle of radius r input-crop pixels around each labelled joint (or only the chosen
joints); part attacks cover the smallest rectangle over a body part's labelled joints. Modes: blur (Gaussian,
kernel 31, sigma 5), blackout (0) and meanout (the crop's mean colour). Deterministic: they draw nothing.
Written by hand: no library implements them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datasets.occlusion.crop import Crop, Occlusion, blurred, image_mean, paint, rect_mask
from datasets.occlusion.targeted import PART_BLUR_KERNEL, PART_BLUR_SIGMA, keypoint_circle, part_box
from datasets.skeletons import Skeleton

MODES = ("blur", "blackout", "meanout")
ATTACKS = tuple(f"{target}-{mode}" for target in ("keypoint", "part") for mode in MODES)


def _cover(image: np.ndarray, mask: np.ndarray, box, mode: str, mean: np.ndarray):
    if mode == "blur":
        return paint(image, mask, blurred(image, box, PART_BLUR_KERNEL, PART_BLUR_SIGMA)), None, "blur"
    if mode == "blackout":
        return paint(image, mask, np.zeros(3, np.uint8)), 0, "fill"
    return paint(image, mask, mean), int(mean.mean().round()), "mean"


@dataclass(frozen=True)
class KeypointAttack:
    mode: str
    radius: float
    joints: tuple[int, ...] = ()  # () = every labelled joint

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"attack mode must be one of {MODES}, got {self.mode!r}")
        if self.radius < 0:
            raise ValueError(f"attack radius must be >= 0, got {self.radius}")

    def __call__(self, crop: Crop, rng=None) -> Crop:
        if self.radius <= 0:
            return crop
        targets = np.flatnonzero((crop.visibility > 0) & crop.inside())
        if self.joints:
            targets = targets[np.isin(targets, self.joints)]
        image, occlusions, mean = crop.image, list(crop.occlusions), image_mean(crop.image)
        if self.mode == "blur":  # one blur of the original for all circles: overlapping circles blur once
            union = np.zeros(crop.image.shape[:2], bool)
            for joint in targets:
                mask, box = keypoint_circle(crop, int(joint), self.radius)
                union |= mask
                occlusions.append(Occlusion(box, None, joint=int(joint), kind="blur", shape="circle"))
            if targets.size:
                h, w = crop.image.shape[:2]
                image = paint(image, union, blurred(image, (0, 0, w, h), PART_BLUR_KERNEL, PART_BLUR_SIGMA))
            return crop.replace(image=image, occlusions=tuple(occlusions))
        for joint in targets:
            mask, box = keypoint_circle(crop, int(joint), self.radius)
            image, fill, kind = _cover(image, mask, box, self.mode, mean)
            occlusions.append(Occlusion(box, fill, joint=int(joint), kind=kind, shape="circle"))
        return crop.replace(image=image, occlusions=tuple(occlusions))


@dataclass(frozen=True)
class PartAttack:
    skeleton: Skeleton
    mode: str
    part: str

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"attack mode must be one of {MODES}, got {self.mode!r}")
        self.skeleton.part(self.part)

    def __call__(self, crop: Crop, rng=None) -> Crop:
        box = part_box(crop, self.skeleton.part(self.part))
        if box is None:
            return crop
        mask = rect_mask(crop.image.shape[:2], box)
        image, fill, kind = _cover(crop.image, mask, box, self.mode, image_mean(crop.image))
        return crop.replace(image=image, occlusions=crop.occlusions + (Occlusion(box, fill, part=self.part, kind=kind),))


def make_attack(name: str, skeleton: Skeleton, radius: float = 0.0, part: str = "", joints: tuple[int, ...] = ()):
    """`keypoint-blackout` with a radius (and optionally joints), `part-blur` with a part, ..."""
    target, _, mode = name.partition("-")
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")
    if target == "keypoint":
        return KeypointAttack(mode, radius, tuple(joints))
    if not part:
        raise ValueError(f"attack {name!r} needs a body part: one of {[p for p, _ in skeleton.parts]}")
    return PartAttack(skeleton, mode, part)
