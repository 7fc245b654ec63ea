"""The training batches of a trial: the CPU pipeline (TopDownDataset in the DataLoader) or the GPU path (the loader
reads JPEG bytes and draws parameters; decode, warp, LJA and heatmaps run on the device, datasets/topdown/gpu.py)."""
from __future__ import annotations

import torch

from datasets.topdown.dataset import collate_skip_none, TopDownDataset
from trainables.config import TrialConfig
from trainables.runtime import enabled


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


def train_loader(cfg: TrialConfig, train_set: TopDownDataset, sampler, device: torch.device, channels_last: bool):
    """(batches for train_one_epoch, the GPU batcher or None). With runtime.gpu_augment the loader only reads JPEG
    bytes and draws each sample's parameters (the CPU path's own code and random stream); decode, affine warp, LJA
    and heatmaps run on the device for the whole batch (datasets/topdown/gpu.py)."""
    from datasets.topdown import gpu

    use_gpu = use_gpu_path(cfg.runtime.gpu_augment, train_set, device)
    loader = torch.utils.data.DataLoader(
        gpu.GpuTopDownSource(train_set) if use_gpu else train_set,
        batch_size=cfg.optim.batch_size, shuffle=sampler is None, sampler=sampler,
        collate_fn=gpu.collate_gpu if use_gpu else collate_skip_none,
        # drop_last keeps batches equal (BatchNorm, DDP) but must not drop a whole small dataset.
        drop_last=len(train_set) > cfg.optim.batch_size, generator=torch.Generator().manual_seed(cfg.runtime.seed),
        # Worker processes for the GPU path's light CPU half only: the CPU pipeline counts unreadable images in
        # its dataset object, which a worker process would copy. Not persistent: each epoch's workers must see the
        # dataset's new epoch (set_epoch) for their randomness.
        num_workers=cfg.runtime.loader_workers if use_gpu else 0,
    )
    if not use_gpu:
        return loader, None
    batcher = gpu.GpuTopDownBatcher(train_set.codec, device, channels_last=channels_last)
    return gpu.DeviceLoader(loader, batcher), batcher
