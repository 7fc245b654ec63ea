"""Occlusion transforms on top-down crops (written by hand: no augmentation library implements the papers').

Every transform takes the crop and its annotations in crop pixels, draws from a passed Generator, never mutates
its inputs, and returns the occlusions it drew so previews and tests can check them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Occlusion:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in crop pixels, x1/y1 exclusive
    fill: int
    joint: int | None = None
    part: str | None = None


@dataclass(frozen=True)
class LJAParams:
    """Limb joint augmentation (LJA): the paper's point is quantity 0.15, size 0.20, p = 1."""

    quantity_ratio: float = 0.15
    size_ratio: float = 0.20
    p: float = 1.0

    def __post_init__(self):
        for name in ("quantity_ratio", "size_ratio", "p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"lja.{name} must be in [0, 1], got {value}")


@dataclass
class OcclusionResult:
    image: np.ndarray
    occlusions: list[Occlusion] = field(default_factory=list)


def visible_limb_joints(keypoints: np.ndarray, visibility: np.ndarray, limb_joints, crop_hw) -> np.ndarray:
    h, w = crop_hw
    idx = np.asarray(limb_joints)
    xy = keypoints[idx]
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    return idx[(visibility[idx] == 2) & inside]


def limb_joint_augmentation(
    image: np.ndarray,
    keypoints: np.ndarray,
    visibility: np.ndarray,
    body_box: np.ndarray,
    limb_joints,
    params: LJAParams,
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
    box_w = (body_box[2] - body_box[0]) * params.size_ratio
    box_h = (body_box[3] - body_box[1]) * params.size_ratio
    fills = rng.integers(0, 256, size=n)
    out = image.copy()
    h, w = image.shape[:2]
    occlusions = []
    for joint, fill in zip(chosen, fills):
        cx, cy = keypoints[joint]
        x0 = int(np.clip(round(cx - box_w / 2), 0, w))
        x1 = int(np.clip(round(cx + box_w / 2), 0, w))
        y0 = int(np.clip(round(cy - box_h / 2), 0, h))
        y1 = int(np.clip(round(cy + box_h / 2), 0, h))
        out[y0:y1, x0:x1] = fill
        occlusions.append(Occlusion(box=(x0, y0, x1, y1), fill=int(fill), joint=int(joint)))
    return OcclusionResult(out, occlusions)
