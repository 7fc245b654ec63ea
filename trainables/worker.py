"""Train one trial without Ray, for debugging: `python -m trainables.worker --set optim.epochs=2 lja.p=0.5`.

With no data.train_ann the trial trains on the embedded synthetic dataset. The trainer itself is
trainables/train.py (`fit`); checkpoints are trainables/checkpoint.py; the local and Ray Train contexts
trainables/runtime.py.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from trainables.config import TrialConfig
from trainables.runtime import LocalReporter
from trainables.train import fit


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
    """`cfg` reading the generated synthetic dataset at `paths` (datasets.synthetic.ensure_dataset's result)."""
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
