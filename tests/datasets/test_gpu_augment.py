"""The GPU augmentation path (datasets/topdown/gpu.py) against the CPU pipeline (TopDownDataset), run on the CPU.

For the same dataset, seed, epoch and index both paths must give the same training sample:
* crop matrix, keypoints, target weights, flip and LJA blocks (boxes, fills, order): identical, because the GPU path
  draws them with the CPU path's own code and random stream;
* heatmaps within 1e-6 (float32 rounding: the same separable float64 Gaussians, outer product in float32) and target
  weights exactly equal;
* crop pixels within MAX_GREY grey levels everywhere, borders included, and within MEAN_GREY on average. OpenCV
  >= 4.11 computes warpAffine's INTER_LINEAR in float32 like grid_sample, and both round half to even, so a pixel can
  differ only where float32 rounding of its sample coordinate (~1e-4 px) moves the interpolated value across a
  rounding boundary: at most one level, on ~0.01 % of pixels. The image outside the frame is zero in both (cv2's
  BORDER_CONSTANT, grid_sample's zeros padding over a zero-padded window), so borders need no allowance. Older
  OpenCV quantises sample coordinates to 1/32 pixel, which moves a sharp edge by up to ~5 levels.
The CPU reference is TopDownDataset's full-decode path (fast=False where the dataset has a faster, reduced-decode
mode: that mode's pixels are only defined to match the full decode where it does not reduce).
"""
import inspect
import threading

import cv2
import numpy as np
import pytest
import torch

from datasets.annotations import PersonRecord, load_records
from datasets.occlusion import LJAConfig, OcclusionConfig, build_occlusions
from datasets.skeletons import COCO17
from datasets.topdown import gpu
from datasets.topdown.augment import Augment
from datasets.topdown.codec import IMAGENET_MEAN, IMAGENET_STD, HeatmapCodec
from datasets.topdown.dataset import TopDownDataset, collate_skip_none

CODEC = HeatmapCodec((256, 192))
CV2_FLOAT_WARP = tuple(int(v) for v in cv2.__version__.split(".")[:2]) >= (4, 11)
MAX_GREY = 1 if CV2_FLOAT_WARP else 6
MEAN_GREY = 0.01 if CV2_FLOAT_WARP else 0.5
HEATMAP_ATOL = 1e-6
AUGMENT = Augment(scale_factor=0.35, rotation=45.0, rotation_p=1.0, flip_p=0.5, half_body_p=0.3)
LJA = LJAConfig(quantity_ratio=0.3, size_ratio=0.2, p=1.0)


def cpu_dataset(records, **kwargs) -> TopDownDataset:
    if "fast" in inspect.signature(TopDownDataset).parameters:
        kwargs["fast"] = False
    kwargs = {"train": True, "augment": AUGMENT, "occlusions": build_occlusions(LJA, OcclusionConfig(), COCO17),
              "seed": 7, **kwargs}
    return TopDownDataset(records, COCO17, kwargs.pop("codec", CODEC), **kwargs)


def gpu_batch(dataset: TopDownDataset, indices):
    source = gpu.GpuTopDownSource(dataset)
    return gpu.GpuTopDownBatcher(dataset.codec, "cpu")(gpu.collate_gpu([source[i] for i in indices]))


def assert_same_batch(dataset: TopDownDataset, indices):
    got = gpu_batch(dataset, indices)
    want = collate_skip_none([dataset[i] for i in indices])
    assert set(got) == set(want) == {"image", "heatmaps", "target_weight", "index"}
    assert got["image"].dtype == want["image"].dtype == torch.float32
    assert got["image"].shape == want["image"].shape
    assert got["image"].is_contiguous(memory_format=torch.channels_last)
    grey = ((got["image"] - want["image"]) * torch.from_numpy(IMAGENET_STD).view(1, 3, 1, 1)).abs()
    assert grey.max().item() <= MAX_GREY + 1e-3, f"max grey-level difference {grey.max().item()}"
    assert grey.mean().item() <= MEAN_GREY, f"mean grey-level difference {grey.mean().item()}"
    torch.testing.assert_close(got["heatmaps"], want["heatmaps"], atol=HEATMAP_ATOL, rtol=0)
    assert torch.equal(got["target_weight"], want["target_weight"])
    assert torch.equal(got["index"], want["index"])
    return got


# ------------------------------------------------------------------------------------------------ synthetic JPEGs

def textured(rng, h, w) -> np.ndarray:
    """Smooth noise with hard-edged blocks: both gentle gradients and sharp edges for the interpolation."""
    image = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 3)
    for _ in range(12):
        x, y = int(rng.integers(w)), int(rng.integers(h))
        image[y: y + int(rng.integers(5, 40)), x: x + int(rng.integers(5, 40))] = rng.integers(0, 256, 3)
    return image


def person(rng, ann_id, image_id, file, h, w) -> PersonRecord:
    bw, bh = rng.uniform(0.2, 0.7) * w, rng.uniform(0.3, 0.9) * h
    x, y = rng.uniform(-0.1 * w, w - 0.6 * bw), rng.uniform(-0.1 * h, h - 0.6 * bh)
    keypoints = np.zeros((17, 3))
    keypoints[:, 0] = rng.uniform(x, x + bw, 17)
    keypoints[:, 1] = rng.uniform(y, y + bh, 17)
    keypoints[:, 2] = rng.choice([0, 1, 2, 2, 2], 17)
    keypoints[keypoints[:, 2] == 0, :2] = 0
    return PersonRecord(ann_id, image_id, file, (x, y, bw, bh), keypoints)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """JPEGs of four different sizes, three persons each (some boxes hanging off the frame)."""
    root = tmp_path_factory.mktemp("jpegs")
    rng = np.random.default_rng(0)
    records = []
    for image_id, (h, w) in enumerate([(240, 320), (300, 200), (181, 263), (400, 300)]):
        file = root / f"{image_id}.jpg"
        cv2.imwrite(str(file), textured(rng, h, w), [cv2.IMWRITE_JPEG_QUALITY, 95])
        records += [person(rng, 3 * image_id + k, image_id, file, h, w) for k in range(3)]
    return records


@pytest.mark.parametrize("epoch", [0, 1])
def test_synthetic_mixed_size_batch_matches_the_cpu_path(synthetic, epoch):
    dataset = cpu_dataset(synthetic)
    dataset.set_epoch(epoch)
    assert len({gpu.draw_params(dataset, i).matrix.tobytes() for i in range(len(dataset))}) == len(dataset)
    assert_same_batch(dataset, range(len(dataset)))


def test_evaluation_crops_match_the_cpu_path(synthetic):
    assert_same_batch(cpu_dataset(synthetic, train=False), range(len(synthetic)))


def test_parameters_are_the_cpu_paths_own(synthetic):
    """Matrix, keypoints, target weights and LJA blocks (boxes, fills, order) are those TopDownDataset.views draws."""
    dataset = cpu_dataset(synthetic)
    blocks = 0
    for epoch in range(4):
        dataset.set_epoch(epoch)
        for i in range(len(dataset)):
            params, (_, crop) = gpu.draw_params(dataset, i), dataset.views(i)
            np.testing.assert_array_equal(params.keypoints, crop.keypoints)
            np.testing.assert_array_equal(params.target_weight, crop.target_weight)
            np.testing.assert_array_equal(params.visibility, crop.visibility)
            assert [tuple(o) for o in params.occlusions.tolist()] == [(*o.box, o.fill) for o in crop.occlusions]
            blocks += len(crop.occlusions)
    assert blocks > 20


def test_lja_blocks_are_painted_like_the_cpu_path(synthetic):
    dataset = cpu_dataset(synthetic)
    got = gpu_batch(dataset, range(len(dataset)))
    std = torch.from_numpy(IMAGENET_STD).view(3, 1, 1)
    mean = torch.from_numpy(IMAGENET_MEAN).view(3, 1, 1)
    for i in range(len(dataset)):
        crop = dataset.crop(i)
        pixels = (got["image"][i] * std + mean).round()
        painted = np.zeros(CODEC.input_hw, bool)
        for occlusion in crop.occlusions:
            x0, y0, x1, y1 = occlusion.box
            painted[y0:y1, x0:x1] = True
        # Every painted pixel holds the fill of the last block over it, on both paths, exactly.
        cpu_pixels = torch.from_numpy(crop.image).permute(2, 0, 1).float()
        assert torch.equal(pixels[:, torch.from_numpy(painted)], cpu_pixels[:, torch.from_numpy(painted)])


def test_flip_swaps_the_flip_pairs_like_the_cpu_path(synthetic):
    dataset = cpu_dataset(synthetic, augment=Augment(scale_factor=0.0, rotation_p=0.0, flip_p=1.0), occlusions=())
    plain = cpu_dataset(synthetic, augment=Augment(scale_factor=0.0, rotation_p=0.0, flip_p=0.0), occlusions=())
    width = CODEC.input_hw[1]
    for i in range(len(dataset)):
        flipped, unflipped = gpu.draw_params(dataset, i), gpu.draw_params(plain, i)
        assert flipped.flipped and not unflipped.flipped
        mirrored = unflipped.keypoints[COCO17.flip_index].copy()
        mirrored[:, 0] = width - 1 - mirrored[:, 0]
        np.testing.assert_allclose(flipped.keypoints, mirrored, atol=1e-6)
    got = assert_same_batch(dataset, range(len(dataset)))
    unflipped = gpu_batch(plain, range(len(plain)))
    assert torch.equal(got["target_weight"], unflipped["target_weight"][:, COCO17.flip_index])


def test_crop_batch_matches_warpaffine_including_off_frame_crops():
    """Pure crop_batch vs cv2.warpAffine per image: crops inside, across and wholly outside the frame."""
    rng = np.random.default_rng(1)
    images, matrices = [], []
    for h, w in [(120, 160), (97, 211), (200, 90), (64, 64), (150, 150)]:
        images.append(textured(rng, h, w))
        angle, scale = rng.uniform(-60, 60), rng.uniform(0.4, 2.5)
        center = (rng.uniform(-0.3, 1.3) * w, rng.uniform(-0.3, 1.3) * h)
        matrix = cv2.getRotationMatrix2D(center, angle, scale)
        matrix[:, 2] += (96 - center[0], 128 - center[1])
        matrices.append(matrix)
    matrices.append(np.array([[1.0, 0, 5000], [0, 1, 5000]]))  # nothing of the image in view
    images.append(images[0])
    crops = gpu.crop_batch([torch.from_numpy(i).permute(2, 0, 1).contiguous() for i in images], np.stack(matrices),
                           CODEC.input_hw)
    for image, matrix, crop in zip(images, matrices, crops):
        want = cv2.warpAffine(image, matrix, (192, 256), flags=cv2.INTER_LINEAR).astype(np.float32)
        diff = np.abs(crop.permute(1, 2, 0).numpy() - want)
        assert diff.max() <= MAX_GREY and diff.mean() <= MEAN_GREY
    assert crops[-1].abs().max() == 0


def test_encode_heatmaps_matches_the_codec():
    rng = np.random.default_rng(2)
    codec = HeatmapCodec((256, 192), sigma=2.0)
    h, w = codec.heatmap_hw
    keypoints = rng.uniform(-20, 280, (6, 17, 2))
    # Exactly on the map's edges (inside) and just off them (outside).
    keypoints[0, :4] = [[0, 0], [(w - 1) * 4, (h - 1) * 4], [-1e-9, 10], [10, (h - 1) * 4 + 1e-9]]
    weights = rng.choice([0.0, 1.0], (6, 17)).astype(np.float32)
    weights[0, :4] = 1
    got, got_weight = codec.encode_torch(torch.from_numpy(keypoints), torch.from_numpy(weights))
    for i in range(len(keypoints)):
        want, want_weight = codec.encode(keypoints[i], weights[i])
        torch.testing.assert_close(got[i], torch.from_numpy(want), atol=HEATMAP_ATOL, rtol=0)
        np.testing.assert_array_equal(got_weight[i].numpy(), want_weight)
    assert got_weight[0, :4].tolist() == [1, 1, 0, 0]


def test_jpeg_routing_and_exif_rotated_files_match_the_cpu_path(tmp_path, synthetic):
    from PIL import Image

    rng = np.random.default_rng(3)
    pixels = textured(rng, 180, 240)
    plain, rotated, cmyk, png = (tmp_path / n for n in ("plain.jpg", "rotated.jpg", "cmyk.jpg", "image.png"))
    cv2.imwrite(str(plain), pixels)
    cv2.imwrite(str(png), pixels)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(pixels).save(rotated, exif=exif.tobytes(), quality=95)
    Image.fromarray(pixels).convert("CMYK").save(cmyk, quality=95)
    needs = {p.name: gpu.jpeg_needs_cpu(np.fromfile(p, np.uint8)) for p in (plain, rotated, cmyk, png)}
    # An orientation tag does not route a file: both decoders read the stored pixels (image_check.py).
    assert needs == {"plain.jpg": False, "rotated.jpg": False, "cmyk.jpg": True, "image.png": True}
    assert gpu.jpeg_needs_cpu(b"\xff\xd8\xff") and gpu.jpeg_needs_cpu(b"GIF89a")
    # The tagged file goes as bytes like the plain one, the PNG is decoded by the loader: one batch, the CPU's.
    records = [person(rng, k, k, f, 240, 180) for k, f in enumerate((rotated, plain, png))] + synthetic[:2]
    dataset = cpu_dataset(records)
    source = gpu.GpuTopDownSource(dataset)
    assert [source[i]["source"].dim() for i in range(len(records))] == [1, 1, 3, 1, 1]
    assert_same_batch(dataset, range(len(records)))


def test_unreadable_files_are_skipped(tmp_path, synthetic):
    dataset = cpu_dataset([synthetic[0], dataclass_replace(synthetic[1], file=tmp_path / "missing.jpg")])
    source = gpu.GpuTopDownSource(dataset)
    assert source[1] == {"unreadable": 1} and dataset.skipped == {1}
    batch = gpu.collate_gpu([source[0], source[1]])
    assert len(gpu.batch_sources(batch)) == 1 and batch["skipped"].tolist() == [1]
    # The index travels in the batch: a loader worker's copy of the dataset is not the trainer's.
    counter = gpu.GpuTopDownBatcher(CODEC, "cpu")
    assert counter(batch)["index"].tolist() == [0] and counter.skipped == {1}
    assert counter(gpu.collate_gpu([source[1]])) is None and counter.skipped == {1}
    # A file that looks like a JPEG but that the decoder rejects is dropped by the batcher and reported.
    corrupt = {**source[0], "source": torch.tensor([0xFF, 0xD8, 0xFF, 0xD9], dtype=torch.uint8), "index": 1}
    batch = gpu.collate_gpu([source[0], corrupt])
    batcher = gpu.GpuTopDownBatcher(CODEC, "cpu")
    out = batcher(batch)
    assert out["image"].shape[0] == 1 and out["index"].tolist() == [0] and batcher.skipped == {1}


def dataclass_replace(record, **changes):
    import dataclasses

    return dataclasses.replace(record, **changes)


def test_unsupported_configurations_are_refused(synthetic):
    for kwargs in ({"augment": Augment(photometric_p=0.5)},
                   {"occlusions": build_occlusions(LJA, OcclusionConfig(p_occ=1.0), COCO17)},
                   {"siamese": True}):
        with pytest.raises(ValueError, match="GPU augmentation path does not implement"):
            gpu.GpuTopDownSource(cpu_dataset(synthetic, **kwargs))


def test_device_loader_feeds_train_one_epoch(synthetic):
    """The hook: a DataLoader over the source, seen through the batcher, in place of the CPU loader."""
    from trainables.engine import heatmap_loss, train_one_epoch
    from trainables.losses import keypoint_mse
    from trainables.models import create_model

    codec = HeatmapCodec((64, 64))
    dataset = cpu_dataset(synthetic[:8], codec=codec)
    loader = torch.utils.data.DataLoader(gpu.GpuTopDownSource(dataset), batch_size=4, shuffle=True,
                                         collate_fn=gpu.collate_gpu, num_workers=0)
    device_loader = gpu.DeviceLoader(loader, gpu.GpuTopDownBatcher(codec, "cpu"))
    assert len(device_loader) == 2
    model = create_model("simplebaseline_r18", 17, deconv_channels=16, input_hw=codec.input_hw)
    model = model.to(memory_format=torch.channels_last)
    loss = heatmap_loss(lambda pred, target, weight, progress: (keypoint_mse(pred, target, weight), {}))
    stats = train_one_epoch(model, loss, torch.optim.Adam(model.parameters(), 1e-3), device_loader, 0, 1,
                            torch.device("cpu"), channels_last=True, print_every=0)
    assert np.isfinite(stats["loss"]) and stats["images_per_s"] > 0


def test_prefetching_device_loader_yields_the_same_batches_and_stops_cleanly(synthetic):
    dataset = cpu_dataset(synthetic)
    loader = torch.utils.data.DataLoader(gpu.GpuTopDownSource(dataset), batch_size=3, collate_fn=gpu.collate_gpu)
    batcher = gpu.GpuTopDownBatcher(CODEC, "cpu")
    plain = list(gpu.DeviceLoader(loader, batcher, prefetch=0))
    ahead = list(gpu.DeviceLoader(loader, batcher, prefetch=2))
    assert len(plain) == len(ahead) == 4
    for a, b in zip(plain, ahead):
        assert all(torch.equal(a[key], b[key]) for key in a)
    iterator = iter(gpu.DeviceLoader(loader, batcher, prefetch=1))
    next(iterator)
    iterator.close()  # an abandoned epoch: the producer thread ends
    assert not any(t.name == "gpu-augment-prefetch" for t in threading.enumerate())

    class Broken(gpu.GpuTopDownBatcher):
        def __call__(self, batch):
            raise RuntimeError("augmentation failed")

    with pytest.raises(RuntimeError, match="augmentation failed"):  # raised in the consumer, not lost in the thread
        list(gpu.DeviceLoader(loader, Broken(CODEC, "cpu"), prefetch=1))


@pytest.fixture(scope="module")
def coco(shared_data):
    return load_records(shared_data / "coco/test_coco.json", shared_data / "coco", COCO17)


@pytest.mark.parametrize("epoch", [0, 1])
def test_real_coco_batch_matches_the_cpu_path(coco, epoch):
    """The fixture's 12 persons on 4 real COCO val2017 JPEGs of three different sizes, in one batch."""
    dataset = cpu_dataset(coco)
    dataset.set_epoch(epoch)
    assert len({tuple(gpu.decode_images([s], "cpu")[0].shape) for s in
                gpu.batch_sources(gpu.collate_gpu([gpu.GpuTopDownSource(dataset)[i] for i in range(len(coco))]))}) >= 3
    got = assert_same_batch(dataset, range(len(coco)))
    assert got["target_weight"].sum() > 50


# ------------------------------------------------------------------------------- on a CUDA device, where there is one

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_batcher_matches_the_cpu_batcher(synthetic):
    """One host batch of already decoded images through the batcher on CUDA and on the CPU (nvjpeg left out): the
    warp within one grey level (float32 coordinate rounding differs between the devices' kernels), blocks and
    heatmaps as on the CPU."""
    dataset = cpu_dataset(synthetic)
    source = gpu.GpuTopDownSource(dataset)
    samples = [source[i] for i in range(len(dataset))]
    decoded = gpu.decode_images([s["source"] for s in samples], "cpu")
    batch = gpu.collate_gpu([{**s, "source": image} for s, image in zip(samples, decoded)])
    on_cpu = gpu.GpuTopDownBatcher(CODEC, "cpu")(batch)
    on_cuda = gpu.GpuTopDownBatcher(CODEC, "cuda")(batch)
    grey = ((on_cuda["image"].cpu() - on_cpu["image"]) * torch.from_numpy(IMAGENET_STD).view(1, 3, 1, 1)).abs()
    assert grey.max().item() <= 1 + 1e-3 and grey.mean().item() <= 0.01
    torch.testing.assert_close(on_cuda["heatmaps"].cpu(), on_cpu["heatmaps"], atol=HEATMAP_ATOL, rtol=0)
    assert torch.equal(on_cuda["target_weight"].cpu(), on_cpu["target_weight"])


@cuda
def test_cuda_path_with_nvjpeg_stays_close_to_the_cpu_path(synthetic):
    """nvjpeg is not libjpeg-turbo (its IDCT and chroma upsampling differ), so on CUDA the crops match the CPU path
    only on average; the labels do not depend on the decoder and match as on the CPU."""
    dataset = cpu_dataset(synthetic)
    source = gpu.GpuTopDownSource(dataset)
    got = gpu.GpuTopDownBatcher(CODEC, "cuda")(gpu.collate_gpu([source[i] for i in range(len(dataset))]))
    want = collate_skip_none([dataset[i] for i in range(len(dataset))])
    grey = ((got["image"].cpu() - want["image"]) * torch.from_numpy(IMAGENET_STD).view(1, 3, 1, 1)).abs()
    assert grey.mean().item() < 1.0, f"mean {grey.mean().item():.3f}, max {grey.max().item():.0f} grey levels"
    torch.testing.assert_close(got["heatmaps"].cpu(), want["heatmaps"], atol=HEATMAP_ATOL, rtol=0)
    assert torch.equal(got["target_weight"].cpu(), want["target_weight"])
