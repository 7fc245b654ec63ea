#!/usr/bin/env python
"""Score predictions with a benchmark's standard protocol and print one JSON object on stdout.

    python datasets/evaluate.py --dataset coco    --gt person_keypoints_val2017.json --pred results.json
    python datasets/evaluate.py --dataset ochuman --gt ochuman_val.json             --pred results.json
    python datasets/evaluate.py --dataset mpii    --gt mpii_gt_val.mat              --pred pred.mat
    python datasets/evaluate.py --dataset crowdpose --gt crowdpose_test.json        --pred results.json

COCO / OCHuman: PRED is a COCO keypoint results json (a list of {image_id, category_id, keypoints, score}); the
keys are AP AP50 AP75 AP_M AP_L AR AR50 AR75 AR_M AR_L (pycocotools COCOeval, COCO's 17 sigmas).
CrowdPose: the same file formats with 14 keypoints (GT needs no `area`, but each image needs `crowdIndex`); the keys
are AP AP50 AP75 AR AR50 AR75 AP_E AP_M AP_H, equal to the official xtcocotools 'keypoints_crowd' evaluation
(see datasets/crowdpose_eval.py).
MPII: GT is a .mat in the official mpii_gt_val.mat layout, PRED a .mat whose `preds` is (N, 16, 2) of 0-based pixel
coordinates in GT joint order (the pred.mat HRNet and MMPose write is already 1-based: subtract 1 first); the keys
are Head Shoulder Elbow Wrist Hip Knee Ankle Mean Mean@0.1 (PCKh percentages, see datasets/mpii_eval.py).
--visibility occluded|visible scores only the ground truth's occluded (v=1) or visible (v=2) joints (the O / NO
columns; see datasets/scoring.py); the MPII .mat has no occlusion flag, so MPII takes `all` only.
Bad input exits with status 2 and a message naming the file and field.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `python datasets/evaluate.py` from a checkout without an editable install
    sys.path.insert(0, str(REPO_ROOT))

from datasets.annotations import AnnotationError, read_json  # noqa: E402
from datasets.mpii_eval import MpiiFormatError, check_preds, load_mpii_gt, load_mpii_preds, pckh_table  # noqa: E402
from datasets.skeletons import COCO17, CROWDPOSE14  # noqa: E402

DATASETS = ("coco", "ochuman", "mpii", "crowdpose")
RESULT_FIELDS = ("image_id", "category_id", "keypoints", "score")


class InputError(Exception):
    """Bad user input: reported on stderr with exit status 2."""


def _read_json(path: Path, role: str):
    try:
        return read_json(path, f"{role} file")
    except AnnotationError as exc:
        raise InputError(str(exc)) from None


def _check_results(results, path: Path, gt_image_ids: set, num_keypoints: int) -> list[dict]:
    if not isinstance(results, list):
        raise InputError(f"--pred {path}: a COCO results file must be a JSON list, got {type(results).__name__}")
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            raise InputError(f"--pred {path}: entry {i} is {type(r).__name__}, expected an object")
        for field in RESULT_FIELDS:
            if field not in r:
                raise InputError(f"--pred {path}: entry {i} has no field {field!r}")
        kpts = r["keypoints"]
        if not isinstance(kpts, list) or len(kpts) != 3 * num_keypoints:
            size = len(kpts) if isinstance(kpts, list) else type(kpts).__name__
            raise InputError(f"--pred {path}: entry {i} field 'keypoints' has {size} values, "
                             f"expected {3 * num_keypoints} (x, y, score for {num_keypoints} keypoints)")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in kpts):
            raise InputError(f"--pred {path}: entry {i} field 'keypoints' holds a non-finite or non-numeric value")
        if not isinstance(r["score"], (int, float)) or not math.isfinite(r["score"]):
            raise InputError(f"--pred {path}: entry {i} field 'score' is not a finite number")
        if r["image_id"] not in gt_image_ids:
            raise InputError(f"--pred {path}: entry {i} field 'image_id' {r['image_id']!r} is not an image of the "
                             f"ground truth")
    return results


def _load_coco_style(gt_path: Path, pred_path: Path, skeleton, ann_fields: tuple[str, ...],
                     image_fields: tuple[str, ...] = ("id",)):
    """Validated ground truth (as a pycocotools COCO) and results for a COCO-format dataset."""
    from pycocotools.coco import COCO

    from datasets.metrics import quiet

    gt_data = _read_json(gt_path, "--gt")
    if not isinstance(gt_data, dict) or not isinstance(gt_data.get("annotations"), list) \
            or not isinstance(gt_data.get("images"), list):
        raise InputError(f"--gt {gt_path}: not a COCO annotation file (needs 'images' and 'annotations' lists)")
    for i, img in enumerate(gt_data["images"]):
        if not isinstance(img, dict) or any(field not in img for field in image_fields):
            raise InputError(f"--gt {gt_path}: image {i} needs fields {', '.join(map(repr, image_fields))}")
    expected = 3 * skeleton.num_keypoints
    for i, ann in enumerate(gt_data["annotations"]):
        for field in ann_fields:
            if field not in ann:
                raise InputError(f"--gt {gt_path}: annotation {i} has no field {field!r}")
        if len(ann["keypoints"]) != expected:
            raise InputError(f"--gt {gt_path}: annotation {i} field 'keypoints' has {len(ann['keypoints'])} values, "
                             f"expected {expected}")
    results = _check_results(_read_json(pred_path, "--pred"), pred_path,
                             {img["id"] for img in gt_data["images"]}, skeleton.num_keypoints)
    with quiet():
        gt = COCO()
        gt.dataset = gt_data
        gt.createIndex()
    return gt, results


VISIBILITY = {"all": None, "occluded": 1, "visible": 2}


def _restrict(gt, visibility: str):
    from datasets.scoring import visibility_subset

    return gt if VISIBILITY[visibility] is None else visibility_subset(gt, VISIBILITY[visibility])


def evaluate_coco_style(gt_path: Path, pred_path: Path, visibility: str = "all") -> dict[str, float]:
    from datasets.metrics import oks_ap

    gt, results = _load_coco_style(gt_path, pred_path, COCO17, ("keypoints", "image_id", "bbox", "area", "iscrowd"))
    return oks_ap(_restrict(gt, visibility), results, COCO17.sigmas_array())


def evaluate_crowdpose(gt_path: Path, pred_path: Path, visibility: str = "all") -> dict[str, float]:
    """The CrowdPose protocol: no `area` field needed, easy/medium/hard by each image's `crowdIndex`."""
    from datasets.crowdpose_eval import crowdpose_ap

    gt, results = _load_coco_style(
        gt_path, pred_path, CROWDPOSE14, ("keypoints", "image_id", "category_id", "bbox", "iscrowd", "num_keypoints"),
        image_fields=("id", "crowdIndex"))
    return crowdpose_ap(_restrict(gt, visibility), results, CROWDPOSE14.sigmas_array())


def evaluate_mpii(gt_path: Path, pred_path: Path) -> dict[str, float]:
    try:
        preds = load_mpii_preds(pred_path, key="preds")
        gt = load_mpii_gt(gt_path)
        check_preds(preds, source=f"--pred {pred_path}: field 'preds'", num_persons=gt.num_persons)
        return pckh_table(preds, gt)
    except MpiiFormatError as exc:
        raise InputError(str(exc)) from None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=DATASETS, help="benchmark protocol to apply")
    p.add_argument("--gt", required=True, type=Path, help="ground truth: COCO json (coco, ochuman, crowdpose) or .mat (mpii)")
    p.add_argument("--pred", required=True, type=Path,
                   help="predictions: COCO results json (coco, ochuman, crowdpose) or .mat with `preds` (N, 16, 2) (mpii)")
    p.add_argument("--visibility", default="all", choices=sorted(VISIBILITY),
                   help="score all labelled joints, or only the occluded (v=1) or visible (v=2) ones")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.dataset == "mpii":
            if args.visibility != "all":
                raise InputError("--visibility: the MPII ground-truth .mat carries no occlusion flag; use 'all'")
            stats = evaluate_mpii(args.gt, args.pred)
        elif args.dataset == "crowdpose":
            stats = evaluate_crowdpose(args.gt, args.pred, args.visibility)
        else:
            stats = evaluate_coco_style(args.gt, args.pred, args.visibility)
    except InputError as exc:
        print(f"evaluate.py: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
