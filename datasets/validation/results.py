"""COCO results files: keypoint predictions (datasets/evaluate.py --pred) and detector boxes (--det-file).

Predictions are refused when COCOeval would mis-read them: a non-finite or non-numeric keypoint or score, a keypoint
coordinate beyond any pixel position (|x| > 2**53, where its squared distances overflow), an image
or category the ground truth does not list (scored as nothing: AP 0), or no prediction at all. Detector boxes are
read as HRNet and MMPose read them: boxes of another category or under the score threshold are skipped, and a box
of zero or negative width or height is dropped and counted; a NaN score, an unknown image or a file with no person
box at all is refused, because the scores would silently be 0.
"""
from __future__ import annotations

import numpy as np

from datasets.validation.base import (AnnotationError, Dropped, PredictionError, box_extent, check_box, check_reference,
                                      is_id,
                                      is_number, numbers)

RESULT_FIELDS = ("image_id", "category_id", "keypoints", "score")  # a COCO keypoint result
DETECTION_FIELDS = ("image_id", "bbox", "score")  # a COCO detection result (category_id optional: 1 when absent)
PERSON = 1  # the person category of every COCO-format keypoint dataset
# Beyond 2**53 float64 no longer holds every integer pixel; far beyond, pycocotools' OKS (squared distance over
# sigma^2 and the area) overflows with a numpy warning and scores nonsense.
MAX_COORDINATE = 2.0 ** 53


def check_results(results, path, gt_image_ids, num_keypoints: int, category_ids=(PERSON,)) -> list[dict]:
    """A COCO keypoint results list: every entry has RESULT_FIELDS, 3 x K finite keypoint values, a finite score,
    an image and a category of the ground truth. PredictionError names the file, the entry and the field."""
    if not isinstance(results, list):
        raise PredictionError(f"--pred {path}: a COCO results file must be a JSON list, got {type(results).__name__}")
    if not results:
        raise PredictionError(f"--pred {path}: holds no prediction (every metric would be 0)")
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
        values = numbers(kpts)
        if values is None:
            raise PredictionError(f"--pred {path}: entry {i} field 'keypoints' holds a non-finite or non-numeric "
                                  "value")
        far = np.flatnonzero(np.abs(values.reshape(-1, 3)[:, :2]) > MAX_COORDINATE)
        if far.size:
            raise PredictionError(f"--pred {path}: entry {i} field 'keypoints': keypoint {far[0] // 2} has a "
                                  f"coordinate beyond ±2**53 ({values.reshape(-1, 3)[far[0] // 2, :2].tolist()}), "
                                  "no pixel position (COCOeval's squared distances would overflow)")
        if not is_number(r["score"]):
            raise PredictionError(f"--pred {path}: entry {i} field 'score' is not a finite number")
        check_reference(r, "image_id", gt_image_ids, f"--pred {path}: entry {i} ", "an image of the ground truth",
                        PredictionError)
        check_reference(r, "category_id", category_ids, f"--pred {path}: entry {i} ",
                        f"a category of the ground truth ({sorted(category_ids, key=str)})", PredictionError)
    return results


def check_detections(dets, det_file, image_ids, keep_images=None, min_score: float = 0.0):
    """The detector boxes kept for scoring, as [(entry index, det, box x y w h)], and the Dropped tally.

    `image_ids`: the ground truth's images (an id outside it is refused: a detector file of another split);
    `keep_images`: the images being evaluated (a subset, as with data.max_val_samples); boxes of the others are
    dropped and counted. AnnotationError names the file, the entry and the field."""
    if not isinstance(dets, list):
        raise AnnotationError(f"--det-file {det_file}: expected a COCO results list, got {type(dets).__name__}")
    if not dets:
        raise AnnotationError(f"--det-file {det_file}: holds no box (there would be nothing to score)")
    kept, dropped = [], Dropped()
    for i, det in enumerate(dets):
        for field in DETECTION_FIELDS:
            if not isinstance(det, dict) or field not in det:
                raise AnnotationError(f"--det-file {det_file}: entry {i}: field {field!r} missing")
        if not is_number(det["score"]):
            raise AnnotationError(f"--det-file {det_file}: entry {i}: field 'score' is {det['score']!r}, expected a "
                                  "finite number")
        box = check_box(det["bbox"], f"--det-file {det_file}", f"entry {i}", "bbox")
        if not is_id(det["image_id"]) or det["image_id"] not in image_ids:
            raise AnnotationError(f"--det-file {det_file}: entry {i}: field 'image_id' {det['image_id']!r} is not "
                                  "an image of the ground truth")
        if det.get("category_id", PERSON) != PERSON:
            dropped["of another category than person"] += 1
        elif det["score"] < min_score:
            dropped[f"scored under {min_score}"] += 1
        elif min(box_extent(box)) <= 0:
            dropped["with a zero or negative width/height"] += 1
        elif keep_images is not None and det["image_id"] not in keep_images:
            dropped["on images outside the evaluated subset"] += 1
        else:
            kept.append((i, det, box))
    if not kept:
        raise AnnotationError(f"--det-file {det_file}: no person box left to score ({dropped.summary('boxes')})")
    return kept, dropped
