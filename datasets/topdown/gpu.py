"""The top-down training pipeline with its pixel work on the accelerator: batched JPEG decode (nvjpeg through
`torchvision.io.decode_jpeg`), affine crop (`affine_grid` + `grid_sample`), LJA blocks and Gaussian heatmaps for
the whole batch at once, in plain torch ops, so the same code runs on CUDA and, for the tests, on the CPU.

The split of the work:

* CPU, per sample (`GpuTopDownSource`, in DataLoader workers): read the JPEG's bytes and draw the augmentation
  with the CPU pipeline's own code and random stream (`draw_params`: TopDownDataset.crop_geometry, the flip coin,
  the dataset's LJA transform run on a placeholder image), so a sample gets the same crop matrix, keypoints, target
  weights and LJA blocks as `TopDownDataset[i]` for the same (seed, epoch, index). No decode, no warp.
* Device, per batch (`GpuTopDownBatcher`): decode, crop, round to whole grey levels as the CPU's uint8 crop, paint
  the LJA blocks (datasets/topdown/gpu_ops.py), normalise (channels_last) and encode the heatmaps with the codec's
  torch back end (datasets/topdown/codec.py, the CPU path's formula and constants): the same dict as the CPU collate
  (`image`, `heatmaps`, `target_weight`, `index`).

What the CPU path does that this one does not (GpuTopDownSource refuses such datasets): photometric jitter,
occlusion transforms other than LJA (random occluders, targeted augmentations), test-time attacks and OASNet's
siamese pair.

Equivalence with the CPU path (tests/datasets/test_gpu_augment.py): the crop matrix, keypoints, target weights, LJA
boxes and fills are the CPU's own numbers; heatmaps agree to float32 rounding; the crop's pixels agree with
cv2.warpAffine to at most one grey level (OpenCV >= 4.11 computes INTER_LINEAR in float like grid_sample and both round
half to even; the rare one-level differences are float32 rounding of the sample coordinates flipping a value that lies
within ~1e-4 of a rounding boundary). Older OpenCV quantises sample coordinates to 1/32 pixel, which moves pixels on
sharp edges by up to ~5 grey levels. The reference is the CPU path's full-resolution decode: on the CPU torchvision's
decoder gives cv2.imread's pixels bit for bit, while on CUDA nvjpeg (its own IDCT and chroma upsampling) differs from
libjpeg-turbo by about a grey level on average, and a CPU dataset whose fast path decodes at a reduced JPEG scale
differs by design.
"""
from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import torch

from datasets.occlusion.lja import LJA
from datasets.topdown.codec import HeatmapCodec, normalise_batch
from datasets.topdown.dataset import TopDownDataset
from datasets.topdown.gpu_ops import crop_batch, decode_images, jpeg_needs_cpu, paint_occlusions
from datasets.topdown.image_check import ImageFault, check_bytes, check_file, decode_bgr


__all__ = [
    "SampleParams", "draw_params", "check_supported", "GpuTopDownSource", "collate_gpu", "batch_sources",
    "GpuTopDownBatcher", "DeviceLoader", "decode_images", "crop_batch", "paint_occlusions", "jpeg_needs_cpu",
]


# ----------------------------------------------------------------------------------------------------------------
# CPU side: parameters drawn exactly as TopDownDataset.views draws them
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SampleParams:
    """One sample's augmentation, in the CPU pipeline's numbers."""

    index: int
    matrix: np.ndarray  # (2, 3) float64: image pixels -> crop pixels (flip included)
    keypoints: np.ndarray  # (K, 2) float64, crop pixels (flip pairs already swapped)
    visibility: np.ndarray  # (K,) COCO flags
    target_weight: np.ndarray  # (K,) float32, before the heatmap's inside-the-map test
    occlusions: np.ndarray  # (M, 5) int64: x0, y0, x1, y1 (exclusive), fill grey value; painted in order
    flipped: bool


def check_supported(dataset: TopDownDataset) -> None:
    """Raise ValueError when the dataset asks for something only the CPU pipeline does."""
    problems = []
    if dataset.train and dataset.augment.photometric_p > 0:
        problems.append("photometric jitter (data.photometric_p > 0)")
    others = [type(t).__name__ for t in dataset.occlusions if not isinstance(t, LJA)]
    if dataset.train and others:
        problems.append(f"occlusion transforms other than LJA ({', '.join(others)})")
    if dataset.attack is not None:
        problems.append("a test-time attack")
    if dataset.siamese:
        problems.append("OASNet's siamese views")
    if problems:
        raise ValueError("the GPU augmentation path does not implement " + "; ".join(problems)
                         + "; use the CPU pipeline (TopDownDataset) for this configuration")


@lru_cache(maxsize=8)
def _placeholder(hw: tuple[int, int]) -> np.ndarray:
    """A read-only blank crop: the occlusion transforms need the crop's shape, never its pixels."""
    image = np.zeros((*hw, 3), np.uint8)
    image.flags.writeable = False
    return image


def draw_params(dataset: TopDownDataset, index: int, epoch: int | None = None) -> SampleParams:
    """Sample `index`'s augmentation as TopDownDataset.views draws it (same generator, same order of draws:
    crop geometry incl. half-body, flip coin, then the occlusion transforms), without touching pixels."""
    check_supported(dataset)
    rng, _, matrix, keypoints, flipped = dataset.sample_geometry(index, epoch)
    crop = dataset.crop_of(index, _placeholder(dataset.codec.input_hw), matrix, keypoints)
    if rng is not None:
        for transform in dataset.occlusions:
            crop = transform(crop, rng)
    for occlusion in crop.occlusions:
        if occlusion.fill is None or occlusion.shape != "rect":
            raise ValueError(f"the GPU path paints constant rectangles only, got {occlusion}")
    occlusions = np.array([[*o.box, o.fill] for o in crop.occlusions], np.int64).reshape(-1, 5)
    return SampleParams(index, matrix, crop.keypoints, crop.visibility, crop.target_weight.astype(np.float32),
                        occlusions, flipped)


class GpuTopDownSource(torch.utils.data.Dataset):
    """The CPU half, for a DataLoader: per index the file's bytes (or, for the rare file the device decoder must
    not take, see `jpeg_needs_cpu`, the image decoded here as cv2.imread decodes it) and the sample's parameters.

    Randomness follows the wrapped dataset's (seed, epoch, index), so set_epoch before building an epoch's
    iterator (not with persistent_workers, whose copies of the dataset never see a later epoch). A file
    image_check.py finds faulty (missing, unreadable, truncated, another size than the annotation's: the CPU
    path's check) gives an `unreadable` marker, which collate_gpu drops and lists in the batch's `skipped` (also
    added to the dataset's `skipped` and `faults`, as in the CPU path)."""

    def __init__(self, dataset: TopDownDataset):
        check_supported(dataset)
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    @property
    def skipped(self) -> set[int]:
        return self.dataset.skipped

    def __getitem__(self, index: int):
        records = self.dataset.records
        path, image_wh = records.file(index), records.size_of(index)
        try:
            check_file(path)  # the CPU path's check: a missing or truncated file never reaches a decoder
            data = np.fromfile(path, np.uint8)
            if not jpeg_needs_cpu(data):
                check_bytes(data, image_wh)  # the frame size, read from the header
                source = torch.from_numpy(data)
            else:
                rgb = cv2.cvtColor(decode_bgr(str(path), image_wh), cv2.COLOR_BGR2RGB)
                source = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
        except (ImageFault, OSError) as fault:
            self.dataset.skip(index, str(fault) if isinstance(fault, ImageFault) else f"cannot be read ({fault})")
            # A marker, not None: in a loader worker process the dataset's `skipped` is a copy the trainer never
            # sees, so the index travels in the batch (collate_gpu's `skipped`) to the batcher's count.
            return {"unreadable": index}
        p = draw_params(self.dataset, index)
        return {"source": source, "matrix": p.matrix, "keypoints": p.keypoints, "target_weight": p.target_weight,
                "occlusions": p.occlusions, "index": index}


def collate_gpu(batch):
    """Samples of GpuTopDownSource -> one host batch (None if nothing is left): the JPEGs back to back in one uint8
    `jpeg_blob` with their byte counts in `jpeg_sizes` (0 for a sample the loader decoded; those images are in
    `decoded`, in order), so a worker hands the main process a few tensors, not one per sample; `matrix` (B, 2, 3)
    float64, `keypoints` (B, K, 2) float64, `target_weight` (B, K) float32, `occlusions` (B, M, 5) int64 (empty
    boxes pad the shorter lists), `index` (B,) int64, `skipped` the unreadable files' indices. `batch_sources`
    recovers the per-sample sources."""
    skipped = torch.tensor([s["unreadable"] for s in batch if s is not None and "unreadable" in s], dtype=torch.int64)
    batch = [sample for sample in batch if sample is not None and "unreadable" not in sample]
    if not batch:
        return {"skipped": skipped} if len(skipped) else None
    most = max(len(s["occlusions"]) for s in batch)
    occlusions = np.zeros((len(batch), most, 5), np.int64)
    for i, s in enumerate(batch):
        occlusions[i, : len(s["occlusions"])] = s["occlusions"]
    jpegs = [s["source"] for s in batch if s["source"].dim() == 1]
    return {
        "jpeg_blob": torch.cat(jpegs) if jpegs else torch.zeros(0, dtype=torch.uint8),
        "jpeg_sizes": torch.tensor([len(s["source"]) if s["source"].dim() == 1 else 0 for s in batch]),
        "decoded": [s["source"] for s in batch if s["source"].dim() != 1],
        "matrix": torch.from_numpy(np.stack([s["matrix"] for s in batch]).astype(np.float64)),
        "keypoints": torch.from_numpy(np.stack([s["keypoints"] for s in batch]).astype(np.float64)),
        "target_weight": torch.from_numpy(np.stack([s["target_weight"] for s in batch]).astype(np.float32)),
        "occlusions": torch.from_numpy(occlusions),
        "index": torch.tensor([s["index"] for s in batch], dtype=torch.int64),
        "skipped": skipped,  # indices of this batch's unreadable files, dropped here
    }


def batch_sources(batch) -> list[torch.Tensor]:
    """A collate_gpu batch's per-sample sources: 1-D uint8 JPEG bytes (views into the blob) or (3, H, W) images."""
    sizes = batch["jpeg_sizes"].tolist()
    jpegs = iter(torch.split(batch["jpeg_blob"], [n for n in sizes if n]))
    decoded = iter(batch["decoded"])
    return [next(jpegs) if n else next(decoded) for n in sizes]


class GpuTopDownBatcher:
    """The device half: a collate_gpu batch -> {"image", "heatmaps", "target_weight", "index"} on `device`, the
    dict TopDownDataset + collate_skip_none give (images channels_last unless told otherwise). Samples whose JPEG
    the decoder rejects are dropped and their dataset indices added to `skipped`."""

    def __init__(self, codec: HeatmapCodec, device, channels_last: bool = True):
        self.codec = codec
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.skipped: set[int] = set()

    def __call__(self, batch):
        if batch is None:
            return None
        self.skipped.update(batch["skipped"].tolist())
        if "index" not in batch:  # every file of the batch was unreadable
            return None
        images = decode_images(batch_sources(batch), self.device)
        keep = [i for i, image in enumerate(images) if image is not None]
        if len(keep) < len(images):
            self.skipped.update(int(batch["index"][i]) for i in range(len(images)) if images[i] is None)
            if not keep:
                return None
            rows = torch.tensor(keep)
            batch = {k: batch[k][rows] for k in ("matrix", "keypoints", "target_weight", "occlusions", "index")}
            images = [images[i] for i in keep]
        crops = crop_batch(images, batch["matrix"], self.codec.input_hw)
        crops = paint_occlusions(crops, batch["occlusions"])
        heatmaps, target_weight = self.codec.encode_torch(batch["keypoints"].to(self.device, non_blocking=True),
                                                          batch["target_weight"].to(self.device, non_blocking=True))
        return {"image": normalise_batch(crops, self.channels_last), "heatmaps": heatmaps,
                "target_weight": target_weight, "index": batch["index"]}


class DeviceLoader:
    """A DataLoader over a GpuTopDownSource seen through a batcher: iterating yields device batches, len() is the
    loader's, so train_one_epoch takes it in place of the CPU loader (its .to(device) is then a no-op).

    prefetch > 0 runs the batcher that many batches ahead in a background thread (on CUDA on a side stream, the
    consumer's stream waiting on each batch's event), so decoding and augmenting the next batch overlaps the
    training step instead of following it (the engine reads the loss back only every print interval, so the GPU's
    queue stays full between).
    Default: 1 on CUDA, 0 elsewhere."""

    def __init__(self, loader, batcher: GpuTopDownBatcher, prefetch: int | None = None):
        self.loader = loader
        self.batcher = batcher
        self.prefetch = (1 if batcher.device.type == "cuda" else 0) if prefetch is None else prefetch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        if self.prefetch <= 0:
            for batch in self.loader:
                yield self.batcher(batch)
            return
        yield from self._prefetched()

    def _prefetched(self):
        device = self.batcher.device
        cuda = device.type == "cuda"
        stream = torch.cuda.Stream(device) if cuda else None
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def produce():
            try:
                with torch.cuda.stream(stream) if cuda else contextlib.nullcontext():
                    for host_batch in self.loader:
                        if stop.is_set():
                            return
                        batch = self.batcher(host_batch)
                        event = None
                        if cuda:
                            event = torch.cuda.Event()
                            event.record(stream)
                        ready.put((batch, event))
            except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
                ready.put(err)
                return
            ready.put(_END)

        thread = threading.Thread(target=produce, name="gpu-augment-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                item = ready.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                batch, event = item
                if cuda and batch is not None:
                    consumer = torch.cuda.current_stream(device)
                    consumer.wait_event(event)
                    for value in batch.values():
                        if isinstance(value, torch.Tensor) and value.device.type == "cuda":
                            value.record_stream(consumer)  # keep the side stream's allocator off it until used
                yield batch
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue, then let it finish
                try:
                    ready.get_nowait()
                except queue.Empty:
                    thread.join(timeout=0.05)


_END = object()
