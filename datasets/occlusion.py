"""Occlusion on top-down crops: the shared vocabulary (Crop, Occlusion, region operations) plus LJA and random
occluders. Targeted augmentations live in datasets/targeted.py, test-time attacks in datasets/attacks.py.

Written by hand: no augmentation library implements the papers' transforms. Every transform is a callable
`transform(crop, rng) -> Crop` on a crop and its annotations in crop pixels; it draws only from the passed
Generator, never mutates its input, and records the occlusions it drew, so previews and tests can check them.
Label removal (the targeted augmentations' option) zeroes the covered joints' target weight; the visibility label
itself is never rewritten.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

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


@dataclass
class LJAConfig:
    """Limb joint augmentation (LJA): the TrialConfig section `lja` and the parameters LJA takes.

    The defaults are the LJA paper's point (quantity 0.15, size 0.20, p = 1) and this is the one place it is written.
    quantity_ratio: share of the visible limb joints covered; size_ratio: block side as a share of the body box's
    width and height; p: probability a sample is augmented at all. Ranges are checked by `validate()`.
    """

    quantity_ratio: float = 0.15
    size_ratio: float = 0.20
    p: float = 1.0
    enabled: bool = True

    def __post_init__(self):
        self.validate()

    def validate(self) -> "LJAConfig":
        for name in ("quantity_ratio", "size_ratio", "p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"lja.{name} must be in [0, 1], got {value}")
        return self


def paper_point() -> dict[str, float]:
    """The LJA paper's point as flat TrialConfig keys (`lja.quantity_ratio`, ...), from LJAConfig's defaults."""
    default = LJAConfig()
    return {f"lja.{name}": getattr(default, name) for name in ("quantity_ratio", "size_ratio", "p")}


@dataclass
class OcclusionConfig:
    """The TrialConfig section `occ`: occlusion augmentations besides LJA, i.e. RandomOccluders (p_occ) and one of
    the targeted augmentations (datasets/targeted.py). Ranges are checked by `validate()`."""

    p_occ: float = 0.0  # share of training samples given random occluders
    occluder_count_max: int = 3
    occluder_area_min: float = 0.02  # fraction of the body box, per occluder
    occluder_area_max: float = 0.15
    targeted: str = "none"  # none, keypoint-blur, keypoint-cutout, multi-keypoint, part-cutout, part-blur, partmix
    targeted_p: float = 0.5
    label_removal: bool = False  # covered joints' target weight -> 0

    def validate(self) -> "OcclusionConfig":
        from datasets.targeted import TARGETED  # targeted.py builds on this module

        if not 0.0 <= self.p_occ <= 1.0 or not 0.0 <= self.targeted_p <= 1.0:
            raise ValueError(f"occ.p_occ and occ.targeted_p must be in [0, 1], got {self.p_occ}, {self.targeted_p}")
        if self.occluder_count_max < 1:
            raise ValueError(f"occ.occluder_count_max must be >= 1, got {self.occluder_count_max}")
        if not 0.0 < self.occluder_area_min <= self.occluder_area_max <= 1.0:
            raise ValueError(f"occ.occluder_area_min/max must satisfy 0 < min <= max <= 1, got "
                             f"{self.occluder_area_min}, {self.occluder_area_max}")
        if self.targeted not in ("none",) + TARGETED:
            raise ValueError(f"occ.targeted must be 'none' or one of {TARGETED}, got {self.targeted!r}")
        return self


@dataclass
class OcclusionResult:
    image: np.ndarray
    occlusions: list[Occlusion] = field(default_factory=list)


def visible_limb_joints(keypoints: np.ndarray, visibility: np.ndarray, limb_joints, crop_hw) -> np.ndarray:
    h, w = crop_hw
    idx = np.asarray(limb_joints)
    x, y = keypoints[idx].T
    return idx[(visibility[idx] == 2) & (x >= 0) & (x < w) & (y >= 0) & (y < h)]


def limb_joint_augmentation(
    image: np.ndarray,
    keypoints: np.ndarray,
    visibility: np.ndarray,
    body_box: np.ndarray,
    limb_joints,
    params: LJAConfig,
    rng: np.random.Generator,
) -> OcclusionResult:
    """Cover n = ceil(quantity_ratio * #visible limb joints) of them with blocks of size_ratio x body box.

    Each block is centred on its joint and filled with one value drawn uniformly from [0, 255].
    """
    if params.p <= 0 or rng.random() >= params.p:
        return OcclusionResult(image)
    candidates = visible_limb_joints(keypoints, visibility, limb_joints, image.shape[:2])
    n = math.ceil(params.quantity_ratio * len(candidates))
    if n == 0:
        return OcclusionResult(image)
    chosen = rng.choice(candidates, size=n, replace=False)
    # Python numbers from here: per-block arithmetic on numpy scalars is several times slower.
    x_min, y_min, x_max, y_max = np.asarray(body_box, dtype=np.float64).tolist()
    box_w, box_h = (x_max - x_min) * params.size_ratio, (y_max - y_min) * params.size_ratio
    fills = rng.integers(0, 256, size=n).tolist()
    out = image.copy()
    h, w = image.shape[:2]
    occlusions = []
    for joint, fill, (cx, cy) in zip(chosen.tolist(), fills, keypoints[chosen].tolist()):
        x0, y0, x1, y1 = clip_box(cx - box_w / 2, cy - box_h / 2, cx + box_w / 2, cy + box_h / 2, (h, w))
        out[y0:y1, x0:x1] = fill
        occlusions.append(Occlusion(box=(x0, y0, x1, y1), fill=int(fill), joint=int(joint)))
    return OcclusionResult(out, occlusions)


@dataclass(frozen=True)
class LJA:
    """LJA as a Crop transform over a skeleton's limb joints."""

    params: LJAConfig
    limb_joints: tuple[int, ...]

    def __call__(self, crop: Crop, rng: np.random.Generator) -> Crop:
        result = limb_joint_augmentation(crop.image, crop.keypoints, crop.visibility, crop.body_box,
                                         self.limb_joints, self.params, rng)
        return crop.replace(image=result.image, occlusions=crop.occlusions + tuple(result.occlusions))


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
