"""Loaders, layouts and protocol scoring on the real fixtures (COCO, CrowdPose, OCHuman, MPII) in ../shared/data."""
import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from datasets.validation import AnnotationError
from datasets.annotations import load_detections, load_records
from datasets.layouts import LayoutError, resolve
from datasets.evaluation.metrics import quiet
from datasets.evaluation.mpii import load_mpii_gt
from datasets.evaluation.scoring import CocoScorer, MpiiScorer, Predictions, oks_nms
from datasets.evaluation.splits import load_eval_split
from datasets.skeletons import COCO17, CROWDPOSE14, MPII16


def category_keypoints(path: Path) -> list[str]:
    return json.loads(path.read_text())["categories"][0]["keypoints"]


def gt_predictions(records) -> Predictions:
    """Ground truth as predictions; unlabelled joints (stored as 0, 0) are placed at the box centre, as a model
    would place them on the person."""
    coords = np.stack([r.keypoints[:, :2] for r in records]).astype(np.float64)
    for i, r in enumerate(records):
        x, y, w, h = r.bbox
        coords[i, r.keypoints[:, 2] == 0] = (x + w / 2, y + h / 2)
    return Predictions(coords, np.ones(coords.shape[:2]), np.ones(len(records), bool))


# --- loaders -------------------------------------------------------------------------------------------------------

def test_coco_loader_counts_and_order(shared_data):
    records = load_records(shared_data / "coco/test_coco.json", shared_data / "coco", COCO17)
    raw = json.loads((shared_data / "coco/test_coco.json").read_text())["annotations"]
    assert len(raw) == 14 and len(records) == 12  # two persons have no labelled keypoint
    assert category_keypoints(shared_data / "coco/test_coco.json") == list(COCO17.keypoints)
    first = next(a for a in raw if a["id"] == records[0].ann_id)
    np.testing.assert_array_equal(records[0].keypoints.reshape(-1), first["keypoints"])
    assert records[0].bbox == tuple(first["bbox"]) and records[0].file.is_file()


def test_crowdpose_loader(shared_data):
    records = load_records(shared_data / "crowdpose/test_crowdpose.json", shared_data / "crowdpose", CROWDPOSE14)
    assert len(records) == 4 and all(r.keypoints.shape == (14, 3) for r in records)  # of 5: one has no joint
    names = category_keypoints(shared_data / "crowdpose/test_crowdpose.json")
    assert [n.replace("head", "top_head") if n == "head" else n for n in names] == list(CROWDPOSE14.keypoints)


def test_ochuman_loader(shared_data):
    records = load_records(shared_data / "ochuman/test_ochuman.json", shared_data / "ochuman", COCO17)
    assert len(records) == 5 and {r.image_id for r in records} == {1, 2, 3}
    assert category_keypoints(shared_data / "ochuman/test_ochuman.json") == list(COCO17.keypoints)


def test_mpii_loader_is_hrnet_convention(shared_data):
    gt = load_mpii_gt(shared_data / "mpii/mpii_gt_val_first5.mat")
    heads = gt.headboxes_src.transpose(2, 0, 1).reshape(-1, 4)
    records = load_records(shared_data / "mpii/test_mpii.json", shared_data / "mpii", MPII16, head_boxes=heads)
    raw = json.loads((shared_data / "mpii/test_mpii.json").read_text())
    assert len(records) == 5 and all(r.keypoints.shape == (16, 3) for r in records)
    for record, person, i in zip(records, raw, range(5)):
        # 1-based MATLAB joints -> 0-based; the same persons, in the same order, as the official .mat
        np.testing.assert_allclose(record.keypoints[:, :2], np.asarray(person["joints"]) - 1, atol=1e-4)
        labelled = record.keypoints[:, 2] > 0
        np.testing.assert_allclose(record.keypoints[labelled, :2] + 1, gt.pos_gt_src[labelled, :, i], atol=1e-3)
        side = person["scale"] * 200
        x, y, w, h = record.bbox
        assert w == pytest.approx(side) and h == pytest.approx(side)
        # HRNet's centre: moved down 15 x scale px, then 0-based like the joints (its `c = c - 1`)
        assert (x + w / 2, y + h / 2) == pytest.approx((person["center"][0] - 1,
                                                         person["center"][1] + 15 * person["scale"] - 1))
    heads_json = json.loads((shared_data / "mpii/mpii_headboxes_first5.json").read_text())["persons"]
    assert len(heads_json) == 5


def test_detections_become_records(shared_data):
    gt = json.loads((shared_data / "coco/test_coco.json").read_text())
    files = {i["id"]: i["file_name"] for i in gt["images"]}
    dets = load_detections(shared_data / "coco/test_coco_det_AP_H_56.json", shared_data / "coco", files, COCO17)
    assert len(dets) == 118 and all(r.file.is_file() and 0 < r.score <= 1 for r in dets)


# --- layouts -------------------------------------------------------------------------------------------------------

def test_layouts_resolve(real_layouts):
    coco = resolve("coco", real_layouts / "coco")
    assert coco.train.ann.name == "person_keypoints_train2017.json" and coco.val.images.name == "val2017"
    och = resolve("ochuman", real_layouts / "ochuman")  # trains on COCO next to it
    assert och.train == coco.train and och.val_occ.ann.name.startswith("ochuman_coco_format_val")
    assert resolve("mpii", real_layouts / "mpii").val_gt.name == "mpii_gt_val.mat"
    assert resolve("crowdpose", real_layouts / "crowdpose").val.ann.name == "crowdpose_test.json"


def test_layout_errors_name_the_missing_file(tmp_path):
    (tmp_path / "annotations").mkdir()
    with pytest.raises(LayoutError, match=r"person_keypoints_train2017\.json.*expected layout"):
        resolve("coco", tmp_path)
    with pytest.raises(LayoutError, match="no such directory"):
        resolve("mpii", tmp_path / "nowhere")


# --- scoring -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dataset", ["coco", "ochuman", "crowdpose"])
def test_ground_truth_scores_one_with_occlusion_splits(real_layouts, dataset):
    layout = resolve(dataset, real_layouts / dataset)
    split = layout.val_occ or layout.val
    skeleton = CROWDPOSE14 if dataset == "crowdpose" else COCO17
    loaded = load_eval_split(layout.meta.protocol, split.ann, split.images, skeleton)
    metrics = loaded.scorer.score(loaded.records, gt_predictions(loaded.records))
    for prefix in ("", "O/", "NO/"):
        assert metrics[f"{prefix}AP"] == pytest.approx(1.0) and metrics[f"{prefix}AR"] == pytest.approx(1.0)


def test_occluded_split_equals_pycocotools_on_a_filtered_file(shared_data, tmp_path):
    """Moving only the occluded joints: NO/AP stays 1; O/AP equals COCOeval run on a file with only v=1 joints."""
    ann = shared_data / "coco/test_coco.json"
    records = load_records(ann, shared_data / "coco", COCO17)
    pred = gt_predictions(records)
    occluded = np.stack([r.keypoints[:, 2] == 1 for r in records])
    pred.coords[occluded] += 9.0
    with quiet():
        scorer = CocoScorer(COCO(str(ann)), COCO17)
    metrics = scorer.score(records, pred)
    assert metrics["NO/AP"] == pytest.approx(1.0) and metrics["O/AP"] < 0.9 and metrics["AP"] < 1.0

    data = json.loads(ann.read_text())
    for a in data["annotations"]:  # a person without occluded joints: an ignore region keeping its joints
        k = np.asarray(a["keypoints"], float).reshape(-1, 3)
        a["num_keypoints"] = int((k[:, 2] == 1).sum())
        if a["num_keypoints"]:
            k[k[:, 2] != 1] = 0
            a["keypoints"] = k.reshape(-1).tolist()
    (tmp_path / "occluded_only.json").write_text(json.dumps(data))
    results = [{"image_id": r.image_id, "category_id": 1, "score": 1.0,
                "keypoints": np.concatenate([pred.coords[i], np.ones((17, 1))], 1).round(3).reshape(-1).tolist()}
               for i, r in enumerate(records)]
    with quiet():
        gt = COCO(str(tmp_path / "occluded_only.json"))
        ev = COCOeval(gt, gt.loadRes(results), "keypoints")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert metrics["O/AP"] == pytest.approx(ev.stats[0], abs=1e-12)


def test_mpii_ground_truth_scores_100(real_layouts):
    layout = resolve("mpii", real_layouts / "mpii")
    loaded = load_eval_split("mpii", layout.val.ann, layout.val.images, MPII16, gt_mat=layout.val_gt)
    metrics = loaded.scorer.score(loaded.records, gt_predictions(loaded.records))
    assert metrics["PCKh_0.5"] == pytest.approx(100.0) and metrics["PCKh/Head"] == pytest.approx(100.0)
    assert "O/PCKh_0.5" not in metrics  # the standard MPII json carries no occlusion flag


def test_mpii_occlusion_split_with_a_visibility_flag(shared_data, tmp_path):
    persons = json.loads((shared_data / "mpii/test_mpii.json").read_text())
    for person in persons:
        person["joints_visible"] = [0 if j in (10, 15) else 1 for j in range(16)]  # wrists occluded
    (tmp_path / "mpii_val.json").write_text(json.dumps(persons))
    gt = load_mpii_gt(shared_data / "mpii/mpii_gt_val_first5.mat")
    records = load_records(tmp_path / "mpii_val.json", shared_data / "mpii", MPII16,
                           head_boxes=gt.headboxes_src.transpose(2, 0, 1).reshape(-1, 4))
    pred = gt_predictions(records)
    pred.coords[:, [10, 15]] += 500.0
    metrics = MpiiScorer(gt).score(records, pred)
    assert metrics["O/PCKh_0.5"] == 0.0 and metrics["NO/PCKh_0.5"] == pytest.approx(100.0)
    assert metrics["PCKh/Wrist"] == 0.0
    # The official table's Mean over the same joints: 10 labelled wrists missed, 5 x 12 - 4 missing ankles hit.
    assert metrics["PCKh_0.5"] == pytest.approx(100 * 56 / 66)


def test_detector_boxes_score_through_oks_nms(real_layouts, shared_data):
    """Detections around ground-truth poses: duplicates are suppressed, the originals score AP 1."""
    layout = resolve("coco", real_layouts / "coco")
    loaded = load_eval_split("coco", layout.val.ann, layout.val.images, COCO17,
                             det_file=str(shared_data / "coco/test_coco_det_AP_H_56.json"))
    assert len(loaded.records) == 118 and loaded.scorer.nms
    truth = load_eval_split("coco", layout.val.ann, layout.val.images, COCO17).records
    results = []
    for r in truth:
        kpts = np.concatenate([r.keypoints[:, :2], np.ones((17, 1))], axis=1).reshape(-1)
        results.append({"image_id": r.image_id, "keypoints": kpts.tolist(), "score": 0.9, "area": 1e4})
        results.append({**results[-1], "keypoints": (kpts + 0.5).tolist(), "score": 0.5})  # a near duplicate
    kept = oks_nms(copy.deepcopy(results), COCO17.sigmas_array())
    assert len(kept) == len(truth) and all(r["score"] == 0.9 for r in kept)


# --- bad input -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, message", [
    ("keypoints", [1.0] * 50, "field 'keypoints' has 50 values, expected 51"),
    ("keypoints", [math.nan] + [1.0] * 50, "field 'keypoints' holds NaN"),
    ("bbox", [10, 10, -5, 20], "field 'bbox' has a negative or zero width"),
])
def test_malformed_annotation_names_file_id_and_field(shared_data, tmp_path, field, value, message):
    data = json.loads((shared_data / "coco/test_coco.json").read_text())
    bad = data["annotations"][2]  # a person with labelled joints (a degenerate box on one without is dropped)
    bad[field] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError) as err:
        load_records(path, shared_data / "coco", COCO17)
    assert str(path) in str(err.value) and f"annotation {bad['id']}" in str(err.value) and message in str(err.value)
