"""Search spaces as Optuna define-by-run functions over flat TrialConfig keys, each with the paper's point.

Tune pickles the searcher, and with it the define function, into every experiment checkpoint: the functions and
GridDefine keep their names and this module its path, and renamed spaces keep their old names as aliases
(`pocc` -> `occluders`, `tilting` -> `targeted`), so experiments made before a rename still `--resume`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from datasets.occlusion.targeted import TARGETED
from datasets.occlusion.lja import paper_point as lja_paper_point
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


OCCLUDER_MODELS = ("simplebaseline_r18", "simplebaseline_r50", "hrnet_w32", "vitpose_b")
POCC_MODELS = OCCLUDER_MODELS  # the name before the rename


def occluders_space(trial) -> None:
    """How many training samples get random occluders (p_occ), how large they are, and on which model."""
    trial.suggest_float("occ.p_occ", 0.0, 1.0)
    trial.suggest_float("occ.occluder_area_max", 0.05, 0.4)
    trial.suggest_categorical("model.name", OCCLUDER_MODELS)


def targeted_space(trial) -> None:
    """The augmentation paper's targeted augmentations: which one, with label removal or not, how often."""
    kind = trial.suggest_categorical("occ.targeted", ("none",) + TARGETED)
    if kind != "none":
        trial.suggest_categorical("occ.label_removal", [True, False])
        trial.suggest_float("occ.targeted_p", 0.1, 1.0)


# The names before the rename: searchers pickled by experiments made then refer to these.
pocc_space = occluders_space
tilting_space = targeted_space


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
    # --searcher grid: the papers' own grids; parameters not in the grid keep the first paper point's values.
    grid: dict = None

    def grid_size(self) -> int:
        size = 1
        for values in (self.grid or {}).values():
            size *= len(values)
        return size

    def grid_define(self) -> "GridDefine":
        if not self.grid:
            raise ValueError(f"the {self.name} space has no grid; use --searcher tpe or random")
        return GridDefine(self.grid, {k: v for k, v in self.paper_points[0].items() if k not in self.grid})


@dataclass(frozen=True)
class GridDefine:
    """Define-by-run over a grid, the rest held at constants; a class, not a closure, because Tune pickles the
    searcher (and with it this function) into every experiment checkpoint."""

    grid: dict
    constants: dict

    def __call__(self, trial) -> dict:
        for key, values in self.grid.items():
            trial.suggest_categorical(key, values)
        return dict(self.constants)


SPACES = {
    "lja": Space(
        name="lja",
        define=lja_space,
        paper_points=({**lja_paper_point(), "loss.schedule": "step", "loss.lambda_max": 0.25, "loss.step_at": 0.5},),
        fixed={"lja.enabled": True, "loss.structure": True},
        # The LJA paper's quantity x size table.
        grid={"lja.quantity_ratio": [0.05, 0.10, 0.15, 0.20, 0.25], "lja.size_ratio": [0.10, 0.15, 0.20, 0.25, 0.30]},
    ),
    # The occluded view comes from LJA at its paper point. The OASNet seed fixes the method, not these numbers:
    # L2, detached, lambda_mimic 0.01 and lambda_o 1 are the platform's defaults, searched around.
    "oasnet": Space(
        name="oasnet",
        define=oasnet_space,
        paper_points=({"oasnet.mimic": "l2", "oasnet.detach": True, "oasnet.lambda_mimic": 1e-2,
                       "oasnet.lambda_o": 1.0},),
        fixed={"oasnet.enabled": True, "lja.enabled": True, **lja_paper_point(), "loss.structure": False},
        grid={"oasnet.mimic": list(MIMIC_LOSSES), "oasnet.detach": [True, False]},
    ),
    "occluders": Space(
        name="occluders",
        define=occluders_space,
        paper_points=({"occ.p_occ": 0.5, "occ.occluder_area_max": 0.15, "model.name": "simplebaseline_r18"},),
        fixed={"lja.enabled": False, "loss.structure": False},
        grid={"occ.p_occ": [0.0, 0.25, 0.5, 0.75, 1.0]},
    ),
    # The plain model first: the augmentations are judged against it.
    "targeted": Space(
        name="targeted",
        define=targeted_space,
        paper_points=({"occ.targeted": "none"},),
        fixed={"lja.enabled": False, "loss.structure": False},
        grid={"occ.targeted": ["none", *TARGETED], "occ.label_removal": [False, True]},
    ),
}
METHODS = tuple(SPACES)
# Old space (and `search.method`) names, still accepted wherever a name is read: --space, stored experiments.
ALIASES = {"pocc": "occluders", "tilting": "targeted"}
LEGACY_METHODS = ("lja", "oasnet", "pocc", "tilting")  # `search.method`'s choices before the rename


def canonical(name: str) -> str:
    """The current name of a space or method given by either name (`pocc` -> `occluders`); others unchanged."""
    return ALIASES.get(name, name)


def _method_then_its_space(trial, methods: tuple[str, ...]) -> dict:
    method = canonical(trial.suggest_categorical("search.method", methods))
    SPACES[method].define(trial)
    return {**SPACES[method].fixed}


def methods_space(trial) -> dict:
    """The union: the method is the top-level choice, then its own space; its fixed settings come back as
    constants so each trial switches on exactly its method."""
    return _method_then_its_space(trial, METHODS)


def all_space(trial) -> dict:
    """`methods_space` under the old method names, for `--space all` experiments made before the rename: their
    pickled searcher calls this, and their Optuna study only accepts the categorical choices it already holds."""
    return _method_then_its_space(trial, LEGACY_METHODS)


SPACES["all"] = Space(
    name="all",
    define=methods_space,
    paper_points=tuple({"search.method": m, **SPACES[m].paper_points[0]} for m in METHODS),
    fixed={},
)
