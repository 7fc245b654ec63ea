import math

import numpy as np
import pytest

from datasets.occlusion import (LJA, LJAConfig, OcclusionConfig, RandomOccluders, build_occlusions,
                                limb_joint_augmentation, occludes, visible_limb_joints)
from datasets.occlusion.targeted import KeypointOcclusion, PartOcclusion
from datasets.skeletons import COCO17


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
