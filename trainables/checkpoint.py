"""A trial checkpoint: one directory with the model's weights, the optimizer/scheduler state, the trial config and
the epoch's metrics. Every trial saves one per epoch (rank 0); resuming reads it back, and the robustness sweep and
the model registry load the model from it (`load_checkpoint`).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from trainables.config import TrialConfig
from trainables.build import build_model

STATE_FILE = "trainer_state.pt"  # {"optimizer", "lr_scheduler", "epoch" (0-based, completed)}
MODEL_FILE = "model.pt"  # the bare model's state dict (no DDP "module." prefix)
CONFIG_FILE = "trial_config.json"  # TrialConfig.flat()
METRICS_FILE = "metrics.json"  # the epoch's reported metrics


def save(directory: Path, model, optimizer, lr_scheduler, epoch: int, cfg: TrialConfig, metrics: dict) -> None:
    """Write the checkpoint of 0-based `epoch` into `directory`; `model` is the bare (unwrapped) model."""
    directory = Path(directory)
    torch.save(model.state_dict(), directory / MODEL_FILE)
    torch.save({"optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(), "epoch": epoch},
               directory / STATE_FILE)
    (directory / CONFIG_FILE).write_text(json.dumps(cfg.flat(), default=list))
    (directory / METRICS_FILE).write_text(json.dumps(metrics))


def restore(directory: Path, model, optimizer, lr_scheduler, device) -> tuple[int, dict | None]:
    """Load a checkpoint into the bare `model`, `optimizer` and `lr_scheduler`; (the epoch to continue at, the saved
    epoch's metrics or None when the checkpoint has none)."""
    directory = Path(directory)
    state = torch.load(directory / STATE_FILE, map_location=device, weights_only=False)
    model.load_state_dict(torch.load(directory / MODEL_FILE, map_location=device))
    optimizer.load_state_dict(state["optimizer"])
    lr_scheduler.load_state_dict(state["lr_scheduler"])
    metrics = json.loads((directory / METRICS_FILE).read_text()) if (directory / METRICS_FILE).exists() else None
    return state["epoch"] + 1, metrics


def has_state(directory: Path) -> bool:
    """Whether `directory` holds a checkpoint a trial can resume from."""
    return (Path(directory) / STATE_FILE).exists()


def config_changes(directory: Path, cfg: TrialConfig) -> dict[str, tuple]:
    """{setting: (the checkpoint's value, `cfg`'s)} for every setting of the checkpoint in `directory` that `cfg`
    sets otherwise (a setting one of them lacks counts, its value None)."""
    saved = json.loads((Path(directory) / CONFIG_FILE).read_text()) if (Path(directory) / CONFIG_FILE).is_file() \
        else {}
    now = json.loads(json.dumps(cfg.flat(), default=list))
    return {key: (saved.get(key), now.get(key)) for key in sorted(set(saved) | set(now))
            if saved.get(key) != now.get(key)}


def saved_epochs(directory: Path) -> int:
    """Epochs the checkpoint in `directory` has completed."""
    return int(torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)["epoch"]) + 1


def load_checkpoint(checkpoint: Path):
    """(model in eval mode on the CPU, its TrialConfig) from a trial checkpoint directory (model.pt +
    trial_config.json, what every trial saves). ValueError when either file is missing."""
    checkpoint = Path(checkpoint)
    for name in (MODEL_FILE, CONFIG_FILE):
        if not (checkpoint / name).is_file():
            raise ValueError(f"checkpoint {checkpoint}: no {name} (expected a trial checkpoint directory)")
    cfg = TrialConfig.from_flat(json.loads((checkpoint / CONFIG_FILE).read_text()))
    model = build_model(cfg.replace(**{"model.pretrained": ""}))  # the checkpoint holds every weight
    model.load_state_dict(torch.load(checkpoint / MODEL_FILE, map_location="cpu"))
    return model.eval(), cfg
