"""The mean-pose-in-box baseline: the training set's average pose, scaled into each ground-truth box.

It says how much of an AP number is just "knows where the box is": a trained model must beat it clearly.
"""
from __future__ import annotations

import numpy as np

from datasets.evaluation.metrics import oks_ap


def fit_mean_pose(records) -> np.ndarray:
    """Mean keypoint position in box-normalised coordinates ([0, 1] across the box), over labelled joints."""
    sums = np.zeros((records[0].keypoints.shape[0], 2))
    counts = np.zeros((records[0].keypoints.shape[0], 1))
    for record in records:
        x, y, w, h = record.bbox
        labelled = record.keypoints[:, 2:3] > 0
        normalised = (record.keypoints[:, :2] - (x, y)) / (max(w, 1), max(h, 1))
        sums += normalised * labelled
        counts += labelled
    return sums / np.maximum(counts, 1)


def mean_pose_results(mean_pose: np.ndarray, records) -> list[dict]:
    results = []
    for record in records:
        x, y, w, h = record.bbox
        xy = mean_pose * (w, h) + (x, y)
        kpts = np.concatenate([xy, np.ones((len(xy), 1))], axis=1)
        results.append({"image_id": record.image_id, "category_id": 1,
                        "keypoints": kpts.reshape(-1).tolist(), "score": 1.0})
    return results


def mean_pose_ap(train_records, eval_records, gt, sigmas) -> dict[str, float]:
    return oks_ap(gt, mean_pose_results(fit_mean_pose(train_records), eval_records), sigmas)
