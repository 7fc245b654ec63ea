"""CrowdPose keypoint evaluation, reproducing the official tool on top of pycocotools.

Why this is hand-written: the official protocol lives in xtcocotools
(`COCOeval(gt, dt, 'keypoints_crowd', sigmas, use_area=False)`), whose wheels are built against numpy 1.x and fail
to import under the numpy 2 this project uses. This module subclasses pycocotools' COCOeval (whose OKS, matching
and accumulation are the same code) and changes only what xtcocotools 1.14.3 changes for 'keypoints_crowd' with
use_area=False, so the numbers are equal to the official ones (tests/datasets/test_crowdpose_eval.py checks this against
stats recorded from xtcocotools itself):

- OKS scale and area-range test use `bbox_w * bbox_h * 0.53` in place of the annotation's `area`
  (CrowdPose ground truth has no `area`);
- detections whose keypoint scores are all 0 are dropped before matching;
- a ground truth is ignored when `iscrowd` or `num_keypoints == 0` (pycocotools already does this);
- maxDets 20; AP/AR stats from the 'all' area range only (the only range xtcocotools reports for CrowdPose);
- AP_E / AP_M / AP_H: the whole evaluation re-run on the images of each crowd class, split on the image's
  `crowdIndex` as xtcocotools' `get_type_result(first=0.2, second=0.8)` does: easy `ci < 0.2`,
  medium `0.2 <= ci < 0.8`, hard `ci >= 0.8` (note: 0.2, not the 0.1 of the CrowdPose paper). Each is the plain
  mean of the precision array over IoU thresholds x recall thresholds (absent classes give -1), rounded to 4
  decimals with `round(np.float64, 4)`, exactly as the tool does.

xtcocotools initialises unmatched ids to -1 where pycocotools uses 0, which differs only for an annotation id of 0;
ground-truth copies are therefore renumbered 1..N internally.
"""
from __future__ import annotations

import copy
from collections import defaultdict

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from datasets.evaluation.metrics import quiet
from datasets.skeletons import CROWDPOSE14

CROWDPOSE_STAT_NAMES = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_E", "AP_M", "AP_H")
CROWD_INDEX_EASY_BELOW = 0.2   # xtcocotools 1.14.3 COCOeval._summarizeKps_crowd: get_type_result(first=0.2, ...)
CROWD_INDEX_HARD_FROM = 0.8    # ... second=0.8; split(): `ci < first` easy, `ci < second` medium, else hard
BBOX_AREA_FACTOR = 0.53        # xtcocotools use_area=False: tmparea = bbox[3] * bbox[2] * 0.53
MAX_DETS = 20


class CrowdPoseEval(COCOeval):
    """pycocotools COCOeval with xtcocotools' 'keypoints_crowd' + use_area=False semantics."""

    def __init__(self, gt: COCO, dt: COCO, sigmas=CROWDPOSE14.sigmas):
        super().__init__(gt, dt, iouType="keypoints")
        self.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        self.params.maxDets = [MAX_DETS]
        self.params.areaRng = [[0 ** 2, 1e5 ** 2]]
        self.params.areaRngLbl = ["all"]

    def _prepare(self):
        super()._prepare()  # sets gt['ignore'] from iscrowd / num_keypoints == 0, as xtcocotools does
        gts = defaultdict(list)
        serial = 0
        for key, anns in self._gts.items():
            for ann in anns:
                serial += 1
                g = dict(ann)
                x, y, w, h = g["bbox"]
                g["area"] = h * w * BBOX_AREA_FACTOR  # same operand order as xtcocotools
                g["id"] = serial  # positive ids: pycocotools treats a matched id of 0 as "unmatched"
                gts[key].append(g)
        self._gts = gts
        dts = defaultdict(list)
        for key, anns in self._dts.items():
            for d in anns:
                if np.count_nonzero(np.asarray(d["keypoints"])[2::3] > 0) > 0:
                    dts[key].append(d)
        self._dts = dts

    def stats_all(self) -> list[float]:
        """evaluate() + accumulate() must have run. AP, AP50, AP75, AR, AR50, AR75 over the 'all' range."""
        precision, recall = self.eval["precision"], self.eval["recall"]
        iou_thrs = self.params.iouThrs

        def mean_valid(s):
            s = s[s > -1]
            return -1.0 if s.size == 0 else float(np.mean(s))

        out = []
        for arr in (precision, recall):
            for thr in (None, 0.5, 0.75):
                s = arr if thr is None else arr[np.where(thr == iou_thrs)[0]]
                s = s[..., 0:1, 0:1]  # area 'all', maxDets 20
                out.append(mean_valid(s))
        return out

    def crowd_class_ap(self, img_ids: list) -> float:
        """xtcocotools get_type_result for one class: re-evaluate on img_ids, mean precision, rounded to 4."""
        self.params.imgIds = list(img_ids)
        self.evaluate()
        self.accumulate()
        return float(round(np.mean(self.eval["precision"][:, :, :, 0, :]), 4))


def split_by_crowd_index(gt: COCO) -> tuple[list, list, list]:
    easy, medium, hard = [], [], []
    for img in gt.dataset["images"]:
        ci = img["crowdIndex"]
        if ci < CROWD_INDEX_EASY_BELOW:
            easy.append(img["id"])
        elif ci < CROWD_INDEX_HARD_FROM:
            medium.append(img["id"])
        else:
            hard.append(img["id"])
    return easy, medium, hard


def _load_results(gt: COCO, results: list[dict]) -> COCO:
    if results:
        return gt.loadRes(copy.deepcopy(results))  # loadRes writes id/area/bbox into the dicts it is given
    dt = COCO()  # pycocotools' loadRes cannot take an empty list; xtcocotools' can and yields no detections
    dt.dataset = {"images": list(gt.dataset["images"]), "categories": copy.deepcopy(gt.dataset["categories"]),
                  "annotations": []}
    dt.createIndex()
    return dt


def crowdpose_ap(gt: COCO, results: list[dict], sigmas=CROWDPOSE14.sigmas) -> dict[str, float]:
    """CrowdPose AP/AR of `results` (COCO results format) against `gt`, equal to xtcocotools'
    COCOeval(gt, dt, 'keypoints_crowd', sigmas, use_area=False).stats. Ground truth needs no `area`; every image
    needs `crowdIndex`."""
    with quiet():
        dt = _load_results(gt, results)
        ev = CrowdPoseEval(gt, dt, sigmas)
        ev.evaluate()
        ev.accumulate()
        stats = ev.stats_all()
        stats += [ev.crowd_class_ap(ids) for ids in split_by_crowd_index(gt)]
    return dict(zip(CROWDPOSE_STAT_NAMES, stats))
