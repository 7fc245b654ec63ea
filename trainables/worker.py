"""One trial's training loop, runnable without Ray (`python -m trainables.worker`) or as a Ray Train worker.

The loop talks to the outside world only through a Reporter (restore a checkpoint, report an epoch), so the
same code runs under Ray Train (RayReporter) and on its own for debugging (LocalReporter).
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from datasets.annotations import load_records
from datasets.codec import HeatmapCodec
from datasets.evaluation.splits import EvalSplit, load_eval_split  # noqa: F401  (importers use this path)
from datasets.meta import get as dataset_meta
from datasets.occlusion import build_occlusions
from datasets.topdown_dataset import Augment, TopDownDataset, collate_skip_none
from trainables.config import TrialConfig
from trainables.engine import evaluate, heatmap_loss, train_one_epoch
from trainables.losses import DynamicStructureLoss, LambdaSchedule, MimicLoss, StructureAwareLoss, keypoint_mse
from trainables.oasnet import OASNet, OASNetLoss
from trainables.hardware import peak_flops
from trainables.models import count_flops, create_model

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
MODEL_FILE = "model.pt"
CONFIG_FILE = "trial_config.json"
METRICS_FILE = "metrics.json"


class LocalReporter:
    """Keeps checkpoints in a directory; for runs without Ray."""

    rank, world_size = 0, 1

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.history: list[dict] = []

    def device(self) -> torch.device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def prepare_model(self, model):
        return model.to(self.device())

    def restore(self) -> Path | None:
        return self.directory if (self.directory / STATE_FILE).exists() else None

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        self.history.append(metrics)
        if checkpoint_dir is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            for item in Path(checkpoint_dir).iterdir():
                item.replace(self.directory / item.name)
        log.info("epoch %s: %s", metrics["epoch"], json.dumps(metrics))




def build_model(cfg: TrialConfig):
    model = create_model(cfg.model.name, dataset_meta(cfg.data.dataset).skeleton.num_keypoints,
                         pretrained=cfg.model.pretrained if cfg.model.pretrained not in ("", "none") else False,
                         deconv_channels=cfg.model.deconv_channels, input_hw=(cfg.data.input_h, cfg.data.input_w))
    return OASNet(model) if cfg.oasnet.enabled else model


def load_checkpoint(checkpoint: Path):
    """(model in eval mode on the CPU, its TrialConfig) from a trial checkpoint directory (model.pt +
    trial_config.json, what every trial saves)."""
    for name in (MODEL_FILE, CONFIG_FILE):
        if not (checkpoint / name).is_file():
            raise ValueError(f"checkpoint {checkpoint}: no {name} (expected a trial checkpoint directory)")
    cfg = TrialConfig.from_flat(json.loads((checkpoint / CONFIG_FILE).read_text()))
    model = build_model(cfg.replace(**{"model.pretrained": ""}))  # the checkpoint holds every weight
    model.load_state_dict(torch.load(checkpoint / MODEL_FILE, map_location="cpu"))
    return model.eval(), cfg


def build_loss(cfg: TrialConfig, skeleton, model):
    """compute_loss(model, batch, progress) for train_one_epoch."""
    if cfg.oasnet.enabled:
        o = cfg.oasnet
        mimic = MimicLoss(o.mimic, model.channels, detach=o.detach).to(next(model.parameters()).device)
        return OASNetLoss(mimic, lambda_o=o.lambda_o, lambda_mimic=o.lambda_mimic)
    loss = cfg.loss
    if loss.structure:
        schedule = LambdaSchedule(loss.schedule, loss.lambda_max, loss.step_at, loss.ramp_until, loss.exp_rate)
        return heatmap_loss(DynamicStructureLoss(skeleton.limb_chains, skeleton.num_keypoints, schedule))
    if loss.structure_aware_alpha > 0:
        return heatmap_loss(StructureAwareLoss(skeleton.bones, skeleton.num_keypoints, loss.structure_aware_alpha))
    return heatmap_loss(lambda pred, target, weight, progress: (keypoint_mse(pred, target, weight), {}))


def _enabled(setting: str, device: torch.device) -> bool:
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def train_loader(cfg: TrialConfig, train_set: TopDownDataset, sampler, device: torch.device, channels_last: bool):
    """(batches for train_one_epoch, the GPU batcher or None). With runtime.gpu_augment the loader only reads JPEG
    bytes and draws each sample's parameters (the CPU path's own code and random stream); decode, affine warp, LJA
    and heatmaps run on the device for the whole batch (datasets/gpu_augment.py)."""
    from datasets import gpu_augment

    setting = cfg.runtime.gpu_augment
    use_gpu = setting == "on" or (setting == "auto" and device.type == "cuda")
    if use_gpu:
        try:
            gpu_augment.check_supported(train_set)
        except ValueError:
            if setting == "on":
                raise
            use_gpu = False  # auto: this configuration needs the CPU pipeline
    loader = torch.utils.data.DataLoader(
        gpu_augment.GpuTopDownSource(train_set) if use_gpu else train_set,
        batch_size=cfg.optim.batch_size, shuffle=sampler is None, sampler=sampler,
        collate_fn=gpu_augment.collate_gpu if use_gpu else collate_skip_none,
        # drop_last keeps batches equal (BatchNorm, DDP) but must not drop a whole small dataset.
        drop_last=len(train_set) > cfg.optim.batch_size, generator=torch.Generator().manual_seed(cfg.runtime.seed),
        # Worker processes for the GPU path's light CPU half only: the CPU pipeline counts unreadable images in
        # its dataset object, which a worker process would copy. Not persistent: each epoch's workers must see the
        # dataset's new epoch (set_epoch) for their randomness.
        num_workers=cfg.runtime.loader_workers if use_gpu else 0,
    )
    if not use_gpu:
        return loader, None
    batcher = gpu_augment.GpuTopDownBatcher(train_set.codec, device, channels_last=channels_last)
    return gpu_augment.DeviceLoader(loader, batcher), batcher


def fit(cfg: TrialConfig, reporter) -> None:
    fit_started = time.perf_counter()
    cfg.validate()
    torch.manual_seed(cfg.runtime.seed)
    torch.set_num_threads(cfg.runtime.threads_per_worker or cfg.runtime.cpus_per_worker)
    skeleton = dataset_meta(cfg.data.dataset).skeleton
    codec = HeatmapCodec((cfg.data.input_h, cfg.data.input_w), sigma=cfg.data.sigma, decode=cfg.data.decode)
    device = reporter.device()

    data = cfg.data
    train_records = load_records(data.train_ann, data.train_images, skeleton)
    if data.max_train_samples:
        train_records = train_records[: data.max_train_samples]
    augment = Augment(data.scale_factor, data.rotation, data.rotation_p, flip_p=data.flip_p,
                      half_body_p=data.half_body_p, photometric_p=data.photometric_p)
    train_set = TopDownDataset(train_records, skeleton, codec, train=True, augment=augment, seed=cfg.runtime.seed,
                               occlusions=build_occlusions(cfg.lja, cfg.occ, skeleton), siamese=cfg.oasnet.enabled)
    sampler = None
    if reporter.world_size > 1:
        sampler = torch.utils.data.DistributedSampler(
            train_set, reporter.world_size, reporter.rank, shuffle=True, seed=cfg.runtime.seed
        )
    amp, channels_last = _enabled(cfg.runtime.amp, device), _enabled(cfg.runtime.channels_last, device)
    loader, gpu_batcher = train_loader(cfg, train_set, sampler, device, channels_last)

    model = build_model(cfg)
    # forward + backward ~ 3x forward; OASNet runs two views per sample
    flops_per_image = 3 * count_flops(model, codec.input_hw) * (2 if cfg.oasnet.enabled else 1)
    loss_fn = build_loss(cfg, skeleton, _unwrap(model).to(device))
    model = reporter.prepare_model(model)
    peak = cfg.runtime.peak_flops or peak_flops(device, amp)  # one worker's device, as images_per_s is per worker
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    milestones = sorted({max(1, round(f * cfg.optim.epochs)) for f in cfg.optim.lr_decay_at})
    lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)

    start_epoch = 0
    restored = reporter.restore()
    if restored is not None:
        state = torch.load(restored / STATE_FILE, map_location=device, weights_only=False)
        _unwrap(model).load_state_dict(torch.load(restored / MODEL_FILE, map_location=device))
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        start_epoch = state["epoch"] + 1
        log.info("restored from %s, continuing at epoch %d", restored, start_epoch)
        # Report the restored epoch once more: if the previous run died between saving this checkpoint and
        # its metrics reaching the tracker, they arrive now (the tracker drops epochs it already has).
        if (restored / METRICS_FILE).exists():
            reporter.report(json.loads((restored / METRICS_FILE).read_text()), None)

    eval_splits = {}
    if reporter.rank == 0:
        protocol = dataset_meta(data.dataset).protocol
        splits = {"val": (data.val_ann, data.val_images), "val_occ": (data.val_occ_ann, data.val_occ_images)}
        for split, (ann, images) in splits.items():
            if not ann:
                continue
            loaded = load_eval_split(protocol, ann, images or data.val_images, skeleton, data.max_val_samples,
                                     det_file=data.det_file if split == data.det_split else "",
                                     gt_mat=data.val_gt if split == "val" else "")
            eval_splits[split] = (TopDownDataset(loaded.records, skeleton, codec, train=False), loaded.scorer)

    # Where a trial's time goes (tests/benchmarks/search_overhead.py): time/train_s and time/eval_s are the steps;
    # time/setup_s is this process's data loading, model building and restore before the first epoch.
    setup_s = time.perf_counter() - fit_started
    for epoch in range(start_epoch, cfg.optim.epochs):
        epoch_start = time.perf_counter()
        train_set.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        stats = train_one_epoch(model, loss_fn, optimizer, loader, epoch, cfg.optim.epochs, device,
                                cfg.optim.grad_clip, amp=amp, channels_last=channels_last)
        lr_scheduler.step()
        # "epoch" counts completed epochs (1-based): the MLflow step and ASHA's time axis, stable across resumes.
        metrics = {"epoch": epoch + 1, **{f"train/{k}": v for k, v in stats.items()}}
        metrics["train/lr"] = optimizer.param_groups[0]["lr"]
        metrics["train/tflops"] = flops_per_image * stats["images_per_s"] / 1e12
        if peak > 0:
            metrics["train/mfu"] = flops_per_image * stats["images_per_s"] / peak
        metrics["data/skipped_samples"] = float(len(train_set.skipped | getattr(gpu_batcher, "skipped", set())))
        if train_set.skipped and reporter.rank == 0:
            files = sorted({str(train_records[i].file) for i in train_set.skipped})
            log.warning("epoch %d: %d training samples skipped so far (unreadable images: %s)", epoch + 1,
                        len(train_set.skipped), ", ".join(files[:5]) + (" ..." if len(files) > 5 else ""))
        eval_start = time.perf_counter()
        for split, (dataset, scorer) in eval_splits.items():
            for key, value in evaluate(_unwrap(model), dataset, scorer, codec, device, data.flip_test).items():
                metrics[f"{split}/{key}"] = value
        metrics |= {"time/train_s": stats["time_s"], "time/eval_s": time.perf_counter() - eval_start,
                    "time/setup_s": setup_s}
        metrics["epoch_time_s"] = time.perf_counter() - epoch_start
        if reporter.rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                torch.save(_unwrap(model).state_dict(), Path(tmp) / MODEL_FILE)
                torch.save({"optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(),
                            "epoch": epoch}, Path(tmp) / STATE_FILE)
                (Path(tmp) / CONFIG_FILE).write_text(json.dumps(cfg.flat(), default=list))
                (Path(tmp) / METRICS_FILE).write_text(json.dumps(metrics))
                reporter.report(metrics, Path(tmp))
        else:
            reporter.report(metrics, None)


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


class RayReporter:
    def __init__(self):
        import ray.train

        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self._checkpoint_dir = None

    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare_model(self, model):
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def restore(self) -> Path | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        # Copy out: the checkpoint may live in remote storage (s3://, NFS).
        self._checkpoint_dir = Path(checkpoint.to_directory())
        return self._checkpoint_dir

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        # Which Ray node ran the epoch: on a cluster, the tracker records where each trial ran.
        ray.train.report({**metrics, "ray_node": ray.get_runtime_context().get_node_id()}, checkpoint=checkpoint)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Train one trial without Ray (for debugging).")
    parser.add_argument("--out", type=Path, default=Path(".cache/local-trial"))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="trial config overrides, e.g. optim.epochs=2 lja.p=0.5")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from datasets.synthetic import SyntheticSpec, ensure_dataset

    overrides = dict(item.split("=", 1) for item in args.set)
    cfg = TrialConfig.from_flat(overrides)
    if not cfg.data.train_ann:
        cfg = with_synthetic_paths(cfg, ensure_dataset(SyntheticSpec(seed=cfg.runtime.seed)))
    fit(cfg, LocalReporter(args.out))


def with_synthetic_paths(cfg: TrialConfig, paths) -> TrialConfig:
    return cfg.replace(**{
        "data.root": str(paths.root),
        "data.train_ann": str(paths.annotations["train"]),
        "data.val_ann": str(paths.annotations["val"]),
        "data.val_occ_ann": str(paths.annotations["val_occ"]),
        "data.train_images": str(paths.images["train"]),
        "data.val_images": str(paths.images["val"]),
        "data.val_occ_images": str(paths.images["val"]),
    })


if __name__ == "__main__":
    main()
