"""The training batches of a trial: the CPU pipeline (TopDownDataset in the DataLoader) or the GPU path (the loader
reads JPEG bytes and draws parameters; decode, warp, LJA and heatmaps run on the device, datasets/topdown/gpu.py).

Both run in `runtime.loader_workers` worker processes (0: in the trainer's process), kept for the whole run
(persistent): the sampler hands the workers (epoch, index) pairs, so a sample's randomness follows the epoch the
trainer set (TopDownDataset.set_epoch) although the workers' copies of the dataset never see that call; and the
faults a worker's copy records (unreadable images, datasets/topdown/image_check.py) travel back with the batch to
the trainer's dataset, whose `skipped` and `faults` the trial reports. On CUDA the batches come in pinned memory, so
the trainer's non_blocking copies overlap the device's work.
"""
from __future__ import annotations

import torch

from datasets.topdown.dataset import collate_skip_none, TopDownDataset
from trainables.config import TrialConfig
from trainables.runtime import enabled

# Batches each worker keeps ready (DataLoader's prefetch_factor): 2 x workers batches in flight cover a step's
# jitter; a CPU-path batch of 256 crops at 256x192 is ~200 MB of float32 images and heatmaps.
PREFETCH_FACTOR = 2


def use_gpu_path(setting: str, train_set: TopDownDataset, device: torch.device) -> bool:
    """runtime.gpu_augment: "on" (ValueError naming what the configuration needs on the CPU), "off", or "auto" = on a
    GPU when the configuration allows (LJA only, no photometric jitter, no OASNet)."""
    from datasets.topdown import gpu

    if not enabled(setting, device):
        return False
    try:
        gpu.check_supported(train_set)
    except ValueError:
        if setting == "on":
            raise
        return False  # auto: this configuration needs the CPU pipeline
    return True


class EpochSampler(torch.utils.data.Sampler):
    """(epoch, index) pairs, epoch the dataset's when the iteration begins (in the trainer's process, after its
    set_epoch): the indices of `sampler` (a DistributedSampler), or without one a shuffle drawn from seed + epoch as
    DistributedSampler draws it - so the order, like each sample, depends on neither the loader's workers nor a
    resume in between."""

    def __init__(self, dataset: TopDownDataset, seed: int, sampler=None):
        self.dataset, self.seed, self.sampler = dataset, seed, sampler

    def __len__(self) -> int:
        return len(self.sampler) if self.sampler is not None else len(self.dataset)

    def __iter__(self):
        epoch = self.dataset.epoch
        if self.sampler is not None:
            indices = list(self.sampler)
        else:
            indices = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed + epoch))
            indices = indices.tolist()
        return ((epoch, index) for index in indices)


class EpochSamples(torch.utils.data.Dataset):
    """`source` (a TopDownDataset or the GPU path's GpuTopDownSource over `dataset`) indexed by (epoch, index):
    {"sample": source[index] at that epoch, "faults": {index: reason} the dataset recorded while making it}."""

    def __init__(self, source, dataset: TopDownDataset):
        self.source, self.dataset = source, dataset

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key):
        epoch, index = key
        self.dataset.set_epoch(epoch)
        known = len(self.dataset.faults)
        sample = self.source[index]
        return {"sample": sample, "faults": dict(list(self.dataset.faults.items())[known:])}


def collate_with_faults(collate):
    """A collate for EpochSamples items: (collate(the samples), {index: reason} of the batch's new faults)."""

    def collate_items(items):
        faults = {}
        for item in items:
            faults.update(item["faults"])
        return collate([item["sample"] for item in items]), faults

    return collate_items


class FaultRecordingLoader:
    """Iterates a DataLoader of collate_with_faults batches: yields the batches and adds each batch's faults to the
    trainer's `dataset` (its `skipped` and `faults`; the worker that found one has logged it)."""

    def __init__(self, loader, dataset: TopDownDataset):
        self.loader, self.dataset = loader, dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch, faults in self.loader:
            for index, reason in faults.items():
                self.dataset.skipped.add(index)
                self.dataset.faults.setdefault(index, reason)
            yield batch


def train_loader(cfg: TrialConfig, train_set: TopDownDataset, sampler, device: torch.device, channels_last: bool):
    """(batches for train_one_epoch, the GPU batcher or None). With runtime.gpu_augment the loader only reads JPEG
    bytes and draws each sample's parameters (the CPU path's own code and random stream); decode, affine warp, LJA
    and heatmaps run on the device for the whole batch (datasets/topdown/gpu.py). The batches are the same for any
    runtime.loader_workers (each sample is a function of seed, epoch and index)."""
    from datasets.topdown import gpu

    use_gpu = use_gpu_path(cfg.runtime.gpu_augment, train_set, device)
    workers = cfg.runtime.loader_workers
    loader = torch.utils.data.DataLoader(
        EpochSamples(gpu.GpuTopDownSource(train_set) if use_gpu else train_set, train_set),
        batch_size=cfg.optim.batch_size, sampler=EpochSampler(train_set, cfg.runtime.seed, sampler),
        collate_fn=collate_with_faults(gpu.collate_gpu if use_gpu else collate_skip_none),
        # drop_last keeps batches equal (BatchNorm, DDP) but must not drop a whole small dataset.
        drop_last=len(train_set) > cfg.optim.batch_size,
        # Its own generator for the workers' base seeds, which would otherwise be drawn from the global stream.
        generator=torch.Generator().manual_seed(cfg.runtime.seed),
        num_workers=workers, persistent_workers=workers > 0, prefetch_factor=PREFETCH_FACTOR if workers else None,
        pin_memory=device.type == "cuda",
    )
    batches = FaultRecordingLoader(loader, train_set)
    if not use_gpu:
        return batches, None
    batcher = gpu.GpuTopDownBatcher(train_set.codec, device, channels_last=channels_last)
    return gpu.DeviceLoader(batches, batcher), batcher
