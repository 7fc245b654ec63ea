"""Training recipes: named sets of TrialConfig defaults, each with one set of augmentation settings.

- `synthetic`: the synthetic-CPU default, i.e. DataConfig's own defaults (defined there, read here): mild random
  scale and no flip, half-body or extra rotation, which suit the embedded data on a short CPU budget.
- `hrnet_coco` / `hrnet_mpii`: HRNet's training recipes (Sun et al., CVPR 2019; the deep-high-resolution-net
  configs `experiments/{coco,mpii}/*.yaml` and its JointsDataset, which rotates with probability 0.6): COCO random
  scale +-0.35, rotation +-45 deg, half-body p 0.3; MPII scale +-0.25, rotation +-30 deg, no half-body
  (PROB_HALF_BODY -1); both horizontal flip p 0.5 and flip-test evaluation, with SimpleBaseline-R50 at the
  dataset's input size (datasets.meta: 256x192 COCO, 256x256 MPII).
- `smoke`: a real dataset checked end to end in minutes: HRNet's augmentation (so every transform runs) on the
  smallest model at the synthetic input size.
- `oasnet_hourglass`: OASNet's ablation setting (Zhou et al., ECCV 2020): the 2-stack hourglass at 256x256 on MPII,
  RMSprop at lr 5e-4, x0.1 at epochs 150, 170 and 200 of 220 - kept as fractions of whatever epoch budget the
  trial has - with MPII's augmentation and flip test (`OASNET_HOURGLASS`).

Recipes are flat TrialConfig keys (`data.rotation`, ...): `TrialConfig().replace(**recipe(name))`.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any

from datasets import meta
from trainables.config import DataConfig, ModelConfig

# The data.* fields a recipe sets: augmentation and the evaluation's flip-test.
AUGMENTATION_KEYS = ("scale_factor", "rotation", "rotation_p", "flip_p", "half_body_p", "photometric_p", "flip_test")

# HRNet's numbers: its COCO configs, and what its MPII configs change.
HRNET_AUGMENTATION = {"data.scale_factor": 0.35, "data.rotation": 45.0, "data.rotation_p": 0.6, "data.flip_p": 0.5,
                      "data.half_body_p": 0.3, "data.flip_test": True}
HRNET_MPII_AUGMENTATION = {**HRNET_AUGMENTATION, "data.scale_factor": 0.25, "data.rotation": 30.0,
                           "data.half_body_p": 0.0}
HRNET_MODEL = "simplebaseline_r50"

# OASNet's hourglass recipe: optimiser, learning rate and its step schedule over the paper's 220 epochs.
OASNET_HOURGLASS = {"model.name": "hourglass_2stack", "optim.optimizer": "rmsprop", "optim.lr": 5e-4,
                    "optim.lr_decay_at": (150 / 220, 170 / 220, 200 / 220)}


def _defaults(section, prefix: str, names) -> dict[str, Any]:
    default = section()
    return {f"{prefix}.{f.name}": getattr(default, f.name) for f in fields(default) if f.name in names}


def _hrnet(dataset: str) -> dict[str, Any]:
    input_h, input_w = meta.get(dataset).input_hw
    augmentation = HRNET_MPII_AUGMENTATION if meta.get(dataset).protocol == "mpii" else HRNET_AUGMENTATION
    return {**_defaults(DataConfig, "data", AUGMENTATION_KEYS), **augmentation, "model.name": HRNET_MODEL,
            "data.input_h": input_h, "data.input_w": input_w}


def _synthetic() -> dict[str, Any]:
    return _defaults(DataConfig, "data", AUGMENTATION_KEYS + ("input_h", "input_w"))


def _smoke() -> dict[str, Any]:
    return {**_defaults(DataConfig, "data", ("input_h", "input_w")), **_defaults(ModelConfig, "model", ("name",)),
            **_defaults(DataConfig, "data", AUGMENTATION_KEYS), **HRNET_AUGMENTATION}


def _oasnet_hourglass() -> dict[str, Any]:
    return {**_hrnet("mpii"), **OASNET_HOURGLASS}


RECIPES = {"synthetic": _synthetic, "smoke": _smoke, "hrnet_coco": lambda: _hrnet("coco"),
           "hrnet_mpii": lambda: _hrnet("mpii"), "oasnet_hourglass": _oasnet_hourglass}


def recipe(name: str) -> dict[str, Any]:
    """The flat TrialConfig settings of recipe `name` (one of RECIPES); ValueError naming the choices."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}")
    return RECIPES[name]()


def recipe_name(dataset: str, smoke: bool = False) -> str:
    """The recipe a search on `dataset` trains with: synthetic data keeps its own; a real dataset HRNet's for its
    protocol (MPII's for MPII, COCO's otherwise), or the smoke recipe."""
    if dataset == "synthetic":
        return "synthetic"
    if smoke:
        return "smoke"
    return "hrnet_mpii" if meta.get(dataset).protocol == "mpii" else "hrnet_coco"


def recipe_for(dataset: str, smoke: bool = False, name: str | None = None) -> dict[str, Any]:
    """recipe(name or recipe_name(dataset, smoke)), at the dataset's own input size for a real dataset's recipes
    (a smoke run keeps the smoke recipe's small input)."""
    settings = recipe(name or recipe_name(dataset, smoke))
    if not smoke and dataset != "synthetic":
        settings["data.input_h"], settings["data.input_w"] = meta.get(dataset).input_hw
    return settings
