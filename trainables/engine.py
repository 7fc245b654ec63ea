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
    """Running sums of scalar metrics, weighted by batch size. A value may be a tensor on the device: it is summed
    there, and read (one host synchronisation) only by `averages`."""

    def __init__(self):
        self.sums: dict[str, float | torch.Tensor] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def update(self, n: int = 1, **values) -> None:
        for key, value in values.items():
            value = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
            self.sums[key] = self.sums[key] + value * n
            self.counts[key] += n

    def averages(self) -> dict[str, float]:
        return {key: float(self.sums[key]) / max(self.counts[key], 1) for key in self.sums}


class FiniteGuard:
    """The first non-finite loss of an epoch, tracked on the device: `update` adds no host synchronisation, `check`
    reads the record (one synchronisation) and raises NonFiniteLoss naming the first bad step."""

    def __init__(self, device):
        self.first_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.value = torch.zeros((), dtype=torch.float32, device=device)

    def update(self, step: int, loss: torch.Tensor) -> None:
        loss = loss.detach().float()
        first = ~torch.isfinite(loss) & (self.first_step < 0)
        self.first_step = self.first_step.masked_fill(first, step)
        self.value = torch.where(first, loss, self.value)

    def check(self, epoch: int, step: int) -> None:
        bad = int(self.first_step)
        if bad >= 0:
            raise NonFiniteLoss(f"non-finite loss {float(self.value)} at epoch {epoch + 1}, step {bad} (found at "
                                f"step {step}); lower optim.lr or set optim.grad_clip")


def heatmap_loss(loss_fn):
    """The usual step: the model's heatmaps against the targets, through loss_fn(pred, target, weight, progress)."""

    def compute(model, batch, progress):
        return loss_fn(model(batch["image"]), batch["heatmaps"], batch["target_weight"], progress)

    return compute


def timed_batches(loader, waited: list[float], profile=None):
    """`loader`'s batches, adding the seconds spent waiting for each to waited[0] (inside a "data_wait" profiler
    range when `profile`, a trainables.profiling.ProfileWindow, records one; it also counts the steps)."""
    batches = iter(profile.batches(loader) if profile is not None else loader)
    while True:
        start = time.perf_counter()
        batch = next(batches, _DONE)
        waited[0] += time.perf_counter() - start
        if batch is _DONE:
            return
        yield batch


_DONE = object()


def train_one_epoch(model, compute_loss, optimizer, loader, epoch: int, epochs: int, device, grad_clip: float = 0.0,
                    amp: bool = False, channels_last: bool = False, print_every: int = 50,
                    profile=None) -> dict[str, float]:
    """One pass over `loader`; compute_loss(model, batch, progress) -> (loss, {name: value}).

    amp: bf16 autocast (GPU). channels_last: NHWC images, which convolution kernels on GPUs prefer. profile: a
    trainables.profiling.ProfileWindow recording a few of this epoch's steps.

    No host synchronisation per step, so the host queues the next steps while the device runs: the loss and its
    parts are summed on the device and read every `print_every` steps (0: never) and at the epoch's end. A
    non-finite loss is found there too (NonFiniteLoss names its step); the steps run since then are lost with the
    trial, which fails before the epoch's checkpoint. (A loss whose parts are Python floats synchronises inside
    the loss.) Returns the epoch's averages, images (the samples trained, skipped ones not counted), images_per_s,
    time_s and data_wait_s, the seconds the loop waited for batches (data-bound when close to time_s)."""
    model.train()
    meter = MetricLogger()
    guard = FiniteGuard(device)
    steps = max(len(loader), 1)
    images_seen = 0
    waited = [0.0]
    start = time.perf_counter()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    step = -1
    for step, batch in enumerate(timed_batches(loader, waited, profile)):
        if batch is None:
            continue
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        for key in ("image", "image_occluded"):
            if key in batch:
                batch[key] = batch[key].contiguous(memory_format=memory_format)
        progress = (epoch + step / steps) / max(epochs, 1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, parts = compute_loss(model, batch, progress)
        guard.update(step, loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        n = batch["image"].shape[0]
        meter.update(n, loss=loss, **parts)
        images_seen += n
        if print_every and step % print_every == 0:
            guard.check(epoch, step)
            log.info("epoch %d step %d/%d loss %.6f", epoch, step, steps, loss.item())
    guard.check(epoch, step)
    stats = meter.averages()
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the queued steps belong to this epoch's time
    elapsed = time.perf_counter() - start
    stats["images"] = images_seen
    stats["images_per_s"] = images_seen / max(elapsed, 1e-9)
    stats["time_s"] = elapsed
    stats["data_wait_s"] = waited[0]
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
            heatmaps = codec.flip_average(heatmaps, flipped, dataset.skeleton.flip_index)
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
