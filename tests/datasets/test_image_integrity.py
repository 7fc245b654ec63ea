"""Issue 14 item 1: what is decoded must be the image the annotation describes. A truncated JPEG (which OpenCV and
PIL decode to a partly grey image without an error) and an image of another size than the annotation's
`width` x `height` are skipped and counted in training and evaluation, on every decode path, and the epoch log
names them; the check costs the normal path next to nothing."""
import json
import logging
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from datasets.annotations import load_records
from datasets.layouts import resolve
from datasets.skeletons import COCO17
from datasets.topdown.augment import Augment
from datasets.topdown.codec import HeatmapCodec
from datasets.topdown.dataset import TopDownDataset
from datasets.topdown.gpu import GpuTopDownBatcher, GpuTopDownSource, collate_gpu
from datasets.topdown.image_check import ImageFault, check_bytes, check_file, decode_bgr
from trainables.config import TrialConfig
from trainables.runtime import LocalReporter
from trainables.train import fit

NAME = "000000040083.jpg"
CODEC = HeatmapCodec((64, 48))
HRNET_TRAIN = Augment(scale_factor=0.35, rotation=45, rotation_p=0.6, flip_p=0.5, half_body_p=0.3)


@pytest.fixture
def truncated(shared_data) -> Path:
    path = shared_data.parent / "cases" / "truncated-jpeg" / NAME
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def coco_layout(shared_data: Path, root: Path, faulty: dict[str, bytes]) -> Path:
    """The official COCO layout under `root` from the fixture, the images copied, `faulty` {name: bytes} in place."""
    (root / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        (root / "annotations" / f"person_keypoints_{split}.json").symlink_to(shared_data / "coco/test_coco.json")
    images = root / "images"
    images.mkdir()
    for image in sorted((shared_data / "coco").glob("*.jpg")):
        shutil.copy(image, images / image.name)
    for name, data in faulty.items():
        (images / name).write_bytes(data)
    (root / "train2017").symlink_to(images)
    (root / "val2017").symlink_to(images)
    return root


def persons_of(shared_data: Path, name: str) -> int:
    data = json.loads((shared_data / "coco/test_coco.json").read_text())
    image = next(i["id"] for i in data["images"] if i["file_name"] == name)
    return sum(1 for a in data["annotations"] if a["image_id"] == image and not a["iscrowd"] and a["num_keypoints"])


def resized_jpeg(path: Path) -> bytes:
    """The image re-encoded at 80 % of its size: a whole file, but not the image the annotation describes."""
    image = cv2.imread(str(path))
    smaller = cv2.resize(image, (image.shape[1] * 4 // 5, image.shape[0] * 4 // 5))
    return cv2.imencode(".jpg", smaller)[1].tobytes()


def test_the_check_tells_a_truncated_file_from_a_whole_one(shared_data, truncated, tmp_path):
    whole = shared_data / "coco" / NAME
    check_file(whole)
    assert decode_bgr(str(whole), (500, 333)).shape == (333, 500, 3)
    assert decode_bgr(str(whole), (500, 333), reduction=8).shape == (42, 63, 3)  # libjpeg's ceil(size / 8)
    assert cv2.imread(str(truncated)) is not None  # what the decoder alone says: nothing wrong
    for reduction in (1, 2, 8):
        with pytest.raises(ImageFault, match="truncated"):
            decode_bgr(str(truncated), (500, 333), reduction)
    with pytest.raises(ImageFault, match="truncated"):
        check_bytes(np.fromfile(truncated, np.uint8))
    # Bytes after the end-of-image marker (some cameras append data) leave the file whole.
    trailing = tmp_path / "trailing.jpg"
    trailing.write_bytes(whole.read_bytes() + b"\0" * 3000)
    check_file(trailing)
    with pytest.raises(ImageFault, match="annotation says 640x480"):
        decode_bgr(str(whole), (640, 480))
    with pytest.raises(ImageFault, match="annotation says 640x480"):
        check_bytes(np.fromfile(whole, np.uint8), (640, 480))  # the device path: the frame size from the header
    png = cv2.imencode(".png", cv2.imread(str(whole)))[1].tobytes()
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    with pytest.raises(ImageFault, match="truncated PNG"):
        check_file(tmp_path / "cut.png")
    with pytest.raises(ImageFault, match="cannot be read"):
        check_file(tmp_path / "missing.jpg")


@pytest.mark.parametrize("fault", ["truncated", "resized"])
def test_every_decode_path_skips_and_counts_the_faulty_image(shared_data, truncated, tmp_path, fault):
    data = truncated.read_bytes() if fault == "truncated" else resized_jpeg(shared_data / "coco" / NAME)
    root = coco_layout(shared_data, tmp_path / "coco", {NAME: data})
    records = load_records(root / "annotations/person_keypoints_val2017.json", root / "val2017", COCO17)
    expected = {i for i, r in enumerate(records) if r.file.name == NAME}
    assert len(expected) == persons_of(shared_data, NAME) == 2
    datasets = {
        "train, reduced decode and region cache": TopDownDataset(records, COCO17, CODEC, train=True,
                                                                 augment=HRNET_TRAIN),
        "train, plain decode": TopDownDataset(records, COCO17, CODEC, train=True, augment=HRNET_TRAIN, fast=False),
        "evaluation": TopDownDataset(records, COCO17, CODEC, train=False),
    }
    for what, dataset in datasets.items():
        samples = [dataset[i] for i in range(len(dataset))]
        assert {i for i, s in enumerate(samples) if s is None} == expected, what
        assert dataset.skipped == expected, what
        reason = "truncated JPEG" if fault == "truncated" else "annotation says 500x333"
        assert all(reason in dataset.faults[i] for i in expected), (what, dataset.faults)
    # The device path (run here on the CPU): the loader half marks them, the batcher counts them.
    dataset = TopDownDataset(records, COCO17, CODEC, train=True, augment=Augment(flip_p=0.5))
    source = GpuTopDownSource(dataset)
    batcher = GpuTopDownBatcher(CODEC, "cpu")
    batch = batcher(collate_gpu([source[i] for i in range(len(source))]))
    assert batcher.skipped == expected and dataset.skipped == expected
    assert sorted(batch["index"].tolist()) == sorted(set(range(len(records))) - expected)


@pytest.mark.parametrize("fault", ["truncated", "resized"])
def test_training_and_evaluation_count_and_name_the_faulty_image(shared_data, truncated, tmp_path, caplog, fault):
    data = truncated.read_bytes() if fault == "truncated" else resized_jpeg(shared_data / "coco" / NAME)
    root = coco_layout(shared_data, tmp_path / "coco", {NAME: data})
    layout = resolve("coco", root)
    cfg = TrialConfig.from_flat({
        "data.dataset": "coco", "data.train_ann": str(layout.train.ann), "data.train_images": str(layout.train.images),
        "data.val_ann": str(layout.val.ann), "data.val_images": str(layout.val.images), "data.input_h": 64,
        "data.input_w": 64, "model.deconv_channels": 16, "optim.epochs": 1, "optim.batch_size": 4,
        "data.flip_test": True})
    reporter = LocalReporter(tmp_path / "trial")
    with caplog.at_level(logging.WARNING):
        fit(cfg, reporter)
    metrics = reporter.history[-1]
    assert metrics["data/skipped_samples"] == 2  # was 0: trained on 56-93 % flat-grey crops
    assert metrics["val/skipped_samples"] == 2
    epoch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 1:")]
    assert any("2 training samples skipped" in m and NAME in m for m in epoch_lines), epoch_lines
    assert any("2 val samples skipped" in m and NAME in m for m in epoch_lines), epoch_lines


def test_the_check_costs_the_normal_path_next_to_nothing(shared_data):
    whole = str(shared_data / "coco" / NAME)

    def median_s(fn, repeats):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    check = median_s(lambda: check_file(whole), 200)
    decode = median_s(lambda: cv2.imread(whole, cv2.IMREAD_REDUCED_COLOR_8), 30)  # the cheapest decode there is
    assert check < 0.05 * decode, (check, decode)  # measured: ~12 us against ~1.3 ms
