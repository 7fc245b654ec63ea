"""datasets/validation/: the one validator that the readers, evaluate.py and the search's pre-flight call."""
import json

import numpy as np
import pytest

from datasets import validation
from datasets.validation import AnnotationError, MpiiFormatError, PredictionError, ValidationError


def test_errors_are_validation_errors():
    for error in (AnnotationError, PredictionError, MpiiFormatError):
        assert issubclass(error, ValidationError) and issubclass(error, ValueError)


def test_preflight_parses_every_split_and_names_file_annotation_and_field(shared_data, tmp_path):
    good = shared_data / "coco/test_coco.json"
    data = {"data.train_ann": str(good), "data.train_images": str(shared_data / "coco"),
            "data.val_ann": str(good), "data.val_images": str(shared_data / "coco")}
    validation.check_annotations(data, "coco")

    broken = json.loads(good.read_text())
    broken["annotations"][2]["bbox"] = [0, 0, 0, 5]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(broken))
    ann_id = broken["annotations"][2]["id"]
    with pytest.raises(AnnotationError, match=rf"{bad}: annotation {ann_id}: field 'bbox'"):
        validation.check_annotations({**data, "data.val_occ_ann": str(bad),
                                      "data.val_occ_images": str(shared_data / "coco")}, "coco")


def test_prediction_checks_name_the_entry_and_field(tmp_path):
    ok = {"image_id": 1, "category_id": 1, "keypoints": [0.0] * 51, "score": 1.0}
    assert validation.check_results([ok], tmp_path, {1}, 17) == [ok]
    with pytest.raises(PredictionError, match="entry 0 field 'score'"):
        validation.check_results([{**ok, "score": float("nan")}], tmp_path, {1}, 17)
    with pytest.raises(PredictionError, match="entry 0 field 'image_id' 2"):
        validation.check_results([{**ok, "image_id": 2}], tmp_path, {1}, 17)
    with pytest.raises(PredictionError, match="entry 1 field 'category_id' 2 is not a category"):
        validation.check_results([ok, {**ok, "category_id": 2}], tmp_path, {1}, 17)
    with pytest.raises(PredictionError, match="entry 0 field 'keypoints' holds a non-finite or non-numeric"):
        validation.check_results([{**ok, "keypoints": ["1.0"] * 51}], tmp_path, {1}, 17)
    with pytest.raises(PredictionError, match="holds no prediction"):
        validation.check_results([], tmp_path, {1}, 17)
    assert validation.check_mpii_preds(np.zeros((3, 16, 2)), num_persons=3).shape == (3, 16, 2)
    with pytest.raises(MpiiFormatError, match=r"preds has shape \(3, 17, 2\)"):
        validation.check_mpii_preds(np.zeros((3, 17, 2)))
    nan = np.zeros((3, 16, 2))
    nan[1, 4, 0] = np.nan
    with pytest.raises(MpiiFormatError, match="NaN or infinity .first: person 1, joint 4"):
        validation.check_mpii_preds(nan)


def test_detector_boxes_kept_dropped_and_refused(tmp_path):
    det = {"image_id": 7, "bbox": [1, 2, 3, 4], "score": 0.5}
    flat = {**det, "bbox": [1, 2, 0, 4], "score": 0.02}
    kept, dropped = validation.check_detections([det, flat, {**det, "image_id": 8}], tmp_path, {7: "a.jpg", 8: "b.jpg"},
                                                keep_images={7})
    assert [(i, box) for i, _, box in kept] == [(0, (1.0, 2.0, 3.0, 4.0))]
    assert dropped == {"with a zero or negative width/height": 1, "on images outside the evaluated subset": 1}
    assert "dropped 2 boxes" in dropped.summary("boxes")
    with pytest.raises(AnnotationError, match="entry 0: field 'score' missing"):
        validation.check_detections([{"image_id": 7, "bbox": [1, 2, 3, 4]}], tmp_path, {7: "a.jpg"})
    with pytest.raises(AnnotationError, match="entry 1: field 'score' is nan"):
        validation.check_detections([det, {**det, "score": float("nan")}], tmp_path, {7: "a.jpg"})
    with pytest.raises(AnnotationError, match="entry 0: field 'bbox' is not four finite numbers"):
        validation.check_detections([{**det, "bbox": "1 2 3 4"}], tmp_path, {7: "a.jpg"})
    with pytest.raises(AnnotationError, match="entry 3: field 'image_id' 8 is not an image of the ground truth"):
        validation.check_detections([det] * 3 + [{**det, "image_id": 8}], tmp_path, {7: "a.jpg"})
    with pytest.raises(AnnotationError, match="holds no box"):
        validation.check_detections([], tmp_path, {7: "a.jpg"})
    with pytest.raises(AnnotationError, match="no person box left"):
        validation.check_detections([{**det, "category_id": 2}], tmp_path, {7: "a.jpg"})


def test_protocol_of_a_skeleton_sets_the_fields_a_coco_file_needs():
    from datasets.skeletons import COCO17, CROWDPOSE14

    assert validation.protocol_of(COCO17) == "coco" and validation.protocol_of(CROWDPOSE14) == "crowdpose"
    assert "area" in validation.ANNOTATION_FIELDS["coco"] and "area" not in validation.ANNOTATION_FIELDS["crowdpose"]
    assert "crowdIndex" in validation.IMAGE_FIELDS["crowdpose"]
    assert validation.Dropped().summary("boxes") == ""


def _mpii_edit(edit):
    def apply(layouts):
        path = layouts / "mpii/annotations/mpii_val.json"
        persons = json.loads(path.read_text())
        path.unlink()  # a symlink to the fixture: replaced, never written through
        path.write_text(json.dumps(edit(persons)))
    return apply


@pytest.mark.parametrize("edit, message", [
    (lambda p: [{**p[0], "joints": p[0]["joints"] + [[1.0, 1.0]]}] + p[1:], "person 0: field 'joints'"),
    (lambda p: [{**p[0], "joints_vis": p[0]["joints_vis"][:15]}] + p[1:], "person 0: field 'joints_vis'"),
    (lambda p: p[:-1], "4 persons but the head-box file holds 5"),
])
def test_search_preflight_refuses_an_mpii_file_its_trials_would_crash_on(fresh_layouts, tmp_path, capsys, edit,
                                                                          message):
    """Issue 15 kind 1: an MPII person with 17 joints, or a json whose person count differs from mpii_gt_val.mat,
    stops `search/run.py` in its pre-flight (exit 2, the file and entry named) before Ray starts or anything is
    written, instead of failing inside every trial."""
    from search.run import main

    _mpii_edit(edit)(fresh_layouts)
    storage = tmp_path / "ray"
    code = main(["--space", "lja", "--dataset", "mpii", "--data-root", str(fresh_layouts / "mpii"), "--smoke",
                 "--storage-path", str(storage), "--experiment", "refused"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "mpii_val.json" in err, err
    assert not storage.exists()
