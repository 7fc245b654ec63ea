"""UDP (Huang et al., CVPR 2020, "The Devil is in the Details"): the codec's `encoding="udp"` and
geometry.udp_affine_matrix against MMPose's numerics on seeded inputs, to ~1e-4 px.

The expected values are computed here, in plain numpy loops, from the formulas of MMPose's implementation (read, not
imported):
- warp (mmpose/structures/bbox/transforms.py get_udp_warp_matrix): sx = (W_out - 1) / box_w, sy likewise;
  row 0 = sx (cos, -sin, -cx cos + cy sin + box_w / 2), row 1 = sy (sin, cos, -cx sin - cy cos + box_h / 2);
- encode (mmpose/codecs/udp_heatmap.py UDPHeatmap.encode -> generate_udp_gaussian_heatmaps): keypoint in cells
  mu = kp (W_hm - 1) / (W_in - 1); window of radius 3 sigma around the rounded mu (int(mu + 0.5)), weight 0 when the
  window misses the map; inside it exp(-((x - mu_x)^2 + (y - mu_y)^2) / (2 sigma^2)), zero outside;
- decode (UDPHeatmap.decode): argmax, refine_keypoints_dark_udp (DARK's blur with kernel 11 on a zero border,
  rescaled to the map's maximum, clip [1e-3, 50], log, edge padding, one-cell central differences, Newton step with
  (H + eps I)^-1), then keypoints / (W_hm - 1) * input_size, and to the image keypoints / input_size * bbox_scale +
  center - bbox_scale / 2 (MMPose's top-down post-processing).
"""
import cv2
import numpy as np
import pytest
import torch

from datasets.topdown.codec import HeatmapCodec
from datasets.topdown.geometry import CropGeometry, affine_matrix, transform_points, udp_affine_matrix

INPUT_HW = (256, 192)
RNG = np.random.default_rng(2020)


def mmpose_warp(center, scale, rot, output_wh):
    rad = np.deg2rad(rot)
    sx, sy = (output_wh[0] - 1) / scale[0], (output_wh[1] - 1) / scale[1]
    c, s = np.cos(rad), np.sin(rad)
    return np.array([[c * sx, -s * sx, sx * (-center[0] * c + center[1] * s + 0.5 * scale[0])],
                     [s * sy, c * sy, sy * (-center[0] * s - center[1] * c + 0.5 * scale[1])]])


def mmpose_encode(keypoints_cells, visible, heatmap_wh, sigma):
    w, h = heatmap_wh
    heatmaps = np.zeros((len(keypoints_cells), h, w))
    weights = visible.astype(float).copy()
    radius = 3 * sigma
    for k, mu_ac in enumerate(keypoints_cells):
        if visible[k] < 0.5:
            continue
        mu = np.trunc(mu_ac + 0.5)
        left, top = np.trunc(mu - radius)
        right, bottom = np.trunc(mu + radius + 1)
        if left >= w or top >= h or right < 0 or bottom < 0:
            weights[k] = 0
            continue
        for y in range(max(0, int(top)), min(h, int(bottom))):
            for x in range(max(0, int(left)), min(w, int(right))):
                heatmaps[k, y, x] = np.exp(-((x - mu_ac[0]) ** 2 + (y - mu_ac[1]) ** 2) / (2 * sigma**2))
    return heatmaps, weights


def mmpose_dark_udp(heatmaps, kernel=11):
    k_count, h, w = heatmaps.shape
    cells = np.zeros((k_count, 2))
    border = (kernel - 1) // 2
    for k in range(k_count):
        y, x = np.unravel_index(np.argmax(heatmaps[k]), (h, w))
        padded = np.zeros((h + 2 * border, w + 2 * border), np.float32)
        padded[border:-border, border:-border] = heatmaps[k]
        blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[border:-border, border:-border].astype(np.float64)
        blurred *= heatmaps[k].max() / blurred.max()
        f = np.pad(np.log(np.clip(blurred, 1e-3, 50.0)), 1, mode="edge")
        px, py = x + 1, y + 1
        dx, dy = 0.5 * (f[py, px + 1] - f[py, px - 1]), 0.5 * (f[py + 1, px] - f[py - 1, px])
        dxx = f[py, px + 1] - 2 * f[py, px] + f[py, px - 1]
        dyy = f[py + 1, px] - 2 * f[py, px] + f[py - 1, px]
        dxy = 0.5 * (f[py + 1, px + 1] - f[py, px + 1] - f[py + 1, px] + 2 * f[py, px] - f[py, px - 1]
                     - f[py - 1, px] + f[py - 1, px - 1])
        hessian = np.array([[dxx, dxy], [dxy, dyy]]) + np.finfo(np.float32).eps * np.eye(2)
        cells[k] = np.array([x, y]) - np.linalg.inv(hessian) @ np.array([dx, dy])
    return cells


@pytest.mark.parametrize("seed", range(5))
def test_warp_matches_mmpose(seed):
    rng = np.random.default_rng(seed)
    center, size, rot = rng.uniform(50, 600, 2), rng.uniform(40, 400, 2), rng.uniform(-45, 45)
    geom = CropGeometry(center=center, size=size, rotation=rot)
    points = rng.uniform(0, 640, (20, 2))
    ours = transform_points(points, udp_affine_matrix(geom, INPUT_HW))
    expected = transform_points(points, mmpose_warp(center, size, rot, INPUT_HW[::-1]))
    assert np.abs(ours - expected).max() < 1e-4
    assert np.array_equal(affine_matrix(geom, INPUT_HW, udp=True), udp_affine_matrix(geom, INPUT_HW))
    back = transform_points(ours, udp_affine_matrix(geom, INPUT_HW, inverse=True))
    assert np.abs(back - points).max() < 1e-4


def test_encode_matches_mmpose_on_both_back_ends():
    codec = HeatmapCodec(INPUT_HW, sigma=2.0, encoding="udp")
    keypoints = np.concatenate([RNG.uniform(0, [191, 255], (14, 2)),  # inside, and near or over every edge
                                [[-3.0, 100.0], [-40.0, 100.0], [194.0, 258.0], [100.0, 280.0]]])
    visible = np.ones(len(keypoints))
    visible[3] = 0
    heatmaps, weights = codec.encode(keypoints, visible)
    cells = keypoints * (np.array([47, 63]) / np.array([191, 255]))
    expected, expected_weights = mmpose_encode(cells, visible, (48, 64), 2.0)
    assert np.abs(heatmaps - expected).max() < 1e-6 and np.array_equal(weights, expected_weights)
    assert expected_weights[14] == 1 and expected_weights[15] == 0  # the window decides, not the centre
    batch, batch_weights = codec.encode_torch(torch.from_numpy(keypoints)[None], torch.from_numpy(visible)[None])
    assert torch.allclose(batch[0], torch.from_numpy(heatmaps), atol=1e-6)
    assert torch.equal(batch_weights[0], torch.from_numpy(weights))


def test_decode_to_image_matches_mmpose():
    """Noisy UDP heatmaps decoded by the codec and mapped back through the inverse UDP warp land where MMPose's
    decode and its top-down post-processing put them (image pixels), to 1e-4 px."""
    codec = HeatmapCodec(INPUT_HW, sigma=2.0, encoding="udp")
    center, size = np.array([320.0, 240.0]), np.array([150.0, 200.0])
    keypoints = RNG.uniform(8, [183, 247], (17, 2))
    heatmaps, _ = codec.encode(keypoints, np.ones(17))
    heatmaps = (heatmaps + RNG.uniform(0, 0.05, heatmaps.shape)).astype(np.float32)
    cells, _ = codec.decode(torch.from_numpy(heatmaps)[None])
    geom = CropGeometry(center=center, size=size)
    ours = transform_points(cells[0].double().numpy(), udp_affine_matrix(geom, INPUT_HW, inverse=True))
    in_wh = np.array(INPUT_HW[::-1], float)
    mmpose_input = mmpose_dark_udp(heatmaps.astype(np.float64)) / np.array([47, 63]) * in_wh
    expected = mmpose_input / in_wh * size + center - 0.5 * size
    assert np.abs(ours - expected).max() < 1e-4
    assert np.abs(ours - transform_points(keypoints, udp_affine_matrix(geom, INPUT_HW, inverse=True))).max() < 1.0


def test_udp_flip_test_needs_no_shift():
    """The mirror sends UDP's cell j to cell w - 1 - j exactly: unflipping the heatmaps of mirrored keypoints gives
    the heatmaps of the keypoints themselves."""
    codec = HeatmapCodec(INPUT_HW, sigma=2.0, encoding="udp")
    keypoints = RNG.uniform(10, [181, 245], (4, 2))
    mirrored = keypoints * [-1, 1] + [INPUT_HW[1] - 1, 0]
    direct, _ = codec.encode(keypoints, np.ones(4))
    flipped, _ = codec.encode(mirrored, np.ones(4))
    restored = codec.unflip(torch.from_numpy(flipped)[None], list(range(4)))[0]
    assert torch.allclose(restored, torch.from_numpy(direct), atol=1e-5)


def test_udp_is_a_trial_setting():
    from trainables.build import build_codec
    from trainables.config import TrialConfig

    assert build_codec(TrialConfig().replace(**{"data.codec": "udp"})).udp
    assert not build_codec(TrialConfig()).udp
    with pytest.raises(ValueError, match="data.codec"):
        TrialConfig().replace(**{"data.codec": "unbiased"}).validate()


def test_udp_dataset_round_trip_on_real_crops(shared_data):
    """A TopDownDataset with the UDP codec warps with UDP's matrix: its targets, decoded and mapped back through
    `inverse_matrix`, land on the annotated keypoints (the decoding's own error on clean Gaussians, < 0.1 px)."""
    from datasets.annotations import load_records
    from datasets.skeletons import COCO17
    from datasets.topdown.dataset import TopDownDataset

    codec = HeatmapCodec(INPUT_HW, encoding="udp")
    records = load_records(shared_data / "coco/test_coco.json", shared_data / "coco", COCO17)
    dataset = TopDownDataset(records, COCO17, codec, train=False)
    for index in range(min(len(dataset), 3)):
        sample = dataset[index]
        geom = dataset.crop_geometry(index, None)
        assert np.allclose(dataset.inverse_matrix(index), udp_affine_matrix(geom, INPUT_HW, inverse=True))
        cells, _ = codec.decode(sample["heatmaps"][None])
        image = transform_points(cells[0].double().numpy(), dataset.inverse_matrix(index))
        labelled = sample["target_weight"].numpy() > 0
        truth = dataset.records.keypoints[index][:, :2]
        assert labelled.any() and np.abs(image - truth)[labelled].max() < 0.1
