"""The one validator for what users bring: annotation files, detector boxes and prediction files.

Every consumer calls it: the annotation readers (`datasets/annotations.py`, which the trainer's loaders and the
evaluation splits use), `datasets/evaluate.py` for ground truth and predictions, and the search's pre-flight
(`check_annotations`, run before any trial starts). A malformed input stops the run with a ValidationError whose
message names the file, the entry (annotation, person, image or result) and the field, because silently training or
scoring on a broken label is worse than not starting; the command-line tools turn it into exit status 2.

Formats: COCO-style keypoint json (COCO, OCHuman, CrowdPose, the synthetic set), the HRNet/MMPose MPII json, the
official MPII `mpii_gt_val.mat`, detector boxes and keypoint predictions in the COCO results format, and MPII
prediction .mat files ((N, 16, 2) arrays).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from datasets.skeletons import MPII16, MPII_MAT_NAMES, Skeleton

RESULT_FIELDS = ("image_id", "category_id", "keypoints", "score")  # a COCO keypoint result
DETECTION_FIELDS = ("image_id", "bbox", "score")  # a COCO detection result (category_id optional: 1 when absent)
MPII_JSON_FIELDS = ("image", "center", "scale", "joints", "joints_vis")
MPII_GT_FIELDS = ("dataset_joints", "jnt_missing", "pos_gt_src", "headboxes_src")


class ValidationError(ValueError):
    """A malformed input file; the message names the file, the entry and the field."""


class AnnotationError(ValidationError):
    """A malformed annotation file (ground truth or detector boxes)."""


class PredictionError(ValidationError):
    """A malformed COCO results file of keypoint predictions."""


class MpiiFormatError(ValidationError):
    """A .mat file that is not in the expected MPII layout (ground truth or predictions)."""


# --- annotation files ----------------------------------------------------------------------------------------------

def read_json(path: Path, what: str):
    """The parsed JSON of `path`; AnnotationError naming `what` and the file when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{what} {path}: no such file")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise AnnotationError(f"{what} {path}: not valid JSON ({err})") from None


def check_annotation_data(data, ann_file) -> None:
    """An annotation file holds either the MPII json (a list of persons) or COCO format."""
    if isinstance(data, list):
        return
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise AnnotationError(f"annotation file {ann_file}: neither COCO format (an object with 'images' and "
                              "'annotations') nor the MPII json (a list of persons)")


def check_coco_image(image, i: int, ann_file) -> None:
    if "id" not in image or "file_name" not in image:
        raise AnnotationError(f"{ann_file}: image {i} needs fields 'id' and 'file_name'")


def check_coco_annotation(ann: dict, i: int, ann_file, image_ids, skeleton: Skeleton):
    """(keypoints (K, 3) float32, bbox x y w h, head_box x0 y0 x1 y1 or None) of one COCO annotation."""
    ann_id = ann.get("id", f"#{i}")
    for field in ("image_id", "bbox", "keypoints"):
        if field not in ann:
            raise AnnotationError(f"{ann_file}: annotation {ann_id}: field {field!r} missing")
    if ann["image_id"] not in image_ids:
        raise AnnotationError(f"{ann_file}: annotation {ann_id}: field 'image_id' {ann['image_id']!r} is not "
                              "an image of the file")
    keypoints = check_keypoints(ann["keypoints"], skeleton, ann_file, ann_id)
    bbox = check_box(ann["bbox"], ann_file, ann_id, "bbox")
    head_box = check_box(ann["head_box"], ann_file, ann_id, "head_box", xywh=False) if "head_box" in ann else None
    return keypoints, bbox, head_box


def check_keypoints(values, skeleton: Skeleton, ann_file, ann_id) -> np.ndarray:
    """COCO's flat [x, y, v] * K list as a (K, 3) float32 array: finite, v in {0, 1, 2}."""
    expected = 3 * skeleton.num_keypoints
    if not isinstance(values, list) or len(values) != expected:
        size = len(values) if isinstance(values, list) else type(values).__name__
        raise AnnotationError(f"{ann_file}: annotation {ann_id}: field 'keypoints' has {size} values, expected "
                              f"{expected} (x, y, v for the {skeleton.num_keypoints} {skeleton.name} keypoints)")
    try:
        kpts = np.asarray(values, dtype=np.float32).reshape(-1, 3)
    except (TypeError, ValueError):
        raise AnnotationError(f"{ann_file}: annotation {ann_id}: field 'keypoints' is not numeric") from None
    if not np.isfinite(kpts).all():
        raise AnnotationError(f"{ann_file}: annotation {ann_id}: field 'keypoints' holds NaN or infinity")
    if not np.isin(kpts[:, 2], (0, 1, 2)).all():
        raise AnnotationError(f"{ann_file}: annotation {ann_id}: field 'keypoints' has visibility flags "
                              f"{sorted(set(kpts[:, 2].tolist()))}, expected 0, 1 or 2")
    return kpts


def check_box(values, source, ann_id, field: str, xywh: bool = True) -> tuple[float, float, float, float]:
    """Four finite numbers with a positive width and height (x y w h, or x0 y0 x1 y1 with `xywh=False`)."""
    try:
        box = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        box = ()
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise AnnotationError(f"{source}: annotation {ann_id}: field {field!r} is not four finite numbers: {values}")
    extent = box[2:] if xywh else (box[2] - box[0], box[3] - box[1])
    if min(extent) <= 0:
        raise AnnotationError(f"{source}: annotation {ann_id}: field {field!r} has a negative or zero width/height: "
                              f"{values}")
    return box


def check_mpii_head_boxes(num_persons: int, head_boxes, ann_file) -> None:
    if head_boxes is not None and len(head_boxes) != num_persons:
        raise AnnotationError(f"{ann_file}: {num_persons} persons but the head-box file holds {len(head_boxes)}")


def check_mpii_person(person, i: int, ann_file, skeleton: Skeleton):
    """(joints (K, 2) 1-based, joints_vis (K,), center (2,), scale) of one person of the HRNet/MMPose MPII json."""
    for field in MPII_JSON_FIELDS:
        if not isinstance(person, dict) or field not in person:
            raise AnnotationError(f"{ann_file}: person {i}: field {field!r} missing")
    joints = np.asarray(person["joints"], dtype=np.float64)
    labelled = np.asarray(person["joints_vis"], dtype=np.float64)
    if joints.shape != (skeleton.num_keypoints, 2) or labelled.shape != (skeleton.num_keypoints,):
        raise AnnotationError(f"{ann_file}: person {i}: field 'joints' has shape {joints.shape} and "
                              f"'joints_vis' {labelled.shape}, expected ({skeleton.num_keypoints}, 2) and "
                              f"({skeleton.num_keypoints},)")
    if not np.isfinite(joints).all():
        raise AnnotationError(f"{ann_file}: person {i}: field 'joints' holds a non-finite value")
    center = np.asarray(person["center"], dtype=np.float64)
    scale = float(person["scale"])
    if center.shape != (2,) or not np.isfinite(center).all():
        raise AnnotationError(f"{ann_file}: person {i}: field 'center' is not two finite numbers")
    if not math.isfinite(scale) or scale <= 0:
        raise AnnotationError(f"{ann_file}: person {i}: field 'scale' must be a positive number, got {scale}")
    return joints, labelled, center, scale


def check_annotations(data: dict, dataset: str) -> None:
    """The search's pre-flight: parse every annotation file of a trial's `data.*` settings once, before any trial
    starts, so a malformed one stops the search with a message naming the file, annotation and field rather than
    failing each trial on its workers."""
    from datasets import meta
    from datasets.annotations import load_records  # parses through this module's checks

    skeleton = meta.get(dataset).skeleton
    for split in ("train", *meta.SPLITS):
        if data.get(f"data.{split}_ann"):
            load_records(data[f"data.{split}_ann"], data[f"data.{split}_images"], skeleton)


# --- detector boxes ------------------------------------------------------------------------------------------------

def check_detections(dets, det_file) -> None:
    if not isinstance(dets, list):
        raise AnnotationError(f"--det-file {det_file}: expected a COCO results list, got {type(dets).__name__}")


def check_detection_fields(det, i: int, det_file) -> None:
    for field in DETECTION_FIELDS:
        if not isinstance(det, dict) or field not in det:
            raise AnnotationError(f"--det-file {det_file}: entry {i}: field {field!r} missing")


def check_detection(det: dict, i: int, det_file, image_files) -> tuple[float, float, float, float]:
    """The box (x y w h) of a detection kept for scoring: its image is one of the ground truth's."""
    if det["image_id"] not in image_files:
        raise AnnotationError(f"--det-file {det_file}: entry {i}: field 'image_id' {det['image_id']!r} is not "
                              "an image of the ground truth")
    return check_box(det["bbox"], det_file, i, "bbox")


# --- ground truth and predictions of datasets/evaluate.py ---------------------------------------------------------

def check_coco_ground_truth(gt_data, gt_path, skeleton: Skeleton, ann_fields: tuple[str, ...],
                            image_fields: tuple[str, ...] = ("id",)) -> None:
    """A COCO-format ground truth whose images and annotations carry the fields its protocol reads."""
    if not isinstance(gt_data, dict) or not isinstance(gt_data.get("annotations"), list) \
            or not isinstance(gt_data.get("images"), list):
        raise AnnotationError(f"--gt {gt_path}: not a COCO annotation file (needs 'images' and 'annotations' lists)")
    for i, img in enumerate(gt_data["images"]):
        if not isinstance(img, dict) or any(field not in img for field in image_fields):
            raise AnnotationError(f"--gt {gt_path}: image {i} needs fields {', '.join(map(repr, image_fields))}")
    expected = 3 * skeleton.num_keypoints
    for i, ann in enumerate(gt_data["annotations"]):
        for field in ann_fields:
            if field not in ann:
                raise AnnotationError(f"--gt {gt_path}: annotation {i} has no field {field!r}")
        if len(ann["keypoints"]) != expected:
            raise AnnotationError(f"--gt {gt_path}: annotation {i} field 'keypoints' has {len(ann['keypoints'])} "
                                  f"values, expected {expected}")


def check_results(results, path, gt_image_ids: set, num_keypoints: int) -> list[dict]:
    """A COCO keypoint results list: every entry has RESULT_FIELDS, 3 x K finite keypoint values, a finite score
    and an image of the ground truth."""
    if not isinstance(results, list):
        raise PredictionError(f"--pred {path}: a COCO results file must be a JSON list, got {type(results).__name__}")
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            raise PredictionError(f"--pred {path}: entry {i} is {type(r).__name__}, expected an object")
        for field in RESULT_FIELDS:
            if field not in r:
                raise PredictionError(f"--pred {path}: entry {i} has no field {field!r}")
        kpts = r["keypoints"]
        if not isinstance(kpts, list) or len(kpts) != 3 * num_keypoints:
            size = len(kpts) if isinstance(kpts, list) else type(kpts).__name__
            raise PredictionError(f"--pred {path}: entry {i} field 'keypoints' has {size} values, "
                                  f"expected {3 * num_keypoints} (x, y, score for {num_keypoints} keypoints)")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in kpts):
            raise PredictionError(f"--pred {path}: entry {i} field 'keypoints' holds a non-finite or non-numeric "
                                  "value")
        if not isinstance(r["score"], (int, float)) or not math.isfinite(r["score"]):
            raise PredictionError(f"--pred {path}: entry {i} field 'score' is not a finite number")
        if r["image_id"] not in gt_image_ids:
            raise PredictionError(f"--pred {path}: entry {i} field 'image_id' {r['image_id']!r} is not an image of "
                                  "the ground truth")
    return results


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
    """`pred` as a float (N, 16, 2) array, or MpiiFormatError naming `source`."""
    try:
        arr = np.asarray(pred, dtype=np.float64)
    except (TypeError, ValueError):
        raise MpiiFormatError(f"{source}: not a numeric array") from None
    if arr.ndim != 3 or arr.shape[1:] != (MPII16.num_keypoints, 2):
        raise MpiiFormatError(f"{source} has shape {arr.shape}, expected (N, 16, 2)")
    if num_persons is not None and arr.shape[0] != num_persons:
        raise MpiiFormatError(f"{source} holds {arr.shape[0]} persons but the ground truth has {num_persons}")
    return arr
