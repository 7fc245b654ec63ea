"""The one validator for what users bring: annotation files, detector boxes and prediction files.

Every consumer calls it: the annotation readers (`datasets/annotations.py`, which the trainer's loaders and the
evaluation splits use), `datasets/evaluate.py` for ground truth and predictions, and the search's pre-flight
(`check_annotations`, run before any trial starts). It covers every field each consumer reads (see coco.py for
what the reference scorers read) and sorts what it finds three ways:

- refused: what cannot be trained on or scored honestly stops the run with a ValidationError whose message names
  the file, the entry (annotation, person, image or result) and the field; the command-line tools exit with 2;
- dropped and counted: what the reference pipelines (HRNet, MMPose) leave out (a degenerate box on a person
  without labelled joints or on a crowd region, a box entirely outside its image, a zero-width detector box,
  detector boxes of images outside an evaluated subset) is left out and counted in a `Dropped` tally that the
  loaders attach to what they return and log;
- warned: what the reference scores as it is but a user should hear about (a non-positive `area` in evaluate.py).

Formats: COCO-style keypoint json (coco.py: COCO, OCHuman, CrowdPose, the synthetic set), detector boxes and
keypoint predictions in the COCO results format (results.py), and the MPII json, `mpii_gt_val.mat` and (N, 16, 2)
prediction arrays (mpii.py).
"""
from __future__ import annotations

from datasets.validation.base import (AnnotationError, Dropped, MpiiFormatError, PredictionError,  # noqa: F401
                                      ValidationError, check_box, read_json)
from datasets.validation.coco import (ANNOTATION_FIELDS, IMAGE_FIELDS, CocoGroundTruth,  # noqa: F401
                                      check_coco_ground_truth, check_keypoints, person_box_drop, protocol_of)
from datasets.validation.mpii import (MPII_GT_FIELDS, MPII_JSON_FIELDS, check_mpii_gt,  # noqa: F401
                                      check_mpii_head_boxes, check_mpii_person, check_mpii_preds, mat_fields)
from datasets.validation.results import (DETECTION_FIELDS, RESULT_FIELDS, check_detections,  # noqa: F401
                                         check_results)

__all__ = [
    "ANNOTATION_FIELDS", "AnnotationError", "CocoGroundTruth", "DETECTION_FIELDS", "Dropped", "IMAGE_FIELDS",
    "MPII_GT_FIELDS", "MPII_JSON_FIELDS", "MpiiFormatError", "PredictionError", "RESULT_FIELDS", "ValidationError",
    "check_annotation_data", "check_annotations", "check_box", "check_coco_ground_truth", "check_detections",
    "check_keypoints", "check_mpii_gt", "check_mpii_head_boxes", "check_mpii_person", "check_mpii_preds",
    "check_results", "mat_fields", "person_box_drop", "protocol_of", "read_json",
]


def check_annotation_data(data, ann_file) -> None:
    """An annotation file holds either the MPII json (a list of persons) or COCO format."""
    if isinstance(data, list):
        return
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise AnnotationError(f"annotation file {ann_file}: neither COCO format (an object with 'images' and "
                              "'annotations') nor the MPII json (a list of persons)")


def check_annotations(data: dict, dataset: str) -> dict[str, Dropped]:
    """The search's pre-flight: parse every annotation file of a trial's `data.*` settings, and its detector boxes,
    once before any trial starts, so a malformed one stops the search (AnnotationError naming the file, annotation
    and field) rather than failing each trial on its workers. Returns the Dropped tally of each split that dropped
    something ("train", "val", "val_occ", "det_file")."""
    from datasets import meta
    from datasets.annotations import load_records  # parses through this package's checks
    from datasets.evaluation.splits import load_eval_split

    entry = meta.get(dataset)
    dropped = {}
    for split in ("train", *meta.SPLITS):
        if data.get(f"data.{split}_ann"):
            records = load_records(data[f"data.{split}_ann"], data.get(f"data.{split}_images") or "", entry.skeleton,
                                   protocol=entry.protocol)
            if records.dropped:
                dropped[split] = records.dropped
    det_split = data.get("data.det_split") or "val"
    if data.get("data.det_file") and data.get(f"data.{det_split}_ann"):
        split = load_eval_split(entry.protocol, data[f"data.{det_split}_ann"], data.get(f"data.{det_split}_images")
                                or data.get("data.val_images", ""), entry.skeleton,
                                int(data.get("data.max_val_samples") or 0), det_file=data["data.det_file"],
                                visibility_splits=False)
        if split.dropped:
            dropped["det_file"] = split.dropped
    if data.get("data.val_gt") and data.get("data.val_ann"):
        # MPII: the scorer's ground truth (mpii_gt_val.mat) read as the trials read it, so a json whose persons are
        # not the .mat's (another count, another order of files) stops the search here, not inside every trial.
        load_eval_split(entry.protocol, data["data.val_ann"], data.get("data.val_images") or "", entry.skeleton,
                        int(data.get("data.max_val_samples") or 0), gt_mat=data["data.val_gt"],
                        visibility_splits=False)
    return dropped
