"""Score one split's predictions with its benchmark's protocol, also split into occluded / non-occluded joints.

Predictions arrive in record order (keypoints in image pixels, per-joint scores); a Scorer turns them into the
benchmark's numbers with the reference tools: pycocotools COCOeval (COCO, OCHuman, synthetic), the CrowdPose
protocol (datasets/evaluation/crowdpose.py) and the MPII PCKh evaluation (datasets/evaluation/mpii.py).

O / NO: the same protocol on a copy of the ground truth that keeps only the occluded (v=1) or only the visible
(v=2) joints. OKS uses only a person's labelled joints, and a person left with none is ignored by COCOeval, so
this is each metric restricted to one kind of joint, computed by the unmodified reference code.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO

from datasets.annotations import PersonRecord
from datasets.evaluation.metrics import oks_ap, pckh, quiet
from datasets.evaluation.mpii import MpiiGroundTruth, in_mean, pckh_table
from datasets.meta import PCKH_KEY, VISIBILITY_SPLITS
from datasets.skeletons import Skeleton

# The O / NO subsets' COCO visibility flag: occluded (v=1), visible (v=2).
VISIBILITY_SUBSETS = dict(zip(VISIBILITY_SPLITS, (1, 2)))


@dataclass
class Predictions:
    coords: np.ndarray  # (N, K, 2) image pixels, record order
    scores: np.ndarray  # (N, K)
    done: np.ndarray  # (N,) bool: False where the sample could not be read
    crop_areas: np.ndarray | None = None  # (N,) area of each padded crop region: OKS-NMS's person area


def coco_results(records: list[PersonRecord], pred: Predictions, score_threshold: float = 0.2) -> list[dict]:
    """COCO results with HRNet's rescoring: box score x mean of the confident joints' scores. `records`: a list of
    PersonRecords or a RecordTable (its id and score arrays are read directly, no record is built)."""
    done = np.flatnonzero(pred.done)
    if hasattr(records, "image_id") and hasattr(records, "score"):  # a RecordTable
        image_ids, box_scores = records.image_id[done].tolist(), records.score[done].tolist()
    else:
        image_ids = [records[i].image_id for i in done]
        box_scores = [records[i].score for i in done]
    scores = pred.scores[done]
    confident = scores > score_threshold
    counts = confident.sum(axis=1).tolist()
    # Each mean as numpy takes it (the sum of the confident joints in their order, over their count), row by row.
    means = [float(np.add.reduce(row[mask]) / n) if n else 0.0 for row, mask, n in zip(scores, confident, counts)]
    keypoints = np.concatenate([pred.coords[done], scores[:, :, None]], axis=2).reshape(len(done), -1)
    keypoints = keypoints.round(3).tolist()
    areas = pred.crop_areas[done].tolist() if pred.crop_areas is not None else None
    results = []
    for j in range(len(done)):
        results.append({"image_id": image_ids[j], "category_id": 1, "keypoints": keypoints[j],
                        "score": box_scores[j] * means[j]})
        if areas is not None:
            results[-1]["area"] = float(areas[j])  # for OKS-NMS; COCOeval recomputes its own
    return results


def oks_nms(results: list[dict], sigmas: np.ndarray, threshold: float = 0.9) -> list[dict]:
    """HRNet's OKS non-maximum suppression over one split's results (per image; a pose's area is its padded crop
    region's, as in HRNet and MMPose): best score first, a pose is kept unless its OKS with a kept one exceeds
    `threshold`.

    Written by hand: it is part of the HRNet/MMPose evaluation with detector boxes, and no library ships it. Each
    image's OKS matrix is computed at once (the same float64 operations per pair as pose by pose), then the greedy
    pass reads it.
    """
    kept = []
    by_image: dict = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    variances = (2 * np.asarray(sigmas)) ** 2
    for group in by_image.values():
        group = sorted(group, key=lambda r: -r["score"])
        if len(group) == 1:
            kept.append(group[0])
            continue
        kpts = np.array([r["keypoints"] for r in group]).reshape(len(group), -1, 3)[:, :, :2]
        areas = np.array([r["area"] for r in group])
        d2 = ((kpts[None, :, :, :] - kpts[:, None, :, :]) ** 2).sum(axis=-1)  # [i, j]: pose j against pose i
        e = d2 / variances / ((areas[None, :, None] + areas[:, None, None]) / 2 + np.spacing(1)) / 2
        suppresses = np.exp(-e).mean(axis=2) > threshold
        alive = np.ones(len(group), bool)
        for i in range(len(group)):
            if alive[i]:
                kept.append(group[i])
                alive[i + 1:] &= ~suppresses[i, i + 1:]
    return kept


def visibility_subset(gt: COCO, visibility: int) -> COCO:
    """A copy of `gt` scoring only the joints with flag `visibility`.

    A person with joints of that kind keeps only those (the others become unlabelled), so OKS is taken over them
    alone. A person with labelled joints but none of that kind becomes an ignore region (`num_keypoints` 0, which
    COCOeval and the CrowdPose protocol ignore) that keeps its labelled joints: a prediction of that person then
    matches it by those joints and is ignored, neither a hit nor a false positive, wherever its unlabelled joints
    lie. (Zeroing its joints too would leave COCOeval matching it by the distance of *every* predicted joint to
    the box, so a correct prediction whose unlabelled joints sit elsewhere, say at (0, 0), would count as a false
    positive: the ground truth as predictions then scored 0.911 on the occluded split of test_coco.json.)
    """
    data = copy.deepcopy(gt.dataset)
    for ann in data["annotations"]:
        kpts = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        keep = kpts[:, 2] == visibility
        ann["num_keypoints"] = int(keep.sum())
        if keep.any():
            kpts[~keep] = 0
            ann["keypoints"] = kpts.reshape(-1).tolist()
    with quiet():
        subset = COCO()
        subset.dataset = data
        subset.createIndex()
    return subset


def quiet_load_results(gt: COCO, results: list[dict]) -> COCO:
    """pycocotools' `gt.loadRes(results)` without its prints."""
    with quiet():
        return gt.loadRes(results)


def has_labelled_person(gt: COCO) -> bool:
    """Whether COCOeval would score any person of `gt` (a labelled, non-crowd one); with none it reports AP -1."""
    return any(a.get("num_keypoints", 0) > 0 and not a.get("iscrowd", 0) for a in gt.dataset["annotations"])


class CocoScorer:
    """OKS AP/AR (COCO, OCHuman, synthetic; CrowdPose with crowd=True) plus PCKh where head boxes exist."""

    def __init__(self, gt: COCO, skeleton: Skeleton, crowd: bool = False, nms: bool = False,
                 visibility_splits: bool = True):
        self.gt = gt
        self.skeleton = skeleton
        self.crowd = crowd
        self.nms = nms  # detector boxes overlap: HRNet suppresses duplicate poses with OKS-NMS
        # A split with no joint of its kind is left out rather than reported as COCOeval's AP -1.
        subsets = {name: visibility_subset(gt, flag) for name, flag in VISIBILITY_SUBSETS.items()} \
            if visibility_splits else {}
        self.subsets = {name: subset for name, subset in subsets.items() if has_labelled_person(subset)}

    def _ap(self, gt: COCO, results: list[dict], dt: COCO | None = None) -> dict[str, float]:
        if self.crowd:
            from datasets.evaluation.crowdpose import crowdpose_ap

            return crowdpose_ap(gt, results, self.skeleton.sigmas_array())
        return oks_ap(gt, results, self.skeleton.sigmas_array(), dt)

    def score(self, records: list[PersonRecord], pred: Predictions) -> dict[str, float]:
        results = coco_results(records, pred)
        if self.nms:
            results = oks_nms(results, self.skeleton.sigmas_array())
        # The detections are loaded once: the subsets have the full split's images, and COCOeval leaves them as is.
        dt = None if self.crowd or not results else quiet_load_results(self.gt, results)
        metrics = self._ap(self.gt, results, dt)
        for name, subset in self.subsets.items():
            metrics.update({f"{name}/{key}": value for key, value in self._ap(subset, results, dt).items()})
        heads = [r.head_box for r in records]
        if records and all(h is not None for h in heads) and pred.done.any():
            gt_kpts = np.stack([r.keypoints for r in records])[pred.done]
            boxes = np.asarray(heads)[pred.done]
            masks = {"": gt_kpts[:, :, 2] > 0, **{f"{name}/": gt_kpts[:, :, 2] == flag
                                                  for name, flag in VISIBILITY_SUBSETS.items()}}
            for prefix, labelled in masks.items():
                if labelled.any():
                    metrics[f"{prefix}{PCKH_KEY}"] = pckh(pred.coords[pred.done], gt_kpts[:, :, :2], labelled,
                                                        boxes)["mean"]
        return metrics


class MpiiScorer:
    """The official MPII PCKh table against mpii_gt_val.mat; O/NO when the records carry an occlusion flag."""

    def __init__(self, gt: MpiiGroundTruth):
        self.gt = gt
        self._in_mean = in_mean(gt.joint_names)

    def score(self, records: list[PersonRecord], pred: Predictions) -> dict[str, float]:
        if len(records) != self.gt.num_persons:
            raise ValueError(f"MPII: {len(records)} records but the ground truth .mat has {self.gt.num_persons} "
                             "persons; the val json and mpii_gt_val.mat must list the same persons in order")
        # An unreadable sample, or a non-finite prediction, counts as a miss (a prediction far away), never as a
        # removed joint; the MPII validator refuses NaN from users' files, not from a diverged model.
        coords = np.where(pred.done[:, None, None] & np.isfinite(pred.coords), pred.coords, -1e6)
        table = pckh_table(coords, self.gt)
        metrics = {PCKH_KEY: table["Mean"], "PCKh_0.1": table["Mean@0.1"],
                   **{f"PCKh/{k}": v for k, v in table.items() if k not in ("Mean", "Mean@0.1")}}
        visibility = np.stack([r.keypoints[:, 2] for r in records])  # (N, 16)
        if (visibility == 1).any():  # the standard MPII json has no occlusion flag: no O/NO split then
            # The table's Mean is the hit rate over the counted joints (pelvis and thorax out); computed directly,
            # because the reference's per-joint division yields NaN for a joint with no occluded instance.
            counted = (self.gt.jnt_missing.T == 0) & self._in_mean
            gt_xy = self.gt.pos_gt_src.transpose(2, 0, 1) - 1.0
            heads = self.gt.headboxes_src.transpose(2, 0, 1).reshape(-1, 4)
            for name, flag in VISIBILITY_SUBSETS.items():
                labelled = counted & (visibility == flag)
                if labelled.any():
                    metrics[f"{name}/{PCKH_KEY}"] = pckh(coords, gt_xy, labelled, heads)["mean"]
        return metrics
