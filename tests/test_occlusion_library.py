"""The occlusion library: random occluders, targeted augmentations with label removal, PartMix and attacks,
checked against their definitions on a real COCO crop."""
import cv2
import numpy as np
import pytest

from datasets.annotations import load_records
from datasets.occlusion import LJA, Crop, LJAConfig, RandomOccluders, image_mean
from datasets.occlusion.attacks import ATTACKS, KeypointAttack, PartAttack, make_attack
from datasets.occlusion.targeted import TARGETED, KeypointOcclusion, PartOcclusion, part_box, targeted_augmentation
from datasets.skeletons import COCO17
from datasets.topdown.codec import HeatmapCodec
from datasets.topdown.dataset import TopDownDataset


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
