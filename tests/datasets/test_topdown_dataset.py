"""The top-down training pipeline (datasets/topdown/: geometry, augment, dataset) on real COCO crops: the box-to-crop
affine, flip with flip pairs, half-body, photometric jitter."""
import numpy as np
import pytest
import torch

from datasets.annotations import load_records
from datasets.skeletons import COCO17, CROWDPOSE14, MPII16
from datasets.topdown.augment import Augment
from datasets.topdown.codec import HeatmapCodec
from datasets.topdown.dataset import TopDownDataset
from datasets.topdown.geometry import CropGeometry, affine_matrix, box_to_crop, transform_points

CODEC = HeatmapCodec((256, 192))
STILL = dict(scale_factor=0.0, rotation_p=0.0, flip_p=0.5)  # no random scale or rotation; a flip coin


@pytest.fixture(scope="module")
def records(shared_data):
    return load_records(shared_data / "coco/test_coco.json", shared_data / "coco", COCO17)


def dataset(records, **augment):
    return TopDownDataset(records, COCO17, CODEC, train=True, augment=Augment(**{**STILL, **augment}), seed=3)


def decode(heatmaps: torch.Tensor) -> np.ndarray:
    return CODEC.decode(heatmaps[None])[0][0].numpy()


@pytest.mark.parametrize("skeleton", [COCO17, CROWDPOSE14, MPII16])
def test_flip_index_swaps_left_and_right(skeleton):
    index = skeleton.flip_index
    assert sorted(index) == list(range(skeleton.num_keypoints))
    for j, k in enumerate(index):
        name, mirrored = skeleton.keypoints[j], skeleton.keypoints[k]
        for a, b in (("left", "right"), ("right", "left"), ("l", "r")):
            if name.startswith(a + "_"):
                assert mirrored == b + name[len(a):]
        if "left" not in name and "right" not in name:
            assert k == j


def test_flip_mirrors_the_crop_and_swaps_the_joints(records):
    plain, flipped = dataset(records, flip_p=0.0)[0], dataset(records, flip_p=1.0)[0]
    np.testing.assert_allclose(flipped["image"].numpy(), plain["image"].flip(-1).numpy(), atol=0.05)
    index = COCO17.flip_index
    np.testing.assert_array_equal(flipped["target_weight"].numpy(), plain["target_weight"].numpy()[index])
    width = CODEC.input_hw[1]
    labelled = plain["target_weight"].numpy()[index] > 0
    expected = decode(plain["heatmaps"])[index]
    expected[:, 0] = width - 1 - expected[:, 0]
    np.testing.assert_allclose(decode(flipped["heatmaps"])[labelled], expected[labelled], atol=0.3)


def test_flip_is_a_coin_with_probability_p(records):
    ds = dataset(records[:1] * 400, flip_p=0.5)
    first = ds[0]["image"]
    flips = sum(not torch.equal(ds[i]["image"], first) for i in range(1, 400))
    assert 160 < flips < 240


def test_half_body_crops_the_upper_or_lower_joints(records):
    person = max(records, key=lambda r: (r.keypoints[:, 2] > 0).sum())
    ds = dataset([person] * 40, half_body_p=1.0)
    upper = set(COCO17.upper_body)
    labelled = np.flatnonzero(person.keypoints[:, 2] > 0)
    full = ds.crop_geometry(0, None)
    for i in range(40):
        geom = ds.crop_geometry(i, np.random.default_rng(i))
        chosen = [j for j in labelled if (j in upper) == (geom.center[1] < full.center[1])]
        np.testing.assert_allclose(geom.center, person.keypoints[chosen, :2].mean(axis=0), atol=1e-4)
        half = np.abs(person.keypoints[chosen, :2] - geom.center)
        assert (half <= geom.size / 2).all() and geom.size[1] < full.size[1]


def test_photometric_jitter_is_deterministic_and_leaves_targets_alone(records):
    plain, jittered = dataset(records, photometric_p=0.0), dataset(records, photometric_p=1.0)
    a, b = jittered[2], jittered[2]
    assert torch.equal(a["image"], b["image"])
    assert not torch.allclose(a["image"], plain[2]["image"], atol=0.05)
    assert torch.equal(a["heatmaps"], plain[2]["heatmaps"])
    jittered.set_epoch(1)
    assert not torch.equal(jittered[2]["image"], a["image"])


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
