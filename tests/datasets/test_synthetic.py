"""Tests for the procedural COCO-format dataset in datasets.synthetic."""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO_ROOT
from datasets.skeletons import COCO17
from datasets.synthetic import (
    BACKGROUND_ID, FLAT_BACKGROUND, FLAT_OCCLUDER, MIN_BOX_HEIGHT, MIN_LABELLED, OCCLUDER_ID,
    PROPORTIONS, SyntheticPaths, SyntheticSpec, ensure_dataset, flat_person_color, is_occluded,
    pixel_index, render_scene,
)

K = {name: i for i, name in enumerate(COCO17.keypoints)}
SPEC = SyntheticSpec()
TINY = SyntheticSpec(seed=3, num_train_images=6, num_val_images=4)


def _scene(seed: int, spec: SyntheticSpec = SPEC, flat: bool = False):
    return render_scene(np.random.default_rng(seed), spec, flat=flat)


def _colour_map(owner: np.ndarray, n_people: int) -> np.ndarray:
    """The image a flat render must produce for a given owner buffer."""
    lut = {BACKGROUND_ID: FLAT_BACKGROUND, OCCLUDER_ID: FLAT_OCCLUDER}
    lut.update({i: flat_person_color(i) for i in range(n_people)})
    out = np.zeros(owner.shape + (3,), np.uint8)
    for oid, colour in lut.items():
        out[owner == oid] = colour
    return out


# ---------------------------------------------------------------------------------------------
# Visibility


def test_flat_render_visibility_matches_drawn_colours():
    n_hidden = n_hidden_by_person = n_hidden_by_object = n_outside = n_overlapping = 0
    for seed in range(80):
        scene = _scene(seed, flat=True)
        h, w = scene.owner.shape
        n = len(scene.people)
        assert 1 <= n <= SPEC.max_people
        # Image and owner buffer are drawn with identical pixels.
        np.testing.assert_array_equal(scene.image, _colour_map(scene.owner, n))
        for i, person in enumerate(scene.people):
            kps = person["keypoints"]
            assert kps.shape == (17, 3)
            mine = np.array(flat_person_color(i))
            for x, y, v in kps:
                if v == 0:
                    assert x == 0 and y == 0
                    n_outside += 1
                    continue
                px, py = pixel_index([x, y])
                assert 0 <= px < w and 0 <= py < h
                colour = scene.image[py, px]
                if v == 2:
                    assert (colour == mine).all()
                else:
                    assert v == 1 and not (colour == mine).all()
                    n_hidden += 1
                    other = scene.owner[py, px]
                    n_hidden_by_person += other >= 0
                    n_hidden_by_object += other == OCCLUDER_ID
        boxes = [p["bbox"] for p in scene.people]
        n_overlapping += any(_overlap(a, b) for j, a in enumerate(boxes) for b in boxes[j + 1:])
    assert n_hidden > 50 and n_hidden_by_person > 10 and n_hidden_by_object > 10
    assert n_outside > 0
    assert n_overlapping > 15  # people overlap in a good share of the 80 scenes


def _overlap(a: list[float], b: list[float]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def test_v0_iff_outside_image():
    for seed in range(40):
        scene = _scene(seed)
        h, w = scene.owner.shape
        for person in scene.people:
            kps, xy = person["keypoints"], person["xy"]
            px = pixel_index(xy)
            inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
            np.testing.assert_array_equal(kps[:, 2] > 0, inside)
            np.testing.assert_array_equal(kps[inside, :2], xy[inside])
            assert (kps[~inside, :2] == 0).all()


def test_unoccluded_keypoints_lie_on_own_pixels():
    # One person, no occluders: nothing can cover anything, so every in-image keypoint is v=2.
    spec = SyntheticSpec(max_people=1, max_occluders=0)
    for seed in range(60):
        scene = _scene(seed, spec, flat=True)
        (person,) = scene.people
        v = person["keypoints"][:, 2]
        assert set(np.unique(v)) <= {0.0, 2.0}


def test_bbox_and_head_box():
    for seed in range(40):
        scene = _scene(seed, flat=True)
        h, w = scene.owner.shape
        for i, person in enumerate(scene.people):
            x, y, bw, bh = person["bbox"]
            assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h
            # Visible pixels of the person lie in its (full-silhouette) box.
            ys, xs = np.nonzero(scene.owner == i)
            if xs.size:
                assert xs.min() >= x and xs.max() <= x + bw - 1 and ys.min() >= y and ys.max() <= y + bh - 1
            kps = person["keypoints"]
            inside = kps[kps[:, 2] > 0]
            assert ((inside[:, 0] >= x - 0.5) & (inside[:, 0] <= x + bw - 0.5)).all()
            x0, y0, x1, y1 = person["head_box"]
            assert x1 > x0 and y1 > y0
            face = kps[:5]
            assert ((face[:, 0] >= x0) & (face[:, 0] <= x1) | (face[:, 2] == 0)).all()
            labelled = int((kps[:, 2] > 0).sum())
            assert person["annotated"] == (labelled >= MIN_LABELLED and bh >= MIN_BOX_HEIGHT)


# ---------------------------------------------------------------------------------------------
# Anatomy


def _length(kps: np.ndarray, a: str, b: str) -> float | None:
    pa, pb = kps[K[a]], kps[K[b]]
    if pa[2] == 0 or pb[2] == 0:
        return None
    return float(np.hypot(*(pa[:2] - pb[:2])))


def _angle(kps: np.ndarray, a: str, b: str, c: str) -> float | None:
    """Flexion at b in degrees: 0 for a straight chain a-b-c."""
    pts = kps[[K[a], K[b], K[c]]]
    if (pts[:, 2] == 0).any():
        return None
    u, v = pts[1, :2] - pts[0, :2], pts[2, :2] - pts[1, :2]
    cos = np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))
    return math.degrees(math.acos(np.clip(cos, -1, 1)))


def test_bone_proportions_and_joint_limits():
    ratios: dict[str, list[float]] = {k: [] for k in ("arm", "leg", "upper_arm", "thigh", "shoulders", "torso")}
    flex: list[float] = []
    for seed in range(100):
        for person in _scene(seed).people:
            kps, height = person["keypoints"], person["height"]
            for side in ("left", "right"):
                ua = _length(kps, f"{side}_shoulder", f"{side}_elbow")
                fa = _length(kps, f"{side}_elbow", f"{side}_wrist")
                th = _length(kps, f"{side}_hip", f"{side}_knee")
                sh = _length(kps, f"{side}_knee", f"{side}_ankle")
                if ua and fa:
                    ratios["arm"].append(ua / fa)
                    ratios["upper_arm"].append(ua / height)
                if th and sh:
                    ratios["leg"].append(th / sh)
                    ratios["thigh"].append(th / height)
                for chain in ((f"{side}_shoulder", f"{side}_elbow", f"{side}_wrist"),
                              (f"{side}_hip", f"{side}_knee", f"{side}_ankle")):
                    angle = _angle(kps, *chain)
                    if angle is not None:
                        flex.append(angle)
            sw = _length(kps, "left_shoulder", "right_shoulder")
            if sw:
                ratios["shoulders"].append(sw / height)
            ls, lh = kps[K["left_shoulder"]], kps[K["left_hip"]]
            rs, rh = kps[K["right_shoulder"]], kps[K["right_hip"]]
            if min(ls[2], lh[2], rs[2], rh[2]) > 0:
                ratios["torso"].append(np.hypot(*((ls[:2] + rs[:2]) - (lh[:2] + rh[:2])) / 2) / height)
    bounds = {
        "arm": (0.7, 1.8),          # nominal upper arm / forearm 0.17 / 0.15 with jitter and foreshortening
        "leg": (0.65, 1.65),        # nominal thigh / shin 0.245 / 0.235
        "upper_arm": (0.11, 0.19),  # 0.17 H * [0.92, 1.08] * [0.75, 1]
        "thigh": (0.16, 0.27),
        "shoulders": (0.15, 0.24),  # 2 * 0.11 H * [0.92, 1.08] * [0.75, 1]
        "torso": (0.27, 0.33),
    }
    for name, (lo, hi) in bounds.items():
        values = np.array(ratios[name])
        assert len(values) > 100, name
        assert lo <= values.min() and values.max() <= hi, (name, values.min(), values.max())
    assert np.isclose(np.median(ratios["torso"]), PROPORTIONS["torso"], atol=0.01)
    assert max(flex) <= 150.5  # elbow and knee flexion limit


def test_figures_face_the_camera():
    # The person's left side appears on the image's right: left shoulder/hip/eye x > right ones.
    n = 0
    for seed in range(60):
        for person in _scene(seed).people:
            kps = person["keypoints"]
            for part in ("shoulder", "hip", "eye"):
                left, right = kps[K[f"left_{part}"]], kps[K[f"right_{part}"]]
                if left[2] > 0 and right[2] > 0:
                    assert left[0] > right[0]
                    n += 1
    assert n > 300


def test_left_limbs_are_darker():
    # Textured render, one person, no occluders: the left upper arm is darker than the right.
    spec = SyntheticSpec(max_people=1, max_occluders=0)
    darker = total = 0
    for seed in range(40):
        scene = _scene(seed, spec)
        kps = scene.people[0]["keypoints"]
        means = []
        for side in ("left", "right"):
            a, b = kps[K[f"{side}_shoulder"]], kps[K[f"{side}_elbow"]]
            mid = pixel_index((a[:2] * 0.4 + b[:2] * 0.6))
            if a[2] == 0 or b[2] == 0 or not (0 <= mid[0] < spec.width and 0 <= mid[1] < spec.height):
                break
            means.append(scene.image[mid[1], mid[0]].astype(float).sum())
        if len(means) == 2:
            total += 1
            darker += means[0] < means[1]
    assert total > 20 and darker / total > 0.75


# ---------------------------------------------------------------------------------------------
# Determinism and dataset files


def test_render_is_deterministic():
    a, b, c = _scene(7), _scene(7), _scene(8)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.owner, b.owner)
    assert not np.array_equal(a.image, c.image)


def _read_all(paths: SyntheticPaths) -> dict[str, bytes]:
    files = {f"ann/{s}": p.read_bytes() for s, p in paths.annotations.items()}
    for split in ("train", "val"):
        for f in sorted(paths.images[split].iterdir()):
            files[f"{split}/{f.name}"] = f.read_bytes()
    return files


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> SyntheticPaths:
    return ensure_dataset(TINY, cache_dir=tmp_path_factory.mktemp("cache"), workers=1)


def test_dataset_is_deterministic_and_seeded(tiny, tmp_path):
    again = ensure_dataset(TINY, cache_dir=tmp_path / "again", workers=1)
    assert _read_all(again) == _read_all(tiny)
    other = ensure_dataset(SyntheticSpec(seed=4, num_train_images=6, num_val_images=4), cache_dir=tmp_path, workers=1)
    assert other.root != tiny.root
    assert other.annotations["train"].read_bytes() != tiny.annotations["train"].read_bytes()


def test_worker_count_does_not_change_output(tmp_path):
    spec = SyntheticSpec(seed=5, num_train_images=70, num_val_images=3)  # two train chunks
    one = ensure_dataset(spec, cache_dir=tmp_path / "one", workers=1)
    two = ensure_dataset(spec, cache_dir=tmp_path / "two", workers=2)
    assert _read_all(one) == _read_all(two)


def test_dataset_layout_and_coco_format(tiny):
    from pycocotools.coco import COCO

    assert tiny.root.name == f"synthetic-{TINY.key()}"
    assert set(tiny.images) == set(tiny.annotations) == {"train", "val", "val_occ"}
    assert tiny.images["val_occ"] == tiny.images["val"]
    assert tiny.images["train"] != tiny.images["val"]
    for split, n_images in (("train", 6), ("val", 4)):
        data = json.loads(tiny.annotations[split].read_text())
        coco = COCO(str(tiny.annotations[split]))
        assert len(coco.getImgIds()) == n_images == len(data["images"])
        (cat,) = data["categories"]
        assert cat["id"] == 1 and cat["name"] == "person" and cat["supercategory"] == "person"
        assert cat["keypoints"] == list(COCO17.keypoints)
        assert cat["skeleton"] == [[a + 1, b + 1] for a, b in COCO17.bones]
        for im in data["images"]:
            assert set(im) == {"id", "file_name", "width", "height"}
            decoded = cv2.imread(str(tiny.images[split] / im["file_name"]))
            assert decoded is not None and decoded.shape == (TINY.height, TINY.width, 3)
            assert (im["width"], im["height"]) == (TINY.width, TINY.height)
            assert len(coco.getAnnIds(imgIds=im["id"])) <= TINY.max_people
        ids = [a["id"] for a in data["annotations"]]
        assert len(ids) == len(set(ids)) and len(ids) > 0
        for ann in data["annotations"]:
            assert set(ann) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd",
                                "num_keypoints", "keypoints", "head_box", "segmentation"}
            assert ann["category_id"] == 1 and ann["iscrowd"] == 0 and ann["segmentation"] == []
            assert len(ann["bbox"]) == 4 and len(ann["head_box"]) == 4 and len(ann["keypoints"]) == 51
            assert all(isinstance(v, (int, float)) for v in ann["keypoints"] + ann["bbox"] + ann["head_box"])
            x, y, w, h = ann["bbox"]
            assert ann["area"] == pytest.approx(w * h) and h >= MIN_BOX_HEIGHT
            kps = np.array(ann["keypoints"]).reshape(17, 3)
            assert set(np.unique(kps[:, 2])) <= {0, 1, 2}
            assert ann["num_keypoints"] == int((kps[:, 2] > 0).sum()) >= MIN_LABELLED
            assert (kps[kps[:, 2] == 0, :2] == 0).all()


def test_val_occ_is_exactly_the_occluded_val_people(tiny):
    val = json.loads(tiny.annotations["val"].read_text())
    occ = json.loads(tiny.annotations["val_occ"].read_text())

    def fraction(ann: dict) -> float:
        v = np.array(ann["keypoints"]).reshape(17, 3)[:, 2]
        return (v == 1).sum() / (v > 0).sum()

    expected = [a for a in val["annotations"] if fraction(a) >= 1 / 3 - 1e-12]
    assert all(fraction(a) >= 1 / 3 - 1e-12 for a in occ["annotations"])
    assert [a["id"] for a in occ["annotations"]] == [a["id"] for a in expected]
    assert all(is_occluded(a["keypoints"]) for a in occ["annotations"])
    assert {im["id"] for im in occ["images"]} == {a["image_id"] for a in expected}


def test_is_occluded_threshold():
    def kps(v: list[int]) -> list[float]:
        return [c for vi in v for c in (1.0, 1.0, float(vi))]
    assert is_occluded(kps([1] * 5 + [2] * 10))       # exactly one third
    assert not is_occluded(kps([1] * 4 + [2] * 9))   # 4/13 < 1/3
    assert not is_occluded(kps([0] * 17))


def test_second_call_reuses_the_cache(tiny):
    marker = tiny.annotations["train"]
    before = (marker.stat().st_mtime_ns, (tiny.images["train"] / "000000.jpg").stat().st_mtime_ns)
    again = ensure_dataset(TINY, cache_dir=tiny.root.parent, workers=1)
    assert again == tiny
    after = (marker.stat().st_mtime_ns, (tiny.images["train"] / "000000.jpg").stat().st_mtime_ns)
    assert before == after
    assert not [p for p in tiny.root.parent.iterdir() if ".tmp-" in p.name]  # temp dirs cleaned up


def test_lost_race_keeps_the_winner(tmp_path, monkeypatch):
    # Simulate another process finishing first: the final dir appears while we generate.
    import datasets.synthetic as synthetic

    spec = SyntheticSpec(seed=9, num_train_images=2, num_val_images=2)
    winner = tmp_path / f"synthetic-{spec.key()}"
    real_generate = synthetic._generate

    def generate_then_lose(spec_, root, workers, **kwargs):
        real_generate(spec_, root, workers, **kwargs)
        winner.mkdir()
        (winner / "from_winner").write_text("x")

    monkeypatch.setattr(synthetic, "_generate", generate_then_lose)
    paths = ensure_dataset(spec, cache_dir=tmp_path, workers=1)
    assert paths.root == winner and (winner / "from_winner").exists()
    assert [p.name for p in tmp_path.iterdir()] == [winner.name]


def test_default_cache_dir(monkeypatch, tmp_path):
    from datasets.synthetic import default_cache_dir

    monkeypatch.setenv("OCCPOSE_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("OCCPOSE_CACHE")
    assert default_cache_dir() == REPO_ROOT / ".cache"


def test_spec_key_is_stable_and_sensitive():
    assert SyntheticSpec().key() == SyntheticSpec().key()
    assert SyntheticSpec(seed=1).key() != SyntheticSpec().key()
    assert SyntheticSpec(width=192).key() != SyntheticSpec().key()
