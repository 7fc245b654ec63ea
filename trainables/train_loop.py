"""Ray Train's train_loop_per_worker, kept in a module that imports nothing heavy.

Ray unpickles this function in every process that holds the TorchTrainer - the trial driver and Train's controller,
which never train - and unpickling imports its module. Here that costs nothing; only the training workers import
the trainer (torch, OpenCV, albumentations, pycocotools: ~2 s more per process, measured in BENCHMARKS.md).
"""
from __future__ import annotations


def ray_train_loop(config: dict) -> None:
    """config is the flat TrialConfig."""
    from trainables.config import TrialConfig
    from trainables.runtime import START_FROM_KEY, RayReporter
    from trainables.train import fit

    config = dict(config)
    start_from = config.pop(START_FROM_KEY, None)  # a PBT trial's checkpoint to start from (search/pbt.py)
    fit(TrialConfig.from_flat(config), RayReporter(start_from))
