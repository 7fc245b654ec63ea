"""Where a trial runs: the training context `fit` talks to, on its own (LocalReporter) or as a Ray Train worker
(RayReporter). A context gives the rank and world size, the device, prepares the model (DDP under Ray), hands back
the checkpoint to resume from and takes each epoch's metrics and checkpoint directory.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from trainables.checkpoint import has_state

log = logging.getLogger(__name__)


def enabled(setting: str, device: torch.device) -> bool:
    """A runtime switch (trainables.config.SWITCHES): "on", or "auto" on a GPU."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def unwrap(model):
    """The bare model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


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
        return self.directory if has_state(self.directory) else None

    def report(self, metrics: dict, checkpoint_dir: Path | None) -> None:
        self.history.append(metrics)
        if checkpoint_dir is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            for item in Path(checkpoint_dir).iterdir():
                item.replace(self.directory / item.name)
        log.info("epoch %s: %s", metrics["epoch"], json.dumps(metrics))


class RayReporter:
    """The Ray Train worker's context (ray.train's context, device, prepare_model, checkpoint and report)."""

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
