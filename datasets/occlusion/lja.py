"""Limb joint augmentation (LJA): Han, Song, Wang, Wang, Chen & Wang, "Occluded Human Pose Estimation based on Limb
Joint Augmentation", arXiv:2410.09885, 2024 (with its dynamic structure loss, trainables/losses.py).

n = ceil(quantity_ratio x the visible limb joints) of a person's visible (v = 2, inside the crop) limb joints are
each covered by a block of size_ratio x the body box's width and height, centred on the joint and filled with one
grey value drawn uniformly from [0, 255]; a sample is augmented with probability p. Written by hand from the paper,
generalised to every skeleton's limb joints. `LJAConfig` is both the TrialConfig section `lja` and LJA's parameters,
and its defaults are the paper's point.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from datasets.occlusion.crop import Crop, Occlusion, clip_box


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

    image (H, W, 3) uint8, keypoints (K, 2) and body_box (x0, y0, x1, y1) in crop pixels, visibility (K,) COCO
    flags. Each block is centred on its joint and filled with one value drawn uniformly from [0, 255].
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
