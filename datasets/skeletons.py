"""Keypoint vocabularies: names, flip pairs, limb joints and chains, OKS sigmas.

Which dataset uses which skeleton is `datasets.meta.get(name).skeleton`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Skeleton:
    name: str
    keypoints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    # Joints LJA may occlude: shoulders, elbows, wrists, hips, knees, ankles.
    limb_joints: tuple[int, ...]
    # DSL's two chains (arms through the shoulders, legs through the hips), each an ordered path.
    limb_chains: tuple[tuple[int, ...], ...]
    # Edges drawn/used for rendering and previews.
    bones: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]
    # Half-body augmentation picks the upper or the lower body's joints (HRNet's upper_body_ids).
    upper_body: tuple[int, ...] = ()
    # Body parts of the targeted augmentations and part attacks: (name, joints) pairs.
    parts: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    def index(self, name: str) -> int:
        return self.keypoints.index(name)

    def sigmas_array(self) -> np.ndarray:
        return np.asarray(self.sigmas, dtype=np.float64)

    def part(self, name: str) -> tuple[int, ...]:
        for part, joints in self.parts:
            if part == name:
                return joints
        raise ValueError(f"unknown body part {name!r} for {self.name}; choose from {[p for p, _ in self.parts]}")

    @property
    def flip_index(self) -> list[int]:
        """Joint order of a horizontally flipped person: left and right swap."""
        index = list(range(self.num_keypoints))
        for a, b in self.flip_pairs:
            index[a], index[b] = b, a
        return index


COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)

COCO17 = Skeleton(
    name="coco",
    keypoints=COCO_KEYPOINTS,
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    limb_joints=tuple(range(5, 17)),
    limb_chains=(
        (9, 7, 5, 6, 8, 10),      # left wrist - left elbow - left shoulder - right shoulder - right elbow - right wrist
        (15, 13, 11, 12, 14, 16),  # left ankle - left knee - left hip - right hip - right knee - right ankle
    ),
    bones=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
        (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ),
    # pycocotools' COCOeval.kpt_oks_sigmas, in COCO keypoint order.
    sigmas=(.026, .025, .025, .035, .035, .079, .079, .072, .072, .062, .062, .107, .107, .087, .087, .089, .089),
    upper_body=tuple(range(11)),
    parts=(("head", (0, 1, 2, 3, 4)), ("arms", (5, 6, 7, 8, 9, 10)), ("corpus", (5, 6, 11, 12)),
           ("upper_body", tuple(range(11))), ("lower_body", (11, 12, 13, 14, 15, 16)),
           ("left_side", (1, 3, 5, 7, 9, 11, 13, 15)), ("right_side", (2, 4, 6, 8, 10, 12, 14, 16))),
)

# The official MPII joint order (as in mpii_gt_val.mat's `dataset_joints`), each joint with the abbreviation the
# official .mat files spell it with: the one place this order is written.
MPII_JOINTS = (
    ("right_ankle", "rank"), ("right_knee", "rkne"), ("right_hip", "rhip"), ("left_hip", "lhip"),
    ("left_knee", "lkne"), ("left_ankle", "lank"), ("pelvis", "pelv"), ("thorax", "thor"),
    ("upper_neck", "neck"), ("head_top", "head"), ("right_wrist", "rwri"), ("right_elbow", "relb"),
    ("right_shoulder", "rsho"), ("left_shoulder", "lsho"), ("left_elbow", "lelb"), ("left_wrist", "lwri"),
)
MPII_KEYPOINTS = tuple(name for name, _ in MPII_JOINTS)
MPII_MAT_NAMES = tuple(abbreviation for _, abbreviation in MPII_JOINTS)

MPII16 = Skeleton(
    name="mpii",
    keypoints=MPII_KEYPOINTS,
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    limb_joints=(0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15),
    limb_chains=(
        (15, 14, 13, 12, 11, 10),  # l wrist - l elbow - l shoulder - r shoulder - r elbow - r wrist
        (5, 4, 3, 2, 1, 0),        # l ankle - l knee - l hip - r hip - r knee - r ankle
    ),
    bones=(
        (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
        (8, 12), (12, 11), (11, 10), (8, 13), (13, 14), (14, 15),
    ),
    # MMPose's MPII sigmas (configs/_base_/datasets/mpii.py, "adapted from COCO"), in MPII joint order. MPII is
    # scored by PCKh, not OKS; these only matter where an OKS is computed on MPII-layout keypoints.
    sigmas=(.089, .083, .107, .107, .083, .089, .026, .026, .026, .026, .062, .072, .179, .179, .072, .062),
    upper_body=(7, 8, 9, 10, 11, 12, 13, 14, 15),
    parts=(("head", (8, 9)), ("arms", (10, 11, 12, 13, 14, 15)), ("corpus", (2, 3, 6, 7, 12, 13)),
           ("upper_body", (7, 8, 9, 10, 11, 12, 13, 14, 15)), ("lower_body", (0, 1, 2, 3, 4, 5, 6)),
           ("left_side", (3, 4, 5, 13, 14, 15)), ("right_side", (0, 1, 2, 10, 11, 12))),
)

CROWDPOSE_KEYPOINTS = (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "top_head", "neck",
)

CROWDPOSE14 = Skeleton(
    name="crowdpose",
    keypoints=CROWDPOSE_KEYPOINTS,  # the CrowdPose annotation order ('head' in the json is top_head here)
    flip_pairs=((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)),
    limb_joints=tuple(range(12)),
    limb_chains=(
        (4, 2, 0, 1, 3, 5),    # l wrist - l elbow - l shoulder - r shoulder - r elbow - r wrist
        (10, 8, 6, 7, 9, 11),  # l ankle - l knee - l hip - r hip - r knee - r ankle
    ),
    bones=(
        (12, 13), (13, 0), (13, 1), (0, 2), (2, 4), (1, 3), (3, 5), (0, 6), (1, 7), (6, 7),
        (6, 8), (8, 10), (7, 9), (9, 11),
    ),
    # The CrowdPose OKS sigmas (xtcocotools / MMPose crowdpose config), in CrowdPose keypoint order.
    sigmas=(.079, .079, .072, .072, .062, .062, .107, .107, .087, .087, .089, .089, .079, .079),
    upper_body=(0, 1, 2, 3, 4, 5, 12, 13),
    parts=(("head", (12, 13)), ("arms", (0, 1, 2, 3, 4, 5)), ("corpus", (0, 1, 6, 7)),
           ("upper_body", (0, 1, 2, 3, 4, 5, 12, 13)), ("lower_body", (6, 7, 8, 9, 10, 11)),
           ("left_side", (0, 2, 4, 6, 8, 10)), ("right_side", (1, 3, 5, 7, 9, 11))),
)
