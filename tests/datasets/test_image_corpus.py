"""Issue 15, the image part of the bad-input corpus: files that are not plain 8-bit RGB JPEGs, made at test time from
a real COCO fixture image, run through every decode path (the region cache with reduced decoding, the plain
decode, evaluation, the device path's loader half) and through the commands that read images (training and
evaluation in `fit`, as `python -m trainables.worker` and every trial run it; `datasets/preview.py`).

Each file has its class: an unreadable one (zero bytes, random bytes) is skipped, counted and named; a readable
one (a PNG named .jpg, CMYK, grayscale, 16-bit, an EXIF orientation tag) is read as the image its annotation
describes: the stored pixels, converted to 8-bit RGB, never turned by its orientation tag (HRNet's
IMREAD_IGNORE_ORIENTATION: the annotations index the stored pixels).
"""
import json
import logging
import subprocess
import sys
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
from trainables.config import TrialConfig
from trainables.runtime import LocalReporter
from trainables.train import fit

ROOT = Path(__file__).resolve().parents[2]
NAME = "000000040083.jpg"  # 500 x 333, two annotated persons
CODEC = HeatmapCodec((64, 48))  # small crops: the region cache decodes these persons at 1/2 or less
HRNET_TRAIN = Augment(scale_factor=0.35, rotation=45, rotation_p=0.6, flip_p=0.5, half_body_p=0.3)


def with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """The same JPEG (the same compressed pixels) with an EXIF APP1 segment tagging `orientation` after its SOI."""
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01" + b"\x01\x12\x00\x03\x00\x00\x00\x01" + \
        orientation.to_bytes(2, "big") + b"\x00\x00" + b"\x00\x00\x00\x00"
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


FILES = {  # case -> the file it is saved as
    "zero-byte": "zero.jpg", "random bytes": "random.jpg", "PNG named .jpg": "png-named.jpg", "CMYK JPEG": "cmyk.jpg",
    "grayscale JPEG": "gray.jpg", "16-bit PNG": "deep.png", "EXIF orientation 3 (180 degrees)": "exif3.jpg",
    "EXIF orientation 6 (90 degrees)": "exif6.jpg",
}


def variant(case: str, original: Path) -> bytes:
    """The bytes of `case`, made from the original JPEG."""
    from io import BytesIO

    from PIL import Image

    jpeg, bgr = original.read_bytes(), cv2.imread(str(original))

    def pil(mode):
        out = BytesIO()
        Image.open(original).convert(mode).save(out, "JPEG", quality=95)
        return out.getvalue()

    return {
        "zero-byte": lambda: b"",
        "random bytes": lambda: np.random.default_rng(0).bytes(6000),
        "PNG named .jpg": lambda: cv2.imencode(".png", bgr)[1].tobytes(),
        "CMYK JPEG": lambda: pil("CMYK"),
        "grayscale JPEG": lambda: pil("L"),
        # 16-bit samples whose top byte is the 8-bit image: the decoder keeps the top byte.
        "16-bit PNG": lambda: cv2.imencode(".png", bgr.astype(np.uint16) * 257)[1].tobytes(),
        "EXIF orientation 3 (180 degrees)": lambda: with_orientation(jpeg, 3),
        "EXIF orientation 6 (90 degrees)": lambda: with_orientation(jpeg, 6),
    }[case]()


UNREADABLE = {"zero-byte": "empty file", "random bytes": "cannot read"}


@pytest.fixture(scope="module")
def corpus(shared_data, tmp_path_factory) -> Path:
    """A COCO layout whose images are the original and one file per variant, each annotated with the original's
    two persons; train and val share it."""
    root = tmp_path_factory.mktemp("image-corpus")
    source = json.loads((shared_data / "coco/test_coco.json").read_text())
    image = next(i for i in source["images"] if i["file_name"] == NAME)
    persons = [a for a in source["annotations"] if a["image_id"] == image["id"]]
    images_dir = root / "images"
    images_dir.mkdir()
    original = shared_data / "coco" / NAME
    images, annotations = [], []
    for k, (case, file_name) in enumerate({"original": NAME, **FILES}.items()):
        (images_dir / file_name).write_bytes(original.read_bytes() if case == "original" else variant(case, original))
        images.append({**image, "id": k + 1, "file_name": file_name})
        annotations += [{**a, "id": 100 * (k + 1) + j, "image_id": k + 1} for j, a in enumerate(persons)]
    (root / "annotations").mkdir()
    ann = {**source, "images": images, "annotations": annotations}
    for split in ("train2017", "val2017"):
        (root / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(ann))
        (root / split).symlink_to(images_dir)
    return root


def records_by_case(root: Path):
    """The val records and {record index: case}."""
    records = load_records(root / "annotations/person_keypoints_val2017.json", root / "val2017", COCO17)
    names = {file_name: case for case, file_name in {"original": NAME, **FILES}.items()}
    return records, {i: names[r.file.name] for i, r in enumerate(records)}


def crops(dataset):
    """{index: (H, W, 3) RGB crop or None}, in the dataset's unaugmented geometry for evaluation."""
    out = {}
    for i in range(len(dataset)):
        sample = dataset.crop(i, epoch=0)
        out[i] = None if sample is None else sample.image.astype(np.float32)
    return out


@pytest.mark.parametrize("train", [True, False], ids=["training", "evaluation"])
@pytest.mark.parametrize("fast", [True, False], ids=["region cache and reduced decode", "plain decode"])
def test_each_decode_path_reads_what_it_can_and_skips_and_names_the_rest(corpus, train, fast):
    records, case_of = records_by_case(corpus)
    dataset = TopDownDataset(records, COCO17, CODEC, train=train, augment=HRNET_TRAIN if train else Augment(),
                             fast=fast)
    got = crops(dataset)
    skipped = {i for i, c in case_of.items() if c in UNREADABLE}
    assert {i for i, crop in got.items() if crop is None} == skipped == dataset.skipped
    for i in skipped:
        assert UNREADABLE[case_of[i]] in dataset.faults[i], dataset.faults[i]
    originals = {j: got[j] for j, c in case_of.items() if c == "original"}
    for i, case in case_of.items():
        if i in skipped or case == "original":
            continue
        # The same person of the original image, in the same crop (the sample draws depend on the index only
        # through the seed, so compare with the original's crop of the same person, unaugmented in evaluation).
        twin = next(j for j in originals if list(records[j].bbox) == list(records[i].bbox))
        crop, want = got[i], got[twin]
        if not train:  # evaluation's crops are unaugmented: the variant's crop is the original's, converted
            if case.startswith("EXIF") or case in {"PNG named .jpg", "16-bit PNG"} and not fast:
                # EXIF: the very same compressed pixels; PNGs: lossless copies of the decoded JPEG, decoded whole.
                assert np.array_equal(crop, want), (case, np.abs(crop - want).mean())
            if case == "16-bit PNG" and fast:  # a PNG is never given the reduced decode: the same as the 8-bit PNG
                png = next(j for j, c in case_of.items() if c == "PNG named .jpg"
                           and list(records[j].bbox) == list(records[i].bbox))
                assert np.array_equal(crop, got[png])
            if case == "grayscale JPEG":
                assert np.array_equal(crop[..., 0], crop[..., 1]) and np.array_equal(crop[..., 1], crop[..., 2])
                grey = want @ np.array([0.299, 0.587, 0.114], np.float32)
                assert np.abs(crop[..., 0] - grey).mean() < 4.0, case
            if case == "CMYK JPEG":
                assert np.abs(crop - want).mean() < 6.0, (case, np.abs(crop - want).mean())


def test_the_device_path_routes_decodes_and_counts_like_the_cpu_path(corpus):
    records, case_of = records_by_case(corpus)
    dataset = TopDownDataset(records, COCO17, CODEC, train=True, augment=Augment(flip_p=0.5))
    source = GpuTopDownSource(dataset)
    items = [source[i] for i in range(len(source))]
    skipped = {i for i, c in case_of.items() if c in UNREADABLE}
    # Orientation-tagged JPEGs go to the device decoder as bytes like the original; PNGs and CMYK are decoded here.
    as_bytes = {case_of[i] for i, item in enumerate(items) if "source" in item and item["source"].dim() == 1}
    assert as_bytes == {"original", "grayscale JPEG", "EXIF orientation 3 (180 degrees)",
                        "EXIF orientation 6 (90 degrees)"}, as_bytes
    batcher = GpuTopDownBatcher(CODEC, "cpu")
    batch = batcher(collate_gpu(items))
    assert batcher.skipped | dataset.skipped == skipped
    assert sorted(batch["index"].tolist()) == sorted(set(range(len(records))) - skipped)


def test_training_and_evaluation_skip_count_and_name_the_unreadable_files(corpus, tmp_path, caplog):
    """`fit`, as the worker and every trial run it: only the unreadable files' persons are left out, counted and
    named in the epoch log; the readable variants train and are scored."""
    layout = resolve("coco", corpus)
    cfg = TrialConfig.from_flat({
        "data.dataset": "coco", "data.train_ann": str(layout.train.ann), "data.train_images": str(layout.train.images),
        "data.val_ann": str(layout.val.ann), "data.val_images": str(layout.val.images), "data.input_h": 64,
        "data.input_w": 64, "model.deconv_channels": 16, "optim.epochs": 1, "optim.batch_size": 6})
    reporter = LocalReporter(tmp_path / "trial")
    with caplog.at_level(logging.WARNING):
        fit(cfg, reporter)
    metrics = reporter.history[-1]
    assert metrics["data/skipped_samples"] == 4 and metrics["val/skipped_samples"] == 4
    assert np.isfinite(metrics["val/AP"])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 1:")]
    for split in ("training", "val"):
        line = next(m for m in lines if f"4 {split} samples skipped" in m)
        assert "zero.jpg" in line and "random.jpg" in line, line


def test_preview_draws_the_readable_files_and_counts_the_rest(corpus, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "datasets/preview.py"), "--dataset", "coco", "--data-root",
                           str(corpus), "--aug", "lja", "--n", "18", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "14 crops" in done.stdout and "4 persons skipped" in done.stdout, done.stdout
    assert "zero.jpg" in done.stdout + done.stderr and "random.jpg" in done.stdout + done.stderr
    assert len(json.loads((out / "occlusions.json").read_text())["samples"]) == 14
