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


class OksEval(COCOeval):
    """pycocotools' COCOeval with its `computeOks` vectorised over the detections of each ground-truth person: the
    same float64 operations on the same values, element for element (the per-pair sum over joints as well), so
    the same OKS matrix bit for bit (tests/datasets/test_metrics.py compares every image's matrix with the
    original's), in a tenth of the time on COCO val with detector boxes (~20 detections per image). Matching,
    accumulation and the summary are pycocotools' own."""

    def computeOks(self, imgId, catId):  # noqa: N802  pycocotools' name
        p = self.params
        gts = self._gts[imgId, catId]
        dts = self._dts[imgId, catId]
        inds = np.argsort([-d["score"] for d in dts], kind="mergesort")
        dts = [dts[i] for i in inds][:p.maxDets[-1]]
        if len(gts) == 0 or len(dts) == 0:
            return []
        ious = np.zeros((len(dts), len(gts)))
        variances = (p.kpt_oks_sigmas * 2) ** 2
        d = np.array([dt["keypoints"] for dt in dts])
        xd, yd = d[:, 0::3], d[:, 1::3]
        for j, gt in enumerate(gts):
            g = np.array(gt["keypoints"])
            xg, yg, vg = g[0::3], g[1::3], g[2::3]
            labelled = vg > 0
            if labelled.any():  # the distance to each labelled joint
                dx, dy = xd - xg, yd - yg
            else:  # the distance to the ignore region: the box doubled on each side
                x, y, w, h = gt["bbox"]
                x0, x1, y0, y1 = x - w, x + w * 2, y - h, y + h * 2
                dx = np.maximum(0, x0 - xd) + np.maximum(0, xd - x1)
                dy = np.maximum(0, y0 - yd) + np.maximum(0, yd - y1)
            e = (dx**2 + dy**2) / variances / (gt["area"] + np.spacing(1)) / 2
            if labelled.any():  # row-major, so that each row is summed as one vector (numpy's pairwise sum)
                e = np.ascontiguousarray(e[:, labelled])
            ious[:, j] = np.sum(np.exp(-e), axis=1) / e.shape[1]
        return ious


def oks_ap(gt: COCO, results: list[dict], sigmas: np.ndarray, dt: COCO | None = None) -> dict[str, float]:
    """COCO keypoint AP/AR of `results` (COCO results format) against `gt`, exactly as COCOeval computes them.
    `dt`: `results` already loaded by `gt.loadRes` (or by that of a ground truth of the same images): COCOeval
    reads the detections without changing them, so the O / NO subsets reuse the full split's."""
    if not results:
        return {name: 0.0 for name in COCO_STAT_NAMES}
    with quiet():
        dt = dt if dt is not None else gt.loadRes(results)
        evaluator = OksEval(gt, dt, iouType="keypoints")
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
