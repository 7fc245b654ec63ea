"""`fit`: one trial's training, in the shape of torchvision's references/…/train.py main - data, model, loss,
optimizer, resume, then the epoch loop (train, evaluate, checkpoint, report).

`fit` talks to the outside world only through its context (trainables/runtime.py: restore a checkpoint, report an
epoch), so the same code runs under Ray Train (RayReporter) and on its own for debugging (LocalReporter, the CLI
in trainables/worker.py). Metrics are named by datasets.meta.metric_name (`train/loss`, `val/AP`, `time/train_s`).
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import torch

from datasets import meta
from datasets.annotations import load_record_table
from datasets.evaluation.splits import load_eval_split
from datasets.occlusion import build_occlusions
from datasets.topdown.augment import Augment
from datasets.topdown.codec import HeatmapCodec
from datasets.topdown.dataset import TopDownDataset
from trainables import checkpoint
from trainables.build import build_codec, build_loss, build_model, build_optimizer
from trainables.config import TrialConfig
from trainables.cost import CostMeter
from trainables.engine import evaluate, train_one_epoch
from trainables.hardware import peak_flops
from trainables.loaders import train_loader
from trainables.profiling import ProfileWindow
from trainables.runtime import apply_config_lr, enabled, unwrap

log = logging.getLogger(__name__)


def eval_datasets(cfg: TrialConfig, codec: HeatmapCodec) -> dict[str, tuple[TopDownDataset, object]]:
    """{split: (its crops, its scorer)} for the evaluation splits the trial config names (val, val_occ)."""
    data, dataset = cfg.data, meta.get(cfg.data.dataset)
    splits = {"val": (data.val_ann, data.val_images), "val_occ": (data.val_occ_ann, data.val_occ_images)}
    out = {}
    for split, (ann, images) in splits.items():
        if not ann:
            continue
        loaded = load_eval_split(dataset.protocol, ann, images or data.val_images, dataset.skeleton,
                                 data.max_val_samples, det_file=data.det_file if split == data.det_split else "",
                                 gt_mat=data.val_gt if split == "val" else "")
        out[split] = (TopDownDataset(loaded.records, dataset.skeleton, codec, train=False), loaded.scorer)
    return out


def fit(cfg: TrialConfig, reporter, profile_dir: Path | None = None) -> None:
    """Train the trial `cfg` for optim.epochs, resuming from the context's checkpoint if it has one; each epoch is
    evaluated (rank 0), checkpointed (rank 0, trainables/checkpoint.py) and reported through `reporter`.
    ValueError from cfg.validate() before anything is loaded; engine.NonFiniteLoss when the loss diverges.
    profile_dir: record a few steps of the first epoch trained with torch.profiler (trainables/profiling.py)."""
    fit_started = time.perf_counter()
    cfg.validate()
    torch.manual_seed(cfg.runtime.seed)
    torch.set_num_threads(cfg.runtime.threads_per_worker or cfg.runtime.cpus_per_worker)
    data = cfg.data
    skeleton = meta.get(data.dataset).skeleton
    codec = build_codec(cfg)
    device = reporter.device()
    amp, channels_last = enabled(cfg.runtime.amp, device), enabled(cfg.runtime.channels_last, device)

    # Data
    train_records = load_record_table(data.train_ann, data.train_images, skeleton)
    if data.max_train_samples:
        train_records = train_records[: data.max_train_samples]
    augment = Augment(data.scale_factor, data.rotation, data.rotation_p, flip_p=data.flip_p,
                      half_body_p=data.half_body_p, photometric_p=data.photometric_p)
    train_set = TopDownDataset(train_records, skeleton, codec, train=True, augment=augment,
                               seed=cfg.runtime.seed, occlusions=build_occlusions(cfg.lja, cfg.occ, skeleton),
                               siamese=cfg.oasnet.enabled, region_store=data.region_store or None)
    sampler = None
    if reporter.world_size > 1:
        sampler = torch.utils.data.DistributedSampler(
            train_set, reporter.world_size, reporter.rank, shuffle=True, seed=cfg.runtime.seed
        )
    loader, gpu_batcher = train_loader(cfg, train_set, sampler, device, channels_last)

    # Model and loss
    model = build_model(cfg)
    # What the trial costs (trainables/cost.py); its training FLOPs per sample (OASNet: two views) also give tflops
    cost = CostMeter.for_trial(model, codec.input_hw, device, cfg.runtime, views=2 if cfg.oasnet.enabled else 1,
                               flip_test=data.flip_test, started=fit_started)
    flops_per_image = cost.train_flops
    loss_fn = build_loss(cfg, skeleton, unwrap(model).to(device))
    model = reporter.prepare_model(model)
    peak = cfg.runtime.peak_flops or peak_flops(device, amp)  # one worker's device, as images_per_s is per worker
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    # Optimizer: Adam with 10x decays at fractions of the epoch budget
    optimizer = build_optimizer(cfg, model.parameters())
    milestones = sorted({max(1, round(f * cfg.optim.epochs)) for f in cfg.optim.lr_decay_at})
    lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)

    # Resume
    start_epoch = 0
    restored = reporter.restore()
    if restored is not None:
        start_epoch, restored_metrics = checkpoint.restore(restored, unwrap(model), optimizer, lr_scheduler, device)
        apply_config_lr(optimizer, lr_scheduler, restored, cfg.optim.lr)  # PBT: a perturbed rate over the donor's
        log.info("restored from %s, continuing at epoch %d", restored, start_epoch)
        # Report the restored epoch once more: if the previous run died between saving this checkpoint and
        # its metrics reaching the tracker, they arrive now (the tracker drops epochs it already has).
        if restored_metrics is not None:
            reporter.report(restored_metrics, None)
        cost.resume(restored_metrics)  # its cumulative counters continue from the checkpoint's

    eval_splits = eval_datasets(cfg, codec) if reporter.rank == 0 else {}

    # Where a trial's time goes (tests/benchmarks/search_overhead.py): time/train_s and time/eval_s are the steps;
    # time/setup_s is this process's data loading, model building and restore before the first epoch.
    setup_s = time.perf_counter() - fit_started
    profile = ProfileWindow.for_steps(profile_dir, device, len(loader)) if profile_dir else None
    for epoch in range(start_epoch, cfg.optim.epochs):
        epoch_start = time.perf_counter()
        train_set.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        stats = train_one_epoch(model, loss_fn, optimizer, loader, epoch, cfg.optim.epochs, device,
                                cfg.optim.grad_clip, amp=amp, channels_last=channels_last, profile=profile)
        lr = optimizer.param_groups[0]["lr"]  # the rate this epoch trained at, before the scheduler moves it
        lr_scheduler.step()
        # "epoch" counts completed epochs (1-based): the MLflow step and ASHA's time axis, stable across resumes.
        images = stats.pop("images")
        metrics = {"epoch": epoch + 1, **{meta.metric_name("train", k): v for k, v in stats.items()}}
        metrics[meta.metric_name("train", "lr")] = lr
        metrics[meta.metric_name("train", "tflops")] = flops_per_image * stats["images_per_s"] / 1e12
        if peak > 0:
            metrics[meta.metric_name("train", "mfu")] = flops_per_image * stats["images_per_s"] / peak
        skipped = train_set.skipped | getattr(gpu_batcher, "skipped", set())
        metrics[meta.metric_name("data", "skipped_samples")] = float(len(skipped))
        if skipped and reporter.rank == 0:
            log.warning("epoch %d: %d training samples skipped so far (faulty images: %s)", epoch + 1,
                        len(skipped), skipped_files(train_set, skipped))
        eval_start = time.perf_counter()
        for split, (dataset, scorer) in eval_splits.items():
            for key, value in evaluate(unwrap(model), dataset, scorer, codec, device, data.flip_test).items():
                metrics[meta.metric_name(split, key)] = value
            if dataset.skipped:
                log.warning("epoch %d: %d %s samples skipped (faulty images: %s)", epoch + 1, len(dataset.skipped),
                            split, skipped_files(dataset, dataset.skipped))
        metrics |= cost.epoch(images, sum(len(dataset) - int(metrics[meta.metric_name(split, "skipped_samples")])
                                          for split, (dataset, _) in eval_splits.items()))
        metrics |= {meta.metric_name("time", "train_s"): stats["time_s"],
                    meta.metric_name("time", "eval_s"): time.perf_counter() - eval_start,
                    meta.metric_name("time", "setup_s"): setup_s}
        metrics["epoch_time_s"] = time.perf_counter() - epoch_start
        if reporter.rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint.save(Path(tmp), unwrap(model), optimizer, lr_scheduler, epoch, cfg, metrics)
                reporter.report(metrics, Path(tmp))
        else:
            reporter.report(metrics, None)


def skipped_files(dataset: TopDownDataset, indices, shown: int = 5) -> str:
    """The files of skipped samples `indices`, each with its fault where this process saw it (a loader worker's
    are logged there), the first `shown` of them."""
    files = {}
    for i in sorted(indices):
        files.setdefault(str(dataset.records.file(i)), dataset.faults.get(i))
    names = [f"{f} ({why})" if why else f for f, why in sorted(files.items())]
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
