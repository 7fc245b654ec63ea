"""Pose metrics: OKS AP/AR through pycocotools, and PCKh (written by hand: no maintained library ships it)."""
from __future__ import annotations

import builtins
import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# MPII's head-size factor: PCKh's normaliser is SC_BIAS x the head box diagonal (the official MPII evaluation, as
# HRNet's and MMPose's copies of it name it).
SC_BIAS = 0.6
COCO_STAT_NAMES = ("AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AR75", "AR_M", "AR_L")


def oks_ap(gt: COCO, results: list[dict], sigmas: np.ndarray) -> dict[str, float]:
    """COCO keypoint AP/AR of `results` (COCO results format) against `gt`, exactly as COCOeval computes them."""
    if not results:
        return {name: 0.0 for name in COCO_STAT_NAMES}
    with quiet():
        dt = gt.loadRes(results)
        evaluator = COCOeval(gt, dt, iouType="keypoints")
        evaluator.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(COCO_STAT_NAMES, evaluator.stats)}


@contextlib.contextmanager
def quiet():
    """Silence pycocotools' progress prints. Ray Train replaces print() with one that logs whatever is printed to
    sys.stdout, so print itself is pointed at a sink; that sink must not be sys.stdout (redirected to a second
    sink for code that writes to it directly), or Ray's print would log the text after all."""
    print_sink, stdout_sink = io.StringIO(), io.StringIO()
    original = builtins.print
    builtins.print = lambda *args, **kwargs: original(*args, **{**kwargs, "file": print_sink})
    try:
        with contextlib.redirect_stdout(stdout_sink):
            yield
    finally:
        builtins.print = original


def load_coco(path) -> COCO:
    with quiet():
        return COCO(str(path))


def head_size(head_boxes_xyxy: np.ndarray) -> np.ndarray:
    """MPII's normaliser, (N,) pixels: SC_BIAS (0.6) x the diagonal of each (N, 4) x0 y0 x1 y1 head box."""
    boxes = np.asarray(head_boxes_xyxy, dtype=np.float64)
    return SC_BIAS * np.linalg.norm(boxes[:, 2:4] - boxes[:, 0:2], axis=1)


def pckh(
    pred: np.ndarray, gt: np.ndarray, labelled: np.ndarray, head_boxes_xyxy: np.ndarray, threshold: float = 0.5
) -> dict[str, np.ndarray | float]:
    """PCKh: a joint is correct when its error is within threshold x head size.

    pred, gt (N, K, 2); labelled (N, K) bool. Returns per-joint percentages and the joint-count weighted mean,
    both over labelled joints only.
    """
    err = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(gt, np.float64), axis=-1)
    scaled = err / head_size(head_boxes_xyxy)[:, None]
    labelled = np.asarray(labelled, bool)
    hits = (scaled <= threshold) & labelled
    counts = labelled.sum(axis=0)
    per_joint = 100.0 * hits.sum(axis=0) / np.maximum(counts, 1)
    mean = 100.0 * hits.sum() / max(labelled.sum(), 1)
    return {"per_joint": per_joint, "mean": float(mean), "count": counts}
