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
(see datasets/evaluation/crowdpose.py).
MPII: GT is a .mat in the official mpii_gt_val.mat layout, PRED a .mat whose `preds` is (N, 16, 2) of 0-based pixel
coordinates in GT joint order (the pred.mat HRNet and MMPose write is already 1-based: subtract 1 first); the keys
are Head Shoulder Elbow Wrist Hip Knee Ankle Mean Mean@0.1 (PCKh percentages, see datasets/evaluation/mpii.py).
--visibility occluded|visible scores only the ground truth's occluded (v=1) or visible (v=2) joints (the O / NO
columns; see datasets/evaluation/scoring.py); the MPII .mat has no occlusion flag, so MPII takes `all` only.
Bad input (checked by datasets/validation/: every field the protocol's reference scorer reads) exits with status 2
and a message naming the file, the entry and the field; a person with labelled joints and a non-positive `area` is
scored as pycocotools scores it (only an exact prediction matches it) with a warning on stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from datasets import meta, validation
from datasets.evaluation.mpii import load_mpii_gt, load_mpii_preds, pckh_table

# Every benchmark with a protocol; the synthetic set is scored inside the trials only.
DATASETS = tuple(name for name in meta.DATASETS if name != "synthetic")


class InputError(Exception):
    """Bad user input: reported on stderr with exit status 2."""


def _load_coco_style(gt_path: Path, pred_path: Path, skeleton, protocol: str):
    """Validated ground truth (as a pycocotools COCO) and results for a COCO-format dataset; what the reference
    scores as it is but a user should hear about (datasets/validation/coco.py) is warned about on stderr."""
    from pycocotools.coco import COCO

    from datasets.evaluation.metrics import quiet

    gt_data = validation.read_json(gt_path, "--gt file")
    checked = validation.check_coco_ground_truth(gt_data, f"--gt {gt_path}", skeleton, protocol,
                                                 nonpositive_area="warn")
    for warning in checked.warnings:
        print(f"evaluate.py: warning: {warning}", file=sys.stderr)
    results = validation.check_results(validation.read_json(pred_path, "--pred file"), pred_path,
                                       checked.images, skeleton.num_keypoints,
                                       {cat["id"] for cat in gt_data["categories"]})
    with quiet():
        gt = COCO()
        gt.dataset = gt_data
        gt.createIndex()
    return gt, results


VISIBILITY = {"all": None, "occluded": 1, "visible": 2}


def _restrict(gt, visibility: str, gt_path: Path):
    """The ground truth scored for `--visibility`; InputError when it has no joint of that kind (AP would be -1)."""
    from datasets.evaluation.scoring import has_labelled_person, visibility_subset

    if VISIBILITY[visibility] is None:
        return gt
    subset = visibility_subset(gt, VISIBILITY[visibility])
    if not has_labelled_person(subset):
        raise InputError(f"--gt {gt_path}: no annotation has a joint with visibility flag {VISIBILITY[visibility]} "
                         f"({visibility}); there is nothing to score with --visibility {visibility}")
    return subset


def evaluate_coco_style(gt_path: Path, pred_path: Path, visibility: str = "all") -> dict[str, float]:
    from datasets.evaluation.metrics import oks_ap

    skeleton = meta.get("coco").skeleton
    gt, results = _load_coco_style(gt_path, pred_path, skeleton, "coco")
    return oks_ap(_restrict(gt, visibility, gt_path), results, skeleton.sigmas_array())


def evaluate_crowdpose(gt_path: Path, pred_path: Path, visibility: str = "all") -> dict[str, float]:
    """The CrowdPose protocol: no `area` field needed, easy/medium/hard by each image's `crowdIndex`."""
    from datasets.evaluation.crowdpose import crowdpose_ap

    skeleton = meta.get("crowdpose").skeleton
    gt, results = _load_coco_style(gt_path, pred_path, skeleton, "crowdpose")
    return crowdpose_ap(_restrict(gt, visibility, gt_path), results, skeleton.sigmas_array())


def evaluate_mpii(gt_path: Path, pred_path: Path) -> dict[str, float]:
    preds = load_mpii_preds(pred_path, key="preds")
    gt = load_mpii_gt(gt_path)
    validation.check_mpii_preds(preds, source=f"--pred {pred_path}: field 'preds'", num_persons=gt.num_persons)
    return pckh_table(preds, gt)


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
    protocol = meta.get(args.dataset).protocol
    try:
        if protocol == "mpii":
            if args.visibility != "all":
                raise InputError("--visibility: the MPII ground-truth .mat carries no occlusion flag; use 'all'")
            stats = evaluate_mpii(args.gt, args.pred)
        elif protocol == "crowdpose":
            stats = evaluate_crowdpose(args.gt, args.pred, args.visibility)
        else:
            stats = evaluate_coco_style(args.gt, args.pred, args.visibility)
    except (InputError, validation.ValidationError) as exc:
        print(f"evaluate.py: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
