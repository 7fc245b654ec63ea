"""MPII inputs: the HRNet/MMPose MPII json, the official `mpii_gt_val.mat` layout, and (N, 16, 2) predictions.

Predictions holding NaN or Infinity are refused, as the COCO side refuses them: the reference would count them as
misses without a word.
"""
from __future__ import annotations

import numpy as np

from datasets.skeletons import MPII16, MPII_MAT_NAMES, Skeleton
from datasets.validation.base import AnnotationError, MpiiFormatError, is_number

MPII_JSON_FIELDS = ("image", "center", "scale", "joints", "joints_vis")
MPII_GT_FIELDS = ("dataset_joints", "jnt_missing", "pos_gt_src", "headboxes_src")


def check_mpii_head_boxes(num_persons: int, head_boxes, ann_file) -> None:
    if head_boxes is not None and len(head_boxes) != num_persons:
        raise AnnotationError(f"{ann_file}: {num_persons} persons but the head-box file holds {len(head_boxes)}")


def check_mpii_person(person, i: int, ann_file, skeleton: Skeleton):
    """(joints (K, 2) 1-based, joints_vis (K,), center (2,), scale) of one person of the HRNet/MMPose MPII json."""
    for field in MPII_JSON_FIELDS:
        if not isinstance(person, dict) or field not in person:
            raise AnnotationError(f"{ann_file}: person {i}: field {field!r} missing")
    k = skeleton.num_keypoints
    joints = _numeric(person["joints"], (k, 2), ann_file, i, "joints")
    labelled = _numeric(person["joints_vis"], (k,), ann_file, i, "joints_vis")
    center = _numeric(person["center"], (2,), ann_file, i, "center")
    scale = person["scale"]
    if not is_number(scale) or scale <= 0:
        raise AnnotationError(f"{ann_file}: person {i}: field 'scale' must be a positive number, got {scale!r}")
    return joints, labelled, center, scale


def _numeric(values, shape: tuple, ann_file, i: int, field: str) -> np.ndarray:
    """A JSON array of finite numbers of `shape` (numpy alone would read the string "1.5" as a number)."""
    arr = np.asarray(values) if isinstance(values, list) else np.asarray(None)
    if arr.shape != shape or arr.dtype.kind not in "iuf" or not np.isfinite(arr).all():
        raise AnnotationError(f"{ann_file}: person {i}: field {field!r} is not {shape} finite numbers")
    return arr.astype(np.float64)


def mat_fields(mat: dict) -> list[str]:
    return sorted(k for k in mat if not k.startswith("__"))


def check_mpii_gt(mat: dict, path):
    """(joint names, jnt_missing (16, N), pos_gt_src (16, 2, N), headboxes_src (2, 2, N)) of a loaded .mat in the
    official `mpii_gt_val.mat` layout."""
    for field in MPII_GT_FIELDS:
        if field not in mat:
            raise MpiiFormatError(f"{path}: field {field!r} missing (found {mat_fields(mat)})")
    names = _mpii_joint_names(mat["dataset_joints"], path)
    missing = np.asarray(mat["jnt_missing"])
    pos = np.asarray(mat["pos_gt_src"], dtype=np.float64)
    boxes = np.asarray(mat["headboxes_src"], dtype=np.float64)
    joints = MPII16.num_keypoints
    if pos.ndim != 3 or pos.shape[:2] != (joints, 2):
        raise MpiiFormatError(f"{path}: field 'pos_gt_src' has shape {pos.shape}, expected (16, 2, N)")
    n = pos.shape[2]
    if missing.shape != (joints, n):
        raise MpiiFormatError(f"{path}: field 'jnt_missing' has shape {missing.shape}, expected (16, {n})")
    if boxes.shape != (2, 2, n):
        raise MpiiFormatError(f"{path}: field 'headboxes_src' has shape {boxes.shape}, expected (2, 2, {n})")
    if not np.isfinite(pos.transpose(0, 2, 1)[missing == 0]).all():
        raise MpiiFormatError(f"{path}: field 'pos_gt_src' holds NaN or infinity on a joint 'jnt_missing' marks "
                              "present")
    if not np.isfinite(boxes).all():
        raise MpiiFormatError(f"{path}: field 'headboxes_src' holds NaN or infinity")
    return names, missing, pos, boxes


def _mpii_joint_names(raw, path) -> tuple[str, ...]:
    try:
        names = tuple(str(np.asarray(item).reshape(-1)[0]) for item in np.asarray(raw, dtype=object).reshape(-1))
    except Exception:
        raise MpiiFormatError(f"{path}: field 'dataset_joints' is not a list of joint names") from None
    if sorted(names) != sorted(MPII_MAT_NAMES):
        raise MpiiFormatError(f"{path}: field 'dataset_joints' is {names}, expected the 16 MPII joints "
                              f"{MPII_MAT_NAMES}")
    return names


def check_mpii_preds(pred, source="preds", num_persons: int | None = None) -> np.ndarray:
    """`pred` as a float (N, 16, 2) array of finite numbers, or MpiiFormatError naming `source`."""
    arr = np.asarray(pred)
    if arr.dtype.kind not in "iuf":
        raise MpiiFormatError(f"{source}: not a numeric array (dtype {arr.dtype})")
    arr = arr.astype(np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (MPII16.num_keypoints, 2):
        raise MpiiFormatError(f"{source} has shape {arr.shape}, expected (N, 16, 2)")
    if num_persons is not None and arr.shape[0] != num_persons:
        raise MpiiFormatError(f"{source} holds {arr.shape[0]} persons but the ground truth has {num_persons}")
    if not np.isfinite(arr).all():
        person, joint = np.argwhere(~np.isfinite(arr))[0][:2]
        raise MpiiFormatError(f"{source} holds NaN or infinity (first: person {person}, joint {joint}); the "
                              "reference would count it as a miss without a word")
    return arr
