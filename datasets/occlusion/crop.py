"""The occlusion vocabulary every transform shares: a Crop (one person's crop and its annotations in crop pixels),
the Occlusion records a transform leaves on it, and the region operations (masks, paint, blur, covered joints,
label removal).

Every transform is a callable `transform(crop, rng) -> Crop`; it draws only from the passed Generator, never
mutates its input, and records the occlusions it drew, so previews and tests can check them. Label removal zeroes
the covered joints' target weight; the visibility label itself is never rewritten (COCO flags: 0 unlabelled,
1 labelled but occluded, 2 visible). Boxes are (x0, y0, x1, y1) crop pixels, x1/y1 exclusive.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Occlusion:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in crop pixels, x1/y1 exclusive (a circle's bounding box)
    fill: int | None  # the constant grey value painted; None where the region was blurred, pasted or textured
    joint: int | None = None
    part: str | None = None
    kind: str = "fill"  # fill (one grey value), mean (the image mean), colour, texture, blur, paste
    shape: str = "rect"  # rect, circle, ellipse


@dataclass(frozen=True)
class Crop:
    """One person's training or evaluation crop with its annotations, in crop pixels."""

    image: np.ndarray  # (H, W, 3) uint8
    keypoints: np.ndarray  # (K, 2)
    visibility: np.ndarray  # (K,) COCO flags
    body_box: np.ndarray  # (4,) x0, y0, x1, y1
    target_weight: np.ndarray  # (K,) float32
    occlusions: tuple[Occlusion, ...] = ()

    @classmethod
    def of(cls, image, keypoints, visibility, body_box) -> "Crop":
        visibility = np.asarray(visibility)
        return cls(image, np.asarray(keypoints, np.float64), visibility, np.asarray(body_box, np.float64),
                   (visibility > 0).astype(np.float32))

    def replace(self, **changes) -> "Crop":
        return dataclasses.replace(self, **changes)

    def inside(self) -> np.ndarray:
        h, w = self.image.shape[:2]
        x, y = self.keypoints[:, 0], self.keypoints[:, 1]
        return (x >= 0) & (x < w) & (y >= 0) & (y < h)


def rect_mask(hw, box) -> np.ndarray:
    mask = np.zeros(hw, bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def ellipse_mask(hw, center, radii) -> np.ndarray:
    """Pixels whose centres lie in the axis-aligned ellipse (a circle when the radii are equal); evaluated only
    over the ellipse's bounding box."""
    mask = np.zeros(hw, bool)
    rx, ry = max(radii[0], 1e-6), max(radii[1], 1e-6)
    x0, y0, x1, y1 = clip_box(center[0] - rx, center[1] - ry, center[0] + rx + 1, center[1] + ry + 1, hw)
    if x1 > x0 and y1 > y0:
        ys, xs = np.ogrid[y0:y1, x0:x1]
        mask[y0:y1, x0:x1] = ((xs - center[0]) / rx) ** 2 + ((ys - center[1]) / ry) ** 2 <= 1.0
    return mask


def _clamp(value, high: int) -> int:
    """round(value) into [0, high]; plain Python, as np.clip on one number costs ~5 us (LJA calls it per block)."""
    return min(max(int(round(value)), 0), high)


def clip_box(x0, y0, x1, y1, hw) -> tuple[int, int, int, int]:
    h, w = hw
    return _clamp(x0, w), _clamp(y0, h), _clamp(x1, w), _clamp(y1, h)


def image_mean(image: np.ndarray) -> np.ndarray:
    """The crop's mean colour (cv2.mean: one pass, no float copy of the image)."""
    return np.round(cv2.mean(image)[: image.shape[-1]]).astype(np.uint8)


def blurred(image: np.ndarray, box, kernel: int, sigma: float = 0.0) -> np.ndarray:
    """The image Gaussian-blurred around `box` (a margin of one kernel, so the region's edge blurs like its middle);
    pixels far from the box are left as they were, which keeps a small region's blur cheap."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    m = kernel
    rx0, ry0, rx1, ry1 = max(x0 - m, 0), max(y0 - m, 0), min(x1 + m, w), min(y1 + m, h)
    out = image.copy()
    if rx1 > rx0 and ry1 > ry0:
        out[ry0:ry1, rx0:rx1] = cv2.GaussianBlur(image[ry0:ry1, rx0:rx1], (kernel, kernel), sigma)
    return out


def paint(image: np.ndarray, mask: np.ndarray, source) -> np.ndarray:
    """A copy of `image` with the masked pixels taken from `source` (a colour or an image of the same shape)."""
    out = image.copy()
    out[mask] = source[mask] if isinstance(source, np.ndarray) and source.shape == image.shape else source
    return out


def covered(crop: Crop, mask: np.ndarray) -> np.ndarray:
    """Labelled joints whose pixel lies under `mask`."""
    h, w = mask.shape
    inside = crop.inside() & (crop.visibility > 0)
    xi = np.clip(np.floor(crop.keypoints[:, 0]).astype(int), 0, w - 1)
    yi = np.clip(np.floor(crop.keypoints[:, 1]).astype(int), 0, h - 1)
    return inside & mask[yi, xi]


def covered_by_occlusions(crop: Crop) -> np.ndarray:
    """(K,) 1.0 for labelled joints inside the box of any occlusion the crop records."""
    mask = np.zeros(crop.image.shape[:2], bool)
    for occlusion in crop.occlusions:
        mask |= rect_mask(mask.shape, occlusion.box)
    return covered(crop, mask).astype(np.float32)


def remove_labels(crop: Crop, joints: np.ndarray) -> np.ndarray:
    weight = crop.target_weight.copy()
    weight[joints] = 0.0
    return weight
