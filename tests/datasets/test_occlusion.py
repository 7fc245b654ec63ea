"""The occlusion library (datasets/occlusion/): LJA's blocks against the paper's definition, the order in which
build_occlusions assembles a trial's occlusions, and random occluders, targeted augmentations with label removal,
PartMix and attacks, checked against their definitions on a real COCO crop."""
import math

import cv2
import numpy as np
import pytest

from datasets.annotations import load_records
from datasets.occlusion import (LJA, Crop, LJAConfig, OcclusionConfig, RandomOccluders, build_occlusions, image_mean,
                                limb_joint_augmentation, occludes, visible_limb_joints)
from datasets.occlusion.attacks import ATTACKS, KeypointAttack, PartAttack, make_attack
from datasets.occlusion.targeted import TARGETED, KeypointOcclusion, PartOcclusion, part_box, targeted_augmentation
from datasets.skeletons import COCO17
from datasets.topdown.codec import HeatmapCodec
from datasets.topdown.dataset import TopDownDataset


def person(h=96, w=64, seed=0):
    rng = np.random.default_rng(seed)
    keypoints = np.stack([rng.uniform(8, w - 8, 17), rng.uniform(8, h - 8, 17)], axis=1)
    visibility = np.full(17, 2)
    image = np.full((h, w, 3), 77, np.uint8)
    body_box = np.array([4.0, 6.0, 60.0, 90.0])
    return image, keypoints, visibility, body_box


@pytest.mark.parametrize("quantity", [0.05, 0.15, 0.4, 1.0])
def test_lja_count_is_ceil_of_ratio_times_visible_limb_joints(quantity):
    image, kpts, vis, box = person()
    vis[[5, 9, 14]] = 1  # three limb joints hidden: 9 visible limb joints remain
    vis[0] = 2
    result = limb_joint_augmentation(image, kpts, vis, box, COCO17.limb_joints, LJAConfig(quantity, 0.2, 1.0),
                                     np.random.default_rng(1))
    assert len(result.occlusions) == math.ceil(quantity * 9)
    joints = [o.joint for o in result.occlusions]
    assert len(set(joints)) == len(joints)
    assert set(joints) <= set(COCO17.limb_joints) - {5, 9, 14}


def test_lja_block_geometry_and_fill():
    image, kpts, vis, box = person()
    params = LJAConfig(quantity_ratio=0.15, size_ratio=0.2, p=1.0)
    result = limb_joint_augmentation(image, kpts, vis, box, COCO17.limb_joints, params, np.random.default_rng(3))
    bw, bh = 0.2 * (box[2] - box[0]), 0.2 * (box[3] - box[1])
    for occ in result.occlusions:
        x0, y0, x1, y1 = occ.box
        cx, cy = kpts[occ.joint]
        # centred on the joint, size_ratio x the body box (up to rounding to whole pixels)
        assert abs((x0 + x1) / 2 - cx) <= 1 and abs((y0 + y1) / 2 - cy) <= 1
        assert abs((x1 - x0) - bw) <= 1 and abs((y1 - y0) - bh) <= 1
        assert 0 <= occ.fill <= 255
    for i, occ in enumerate(result.occlusions):  # blocks may overlap: later ones are drawn on top
        mine = np.zeros(image.shape[:2], bool)
        mine[occ.box[1]:occ.box[3], occ.box[0]:occ.box[2]] = True
        for later in result.occlusions[i + 1:]:
            mine[later.box[1]:later.box[3], later.box[0]:later.box[2]] = False
        assert (result.image[mine] == occ.fill).all()
    painted = np.zeros(image.shape[:2], bool)
    for occ in result.occlusions:
        painted[occ.box[1]:occ.box[3], occ.box[0]:occ.box[2]] = True
    assert (result.image[~painted] == 77).all()


def test_lja_does_not_mutate_inputs_and_is_deterministic():
    image, kpts, vis, box = person()
    before = (image.copy(), kpts.copy(), vis.copy(), box.copy())
    params = LJAConfig(0.3, 0.25, 1.0)
    a = limb_joint_augmentation(image, kpts, vis, box, COCO17.limb_joints, params, np.random.default_rng(9))
    b = limb_joint_augmentation(image, kpts, vis, box, COCO17.limb_joints, params, np.random.default_rng(9))
    for x, y in zip(before, (image, kpts, vis, box)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.occlusions == b.occlusions


def test_lja_probability_over_many_draws():
    image, kpts, vis, box = person()
    rng = np.random.default_rng(0)
    applied = sum(
        bool(limb_joint_augmentation(image, kpts, vis, box, COCO17.limb_joints, LJAConfig(0.15, 0.2, 0.3),
                                     rng).occlusions)
        for _ in range(2000)
    )
    assert abs(applied / 2000 - 0.3) < 0.04  # ~4 standard deviations


def test_lja_only_picks_visible_limb_joints_inside_the_crop():
    _, kpts, vis, _ = person()
    kpts[7] = (-3, 10)
    vis[[6, 8]] = (1, 0)
    picked = visible_limb_joints(kpts, vis, COCO17.limb_joints, (96, 64))
    assert set(picked.tolist()) == set(COCO17.limb_joints) - {6, 7, 8}


def test_lja_rejects_ratios_outside_unit_interval():
    with pytest.raises(ValueError, match="lja.size_ratio"):
        LJAConfig(0.1, 1.5, 1.0)


def test_build_occlusions_orders_occluders_then_targeted_then_lja():
    lja, occ = LJAConfig(0.3, 0.2, 0.8), OcclusionConfig(p_occ=0.4, occluder_count_max=2, occluder_area_min=0.05,
                                                         targeted="part-blur", targeted_p=0.7, label_removal=True)
    occluders, targeted, last = build_occlusions(lja, occ, COCO17)
    assert occluders == RandomOccluders(0.4, (1, 2), (0.05, 0.15), label_removal=True)
    assert isinstance(targeted, PartOcclusion) and (targeted.mode, targeted.p, targeted.label_removal) == \
        ("blur", 0.7, True) and targeted.donor is None
    assert last == LJA(lja, tuple(COCO17.limb_joints))
    # Each is present only when its section asks for it; LJA stays last.
    assert build_occlusions(LJAConfig(enabled=False), OcclusionConfig(), COCO17) == []
    assert build_occlusions(LJAConfig(), OcclusionConfig(), COCO17) == [LJA(LJAConfig(), tuple(COCO17.limb_joints))]
    only = build_occlusions(LJAConfig(enabled=False), OcclusionConfig(targeted="keypoint-blur"), COCO17)
    assert len(only) == 1 and isinstance(only[0], KeypointOcclusion)
    assert [type(t) for t in build_occlusions(LJAConfig(), OcclusionConfig(targeted="partmix"), COCO17)] == \
        [PartOcclusion, LJA]


def test_occludes_is_true_when_some_transform_can_fire():
    off = LJAConfig(enabled=False)
    assert not occludes(off, OcclusionConfig())
    assert not occludes(LJAConfig(p=0.0), OcclusionConfig())  # an LJA that never fires does not occlude
    assert occludes(LJAConfig(), OcclusionConfig())
    assert occludes(off, OcclusionConfig(p_occ=0.5))
    assert occludes(off, OcclusionConfig(targeted="partmix"))
    for lja, occ in ((off, OcclusionConfig()), (LJAConfig(), OcclusionConfig(p_occ=0.2, targeted="part-cutout"))):
        # occludes agrees with build_occlusions: nothing built, nothing occluded
        assert occludes(lja, occ) == bool(build_occlusions(lja, occ, COCO17))


@pytest.fixture(scope="module")
def crops(shared_data):
    records = load_records(shared_data / "coco/test_coco.json", shared_data / "coco", COCO17)
    ds = TopDownDataset(records, COCO17, HeatmapCodec((256, 192)), train=False)
    return [ds.crop(i) for i in range(len(ds))]


@pytest.fixture
def crop(crops) -> Crop:
    return max(crops, key=lambda c: (c.visibility == 2).sum())


def donor_of(crops):
    return lambda rng: crops[int(rng.integers(len(crops)))]


def every_transform(crops):
    yield RandomOccluders(p=1.0)
    yield LJA(LJAConfig(0.3, 0.2, 1.0), COCO17.limb_joints)
    for name in TARGETED:
        yield targeted_augmentation(name, COCO17, p=1.0, label_removal=True, donor=donor_of(crops))
    for name in ATTACKS:
        yield make_attack(name, COCO17, radius=10, part="arms")


def snapshot(crop: Crop):
    return [crop.image.copy(), crop.keypoints.copy(), crop.visibility.copy(), crop.body_box.copy(),
            crop.target_weight.copy()]


def test_every_transform_leaves_its_input_alone_and_is_deterministic(crops, crop):
    for transform in every_transform(crops):
        before = snapshot(crop)
        a = transform(crop, np.random.default_rng(5))
        b = transform(crop, np.random.default_rng(5))
        for x, y in zip(before, snapshot(crop)):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(a.image, b.image)
        assert a.occlusions == b.occlusions and a.occlusions, type(transform).__name__
        assert not np.array_equal(a.image, crop.image), type(transform).__name__
        np.testing.assert_array_equal(a.visibility, crop.visibility)  # labels are never rewritten


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_random_occluders_probability_count_and_area(crop, p):
    occluders = RandomOccluders(p=p, count=(2, 4), area=(0.05, 0.1), shapes=("rect",))
    rng = np.random.default_rng(0)
    hits, (x0, y0, x1, y1) = 0, crop.body_box
    body = (x1 - x0) * (y1 - y0)
    for _ in range(1000):
        out = occluders(crop, rng)
        if out.occlusions:
            hits += 1
            assert 2 <= len(out.occlusions) <= 4
            for o in out.occlusions:
                bx0, by0, bx1, by1 = o.box
                if bx0 > 0 and by0 > 0 and bx1 < 192 and by1 < 256:  # not clipped by the crop's edge
                    assert 0.05 * body * 0.8 <= (bx1 - bx0) * (by1 - by0) <= 0.1 * body * 1.2
    assert abs(hits / 1000 - p) < 0.05


def test_keypoint_cutout_fills_a_circle_with_the_image_mean(crop):
    out = KeypointOcclusion("cutout", p=1.0, radius_ratio=0.05)(crop, np.random.default_rng(1))
    (occ,) = out.occlusions
    assert crop.visibility[occ.joint] == 2 and occ.shape == "circle" and occ.kind == "mean"
    changed = np.any(out.image != crop.image, axis=-1)
    ys, xs = np.nonzero(changed)
    radius = 0.05 * max(crop.body_box[2] - crop.body_box[0], crop.body_box[3] - crop.body_box[1])
    cx, cy = crop.keypoints[occ.joint]
    assert np.all((xs - cx) ** 2 + (ys - cy) ** 2 <= radius ** 2 + 1e-6)
    assert np.all(out.image[changed] == image_mean(crop.image))
    np.testing.assert_array_equal(out.target_weight, crop.target_weight)  # label removal off


def test_multi_keypoint_cuts_out_up_to_five_distinct_joints(crop):
    counts = set()
    for seed in range(60):
        out = targeted_augmentation("multi-keypoint", COCO17, p=1.0)(crop, np.random.default_rng(seed))
        joints = [o.joint for o in out.occlusions]
        assert len(set(joints)) == len(joints) and 1 <= len(joints) <= 5
        counts.add(len(joints))
    assert counts == {1, 2, 3, 4, 5}


def test_keypoint_blur_changes_only_the_circle(crop):
    out = targeted_augmentation("keypoint-blur", COCO17, p=1.0, radius_ratio=0.06)(crop, np.random.default_rng(2))
    (occ,) = out.occlusions
    x0, y0, x1, y1 = occ.box
    outside = np.ones(crop.image.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    np.testing.assert_array_equal(out.image[outside], crop.image[outside])
    assert occ.kind == "blur" and occ.fill is None


@pytest.mark.parametrize("name", ["keypoint-cutout", "multi-keypoint", "part-cutout", "part-blur", "partmix"])
def test_label_removal_zeroes_exactly_the_covered_joints(crops, crop, name):
    for seed in range(10):
        rng = np.random.default_rng(seed)
        kept = targeted_augmentation(name, COCO17, p=1.0, donor=donor_of(crops))(crop, rng)
        rng = np.random.default_rng(seed)
        removed = targeted_augmentation(name, COCO17, p=1.0, label_removal=True, donor=donor_of(crops))(crop, rng)
        np.testing.assert_array_equal(kept.image, removed.image)
        np.testing.assert_array_equal(kept.target_weight, crop.target_weight)
        region = np.zeros(crop.image.shape[:2], bool)
        radius = 0.08 * max(crop.body_box[2] - crop.body_box[0], crop.body_box[3] - crop.body_box[1])  # default
        yy, xx = np.ogrid[:256, :192]
        for o in removed.occlusions:
            if o.shape == "circle":
                cx, cy = crop.keypoints[o.joint]
                region |= (xx - cx) ** 2 + (yy - cy) ** 2 <= radius ** 2
            else:
                region[o.box[1]:o.box[3], o.box[0]:o.box[2]] = True
        xi, yi = np.floor(crop.keypoints).astype(int).T
        inside = crop.inside()
        expect = np.zeros(17, bool)
        expect[inside] = region[yi[inside], xi[inside]]
        expect &= crop.visibility > 0
        np.testing.assert_array_equal(removed.target_weight == 0, (crop.target_weight == 0) | expect)


@pytest.mark.parametrize("part", [name for name, _ in COCO17.parts])
def test_part_cutout_covers_the_smallest_rectangle_over_the_part(crop, part):
    out = PartOcclusion(COCO17, "cutout", p=1.0, parts=(part,))(crop, np.random.default_rng(0))
    joints = np.array(COCO17.part(part))
    usable = joints[(crop.visibility[joints] > 0) & crop.inside()[joints]]
    if len(usable) < 2:
        assert not out.occlusions
        return
    (occ,) = out.occlusions
    xy = crop.keypoints[usable]
    assert occ.box == (int(np.floor(xy[:, 0].min())), int(np.floor(xy[:, 1].min())),
                       int(np.floor(xy[:, 0].max())) + 1, int(np.floor(xy[:, 1].max())) + 1)
    x0, y0, x1, y1 = occ.box
    assert np.all(out.image[y0:y1, x0:x1] == image_mean(crop.image)) and occ.part == part


def test_partmix_pastes_the_same_part_from_the_donor(crops, crop):
    donor = crops[0] if crops[0] is not crop else crops[1]
    out = PartOcclusion(COCO17, "partmix", p=1.0, parts=("arms",), donor=lambda rng: donor)(crop,
                                                                                             np.random.default_rng(0))
    (occ,) = out.occlusions
    source = part_box(donor, COCO17.part("arms"))
    x0, y0, x1, y1 = occ.box
    patch = donor.image[source[1]:source[3], source[0]:source[2]]
    np.testing.assert_array_equal(out.image[y0:y1, x0:x1], cv2.resize(patch, (x1 - x0, y1 - y0)))
    assert occ.kind == "paste" and occ.part == "arms"


@pytest.mark.parametrize("radius", [0, 6, 12])
def test_keypoint_blackout_blacks_out_circles_around_every_labelled_joint(crop, radius):
    out = KeypointAttack("blackout", radius)(crop)
    yy, xx = np.mgrid[:256, :192]
    inside_any = np.zeros((256, 192), bool)
    for j in np.flatnonzero((crop.visibility > 0) & crop.inside()):
        cx, cy = crop.keypoints[j]
        inside_any |= (xx - cx) ** 2 + (yy - cy) ** 2 <= radius ** 2
    assert np.all(out.image[inside_any] == 0)
    np.testing.assert_array_equal(out.image[~inside_any], crop.image[~inside_any])
    assert len(out.occlusions) == (0 if radius == 0 else int(((crop.visibility > 0) & crop.inside()).sum()))


def test_part_attacks_meanout_and_blur(crop):
    mean = PartAttack(COCO17, "meanout", "lower_body")(crop)
    (occ,) = mean.occlusions
    x0, y0, x1, y1 = occ.box
    assert np.all(mean.image[y0:y1, x0:x1] == image_mean(crop.image))
    blur = PartAttack(COCO17, "blur", "lower_body")(crop)
    reference = cv2.GaussianBlur(crop.image, (31, 31), 5.0)
    # away from the crop edge the region blur equals a whole-image blur with kernel 31, sigma 5
    inner = blur.image[y0 + 1:y1 - 1, x0 + 1:x1 - 1].astype(int) - reference[y0 + 1:y1 - 1, x0 + 1:x1 - 1]
    assert np.abs(inner).max() <= 1


def test_bad_names_and_parameters_are_rejected():
    with pytest.raises(ValueError, match="unknown attack"):
        make_attack("keypoint-erase", COCO17, 5)
    with pytest.raises(ValueError, match="needs a body part"):
        make_attack("part-blur", COCO17)
    with pytest.raises(ValueError, match="unknown body part"):
        PartOcclusion(COCO17, parts=("tail",))
    with pytest.raises(ValueError, match="unknown targeted"):
        targeted_augmentation("cutmix", COCO17)
    with pytest.raises(ValueError, match="area"):
        RandomOccluders(area=(0.5, 0.1))


@pytest.mark.parametrize("name", TARGETED)
def test_targeted_augmentations_fire_with_probability_p(crops, crop, name):
    transform = targeted_augmentation(name, COCO17, p=0.3, donor=donor_of(crops))
    rng = np.random.default_rng(11)
    fired = sum(bool(transform(crop, rng).occlusions) for _ in range(600))
    assert abs(fired / 600 - 0.3) < 0.06
