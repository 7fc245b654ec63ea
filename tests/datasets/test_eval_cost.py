"""Issue 17 item 2: the cheaper evaluation gives the numbers of the work it replaces.

- DARK blurs only the 5x5 window around each argmax (datasets/topdown/dark.py `dark_cells`): the same steps as
  blurring the whole map (`dark_cells_full`, the references' order) at every argmax position, the map's border
  included, and exactly the whole-map path where the 1e-10 floor could bind;
- the flip-test mean as one matrix product (codec.flip_average) against the element-wise unflip_heatmaps;
- COCOeval's OKS vectorised (metrics.OksEval) against pycocotools' computeOks, bit for bit, ignore regions included;
- OKS-NMS on whole OKS matrices against the pose-by-pose statement.
"""
import numpy as np
import pytest
import torch
from pycocotools.cocoeval import COCOeval

from datasets.evaluation.metrics import OksEval, load_coco
from datasets.evaluation.scoring import Predictions, coco_results, oks_nms, quiet_load_results
from datasets.skeletons import COCO17
from datasets.topdown.codec import HeatmapCodec, flip_average, unflip_heatmaps
from datasets.topdown.dark import dark_cells, dark_cells_full


def maps_at_every_cell(codec: HeatmapCodec, noise: float, seed: int) -> torch.Tensor:
    """One Gaussian centred within 0.4 cell of every cell of the map (on the map), plus seeded noise:
    (h w, 1, h, w), cell (x, y) at y w + x."""
    h, w = codec.heatmap_hw
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w]
    cells = np.clip(np.stack([xs.ravel(), ys.ravel()], 1) + rng.uniform(-0.4, 0.4, (h * w, 2)), 0, [w - 1, h - 1])
    maps, _ = codec.encode_torch(torch.as_tensor(cells * codec.stride)[:, None], torch.ones(h * w, 1))
    return maps + noise * torch.randn(maps.shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sigma", [2.0, 3.0])
@pytest.mark.parametrize("noise", [0.0, 0.05])
def test_the_window_blur_gives_the_whole_map_blur_at_every_argmax_border_included(sigma, noise):
    codec = HeatmapCodec((256, 192), sigma=sigma)
    maps = maps_at_every_cell(codec, noise, seed=int(sigma * 10))
    window, scores = dark_cells(maps, sigma)
    full, full_scores = dark_cells_full(maps[:, 0], sigma)
    assert torch.equal(scores[:, 0], full_scores)
    np.testing.assert_allclose(window[:, 0].numpy(), full.numpy(), rtol=0, atol=2e-4)  # cells; float32 logs
    h, w = codec.heatmap_hw
    edge = torch.tensor([[x, y] for y in range(h) for x in range(w)])
    on_border = (edge[:, 0] < 2) | (edge[:, 0] > w - 3) | (edge[:, 1] < 2) | (edge[:, 1] > h - 3)
    if noise == 0.0:  # the argmax is the centre's cell: no step on the border, a step inside
        assert torch.equal(window[on_border, 0], edge[on_border].float())
        assert (window[~on_border, 0] != edge[~on_border].float()).any()


def test_maps_where_the_floor_could_bind_take_the_whole_map_path_exactly():
    codec = HeatmapCodec((256, 192))
    maps = maps_at_every_cell(codec, 0.0, seed=3)[:40]
    maps[0] = 0.0  # no maximum above zero
    maps[1] = -1.0 - torch.rand(maps[1].shape, generator=torch.Generator().manual_seed(0))  # all negative
    maps[2] *= 1e-12  # a positive map, every value under the floor after the blur
    maps[3, 0, 20:25, 20:25] = 1.0  # a plateau: its argmax is the first of its cells
    window, _ = dark_cells(maps, codec.sigma)
    full, _ = dark_cells_full(maps[:, 0], codec.sigma)
    assert torch.equal(window[:3, 0], full[:3])
    np.testing.assert_allclose(window[:, 0].numpy(), full.numpy(), rtol=0, atol=2e-4)
    assert all(20 < v < 22.5 for v in window[3, 0].tolist())  # from the plateau's first cell towards its centre


@pytest.mark.parametrize("udp", [False, True])
def test_flip_average_is_the_mean_with_the_unflipped_maps(udp):
    gen = torch.Generator().manual_seed(0)
    heatmaps, flipped = torch.rand(3, 17, 64, 48, generator=gen), torch.rand(3, 17, 64, 48, generator=gen)
    expected = 0.5 * (heatmaps + unflip_heatmaps(flipped, COCO17.flip_index, 4, udp))
    got = flip_average(heatmaps, flipped, COCO17.flip_index, 4, udp)
    if udp:  # a pure permutation: exact
        assert torch.equal(got, expected)
    else:  # one float32 rounding of the two-term sum at most
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=2 ** -23, atol=0)
        assert (got == expected).float().mean() > 0.9


@pytest.fixture(scope="module")
def coco_gt_and_results(shared_data):
    gt = load_coco(shared_data / "coco/test_coco.json")
    rng = np.random.default_rng(0)
    results = []
    for ann in gt.dataset["annotations"]:  # around every person (ignore regions and crowds included), 6 poses
        x, y, w, h = ann["bbox"]
        for _ in range(6):
            kpts = np.stack([x + rng.uniform(-0.3, 1.3, 17) * w, y + rng.uniform(-0.3, 1.3, 17) * h,
                             rng.uniform(0, 1, 17)], 1)
            results.append({"image_id": ann["image_id"], "category_id": 1, "keypoints": kpts.ravel().tolist(),
                            "score": float(rng.uniform()), "area": float(w * h)})
    return gt, results


def test_oks_matrices_are_pycocotools_own_bit_for_bit(coco_gt_and_results):
    gt, results = coco_gt_and_results
    dt = quiet_load_results(gt, [dict(r) for r in results])
    stock, fast = COCOeval(gt, dt, iouType="keypoints"), OksEval(gt, dt, iouType="keypoints")
    for evaluator in (stock, fast):
        evaluator.params.kpt_oks_sigmas = COCO17.sigmas_array()
        evaluator._prepare()
    keys = stock._gts.keys() | stock._dts.keys()
    ignored = [a for a in gt.dataset["annotations"] if a["num_keypoints"] == 0]
    assert ignored and len(keys) > 3
    for key in keys:
        a, b = np.asarray(stock.computeOks(*key)), np.asarray(fast.computeOks(*key))
        assert a.dtype == b.dtype and np.array_equal(a, b), key


def reference_oks_nms(results, sigmas, threshold=0.9):
    """HRNet's OKS-NMS pose by pose (the statement the whole-matrix version replaces)."""
    kept, by_image = [], {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    variances = (2 * np.asarray(sigmas)) ** 2
    for group in by_image.values():
        group = sorted(group, key=lambda r: -r["score"])
        kpts = np.array([r["keypoints"] for r in group]).reshape(len(group), -1, 3)
        areas = np.array([r["area"] for r in group])
        alive = np.ones(len(group), bool)
        for i in range(len(group)):
            if not alive[i]:
                continue
            kept.append(group[i])
            rest = np.flatnonzero(alive)
            rest = rest[rest > i]
            d2 = ((kpts[rest, :, :2] - kpts[i, :, :2]) ** 2).sum(axis=-1)
            e = d2 / variances / ((areas[rest, None] + areas[i]) / 2 + np.spacing(1)) / 2
            alive[rest[np.exp(-e).mean(axis=1) > threshold]] = False
    return kept


def test_oks_nms_keeps_what_the_pose_by_pose_statement_keeps(coco_gt_and_results):
    _, results = coco_gt_and_results
    rng = np.random.default_rng(1)
    near = [{**r, "keypoints": (np.array(r["keypoints"]) + rng.normal(0, 2, 51)).tolist(),
             "score": r["score"] * 0.9} for r in results[::2]]  # near-duplicates to suppress
    for threshold in (0.3, 0.9):
        got = oks_nms(results + near, COCO17.sigmas_array(), threshold)
        expected = reference_oks_nms(results + near, COCO17.sigmas_array(), threshold)
        assert [id(r) for r in got] == [id(r) for r in expected]
        assert len(got) < len(results + near)


def test_coco_results_read_a_record_table_as_the_records(shared_data):
    from datasets.annotations import RecordTable, load_records

    records = load_records(shared_data / "coco/test_coco.json", shared_data / "coco", COCO17)
    n = len(records)
    rng = np.random.default_rng(0)
    pred = Predictions(rng.uniform(0, 500, (n, 17, 2)), rng.uniform(0, 1, (n, 17)), np.ones(n, bool),
                       rng.uniform(1e3, 1e5, n))
    pred.scores[0] = 0.1  # no confident joint: score 0
    pred.done[1] = False
    table_results = coco_results(RecordTable.from_records(records), pred)
    assert table_results == coco_results(records, pred)
    assert table_results[0]["score"] == 0.0 and len(table_results) == n - 1
