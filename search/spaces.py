"""Search spaces as Optuna define-by-run functions over flat TrialConfig keys, each with the paper's point."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from trainables.losses import SCHEDULES


def lja_space(trial) -> None:
    """LJA occlusion ratios and probability, plus the DSL schedule with its own conditional parameter."""
    trial.suggest_float("lja.quantity_ratio", 0.05, 0.40)
    trial.suggest_float("lja.size_ratio", 0.05, 0.40)
    trial.suggest_float("lja.p", 0.0, 1.0)
    schedule = trial.suggest_categorical("loss.schedule", SCHEDULES)
    trial.suggest_float("loss.lambda_max", 0.1, 3.0, log=True)
    if schedule == "step":
        trial.suggest_float("loss.step_at", 0.1, 0.9)
    elif schedule == "linear":
        trial.suggest_float("loss.ramp_until", 0.1, 1.0)
    elif schedule == "exponential":
        trial.suggest_float("loss.exp_rate", 1.0, 10.0)


@dataclass(frozen=True)
class Space:
    name: str
    define: Callable
    # Evaluated first: the paper's published setting, so every search is anchored to it. The paper fixes LJA's
    # point and the step schedule; lambda_max = 0.25 is ours: the summed structure maps make the limb term about
    # 4x the keypoint MSE, and 0.25 weighs the two alike.
    paper_points: tuple[dict, ...]
    # Fixed config for every trial of this space (e.g. which method is switched on).
    fixed: dict


SPACES = {
    "lja": Space(
        name="lja",
        define=lja_space,
        paper_points=({
            "lja.quantity_ratio": 0.15, "lja.size_ratio": 0.20, "lja.p": 1.0,
            "loss.schedule": "step", "loss.lambda_max": 0.25, "loss.step_at": 0.5,
        },),
        fixed={"lja.enabled": True, "loss.structure": True},
    ),
}
