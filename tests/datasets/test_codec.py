"""The heatmap codec (datasets/topdown/codec.py): encode, decode with the quarter shift or DARK, flip-test unflip."""
import numpy as np
import torch

from datasets.skeletons import COCO17
from datasets.topdown.codec import HeatmapCodec, unflip_heatmaps

CODEC = HeatmapCodec((256, 192))


def decode(heatmaps: torch.Tensor) -> np.ndarray:
    return CODEC.decode(heatmaps[None])[0][0].numpy()


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


def test_unflip_heatmaps_restores_the_unmirrored_prediction():
    rng = np.random.default_rng(0)
    width = CODEC.input_hw[1]
    points = rng.uniform([32, 32], [width - 32, CODEC.input_hw[0] - 32], size=(17, 2))  # clear of DARK's edge blur
    mirrored = points[COCO17.flip_index].copy()
    mirrored[:, 0] = width - 1 - mirrored[:, 0]
    heatmaps, _ = CODEC.encode(mirrored, np.ones(17))
    restored = unflip_heatmaps(torch.from_numpy(heatmaps)[None], COCO17.flip_index, CODEC.stride)[0]
    np.testing.assert_allclose(decode(restored), points, atol=0.15)
    # Without the sub-pixel shift the mirror is off by (stride - 1) input pixels: the shift is what fixes it.
    unshifted = torch.from_numpy(heatmaps).flip(-1)[COCO17.flip_index]
    assert np.abs(decode(unshifted)[:, 0] - points[:, 0]).mean() > 2.0
