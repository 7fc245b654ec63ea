"""The benchmark evaluation CLI and the hand-written MPII PCKh, on the real fixtures in ../shared/data."""
import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from conftest import REPO_ROOT
from datasets.evaluation.metrics import quiet
from datasets.evaluation.mpii import PCKH_KEYS, mpii_pckh
from datasets import meta
from datasets.skeletons import COCO17, MPII16

MPII_VAL = "mpii_val_gt/detections_our_format.mat"
MPII_FIRST5 = "mpii/mpii_gt_val_first5.mat"
COCO_STAT_KEYS = ["AP", "AP50", "AP75", "AP_M", "AP_L", "AR", "AR50", "AR75", "AR_M", "AR_L"]


def run_cli(*args):
    return subprocess.run([sys.executable, "datasets/evaluate.py", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def to_zero_based(pos_src):
    """(16, 2, N) 1-based MATLAB layout -> (N, 16, 2) 0-based."""
    return np.transpose(pos_src, [2, 0, 1]) - 1.0


def pckh_from_definition(pred0, mat):
    """MPII PCKh straight from the protocol, independent of datasets.evaluation.mpii."""
    gt = np.transpose(mat["pos_gt_src"], [2, 0, 1])            # (N, 16, 2), 1-based
    visible = mat["jnt_missing"].T == 0                       # (N, 16)
    box = mat["headboxes_src"]
    head = 0.6 * np.hypot(box[1, 0] - box[0, 0], box[1, 1] - box[0, 1])  # (N,)
    err = np.hypot(*np.moveaxis(pred0 + 1.0 - gt, -1, 0)) / head[:, None]
    names = [str(n[0]) for n in mat["dataset_joints"].ravel()]
    count = visible.sum(axis=0)

    def per_joint(t):
        return 100.0 * ((err <= t) & visible).sum(axis=0) / count

    j = {n: i for i, n in enumerate(names)}
    keep = np.array([n not in ("pelv", "thor") for n in names])
    w = count * keep / (count * keep).sum()
    p5, p1 = per_joint(0.5), per_joint(0.1)
    out = {"Head": p5[j["head"]]}
    for col, s in [("Shoulder", "sho"), ("Elbow", "elb"), ("Wrist", "wri"), ("Hip", "hip"), ("Knee", "kne"),
                   ("Ankle", "ank")]:
        out[col] = (p5[j["l" + s]] + p5[j["r" + s]]) / 2
    out["Mean"] = float(np.sum(np.where(keep, p5 * w, 0.0)))
    out["Mean@0.1"] = float(np.sum(np.where(keep, p1 * w, 0.0)))
    return out


# ------------------------------------------------------------------ skeleton

def test_mpii_skeleton_is_consistent():
    s = meta.get("mpii").skeleton
    assert s is MPII16 and s.num_keypoints == 16 and len(s.sigmas) == 16
    names = s.keypoints
    for a, b in s.flip_pairs:
        assert names[a].replace("right", "X").replace("left", "right").replace("X", "left") == names[b]
    assert {names[i].split("_", 1)[1] for i in s.limb_joints} == {"shoulder", "elbow", "wrist", "hip", "knee",
                                                                  "ankle"}
    assert [names[i] for i in s.limb_chains[0]] == ["left_wrist", "left_elbow", "left_shoulder", "right_shoulder",
                                                    "right_elbow", "right_wrist"]
    assert [names[i] for i in s.limb_chains[1]] == ["left_ankle", "left_knee", "left_hip", "right_hip",
                                                    "right_knee", "right_ankle"]
    assert all(0 <= a < 16 and 0 <= b < 16 for a, b in s.bones)
    assert meta.get("coco").skeleton is COCO17 and COCO17.num_keypoints == 17


# ------------------------------------------------------------------ MPII

@pytest.fixture(scope="module")
def mpii_val(shared_data):
    path = shared_data / MPII_VAL
    if not path.is_file():
        pytest.skip(f"{path} absent")
    return path, scipy.io.loadmat(str(path))


def test_mpii_ground_truth_as_prediction_scores_100(mpii_val):
    path, mat = mpii_val
    assert mat["pos_gt_src"].shape == (16, 2, 2958)
    stats = mpii_pckh(to_zero_based(mat["pos_gt_src"]), path)
    assert list(stats) == list(PCKH_KEYS)
    assert all(v == 100.0 for v in stats.values()), stats


def test_mpii_tompson_predictions_match_the_protocol(mpii_val):
    path, mat = mpii_val
    pred0 = to_zero_based(mat["pos_pred_src"])
    ours = mpii_pckh(pred0, path)
    independent = pckh_from_definition(pred0, mat)
    for key in PCKH_KEYS:
        assert ours[key] == pytest.approx(independent[key], abs=1e-9), key
    assert 80.0 < ours["Mean"] < 90.0
    assert ours["Mean@0.1"] < ours["Mean"]
    # Monotone sanity: the head is the easiest column, the ankle the hardest.
    assert ours["Head"] > ours["Shoulder"] > ours["Elbow"] > ours["Wrist"] and ours["Ankle"] < ours["Knee"]
    # Values this implementation prints (bit-identical to HRNet's MPIIDataset.evaluate arithmetic, Mean@0.1 at
    # MMPose's threshold 0.1): a regression guard, not an external citation.
    expected = {"Head": 95.60027285129604, "Shoulder": 92.71399456521739, "Elbow": 83.36457720831754,
                "Wrist": 76.73571584887301, "Hip": 81.92832397986822, "Knee": 73.36277552319567,
                "Ankle": 65.4461547386753, "Mean": 82.3367161072079, "Mean@0.1": 28.974759302628154}
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value, abs=1e-9), key


def test_mpii_prediction_path_and_shift(mpii_val, tmp_path):
    path, mat = mpii_val
    pred0 = to_zero_based(mat["pos_gt_src"])
    pred_file = tmp_path / "pred.mat"
    scipy.io.savemat(str(pred_file), {"preds": pred0})
    assert mpii_pckh(pred_file, path)["Mean"] == 100.0
    assert mpii_pckh(pred_file, path, pred_key="preds") == mpii_pckh(pred0, path)


def test_mpii_first5_ground_truth_scores_100(shared_data):
    path = shared_data / MPII_FIRST5
    mat = scipy.io.loadmat(str(path))
    assert mat["pos_gt_src"].shape == (16, 2, 5)
    stats = mpii_pckh(to_zero_based(mat["pos_gt_src"]), path)
    assert all(v == 100.0 for v in stats.values()), stats


def test_cli_mpii(mpii_val, tmp_path):
    path, mat = mpii_val
    pred_file = tmp_path / "tompson.mat"
    scipy.io.savemat(str(pred_file), {"preds": to_zero_based(mat["pos_pred_src"])})
    proc = run_cli("--dataset", "mpii", "--gt", path, "--pred", pred_file)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats == pytest.approx(mpii_pckh(to_zero_based(mat["pos_pred_src"]), path), abs=1e-12)


# ------------------------------------------------------------------ COCO / OCHuman

def cocoeval_ap(gt_path, results):
    with quiet():
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(results), iouType="keypoints")  # default COCO sigmas
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def gt_as_results(gt_path):
    data = json.loads(gt_path.read_text())
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "keypoints": a["keypoints"], "score": 1.0}
            for a in data["annotations"] if a.get("num_keypoints", 0) > 0]


def test_cli_coco_matches_pycocotools(shared_data):
    gt = shared_data / "xtcocoapi_examples/example_coco_val.json"
    pred = shared_data / "xtcocoapi_examples/example_coco_preds.json"
    proc = run_cli("--dataset", "coco", "--gt", gt, "--pred", pred)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert list(stats) == COCO_STAT_KEYS
    direct = cocoeval_ap(gt, json.loads(pred.read_text()))
    assert [stats[k] for k in COCO_STAT_KEYS] == pytest.approx(list(direct), abs=1e-12)
    assert 0.5 < stats["AP"] < 1.0


@pytest.mark.parametrize("visibility, flag", [("occluded", 1), ("visible", 2)])
def test_cli_visibility_split_matches_pycocotools_on_a_filtered_file(shared_data, tmp_path, visibility, flag):
    """The O / NO columns on the 73 real predictions equal COCOeval on a GT file keeping only those joints."""
    gt = shared_data / "xtcocoapi_examples/example_coco_val.json"
    pred = shared_data / "xtcocoapi_examples/example_coco_preds.json"
    proc = run_cli("--dataset", "coco", "--gt", gt, "--pred", pred, "--visibility", visibility)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    data = json.loads(gt.read_text())
    for ann in data["annotations"]:  # a person with no joint of the kind: an ignore region keeping its joints
        kpts = [v for i in range(0, len(ann["keypoints"]), 3)
                for v in (ann["keypoints"][i:i + 3] if ann["keypoints"][i + 2] == flag else [0, 0, 0])]
        ann["num_keypoints"] = sum(1 for v in kpts[2::3] if v > 0)
        if ann["num_keypoints"]:
            ann["keypoints"] = kpts
    filtered = tmp_path / f"{visibility}_only.json"
    filtered.write_text(json.dumps(data))
    direct = cocoeval_ap(filtered, json.loads(pred.read_text()))
    assert [stats[k] for k in COCO_STAT_KEYS] == pytest.approx(list(direct), abs=1e-12)
    full = json.loads(run_cli("--dataset", "coco", "--gt", gt, "--pred", pred).stdout)
    assert stats["AP"] != pytest.approx(full["AP"])


def test_cli_mpii_has_no_visibility_split(tmp_path):
    proc = run_cli("--dataset", "mpii", "--gt", tmp_path / "x.mat", "--pred", tmp_path / "y.mat",
                   "--visibility", "occluded")
    assert proc.returncode == 2 and "occlusion flag" in proc.stderr


@pytest.mark.parametrize("dataset,gt_rel", [("coco", "xtcocoapi_examples/example_coco_val.json"),
                                            ("ochuman", "ochuman/test_ochuman.json")])
def test_cli_ground_truth_as_prediction_scores_ap_one(shared_data, tmp_path, dataset, gt_rel):
    gt = shared_data / gt_rel
    pred = tmp_path / "gt_as_pred.json"
    pred.write_text(json.dumps(gt_as_results(gt)))
    proc = run_cli("--dataset", dataset, "--gt", gt, "--pred", pred)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["AP"] == pytest.approx(1.0)
    assert stats["AR"] == pytest.approx(1.0)


# ------------------------------------------------------------------ bad input

def test_cli_missing_pred_file_exits_2(shared_data, tmp_path):
    missing = tmp_path / "no_such_results.json"
    proc = run_cli("--dataset", "coco", "--gt", shared_data / "xtcocoapi_examples/example_coco_val.json",
                   "--pred", missing)
    assert proc.returncode == 2
    assert str(missing) in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("dataset, gt", [("coco", "xtcocoapi_examples/example_coco_val.json"), ("mpii", MPII_FIRST5)])
def test_cli_pred_that_is_a_directory_exits_2_saying_so(shared_data, tmp_path, dataset, gt):
    proc = run_cli("--dataset", dataset, "--gt", shared_data / gt, "--pred", tmp_path)
    assert proc.returncode == 2 and f"{tmp_path}: is a directory, not a file" in proc.stderr and proc.stdout == ""


def test_cli_keypoint_beyond_any_pixel_exits_2_naming_entry_and_field(shared_data, tmp_path):
    """1e308 is a finite float, but pycocotools squares the distance to it (a numpy overflow warning, then
    nonsense): refused before COCOeval runs."""
    gt = shared_data / "xtcocoapi_examples/example_coco_val.json"
    image_id = json.loads(gt.read_text())["images"][0]["id"]
    good = {"image_id": image_id, "category_id": 1, "keypoints": [10.0, 20.0, 1.0] * 17, "score": 0.9}
    far = {**good, "keypoints": [10.0, 20.0, 1.0] * 3 + [1e308, 20.0, 1.0] + [10.0, 20.0, 1.0] * 13}
    pred = tmp_path / "far.json"
    pred.write_text(json.dumps([good, far]))
    proc = run_cli("--dataset", "coco", "--gt", gt, "--pred", pred)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert f"--pred {pred}: entry 1 field 'keypoints': keypoint 3 has a coordinate beyond" in proc.stderr
    assert "overflow encountered" not in proc.stderr and "Traceback" not in proc.stderr


def test_cli_results_not_a_list_exits_2(shared_data, tmp_path):
    pred = tmp_path / "dict.json"
    pred.write_text(json.dumps({"annotations": []}))
    proc = run_cli("--dataset", "ochuman", "--gt", shared_data / "ochuman/test_ochuman.json", "--pred", pred)
    assert proc.returncode == 2 and "list" in proc.stderr and str(pred) in proc.stderr


def test_cli_mpii_bad_preds_exit_2(shared_data, tmp_path):
    gt = shared_data / MPII_FIRST5
    wrong_shape = tmp_path / "wrong_shape.mat"
    scipy.io.savemat(str(wrong_shape), {"preds": np.zeros((5, 16, 3))})
    proc = run_cli("--dataset", "mpii", "--gt", gt, "--pred", wrong_shape)
    assert proc.returncode == 2 and "preds" in proc.stderr and str(wrong_shape) in proc.stderr

    wrong_n = tmp_path / "wrong_n.mat"
    scipy.io.savemat(str(wrong_n), {"preds": np.zeros((4, 16, 2))})
    proc = run_cli("--dataset", "mpii", "--gt", gt, "--pred", wrong_n)
    assert proc.returncode == 2 and "preds" in proc.stderr and "5" in proc.stderr

    no_key = tmp_path / "no_key.mat"
    scipy.io.savemat(str(no_key), {"predictions": np.zeros((5, 16, 2))})
    proc = run_cli("--dataset", "mpii", "--gt", gt, "--pred", no_key)
    assert proc.returncode == 2 and "'preds'" in proc.stderr


def test_module_invocation_works(shared_data, tmp_path):
    gt = shared_data / MPII_FIRST5
    pred = tmp_path / "gt.mat"
    scipy.io.savemat(str(pred), {"preds": to_zero_based(scipy.io.loadmat(str(gt))["pos_gt_src"])})
    proc = subprocess.run([sys.executable, "-m", "datasets.evaluate", "--dataset", "mpii", "--gt", str(gt),
                           "--pred", str(pred)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["Mean"] == 100.0
