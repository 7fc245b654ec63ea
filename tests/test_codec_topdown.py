import numpy as np
import torch

from datasets.topdown.codec import HeatmapCodec
from datasets.topdown.geometry import CropGeometry, affine_matrix, box_to_crop, transform_points


def test_encode_peaks_at_the_keypoint_and_zeroes_unlabelled_joints():
    codec = HeatmapCodec((96, 64), sigma=2.0)
    kpts = np.array([[20.0, 40.0], [8.0, 12.0], [-30.0, 5.0]])
    heatmaps, weight = codec.encode(kpts, np.array([1.0, 0.0, 1.0]))
    assert heatmaps.shape == (3, 24, 16)
    assert np.unravel_index(heatmaps[0].argmax(), (24, 16)) == (10, 5)
    assert heatmaps[0].max() == 1.0
    assert weight.tolist() == [1.0, 0.0, 0.0]  # unlabelled, and outside the heatmap
    assert heatmaps[1].max() == 0 and heatmaps[2].max() == 0


def test_decode_inverts_encode_within_a_quarter_cell():
    codec = HeatmapCodec((96, 64), sigma=2.0, decode="shift")
    rng = np.random.default_rng(0)
    kpts = np.stack([rng.uniform(8, 56, 50), rng.uniform(8, 88, 50)], axis=1)
    heatmaps, _ = codec.encode(kpts, np.ones(50))
    decoded, scores = codec.decode(torch.from_numpy(heatmaps)[None])
    err = np.abs(decoded[0].numpy() - kpts)
    assert err.max() <= 0.25 * codec.stride + 1e-6 + 1.0  # argmax cell (<= 0.5 cell) minus the shift
    assert err.mean() < 0.6  # the quarter shift beats plain argmax's 1.0 px mean error at stride 4
    assert scores.min() > 0.8


def test_dark_recovers_sub_pixel_maxima_better_than_the_shift():
    # Away from the borders, where DARK's blur is undistorted by padding (as in the reference implementations).
    rng = np.random.default_rng(1)
    kpts = np.stack([rng.uniform(40, 150, 200), rng.uniform(40, 215, 200)], axis=1)
    errors = {}
    for refine in ("shift", "dark"):
        codec = HeatmapCodec((256, 192), sigma=2.0, decode=refine)
        heatmaps, _ = codec.encode(kpts, np.ones(len(kpts)))
        decoded, _ = codec.decode(torch.from_numpy(heatmaps)[None])
        errors[refine] = np.linalg.norm(decoded[0].numpy() - kpts, axis=1)
    assert errors["dark"].max() < 0.25  # input pixels, i.e. < 1/16 of a heatmap cell
    assert errors["dark"].mean() < 0.25 * errors["shift"].mean()


def test_unknown_refinement_is_rejected():
    import pytest

    with pytest.raises(ValueError, match="refinement 'median'"):
        HeatmapCodec((96, 64), decode="median")


def test_box_to_crop_fixes_aspect_ratio_and_pads():
    geom = box_to_crop((10, 20, 30, 90), (96, 64), padding=1.25)
    np.testing.assert_allclose(geom.center, [25, 65])
    np.testing.assert_allclose(geom.size, [60 * 1.25, 90 * 1.25])  # widened to 64/96 of the height


def test_affine_maps_box_centre_to_crop_centre_and_inverts():
    geom = CropGeometry(np.array([100.0, 50.0]), np.array([80.0, 120.0]), rotation=25.0)
    forward = affine_matrix(geom, (96, 64))
    backward = affine_matrix(geom, (96, 64), inverse=True)
    np.testing.assert_allclose(transform_points(np.array([[100.0, 50.0]]), forward), [[32.0, 48.0]], atol=1e-4)
    pts = np.random.default_rng(1).uniform(0, 200, (20, 2))
    np.testing.assert_allclose(transform_points(transform_points(pts, forward), backward), pts, atol=1e-3)
    # scale: 80 source pixels across become 64 crop pixels
    a, b = transform_points(np.array([[60.0, 50.0], [140.0, 50.0]]), affine_matrix(
        CropGeometry(np.array([100.0, 50.0]), np.array([80.0, 120.0])), (96, 64)))
    np.testing.assert_allclose(b - a, [64.0, 0.0], atol=1e-4)
