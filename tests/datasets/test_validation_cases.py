"""Issue 14's annotation, detection and prediction faults, each replayed on inputs made from ../shared/data at test
time: refused naming file, entry and field (evaluate.py exits 2; the pre-flight and the trainer's loading raise),
or dropped and counted as the reference pipelines drop them."""
import json
import math

import numpy as np
import pytest
import scipy.io
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from datasets import validation
from datasets.annotations import load_detections, load_records
from datasets.evaluation.metrics import quiet
from datasets.evaluation.splits import load_eval_split
from datasets.skeletons import COCO17
from datasets.validation import AnnotationError
from test_evaluate import run_cli, to_zero_based

COCO_GT = "coco/test_coco.json"
COCO_DETS = "coco/test_coco_det_AP_H_56.json"
CROWDPOSE_GT = "crowdpose/test_crowdpose.json"


def edited(shared_data, tmp_path, rel=COCO_GT, edit=None, name="gt.json"):
    """A copy of the fixture `rel` changed by `edit(data)`, written under tmp_path."""
    data = json.loads((shared_data / rel).read_text())
    if edit:
        edit(data)
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def gt_as_results(path, unlabelled_at=None):
    """The ground truth's labelled persons as predictions (score 1); unlabelled joints moved to `unlabelled_at`."""
    results = []
    for a in json.loads(path.read_text())["annotations"]:
        if a["num_keypoints"] > 0 and not a["iscrowd"]:
            k = np.asarray(a["keypoints"], float).reshape(-1, 3)
            if unlabelled_at is not None:
                k[k[:, 2] == 0, :2] = unlabelled_at(a)
            k[:, 2] = 1.0
            results.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0,
                            "keypoints": k.reshape(-1).tolist()})
    return results


def write(tmp_path, name, obj):
    (tmp_path / name).write_text(json.dumps(obj))
    return tmp_path / name


def preflight(shared_data, ann, dataset="coco", images="coco", **extra):
    data = {"data.train_ann": str(ann), "data.train_images": str(shared_data / images),
            "data.val_ann": str(ann), "data.val_images": str(shared_data / images), **extra}
    return validation.check_annotations(data, dataset)


# --- item 2: every field the scorers read ------------------------------------------------------------------------

def test_missing_num_keypoints_exits_2_and_stops_preflight_and_trainer(shared_data, tmp_path):
    gt = edited(shared_data, tmp_path, edit=lambda d: [a.pop("num_keypoints") for a in d["annotations"]])
    pred = write(tmp_path, "pred.json", gt_as_results(shared_data / COCO_GT))
    proc = run_cli("--dataset", "coco", "--gt", gt, "--pred", pred)
    first = json.loads(gt.read_text())["annotations"][0]["id"]
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr  # was 1, KeyError: 'num_keypoints'
    assert f"{gt}: annotation {first}: field 'num_keypoints' missing" in proc.stderr
    with pytest.raises(AnnotationError, match=f"annotation {first}: field 'num_keypoints' missing"):
        preflight(shared_data, gt)  # passed before
    with pytest.raises(AnnotationError, match="field 'num_keypoints' missing"):
        load_eval_split("coco", str(gt), str(shared_data / "coco"), COCO17)  # the trainer's val split


@pytest.mark.parametrize("dataset, rel, where, field, value, message", [
    ("coco", COCO_GT, "annotations", "area", None, "field 'area' missing"),
    ("coco", COCO_GT, "annotations", "iscrowd", None, "field 'iscrowd' missing"),
    ("coco", COCO_GT, "annotations", "category_id", None, "field 'category_id' missing"),
    ("coco", COCO_GT, "annotations", "bbox", None, "field 'bbox' missing"),
    ("coco", COCO_GT, "annotations", "id", None, "field 'id' missing"),
    ("coco", COCO_GT, "annotations", "keypoints", "abc", "field 'keypoints' is a str, expected a list"),
    ("coco", COCO_GT, "annotations", "keypoints", ["1"] * 51, "field 'keypoints' holds a value that is not a number"),
    ("coco", COCO_GT, "annotations", "bbox", "10 10 50 80", "field 'bbox' is not four finite numbers"),
    ("coco", COCO_GT, "annotations", "num_keypoints", "15", "field 'num_keypoints' is '15'"),
    ("coco", COCO_GT, "annotations", "iscrowd", 2, "field 'iscrowd' is 2"),
    ("coco", COCO_GT, "annotations", "area", "100", "field 'area' is '100'"),
    ("coco", COCO_GT, "images", "width", None, "field 'width' missing"),
    ("coco", COCO_GT, "images", "height", -3, "field 'height' is -3"),
    ("crowdpose", CROWDPOSE_GT, "images", "crowdIndex", None, "field 'crowdIndex' missing"),
    ("crowdpose", CROWDPOSE_GT, "annotations", "num_keypoints", None, "field 'num_keypoints' missing"),
])
def test_every_field_the_scorer_reads_is_checked(shared_data, tmp_path, dataset, rel, where, field, value, message):
    def edit(data):
        entry = data[where][0]
        if value is None:
            entry.pop(field)
        else:
            entry[field] = value

    gt = edited(shared_data, tmp_path, rel, edit)
    pred = write(tmp_path, "pred.json", gt_as_results(shared_data / rel))
    proc = run_cli("--dataset", dataset, "--gt", gt, "--pred", pred)
    assert proc.returncode == 2 and str(gt) in proc.stderr and message in proc.stderr, proc.stderr
    with pytest.raises(AnnotationError, match=message.replace("(", r"\(")):
        preflight(shared_data, gt, dataset, images=rel.split("/")[0])


def test_categories_are_required(shared_data, tmp_path):
    gt = edited(shared_data, tmp_path, edit=lambda d: d.pop("categories"))
    with pytest.raises(AnnotationError, match="field 'categories' missing"):
        load_records(gt, shared_data / "coco", COCO17)


# --- item 3: area 0 ----------------------------------------------------------------------------------------------

def test_area_zero_refused_for_training_and_warned_in_evaluate(shared_data, tmp_path):
    gt = edited(shared_data, tmp_path, edit=lambda d: [a.update(area=0) for a in d["annotations"]])
    with pytest.raises(AnnotationError, match="non-positive field 'area'"):
        preflight(shared_data, gt)  # passed before: a search optimised noise
    with pytest.raises(AnnotationError, match="non-positive field 'area'"):
        load_records(gt, shared_data / "coco", COCO17)
    results = gt_as_results(shared_data / COCO_GT)
    for r in results:  # 1 px off on every joint: AP 0.65 against the real areas
        r["keypoints"] = [v + 1.0 if i % 3 < 2 else v for i, v in enumerate(r["keypoints"])]
    pred = write(tmp_path, "pred.json", results)
    proc = run_cli("--dataset", "coco", "--gt", gt, "--pred", pred)
    assert proc.returncode == 0, proc.stderr
    assert "warning" in proc.stderr and "'area'" in proc.stderr and str(gt) in proc.stderr
    with quiet():  # the reference tool's own number on the same file
        coco = COCO(str(gt))
        ev = COCOeval(coco, coco.loadRes(results), "keypoints")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert json.loads(proc.stdout)["AP"] == pytest.approx(ev.stats[0])
    assert ev.stats[0] == 0.0
    intact = run_cli("--dataset", "coco", "--gt", shared_data / COCO_GT, "--pred", pred)
    assert json.loads(intact.stdout)["AP"] > 0.5 and "warning" not in intact.stderr


# --- item 4: degenerate boxes are dropped and counted -------------------------------------------------------------

def _unlabelled_person(data):
    return next(a for a in data["annotations"] if a["num_keypoints"] == 0)


@pytest.mark.parametrize("edit", [
    lambda d: _unlabelled_person(d)["bbox"].__setitem__(2, 0.0),  # zero width, no labelled joint
    lambda d: (_unlabelled_person(d).update(iscrowd=1), _unlabelled_person(d)["bbox"].__setitem__(3, -3.0)),
], ids=["zero-width-unlabelled", "negative-height-crowd"])
def test_degenerate_ground_truth_box_is_dropped_and_counted(shared_data, tmp_path, edit):
    gt = edited(shared_data, tmp_path, edit=edit)
    records = load_records(gt, shared_data / "coco", COCO17)  # raised before, aborting the split
    intact = load_records(shared_data / COCO_GT, shared_data / "coco", COCO17)
    assert len(records) == len(intact) == 12 and sum(records.dropped.values()) == 1
    assert "dropped 1" in records.dropped.summary("annotations")
    assert preflight(shared_data, gt)["val"] == records.dropped


def test_zero_width_detection_is_dropped_and_counted(shared_data, tmp_path):
    def edit(dets):
        dets[0]["bbox"][2], dets[0]["score"] = 0.0, 0.02

    dets = edited(shared_data, tmp_path, COCO_DETS, edit, "dets.json")
    files = {i["id"]: i["file_name"] for i in json.loads((shared_data / COCO_GT).read_text())["images"]}
    records = load_detections(dets, shared_data / "coco", files, COCO17)
    assert len(records) == 117 and records.dropped == {"with a zero or negative width/height": 1}
    split = load_eval_split("coco", str(shared_data / COCO_GT), str(shared_data / "coco"), COCO17, det_file=str(dets))
    assert len(split.records) == 117 and sum(split.dropped.values()) == 1


def test_box_entirely_outside_its_image_is_dropped(shared_data, tmp_path):
    def edit(data):
        image = {i["id"]: i for i in data["images"]}[data["annotations"][0]["image_id"]]
        data["annotations"][0]["bbox"][0] = image["width"] + 5.0

    records = load_records(edited(shared_data, tmp_path, edit=edit), shared_data / "coco", COCO17)
    assert len(records) == 11 and records.dropped == {"with a box entirely outside its image": 1}


# --- item 5: detector boxes with max_val_samples -----------------------------------------------------------------

def test_detections_with_a_subset_keep_the_subset_images(shared_data):
    dets = json.loads((shared_data / COCO_DETS).read_text())
    split = load_eval_split("coco", str(shared_data / COCO_GT), str(shared_data / "coco"), COCO17, max_samples=3,
                            det_file=str(shared_data / COCO_DETS))  # raised: "image_id 197388 is not an image ..."
    kept_images = {i["id"] for i in split.gt.dataset["images"]}
    assert kept_images == {785, 40083}  # the first 3 persons' whole images
    assert {r.image_id for r in split.records} == kept_images
    assert len(split.records) == sum(d["image_id"] in kept_images for d in dets)
    assert split.dropped == {"on images outside the evaluated subset": len(dets) - len(split.records)}
    assert preflight(shared_data, shared_data / COCO_GT, **{"data.det_file": str(shared_data / COCO_DETS),
                                                            "data.max_val_samples": 3})["det_file"] == split.dropped


# --- ground truth and predictions the scorer would mis-read -----------------------------------------------------

def _set_first_keypoint(value):
    return lambda d: d["annotations"][0]["keypoints"].__setitem__(0, value)


@pytest.mark.parametrize("edit, message", [
    (_set_first_keypoint(math.nan), "field 'keypoints' holds NaN or infinity"),
    (_set_first_keypoint(math.inf), "field 'keypoints' holds NaN or infinity"),
    (lambda d: d["annotations"][1].update(id=d["annotations"][0]["id"]), "field 'id' 442619 is shared"),
    (lambda d: d["annotations"][0].update(image_id=999), "field 'image_id' 999 is not an image of the file"),
    (lambda d: d["annotations"][0].update(category_id=2), "field 'category_id' 2 is not a category of the file"),
    (lambda d: d["annotations"][0].update(num_keypoints=0), "field 'num_keypoints' is 0 but 17 joints"),
    (lambda d: [a.update(iscrowd=1) for a in d["annotations"]], "no annotation has a labelled joint"),
], ids=["nan", "inf", "duplicate-id", "unlisted-image", "unlisted-category", "num-keypoints-0", "no-person"])
def test_ground_truth_the_scorer_would_misread_is_refused(shared_data, tmp_path, edit, message):
    gt = edited(shared_data, tmp_path, edit=edit)
    pred = write(tmp_path, "pred.json", gt_as_results(shared_data / COCO_GT))
    proc = run_cli("--dataset", "coco", "--gt", gt, "--pred", pred)
    assert proc.returncode == 2 and proc.stdout == "" and str(gt) in proc.stderr and message in proc.stderr, \
        proc.stderr
    with pytest.raises(AnnotationError, match=message):
        preflight(shared_data, gt)


def test_predictions_of_another_category_exit_2(shared_data, tmp_path):
    results = gt_as_results(shared_data / COCO_GT)
    results[4]["category_id"] = 2
    pred = write(tmp_path, "pred.json", results)
    proc = run_cli("--dataset", "coco", "--gt", shared_data / COCO_GT, "--pred", pred)
    assert proc.returncode == 2 and f"{pred}: entry 4 field 'category_id' 2" in proc.stderr


@pytest.mark.parametrize("dets, message", [
    (lambda d: d[3].update(score=math.nan), "entry 3: field 'score' is nan"),
    (lambda d: d.clear(), "holds no box"),
], ids=["nan-score", "no-box"])
def test_detector_file_with_nan_score_or_no_box_is_refused(shared_data, tmp_path, dets, message):
    det_file = edited(shared_data, tmp_path, COCO_DETS, dets, "dets.json")
    with pytest.raises(AnnotationError, match=message):
        load_eval_split("coco", str(shared_data / COCO_GT), str(shared_data / "coco"), COCO17, det_file=str(det_file))
    with pytest.raises(AnnotationError, match=message):
        preflight(shared_data, shared_data / COCO_GT, **{"data.det_file": str(det_file)})


def test_mpii_predictions_holding_nan_exit_2(shared_data, tmp_path):
    gt = shared_data / "mpii/mpii_gt_val_first5.mat"
    preds = to_zero_based(scipy.io.loadmat(str(gt))["pos_gt_src"])
    preds[2, 7, 1] = np.nan
    pred = tmp_path / "nan.mat"
    scipy.io.savemat(str(pred), {"preds": preds})
    proc = run_cli("--dataset", "mpii", "--gt", gt, "--pred", pred)
    assert proc.returncode == 2 and str(pred) in proc.stderr and "NaN" in proc.stderr, proc.stderr


# --- the O / NO splits: the ground truth as predictions scores 1 wherever its unlabelled joints lie -------------

@pytest.mark.parametrize("dataset, rel", [("coco", COCO_GT), ("crowdpose", CROWDPOSE_GT)])
@pytest.mark.parametrize("place", [lambda a: (0.0, 0.0), lambda a: (a["bbox"][0] + a["bbox"][2] / 2, a["bbox"][1]),
                                   lambda a: (1e4, -1e4)], ids=["origin", "box-top", "far"])
@pytest.mark.parametrize("visibility", ["all", "occluded", "visible"])
def test_ground_truth_scores_one_on_every_visibility_split(shared_data, tmp_path, dataset, rel, place, visibility):
    pred = write(tmp_path, "pred.json", gt_as_results(shared_data / rel, unlabelled_at=place))
    proc = run_cli("--dataset", dataset, "--gt", shared_data / rel, "--pred", pred, "--visibility", visibility)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["AP"] == pytest.approx(1.0)  # occluded at the origin: 0.911 before


def test_trainer_scorer_ground_truth_scores_one_with_unlabelled_joints_at_origin(shared_data):
    from datasets.evaluation.scoring import Predictions

    split = load_eval_split("coco", str(shared_data / COCO_GT), str(shared_data / "coco"), COCO17)
    coords = np.stack([r.keypoints[:, :2] for r in split.records]).astype(np.float64)  # unlabelled at (0, 0)
    pred = Predictions(coords, np.ones(coords.shape[:2]), np.ones(len(coords), bool))
    metrics = split.scorer.score(split.records, pred)
    assert metrics["AP"] == metrics["O/AP"] == metrics["NO/AP"] == pytest.approx(1.0)


def test_visibility_split_without_such_joints_exits_2(shared_data, tmp_path):
    def no_occluded(data):
        for a in data["annotations"]:
            a["keypoints"] = [2 if i % 3 == 2 and v == 1 else v for i, v in enumerate(a["keypoints"])]

    gt = edited(shared_data, tmp_path, edit=no_occluded)
    pred = write(tmp_path, "pred.json", gt_as_results(gt))
    proc = run_cli("--dataset", "coco", "--gt", gt, "--pred", pred, "--visibility", "occluded")
    assert proc.returncode == 2 and "visibility flag 1" in proc.stderr  # printed AP -1 before
    split = load_eval_split("coco", str(gt), str(shared_data / "coco"), COCO17)
    assert set(split.scorer.subsets) == {"NO"}  # no O/AP of -1 in a trial's metrics
