"""train_one_epoch / evaluate in the shape of torchvision's references: plain loops, a small metric logger."""
from __future__ import annotations

import logging
import time
from collections import defaultdict

import numpy as np
import torch
from pycocotools.coco import COCO

from datasets.codec import HeatmapCodec
from datasets.metrics import oks_ap, pckh
from datasets.topdown import transform_points
from datasets.topdown_dataset import TopDownDataset, collate_skip_none

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


def train_one_epoch(model, loss_fn, optimizer, loader, epoch: int, epochs: int, device, grad_clip: float = 0.0,
                    print_every: int = 50) -> dict[str, float]:
    model.train()
    meter = MetricLogger()
    steps = max(len(loader), 1)
    images_seen = 0
    start = time.perf_counter()
    for step, batch in enumerate(loader):
        if batch is None:
            continue
        images = batch["image"].to(device, non_blocking=True)
        target = batch["heatmaps"].to(device, non_blocking=True)
        weight = batch["target_weight"].to(device, non_blocking=True)
        progress = (epoch + step / steps) / max(epochs, 1)
        loss, parts = loss_fn(model(images), target, weight, progress)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"non-finite loss {loss.item()} at epoch {epoch} step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        meter.update(images.shape[0], loss=loss.item(), **parts)
        images_seen += images.shape[0]
        if print_every and step % print_every == 0:
            log.info("epoch %d step %d/%d loss %.6f", epoch, step, steps, loss.item())
    elapsed = time.perf_counter() - start
    stats = meter.averages()
    stats["images_per_s"] = images_seen / max(elapsed, 1e-9)
    stats["time_s"] = elapsed
    return stats


@torch.no_grad()
def predict(model, dataset: TopDownDataset, codec: HeatmapCodec, device, batch_size: int = 64):
    """Keypoints (N, K, 2) in original image pixels and per-joint scores (N, K), in dataset order."""
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate_skip_none)
    coords = np.zeros((len(dataset), dataset.skeleton.num_keypoints, 2))
    scores = np.zeros((len(dataset), dataset.skeleton.num_keypoints))
    done = np.zeros(len(dataset), bool)
    for batch in loader:
        if batch is None:
            continue
        heatmaps = model(batch["image"].to(device)).float().cpu()
        xy, score = codec.decode(heatmaps)
        for i, index in enumerate(batch["index"].tolist()):
            coords[index] = transform_points(xy[i].numpy().astype(np.float64), dataset.inverse_matrix(index))
            scores[index] = score[i].numpy()
            done[index] = True
    return coords, scores, done


def coco_results(dataset: TopDownDataset, coords, scores, done, score_threshold: float = 0.2) -> list[dict]:
    """COCO results with HRNet's rescoring: mean of the confident joints' scores (ground-truth boxes score 1)."""
    results = []
    for index in np.flatnonzero(done):
        record = dataset.records[index]
        confident = scores[index][scores[index] > score_threshold]
        kpts = np.concatenate([coords[index], scores[index][:, None]], axis=1)
        results.append({
            "image_id": record.image_id,
            "category_id": 1,
            "keypoints": kpts.reshape(-1).round(3).tolist(),
            "score": float(confident.mean()) if confident.size else 0.0,
        })
    return results


def evaluate(model, dataset: TopDownDataset, gt: COCO, codec: HeatmapCodec, device) -> dict[str, float]:
    """OKS AP/AR with pycocotools and, where head boxes exist, PCKh@0.5 over labelled joints."""
    coords, scores, done = predict(model, dataset, codec, device)
    metrics = oks_ap(gt, coco_results(dataset, coords, scores, done), dataset.skeleton.sigmas_array())
    heads = [r.head_box for r in dataset.records]
    if all(h is not None for h in heads) and done.any():
        gt_kpts = np.stack([r.keypoints for r in dataset.records])
        result = pckh(coords[done], gt_kpts[done, :, :2], gt_kpts[done, :, 2] > 0, np.asarray(heads)[done])
        metrics["PCKh_0.5"] = result["mean"]
    metrics["skipped_samples"] = float((~done).sum())
    return metrics
