"""MPII single-person PCKh, as the `mpii_gt_val.mat` evaluation of the official toolkit, HRNet and MMPose does it.

Written by hand because no maintained library ships the MPII protocol: the reference is a few lines of numpy copied
between repositories (HRNet `lib/dataset/mpii.py` `MPIIDataset.evaluate`, MMPose 0.x `TopDownMpiiDataset.evaluate`),
reproduced here arithmetic for arithmetic:

- ground truth comes from a .mat in the official layout: `dataset_joints` (1, 16) joint names, `jnt_missing` (16, N),
  `pos_gt_src` (16, 2, N) in 1-based MATLAB pixel coordinates, `headboxes_src` (2, 2, N) (two corners x, y);
- predictions are (N, 16, 2) 0-based pixel coordinates in the ground truth's joint order; 1 is added before they
  are compared with `pos_gt_src`. (Careful: the `pred.mat` files HRNet and MMPose write hold the already shifted,
  1-based coordinates; subtract 1 before passing them here.)
- head size = SC_BIAS (0.6) x the head-box diagonal; a visible joint (1 - jnt_missing) is correct when its error
  divided by the head size is <= the threshold;
- PCKh per joint = 100 x correct / visible count of that joint; the columns Shoulder ... Ankle average left and right;
  `Mean` is the mean of the per-joint PCKh weighted by each joint's visible count, with pelvis and thorax left out;
  `Mean@0.1` the same at threshold 0.1.

`Mean@0.1` is taken at threshold 0.1 as MMPose does (`pckAll[10]` of `arange(0, 0.51, 0.01)`); HRNet's repository
reads `pckAll[11]`, which is threshold 0.11, so its printed Mean@0.1 is slightly higher than this one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io

from datasets.cli import input_file_problem
from datasets.evaluation.metrics import SC_BIAS
from datasets.skeletons import MPII_MAT_NAMES
from datasets.validation import MpiiFormatError, check_mpii_gt, check_mpii_preds, mat_fields

MPII_JOINT_NAMES = MPII_MAT_NAMES  # the official joint order as `dataset_joints` spells it (skeletons.MPII_JOINTS)

PCKH_KEYS = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "Mean@0.1")
# Columns averaged over a left/right pair: report name -> (left, right) joint names (.mat spelling).
_PAIRED = {"Shoulder": ("lsho", "rsho"), "Elbow": ("lelb", "relb"), "Wrist": ("lwri", "rwri"),
           "Hip": ("lhip", "rhip"), "Knee": ("lkne", "rkne"), "Ankle": ("lank", "rank")}
LEFT_OUT_OF_MEAN = ("pelv", "thor")  # pelvis and thorax: not part of the reference's Mean


@dataclass(frozen=True)
class MpiiGroundTruth:
    joint_names: tuple[str, ...]
    jnt_missing: np.ndarray    # (16, N)
    pos_gt_src: np.ndarray     # (16, 2, N), 1-based
    headboxes_src: np.ndarray  # (2, 2, N)

    @property
    def num_persons(self) -> int:
        return self.pos_gt_src.shape[2]


def _loadmat(path) -> dict:
    path = Path(path)
    if problem := input_file_problem(path):
        raise MpiiFormatError(problem)
    try:
        return scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types for a file that is not a .mat
        raise MpiiFormatError(f"{path}: not a readable .mat file ({exc})") from None


def in_mean(joint_names) -> np.ndarray:
    """(16,) bool: the joints the reference's Mean counts (all but LEFT_OUT_OF_MEAN), in `joint_names` order."""
    return np.array([name not in LEFT_OUT_OF_MEAN for name in joint_names])


def load_mpii_gt(path) -> MpiiGroundTruth:
    """Ground truth from a .mat in the official `mpii_gt_val.mat` layout."""
    mat = _loadmat(path)
    names, missing, pos, boxes = check_mpii_gt(mat, path)
    return MpiiGroundTruth(names, missing, pos, boxes)


def load_mpii_preds(path, key: str = "preds") -> np.ndarray:
    """0-based (N, 16, 2) predictions stored under `key` in a .mat file."""
    mat = _loadmat(path)
    if key not in mat:
        raise MpiiFormatError(f"{path}: field {key!r} missing (found {mat_fields(mat)})")
    return check_mpii_preds(mat[key], source=f"{path}: field {key!r}")


def pckh_table(pred: np.ndarray, gt: MpiiGroundTruth) -> dict[str, float]:
    """The MPII report for 0-based (N, 16, 2) predictions against loaded ground truth."""
    pred = check_mpii_preds(pred, num_persons=gt.num_persons)
    pos_pred_src = np.transpose(pred + 1.0, [1, 2, 0])  # (16, 2, N), 1-based like pos_gt_src

    jnt_visible = 1 - gt.jnt_missing.astype(np.int64)
    uv_err = np.linalg.norm(pos_pred_src - gt.pos_gt_src, axis=1)  # (16, N)
    headsizes = np.linalg.norm(gt.headboxes_src[1, :, :] - gt.headboxes_src[0, :, :], axis=0) * SC_BIAS
    scale = np.multiply(headsizes, np.ones((len(uv_err), 1)))
    with np.errstate(divide="ignore", invalid="ignore"):  # a joint nobody has visible scores nan, as in the reference
        scaled_uv_err = np.multiply(np.divide(uv_err, scale), jnt_visible)
        jnt_count = np.sum(jnt_visible, axis=1)

        def per_joint(threshold: float) -> np.ndarray:
            less_than_threshold = np.multiply(scaled_uv_err <= threshold, jnt_visible)
            return np.divide(100.0 * np.sum(less_than_threshold, axis=1), jnt_count)

        pckh = per_joint(0.5)
        # The reference evaluates thresholds np.arange(0, 0.51, 0.01) and reads the one at index 10 (exactly 0.1).
        pckh_01 = per_joint(np.arange(0, 0.5 + 0.01, 0.01)[10])

    index = {name: i for i, name in enumerate(gt.joint_names)}
    left_out = [index[name] for name in LEFT_OUT_OF_MEAN]
    # Masked arrays as in the reference (same summation order, so the same floats): pelvis and thorax leave both
    # the weights' total and the weighted sum.
    pckh_m = np.ma.array(pckh, mask=False)
    pckh_m.mask[left_out] = True
    pckh_01_m = np.ma.array(pckh_01, mask=False)
    pckh_01_m.mask[left_out] = True
    jnt_count = np.ma.array(jnt_count, mask=False)
    jnt_count.mask[left_out] = True
    jnt_ratio = jnt_count / np.sum(jnt_count).astype(np.float64)

    table = {"Head": pckh[index["head"]]}
    for column, (left, right) in _PAIRED.items():
        table[column] = 0.5 * (pckh[index[left]] + pckh[index[right]])
    table["Mean"] = np.sum(pckh_m * jnt_ratio)
    table["Mean@0.1"] = np.sum(pckh_01_m * jnt_ratio)
    return {key: float(table[key]) for key in PCKH_KEYS}


def mpii_pckh(pred, gt_mat_path, pred_key: str | None = None) -> dict[str, float]:
    """PCKh report (percentages, keys PCKH_KEYS) of `pred` against the official-layout ground truth .mat.

    `pred` is a 0-based (N, 16, 2) array in the ground truth's joint order, or a path to a .mat holding one under
    `pred_key` (default "preds").
    """
    if isinstance(pred, (str, Path)):
        pred = load_mpii_preds(pred, key=pred_key or "preds")
    elif pred_key is not None:
        raise ValueError("pred_key only applies when pred is a path to a .mat file")
    return pckh_table(pred, load_mpii_gt(gt_mat_path))
