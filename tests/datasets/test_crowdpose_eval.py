"""The hand-written CrowdPose evaluation (datasets/evaluation/crowdpose.py) against the official tool's numbers."""
import copy
import json
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from datasets.evaluation.crowdpose import CROWDPOSE_STAT_NAMES, crowdpose_ap
from datasets.evaluation.metrics import load_coco
from datasets import meta
from datasets.skeletons import CROWDPOSE14

EXAMPLE_GT = "xtcocoapi_examples/example_crowdpose_val.json"
EXAMPLE_PREDS = "xtcocoapi_examples/example_crowdpose_preds.json"
TEST_GT = "crowdpose/test_crowdpose.json"
KEYS = ["AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP_E", "AP_M", "AP_H"]

# Official stats, produced by xtcocotools 1.14.3 (PyPI wheel, numpy 1.26.4, Python 3.11, in a throwaway venv outside
# the repo) with
#     gt = xtcocotools.coco.COCO(<gt json path>); dt = gt.loadRes(preds)
#     ev = xtcocotools.cocoeval.COCOeval(gt, dt, 'keypoints_crowd', sigmas, use_area=False)
#     ev.evaluate(); ev.accumulate(); ev.summarize(); ev.stats   (9 values, in KEYS order)
# with sigmas = np.array(CROWDPOSE14.sigmas), on ../shared/data files; preds as loaded from the json, or perturbed by
# `perturb` below. AP_E/AP_M/AP_H are rounded to 4 decimals by the tool itself.
OFFICIAL_EXAMPLE = [0.7877215935879303, 0.9881188118811886, 0.7314356435643564, 0.8222222222222223, 1.0,
                    0.7777777777777778, 1.0, 0.9802, 0.4116]
OFFICIAL_PERTURBED = [0.7439014615747289, 0.9881188118811886, 0.7314356435643564, 0.788888888888889, 1.0,
                      0.7777777777777778, 0.9, 0.9802, 0.3284]
# test_crowdpose.json with its ground truth as predictions (score 1.0): both images have crowdIndex in [0.2, 0.8),
# so the easy and hard classes are empty and the tool reports -1 for them.
OFFICIAL_GT_AS_PRED_TEST = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 1.0, -1.0]


def perturb(preds):
    """Deterministic shift: prediction i moves by (2 + i % 3, -1.5 * (i % 4)) pixels, every keypoint."""
    out = copy.deepcopy(preds)
    for i, p in enumerate(out):
        k = p["keypoints"]
        for j in range(0, len(k), 3):
            k[j] += 2.0 + (i % 3)
            k[j + 1] -= 1.5 * (i % 4)
    return out


def gt_as_preds(path):
    data = json.loads(path.read_text())
    return [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
            for a in data["annotations"]]


def _need(shared_data, *rels):
    for rel in rels:
        if not (shared_data / rel).is_file():
            pytest.skip(f"{shared_data / rel} not found")
    return [shared_data / rel for rel in rels]


def _assert_equal(stats, official):
    assert list(stats) == KEYS
    for key, ours, ref in zip(KEYS, stats.values(), official):
        assert ours == pytest.approx(ref, abs=1e-9), key


# ------------------------------------------------------------------ skeleton

def test_crowdpose_skeleton_is_consistent():
    s = meta.get("crowdpose").skeleton
    assert s is CROWDPOSE14 and s.num_keypoints == 14 and len(set(s.keypoints)) == 14 and len(s.sigmas) == 14
    names = s.keypoints
    swap = {}
    for a, b in s.flip_pairs:
        assert names[a].replace("left", "right") == names[b] and names[b].replace("right", "left") == names[a]
        swap[a], swap[b] = b, a
    assert len(swap) == 12 and all(swap[swap[i]] == i for i in swap)
    assert {names[i].split("_", 1)[1] for i in s.limb_joints} == {"shoulder", "elbow", "wrist", "hip", "knee",
                                                                  "ankle"} and len(s.limb_joints) == 12
    assert [names[i] for i in s.limb_chains[0]] == ["left_wrist", "left_elbow", "left_shoulder", "right_shoulder",
                                                    "right_elbow", "right_wrist"]
    assert [names[i] for i in s.limb_chains[1]] == ["left_ankle", "left_knee", "left_hip", "right_hip",
                                                    "right_knee", "right_ankle"]
    assert all(0 <= a < 14 and 0 <= b < 14 for a, b in s.bones)
    assert all(s.sigmas[a] == s.sigmas[b] for a, b in s.flip_pairs)
    assert tuple(CROWDPOSE_STAT_NAMES) == tuple(KEYS)


# ------------------------------------------------------------------ equality with the official tool

def test_example_preds_equal_official(shared_data):
    gt_path, pred_path = _need(shared_data, EXAMPLE_GT, EXAMPLE_PREDS)
    _assert_equal(crowdpose_ap(load_coco(gt_path), json.loads(pred_path.read_text())), OFFICIAL_EXAMPLE)


def test_perturbed_preds_equal_official(shared_data):
    gt_path, pred_path = _need(shared_data, EXAMPLE_GT, EXAMPLE_PREDS)
    preds = json.loads(pred_path.read_text())
    stats = crowdpose_ap(load_coco(gt_path), perturb(preds))
    _assert_equal(stats, OFFICIAL_PERTURBED)
    assert stats["AP"] < OFFICIAL_EXAMPLE[0]


def test_ground_truth_as_predictions_scores_ap_1(shared_data):
    (gt_path,) = _need(shared_data, TEST_GT)
    gt = load_coco(gt_path)
    assert all("area" not in a for a in gt.dataset["annotations"])  # the bbox-area path is the one exercised
    stats = crowdpose_ap(gt, gt_as_preds(gt_path))
    assert stats["AP"] == 1.0 and stats["AR"] == 1.0
    _assert_equal(stats, OFFICIAL_GT_AS_PRED_TEST)


def test_results_are_not_mutated(shared_data):
    gt_path, pred_path = _need(shared_data, EXAMPLE_GT, EXAMPLE_PREDS)
    preds = json.loads(pred_path.read_text())
    before = copy.deepcopy(preds)
    crowdpose_ap(load_coco(gt_path), preds)
    assert preds == before


# ------------------------------------------------------------------ CLI

def test_cli_prints_the_same_json(shared_data):
    gt_path, pred_path = _need(shared_data, EXAMPLE_GT, EXAMPLE_PREDS)
    proc = subprocess.run([sys.executable, "datasets/evaluate.py", "--dataset", "crowdpose", "--gt", str(gt_path),
                           "--pred", str(pred_path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert list(out) == KEYS
    assert out == crowdpose_ap(load_coco(gt_path), json.loads(pred_path.read_text()))
    _assert_equal(out, OFFICIAL_EXAMPLE)


def test_cli_rejects_coco_keypoints_for_crowdpose(shared_data, tmp_path):
    gt_path, pred_path = _need(shared_data, EXAMPLE_GT, EXAMPLE_PREDS)
    preds = json.loads(pred_path.read_text())
    preds[0]["keypoints"] = preds[0]["keypoints"] + [0.0, 0.0, 0.0]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(preds))
    proc = subprocess.run([sys.executable, "datasets/evaluate.py", "--dataset", "crowdpose", "--gt", str(gt_path),
                           "--pred", str(bad)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "expected 42" in proc.stderr
