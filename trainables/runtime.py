"""Where a trial runs: the training context `fit` talks to, on its own (LocalReporter) or as a Ray Train worker
(RayReporter). A context gives the rank and world size, the device, prepares the model (DDP under Ray), hands back
the checkpoint to resume from and takes each epoch's metrics and checkpoint directory.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from datasets.atomic import move_file, write_json
from trainables.checkpoint import CONFIG_FILE, STATE_FILE, CheckpointNotWritten, has_state, saved_epochs

log = logging.getLogger(__name__)
# The train loop config's key (not a TrialConfig setting) of the checkpoint a new Train run starts from: a PBT
# trial's own or its donor's, given by the trial driver (search/pbt.py).
START_FROM_KEY = "_start_from"


def apply_config_lr(optimizer, lr_scheduler, restored: Path, lr: float) -> float:
    """Make the config's learning rate `lr` win over the one restored from the checkpoint in `restored` (PBT
    continues a donor's optimiser with a perturbed rate): every param group's rate, its `initial_lr` and the
    scheduler's base rates are scaled by lr / the checkpoint's `optim.lr`; the scheduler keeps its epoch count, so
    its decays already taken stay applied. Returns that factor (1.0: same rate, or a checkpoint without a config)."""
    path = Path(restored) / CONFIG_FILE
    saved = json.loads(path.read_text()).get("optim.lr") if path.is_file() else None
    if not saved or float(saved) == lr:
        return 1.0
    factor = lr / float(saved)
    for group in optimizer.param_groups:
        group["lr"] *= factor
        if "initial_lr" in group:
            group["initial_lr"] *= factor
    lr_scheduler.base_lrs = [base * factor for base in lr_scheduler.base_lrs]
    lr_scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # what get_last_lr() reports
    return factor


def enabled(setting: str, device: torch.device) -> bool:
    """A runtime switch (trainables.config.SWITCHES): "on", or "auto" on a GPU."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def unwrap(model):
    """The bare model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


class LocalReporter:
    """Keeps checkpoints in a directory; for runs without Ray.

    Each epoch's checkpoint files are first moved into a staging directory inside `directory` (copied when the
    trainer's temporary directory lies on another file system: --out on a disk, $TMPDIR on a tmpfs), and a manifest
    marks the staged set complete; only then are they renamed into place, the trainer state last. A run killed while
    staging keeps the previous epoch's checkpoint whole; one killed while renaming is rolled forward by `restore`.
    No file in `directory` is ever 0-byte or half-written."""

    rank, world_size = 0, 1
    STAGING = ".checkpoint-incoming"
    MANIFEST = ".complete.json"

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.history: list[dict] = []

    def device(self) -> torch.device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def prepare_model(self, model):
        return model.to(self.device())

    def restore(self) -> Path | None:
        if (self.directory / self.STAGING / self.MANIFEST).exists():
            self._commit()  # the previous run was killed between the renames: finish them
        return self.directory if has_state(self.directory) else None

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        self.history.append(metrics)
        if checkpoint_dir is not None:
            try:
                self._stage(Path(checkpoint_dir))
            except OSError as err:  # a full disk (or quota): drop the partial set, keep the last whole checkpoint
                shutil.rmtree(self.directory / self.STAGING, ignore_errors=True)
                kept = self._kept()
                raise CheckpointNotWritten(
                    err.errno, f"{self.directory}: the checkpoint of epoch {metrics['epoch']} could not be written "
                    f"({err.strerror or err}); kept: {kept}, whole; nothing half-written is left") from err
            self._commit()
        log.info("epoch %s: %s", metrics["epoch"], json.dumps(metrics))

    def _stage(self, source: Path) -> None:
        staging = self.directory / self.STAGING
        shutil.rmtree(staging, ignore_errors=True)  # a partial copy left by a run killed while staging
        staging.mkdir(parents=True)
        names = sorted(item.name for item in source.iterdir())
        for name in names:
            if not (source / name).is_file():
                raise ValueError(f"checkpoint {source}: {name} is not a file (a checkpoint is a flat directory)")
            move_file(source / name, staging / name)
        write_json(staging / self.MANIFEST, names)

    def _kept(self) -> str:
        """What the directory holds, in words, for a message."""
        if not has_state(self.directory):
            return "no checkpoint (none was written before)"
        try:
            return f"the checkpoint of epoch {saved_epochs(self.directory)}"
        except Exception:  # noqa: BLE001 - only a message depends on it; the failure being reported comes first
            return "the previous checkpoint"

    def _commit(self) -> None:
        staging = self.directory / self.STAGING
        names = json.loads((staging / self.MANIFEST).read_text())
        for name in sorted(names, key=lambda n: n == STATE_FILE):  # the state (resume's epoch counter) last
            if (staging / name).exists():
                os.replace(staging / name, self.directory / name)
        shutil.rmtree(staging)


class RayReporter:
    """The Ray Train worker's context (ray.train's context, device, prepare_model, checkpoint and report).
    `start_from`: the checkpoint (ray.train.Checkpoint) a new Train run starts from when it has none of its own."""

    def __init__(self, start_from=None):
        import ray.train

        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self._checkpoint_dir = None
        self._start_from = start_from

    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare_model(self, model):
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def restore(self) -> Path | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint() or self._start_from  # the run's own first (a worker restart)
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
