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


class CheckpointNotWritten(OSError):
    """An epoch's checkpoint could not be written (a full disk, a quota, a read-only file system); str() names the
    directory, the epoch, the cause and what was kept. Nothing half-written is left behind (runtime.py)."""


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


class CheckpointError(ValueError):
    """A checkpoint directory that is not what it claims: a file missing, truncated, not a torch file or not json,
    a config no TrialConfig takes, or weights of another architecture. The message names the file."""


def read_config(checkpoint: Path) -> TrialConfig:
    """The validated TrialConfig of a checkpoint directory's trial_config.json; CheckpointError naming the file."""
    path = Path(checkpoint) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"checkpoint {checkpoint}: no {CONFIG_FILE} (expected a trial checkpoint directory)")
    try:
        flat = json.loads(path.read_text())
        if not isinstance(flat, dict):
            raise ValueError(f"expected a json object of settings, got {type(flat).__name__}")
        return TrialConfig.from_flat(flat).validate()
    except (OSError, UnicodeDecodeError, ValueError) as err:  # json.JSONDecodeError is a ValueError
        raise CheckpointError(f"{path}: not a usable trial config ({err})") from None


def load_checkpoint(checkpoint: Path):
    """(model in eval mode on the CPU, its TrialConfig) from a trial checkpoint directory (model.pt +
    trial_config.json, what every trial saves). CheckpointError (a ValueError) naming the file when either is
    missing, torn or unreadable, or when the weights do not fit the config's model."""
    checkpoint = Path(checkpoint)
    weights = checkpoint / MODEL_FILE
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {checkpoint}: no {MODEL_FILE} (expected a trial checkpoint directory)")
    cfg = read_config(checkpoint)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, EOFError, UnpicklingError, ... alike
        raise CheckpointError(f"{weights}: not a readable torch state dict ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:200] if str(err) else 'truncated or empty'})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{weights}: expected a state dict, got {type(state).__name__}")
    model = build_model(cfg.replace(**{"model.pretrained": ""}))  # the checkpoint holds every weight
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # missing/unexpected keys, shape mismatches
        raise CheckpointError(f"{weights}: its weights do not fit {CONFIG_FILE}'s model {cfg.model.name} "
                              f"({str(err).splitlines()[0][:200]}...)") from None
    return model.eval(), cfg
