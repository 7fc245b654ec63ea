"""train_one_epoch / evaluate in the shape of torchvision's references: plain loops, a small metric logger."""
from __future__ import annotations

import logging
import time
from collections import defaultdict

import numpy as np
import torch
from datasets.topdown.codec import HeatmapCodec
from datasets.evaluation.scoring import Predictions
from datasets.topdown.geometry import transform_points
from datasets.topdown.dataset import collate_skip_none, TopDownDataset

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    pass


class MetricLogger:
    """Running sums of scalar metrics, weighted by batch size."""

    def __init__(self):
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def update(self, n: int = 1, **values: float) -> None:
        for key, value in values.items():
            self.sums[key] += float(value) * n
            self.counts[key] += n

    def averages(self) -> dict[str, float]:
        return {key: self.sums[key] / max(self.counts[key], 1) for key in self.sums}


def heatmap_loss(loss_fn):
    """The usual step: the model's heatmaps against the targets, through loss_fn(pred, target, weight, progress)."""

    def compute(model, batch, progress):
        return loss_fn(model(batch["image"]), batch["heatmaps"], batch["target_weight"], progress)

    return compute


def train_one_epoch(model, compute_loss, optimizer, loader, epoch: int, epochs: int, device, grad_clip: float = 0.0,
                    amp: bool = False, channels_last: bool = False, print_every: int = 50) -> dict[str, float]:
    """One pass over `loader`; compute_loss(model, batch, progress) -> (loss, {name: value}).

    amp: bf16 autocast (GPU). channels_last: NHWC images, which convolution kernels on GPUs prefer."""
    model.train()
    meter = MetricLogger()
    steps = max(len(loader), 1)
    images_seen = 0
    start = time.perf_counter()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for step, batch in enumerate(loader):
        if batch is None:
            continue
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        for key in ("image", "image_occluded"):
            if key in batch:
                batch[key] = batch[key].contiguous(memory_format=memory_format)
        progress = (epoch + step / steps) / max(epochs, 1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, parts = compute_loss(model, batch, progress)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"non-finite loss {loss.item()} at epoch {epoch + 1}, step {step} "
                                f"(parts: {parts}); lower optim.lr or set optim.grad_clip")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        n = batch["image"].shape[0]
        meter.update(n, loss=loss.item(), **parts)
        images_seen += n
        if print_every and step % print_every == 0:
            log.info("epoch %d step %d/%d loss %.6f", epoch, step, steps, loss.item())
    elapsed = time.perf_counter() - start
    stats = meter.averages()
    stats["images_per_s"] = images_seen / max(elapsed, 1e-9)
    stats["time_s"] = elapsed
    return stats


@torch.no_grad()
def predict(model, dataset: TopDownDataset, codec: HeatmapCodec, device, batch_size: int = 64,
            flip_test: bool = False) -> Predictions:
    """Keypoints in original image pixels and per-joint scores, in dataset order.

    flip_test averages the heatmaps of the crop and of its mirror image (mapped back: columns reversed, left and
    right joints swapped, then shifted by the sub-pixel offset the mirror introduces)."""
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate_skip_none)
    n, k = len(dataset), dataset.skeleton.num_keypoints
    pred = Predictions(np.zeros((n, k, 2)), np.zeros((n, k)), np.zeros(n, bool),
                       np.array([dataset.crop_area(i) for i in range(n)]))
    for batch in loader:
        if batch is None:
            continue
        images = batch["image"].to(device)
        heatmaps = model(images).float()
        if flip_test:
            flipped = model(images.flip(-1)).float()
            heatmaps = 0.5 * (heatmaps + codec.unflip(flipped, dataset.skeleton.flip_index))
        xy, score = codec.decode(heatmaps.cpu())
        for i, index in enumerate(batch["index"].tolist()):
            pred.coords[index] = transform_points(xy[i].numpy().astype(np.float64), dataset.inverse_matrix(index))
            pred.scores[index] = score[i].numpy()
            pred.done[index] = True
    return pred


def evaluate(model, dataset: TopDownDataset, scorer, codec: HeatmapCodec, device,
             flip_test: bool = False) -> dict[str, float]:
    """The split's benchmark metrics (see datasets/evaluation/scoring.py) and the count of unreadable samples."""
    pred = predict(model, dataset, codec, device, flip_test=flip_test)
    metrics = scorer.score(dataset.records, pred)
    metrics["skipped_samples"] = float((~pred.done).sum())
    return metrics
