"""Search spaces as Optuna define-by-run functions over flat TrialConfig keys, each with the paper's point."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from trainables.losses import MIMIC_LOSSES, SCHEDULES


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


def oasnet_space(trial) -> None:
    """OASNet's mimic loss: its kind, whether the clean branch is detached, its weight, and the occlusion branch's
    weight. KL divergences between channel distributions are small numbers, hence its larger weights."""
    kind = trial.suggest_categorical("oasnet.mimic", MIMIC_LOSSES)
    trial.suggest_categorical("oasnet.detach", [True, False])
    low, high = (1.0, 1000.0) if kind == "kl" else (1e-4, 1e-1)
    trial.suggest_float("oasnet.lambda_mimic", low, high, log=True)
    trial.suggest_float("oasnet.lambda_o", 0.1, 10.0, log=True)


POCC_MODELS = ("simplebaseline_r18", "simplebaseline_r50", "hrnet_w32", "vitpose_b")


def pocc_space(trial) -> None:
    """How many training samples get random occluders (p_occ), how large they are, and on which model."""
    trial.suggest_float("occ.p_occ", 0.0, 1.0)
    trial.suggest_float("occ.occluder_area_max", 0.05, 0.4)
    trial.suggest_categorical("model.name", POCC_MODELS)


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
    # The occluded view comes from LJA at its paper point. The OASNet seed fixes the method, not these numbers:
    # L2, detached, lambda_mimic 0.01 and lambda_o 1 are the platform's defaults, searched around.
    "oasnet": Space(
        name="oasnet",
        define=oasnet_space,
        paper_points=({"oasnet.mimic": "l2", "oasnet.detach": True, "oasnet.lambda_mimic": 1e-2,
                       "oasnet.lambda_o": 1.0},),
        fixed={"oasnet.enabled": True, "lja.enabled": True, "lja.quantity_ratio": 0.15, "lja.size_ratio": 0.20,
               "lja.p": 1.0, "loss.structure": False},
    ),
    "pocc": Space(
        name="pocc",
        define=pocc_space,
        paper_points=({"occ.p_occ": 0.5, "occ.occluder_area_max": 0.15, "model.name": "simplebaseline_r18"},),
        fixed={"lja.enabled": False, "loss.structure": False},
    ),
}
