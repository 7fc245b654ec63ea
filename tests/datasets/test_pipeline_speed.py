"""The fast data path (decoded-region cache, reduced JPEG decoding, RGBA warp) against the plain full-decode path,
and the array-backed records that forked data-loader workers share. Behaviour only; the timings live in
tests/benchmarks/pipeline.py and tests/benchmarks/loader_memory.py."""
import json
import pickle

import cv2
import numpy as np
import pytest
import torch

from datasets.annotations import PersonRecord, RecordTable, load_detections, load_records
from datasets.occlusion import LJAConfig, OcclusionConfig, build_occlusions
from datasets.evaluation.scoring import Predictions
from datasets.skeletons import COCO17, MPII16
from datasets.topdown.augment import Augment
from datasets.topdown.codec import HeatmapCodec
from datasets.topdown.dataset import TopDownDataset
from datasets.topdown.geometry import affine_matrix, warp_image
from datasets.topdown.image_cache import _reduced_matrix

CODEC = HeatmapCodec((256, 192))
# Every geometric augmentation at once, wider than the defaults, so crops reach far from the person box.
WILD = Augment(scale_factor=0.35, rotation=45.0, rotation_p=0.8, flip_p=0.5, half_body_p=0.4, photometric_p=0.5)
MILD = Augment(scale_factor=0.25, rotation=30.0, rotation_p=0.6, flip_p=0.5)  # a moderate training augmentation


@pytest.fixture(scope="module")
def coco(shared_data):
    return load_records(shared_data / "coco/test_coco.json", shared_data / "coco", COCO17)


@pytest.fixture(scope="module")
def mpii(shared_data):
    return load_records(shared_data / "mpii/test_mpii.json", shared_data / "mpii", MPII16)


def pair(records, skeleton=COCO17, codec=CODEC, **kwargs):
    fast = TopDownDataset(records, skeleton, codec, **kwargs)
    plain = TopDownDataset(records, skeleton, codec, fast=False, **kwargs)
    return fast, plain


def assert_same_labels(a: dict, b: dict):
    assert torch.equal(a["heatmaps"], b["heatmaps"])
    assert torch.equal(a["target_weight"], b["target_weight"])
    assert a["index"] == b["index"]


def pixel_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


@pytest.mark.parametrize("train", [True, False])
def test_fast_path_gives_the_full_decode_crops_labels_and_heatmaps(coco, train):
    """Without a reduced decode (none applies to COCO's 640-px images at 256x192) the crop comes from the same
    decoded pixels: labels, heatmaps, target weights and occlusions are identical, and a pixel differs by at most
    one grey level, in under 0.1 % of pixels — OpenCV computes bilinear source coordinates in float32, so warping a
    sub-region (smaller coordinates) rounds a rare weight differently."""
    lja = build_occlusions(LJAConfig(), OcclusionConfig(), COCO17)
    fast, plain = pair(coco, train=train, augment=WILD, occlusions=lja, seed=7)
    for epoch in range(4):
        fast.set_epoch(epoch)
        plain.set_epoch(epoch)
        for i in range(len(coco)):
            a, b = fast.views(i), plain.views(i)
            for x, y in zip(a, b):
                np.testing.assert_array_equal(x.keypoints, y.keypoints)
                np.testing.assert_array_equal(x.target_weight, y.target_weight)
                np.testing.assert_array_equal(x.body_box, y.body_box)
                assert x.occlusions == y.occlusions
                diff = pixel_diff(x.image, y.image)
                assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
            sa, sb = fast[i], plain[i]
            assert_same_labels(sa, sb)
            assert (sa["image"] - sb["image"]).abs().max() <= 1.0 / (0.224 * 255) + 1e-6
    # Every image was decoded once, on its first person; the rest came from the cache.
    assert fast.cache.misses == len({r.file for r in coco})
    assert fast.cache.hits > 0


def test_reduced_decode_is_close_and_leaves_the_labels_alone(mpii):
    """MPII's large persons in 1280x720 JPEGs decode at 1/2 or 1/4 scale (libjpeg's DCT scaling), chosen so every
    crop keeps at least one decoded pixel per output pixel. The labels are exactly those of the full-decode path.
    The pixels are not: the DCT downscale averages where the full-size bilinear warp point-samples (and aliases), so
    against the full-decode path they differ on edges (mean 1.2-3.2 grey levels here, tolerance 4); against the
    full decode area-downsampled by the same factor and warped — what a reduced decode should equal — they agree to
    a mean of 0.5 and a 99th percentile of 3 grey levels (measured 0.1-0.2 and 1-2)."""
    codec = HeatmapCodec((256, 256))
    fast, plain = pair(mpii, MPII16, codec, train=False)
    reductions = []
    for i, record in enumerate(mpii):
        assert_same_labels(fast[i], plain[i])
        image = fast.crop(i).image
        assert pixel_diff(image, plain.crop(i).image).mean() < 4.0
        r = fast.cache.get(int(fast.records.file_index[i])).reduction
        reductions.append(r)
        full = cv2.cvtColor(cv2.imread(str(record.file)), cv2.COLOR_BGR2RGB)
        h, w = full.shape[:2]
        area = cv2.resize(full, (-(-w // r), -(-h // r)), interpolation=cv2.INTER_AREA)
        ideal = warp_image(area, _reduced_matrix(affine_matrix(fast.crop_geometry(i, None), codec.input_hw), r),
                           codec.input_hw)
        diff = pixel_diff(image, ideal)
        assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 3, (i, r)
    assert max(reductions) > 1, reductions
    exact = TopDownDataset(mpii, MPII16, codec, train=False, max_reduction=1)
    for i in range(len(mpii)):
        assert pixel_diff(exact.crop(i).image, plain.crop(i).image).max() <= 1


def test_samples_do_not_depend_on_the_cache(coco):
    """A sample is a pure function of (seed, epoch, index): the same with a cold, warm, tiny or no cache."""
    occlusions = build_occlusions(LJAConfig(), OcclusionConfig(p_occ=0.5), COCO17)  # occluders, then LJA
    kwargs = dict(train=True, augment=WILD, occlusions=occlusions, seed=3)
    warm = TopDownDataset(coco, COCO17, CODEC, **kwargs)
    tiny = TopDownDataset(coco, COCO17, CODEC, cache_mb=1.5, **kwargs)  # about one image: constant eviction
    none = TopDownDataset(coco, COCO17, CODEC, cache_mb=0, **kwargs)
    order = np.random.default_rng(0).permutation(len(coco))
    for epoch in range(3):
        for ds in (warm, tiny, none):
            ds.set_epoch(epoch)
        for i in order:
            a, b, c = warm[i], tiny[i], none[i]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["image"], c["image"])
            assert_same_labels(a, b)
            assert_same_labels(a, c)
    assert tiny.cache.nbytes <= 1.5 * 2**20 and len(tiny.cache) <= 1
    assert len(none.cache) == 0 and none.cache.nbytes == 0


def test_a_crop_beyond_the_cached_region_decodes_afresh(coco):
    """The cached region covers what the dataset's augmentation can reach; a crop outside it (here: evaluation
    regions cached, then wide training augmentation) is decoded again and matches the full-decode path."""
    fast = TopDownDataset(coco, COCO17, CODEC, train=False)
    for i in range(len(coco)):
        fast.crop(i)
    narrow = {k: entry.pixels.shape for k, entry in fast.cache._entries.items()}
    fast.train, fast.augment = True, Augment(scale_factor=0.35, rotation=60.0, rotation_p=1.0)
    plain = TopDownDataset(coco, COCO17, CODEC, train=True, augment=fast.augment, fast=False)
    misses = fast.cache.misses
    for i in range(len(coco)):
        assert pixel_diff(fast.crop(i).image, plain.crop(i).image).max() <= 1
    assert fast.cache.misses > misses
    assert any(fast.cache._entries[k].pixels.shape != shape for k, shape in narrow.items())


def test_records_are_a_few_arrays_and_index_like_the_list(coco, mpii, shared_data):
    ds = TopDownDataset(coco, COCO17, CODEC, train=True, augment=MILD)
    table = ds.records
    assert isinstance(table, RecordTable) and len(table) == len(coco)
    for name in (*RecordTable._ARRAYS, "path_blob", "path_offsets"):
        array = getattr(table, name)
        assert isinstance(array, np.ndarray) and array.dtype != object and not array.flags.writeable
    for original, record in zip(coco, table):
        assert isinstance(record, PersonRecord)
        assert (record.ann_id, record.image_id, record.file, record.bbox, record.head_box, record.score) == \
            (original.ann_id, original.image_id, original.file, original.bbox, original.head_box, original.score)
        np.testing.assert_array_equal(record.keypoints, original.keypoints)
    assert table[-1].ann_id == coco[-1].ann_id and len(table[2:5]) == 3 and table[2:5][0].ann_id == coco[2].ann_id
    with pytest.raises(IndexError):
        table[len(coco)]
    heads = np.array([[1.0, 2.0, 30.0, 40.0]] * len(mpii))
    with_heads = RecordTable.from_records(load_records(shared_data / "mpii/test_mpii.json", shared_data / "mpii",
                                                       MPII16, head_boxes=heads))
    assert all(r.head_box == (1.0, 2.0, 30.0, 40.0) for r in with_heads)
    assert [r.image_id for r in with_heads] == [r.image_id for r in mpii]


def test_detection_scores_survive_the_table(shared_data, tmp_path):
    det_file = tmp_path / "dets.json"
    det_file.write_text(json.dumps([{"image_id": 785, "category_id": 1, "bbox": [1, 2, 30, 40], "score": 0.75}]))
    records = load_detections(det_file, shared_data / "coco", {785: "000000000785.jpg"}, COCO17)
    record = RecordTable.from_records(records)[0]
    assert record.score == 0.75 and record.image_id == 785 and record.bbox == (1.0, 2.0, 30.0, 40.0)


def test_scorers_accept_the_table(real_layouts):
    """engine.evaluate hands dataset.records (now a RecordTable) to the scorer: the same metrics as the list."""
    from datasets.layouts import resolve
    from datasets.evaluation.splits import load_eval_split
    layout = resolve("coco", real_layouts / "coco")
    loaded = load_eval_split(layout.meta.protocol, layout.val.ann, layout.val.images, COCO17)
    table = TopDownDataset(loaded.records, COCO17, CODEC, train=False).records
    rng = np.random.default_rng(0)
    coords = np.stack([r.keypoints[:, :2] for r in loaded.records]).astype(np.float64)
    coords += rng.normal(0, 3, coords.shape)
    pred = Predictions(coords, np.ones(coords.shape[:2]), np.ones(len(coords), bool))
    assert loaded.scorer.score(table, pred) == loaded.scorer.score(loaded.records, pred)


def test_a_pickled_dataset_leaves_its_cache_behind(coco):
    ds = TopDownDataset(coco, COCO17, CODEC, train=True, augment=MILD)
    for i in range(len(ds)):
        ds[i]
    assert ds.cache.nbytes > 1_000_000
    clone = pickle.loads(pickle.dumps(ds))
    assert len(clone.cache) == 0 and clone.cache.max_bytes == ds.cache.max_bytes
    assert len(pickle.dumps(ds)) < 200_000
    assert torch.equal(clone[3]["image"], ds[3]["image"])
