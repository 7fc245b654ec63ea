import numpy as np
import pytest

from datasets.evaluation.metrics import head_size, load_coco, oks_ap, pckh
from datasets.skeletons import COCO17


def tiny_coco(tmp_path):
    import json

    rng = np.random.default_rng(0)
    anns, images = [], []
    for i in range(6):
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": 200, "height": 200})
        kpts = np.concatenate([rng.uniform(40, 160, (17, 2)), np.full((17, 1), 2)], axis=1)
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [30, 30, 140, 140],
                     "area": 140 * 140, "iscrowd": 0, "num_keypoints": 17, "keypoints": kpts.reshape(-1).tolist()})
    data = {"images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": list(COCO17.keypoints), "skeleton": []}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return path, anns


def test_ground_truth_as_prediction_scores_ap_one(tmp_path):
    path, anns = tiny_coco(tmp_path)
    results = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
               for a in anns]
    stats = oks_ap(load_coco(path), results, COCO17.sigmas_array())
    assert stats["AP"] == pytest.approx(1.0)
    assert stats["AR"] == pytest.approx(1.0)


def test_oks_drops_with_error_and_empty_results_score_zero(tmp_path):
    path, anns = tiny_coco(tmp_path)
    gt = load_coco(path)
    shifted = []
    for a in anns:
        k = np.asarray(a["keypoints"], float).reshape(17, 3)
        k[:, 0] += 12  # OKS per joint = exp(-144 / (2 * 140^2 * (2 sigma)^2)): ~0.4 for the eyes, 0.9 hips
        shifted.append({"image_id": a["image_id"], "category_id": 1, "keypoints": k.reshape(-1).tolist(),
                        "score": 1.0})
    stats = oks_ap(gt, shifted, COCO17.sigmas_array())
    # mean OKS over joints: computed here independently of pycocotools
    s = COCO17.sigmas_array()
    oks = np.mean(np.exp(-144 / (2 * (140 * 140) * (2 * s) ** 2)))
    thresholds = np.arange(0.5, 0.951, 0.05)
    assert stats["AP"] == pytest.approx(np.mean(oks > thresholds), abs=1e-6)
    assert oks_ap(gt, [], COCO17.sigmas_array())["AP"] == 0.0


def test_pckh_by_hand():
    gt = np.zeros((2, 3, 2))
    pred = np.array([[[3, 4], [0, 0], [30, 0]], [[0, 5.9], [0, 6.1], [0, 0]]], dtype=float)
    head = np.array([[0, 0, 12, 16], [0, 0, 12, 16]], dtype=float)  # diagonal 20 -> head size 12
    labelled = np.array([[True, True, True], [True, True, False]])
    assert head_size(head).tolist() == pytest.approx([12.0, 12.0])
    result = pckh(pred, gt, labelled, head, threshold=0.5)  # threshold 6 px
    # joint 0: 5 px ok, 5.9 ok; joint 1: 0 ok, 6.1 miss; joint 2: 30 miss, (unlabelled)
    np.testing.assert_allclose(result["per_joint"], [100.0, 50.0, 0.0])
    assert result["mean"] == pytest.approx(100 * 3 / 5)
