"""Occlusion for top-down crops: the transforms a trial trains with and the attacks it is tested under.

crop.py       the vocabulary: Crop, Occlusion, masks, paint, covered joints, label removal
lja.py        LJA (limb joint augmentation); LJAConfig, the TrialConfig section `lja`, defaults = the paper's point
occluders.py  RandomOccluders (`occ.p_occ`)
targeted.py   the targeted augmentations of Pytel et al. (ICPR 2020) (`occ.targeted`)
attacks.py    the same paper's test-time keypoint and part attacks

This module holds OcclusionConfig (the TrialConfig section `occ`), `build_occlusions`, the one place a trial's
training occlusion transforms are assembled and ordered, and `occludes`, the one answer to "does this trial train
with artificial occlusion".
"""
from __future__ import annotations

from dataclasses import dataclass

from datasets.occlusion.crop import (Crop, Occlusion, blurred, clip_box, covered, covered_by_occlusions,  # noqa: F401
                                     ellipse_mask, image_mean, paint, rect_mask, remove_labels)
from datasets.occlusion.lja import (LJA, LJAConfig, OcclusionResult, limb_joint_augmentation,  # noqa: F401
                                    paper_point, visible_limb_joints)
from datasets.occlusion.occluders import RandomOccluders
from datasets.occlusion.targeted import TARGETED, targeted_augmentation
from datasets.skeletons import Skeleton


@dataclass
class OcclusionConfig:
    """The TrialConfig section `occ`: occlusion augmentations besides LJA, i.e. RandomOccluders (p_occ) and one of
    the targeted augmentations (targeted.py). Ranges are checked by `validate()`."""

    p_occ: float = 0.0  # share of training samples given random occluders
    occluder_count_max: int = 3
    occluder_area_min: float = 0.02  # fraction of the body box, per occluder
    occluder_area_max: float = 0.15
    targeted: str = "none"  # none, keypoint-blur, keypoint-cutout, multi-keypoint, part-cutout, part-blur, partmix
    targeted_p: float = 0.5
    label_removal: bool = False  # covered joints' target weight -> 0

    def validate(self) -> "OcclusionConfig":
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


def build_occlusions(lja: LJAConfig, occ: OcclusionConfig, skeleton: Skeleton) -> list:
    """A trial's training occlusion transforms, in the order they run on a crop: random occluders (occ.p_occ > 0),
    then the targeted augmentation (occ.targeted), then LJA (lja.enabled) last, as in the LJA paper's pipeline
    (LJA covers the final crop). Each is a `transform(crop, rng) -> Crop`; TopDownDataset takes the list. A
    PartMix built here has no donor: the dataset gives it its own samples."""
    transforms = []
    if occ.p_occ > 0:
        transforms.append(RandomOccluders(occ.p_occ, (1, occ.occluder_count_max),
                                          (occ.occluder_area_min, occ.occluder_area_max),
                                          label_removal=occ.label_removal))
    if occ.targeted != "none":
        transforms.append(targeted_augmentation(occ.targeted, skeleton, occ.targeted_p, occ.label_removal))
    if lja.enabled:
        transforms.append(LJA(lja, tuple(skeleton.limb_joints)))
    return transforms


def occludes(lja: LJAConfig, occ: OcclusionConfig) -> bool:
    """Whether a trial with these sections trains on artificially occluded crops: LJA enabled with p > 0, random
    occluders (p_occ > 0) or a targeted augmentation. OASNet's occluded view needs this (TrialConfig.validate); a
    trial without it is the report's occlusion-free baseline."""
    return (lja.enabled and lja.p > 0) or occ.p_occ > 0 or occ.targeted != "none"
