"""Random occluders, the TrialConfig `occ.p_occ` transform (the `pocc` space): rectangles, ellipses and textured
patches of random size and colour over the person's body box. Written by hand: no augmentation library draws
occluders relative to a person's body box.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from datasets.occlusion.crop import Crop, Occlusion, clip_box, covered, ellipse_mask, paint, rect_mask, remove_labels


@dataclass(frozen=True)
class RandomOccluders:
    """With probability p, `count` occluders over the person: rectangles and ellipses of one random colour, or
    textured patches (smoothed colour noise), each covering an `area` fraction of the body box (aspect 1:2..2:1),
    centred anywhere in the body box. p is the platform's p_occ."""

    p: float = 0.5
    count: tuple[int, int] = (1, 3)
    area: tuple[float, float] = (0.02, 0.15)
    shapes: tuple[str, ...] = ("rect", "ellipse", "texture")
    label_removal: bool = False

    def __post_init__(self):
        if not 0 <= self.p <= 1:
            raise ValueError(f"occluders p must be in [0, 1], got {self.p}")
        if not 1 <= self.count[0] <= self.count[1]:
            raise ValueError(f"occluders count must be 1 <= min <= max, got {self.count}")
        if not 0 < self.area[0] <= self.area[1] <= 1:
            raise ValueError(f"occluders area must be 0 < min <= max <= 1, got {self.area}")
        unknown = set(self.shapes) - {"rect", "ellipse", "texture"}
        if unknown or not self.shapes:
            raise ValueError(f"occluder shapes must be among rect, ellipse, texture, got {self.shapes}")

    def __call__(self, crop: Crop, rng: np.random.Generator) -> Crop:
        if self.p <= 0 or rng.random() >= self.p:
            return crop
        hw = crop.image.shape[:2]
        bx0, by0, bx1, by1 = crop.body_box
        body_area = max(bx1 - bx0, 1.0) * max(by1 - by0, 1.0)
        image, occlusions, hidden = crop.image, list(crop.occlusions), np.zeros(len(crop.keypoints), bool)
        for _ in range(int(rng.integers(self.count[0], self.count[1] + 1))):
            shape = self.shapes[int(rng.integers(len(self.shapes)))]
            area = rng.uniform(*self.area) * body_area
            aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
            w, h = math.sqrt(area * aspect), math.sqrt(area / aspect)
            cx, cy = rng.uniform(bx0, bx1), rng.uniform(by0, by1)
            box = clip_box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, hw)
            if box[2] <= box[0] or box[3] <= box[1]:
                continue  # fell entirely off the crop
            mask = ellipse_mask(hw, (cx, cy), (w / 2, h / 2)) if shape == "ellipse" else rect_mask(hw, box)
            if shape == "texture":
                noise = rng.integers(0, 256, size=(max(box[3] - box[1], 1), max(box[2] - box[0], 1), 3), dtype=np.uint8)
                source = np.zeros_like(image)
                source[box[1]:box[3], box[0]:box[2]] = cv2.GaussianBlur(noise, (5, 5), 0)
            else:
                source = rng.integers(0, 256, size=3).astype(np.uint8)
            image = paint(image, mask, source)
            hidden |= covered(crop, mask)
            occlusions.append(Occlusion(box=box, fill=None, kind="texture" if shape == "texture" else "colour",
                                        shape=shape))
        weight = remove_labels(crop, hidden) if self.label_removal else crop.target_weight
        return crop.replace(image=image, occlusions=tuple(occlusions), target_weight=weight)
