#!/usr/bin/env python
"""Evaluate a trained model under test-time occlusion attacks: AP against attack size, per-keypoint AP drops and
part attacks, as a table and PNG curves, logged to MLflow.

    python search/robustness.py --checkpoint ray_results/EXP.train/TRIAL/checkpoint_... \\
        --attacks keypoint-blackout,part-blackout --radii 0,6,12,18
    python search/robustness.py --run-id MLFLOW_RUN_ID --attacks keypoint-blur,keypoint-meanout

A checkpoint directory holds model.pt and trial_config.json (what every trial saves); --run-id takes the trial's
best checkpoint from its MLflow run and logs the results back to that run, --checkpoint logs to a new run in the
experiment --experiment. The data are the trial's own evaluation split unless --dataset/--data-root name another.
Keypoint attacks run at every radius (radius 0 = clean); per-keypoint drops attack one joint at a time at the
largest radius; part attacks cover each body part in turn. The sweep itself is trainables/robustness.py.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from datasets.occlusion.attacks import ATTACKS
from datasets.meta import DATASETS
from search.stores import fetch_checkpoint
from trainables.robustness import DEFAULT_ATTACKS, attack, check_attacks


def parse_list(kind):
    def parse(text: str):
        try:
            return [kind(v) for v in text.split(",") if v]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="checkpoint directory (model.pt + trial_config.json)")
    source.add_argument("--run-id", help="MLflow run of a trial: its best checkpoint, results logged back to it")
    p.add_argument("--dataset", choices=sorted(DATASETS), help="evaluate on this dataset instead of the trial's")
    p.add_argument("--data-root", help="the dataset's root (official layout), with --dataset")
    p.add_argument("--split", default="val", choices=["val", "val_occ"], help="which evaluation split")
    p.add_argument("--attacks", type=parse_list(str), default=list(DEFAULT_ATTACKS),
                   help=f"comma-separated, from: {', '.join(ATTACKS)}")
    p.add_argument("--radii", type=parse_list(float), default=[0, 6, 12, 18],
                   help="keypoint attack radii in input-crop pixels")
    p.add_argument("--no-per-keypoint", dest="per_keypoint", action="store_false",
                   help="skip the per-keypoint AP drops (one evaluation per joint and keypoint attack)")
    p.add_argument("--max-samples", type=int, default=0, help="evaluate on at most this many persons (0 = all)")
    p.add_argument("--out", type=Path, default=Path("robustness"), help="output directory")
    p.add_argument("--experiment", default="robustness", help="MLflow experiment for --checkpoint results")
    return p


def main(argv=None) -> int:
    from search.tracking import log_robustness

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_attacks(args.attacks)
    except ValueError as err:
        parser.error(f"--attacks: {err}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = fetch_checkpoint(args.run_id, Path(tmp)) if args.run_id else args.checkpoint
            result, files = attack(checkpoint, args.attacks, args.radii, out=args.out, split=args.split,
                                   per_keypoint=args.per_keypoint, max_samples=args.max_samples,
                                   dataset=args.dataset, data_root=args.data_root)
            run_id = log_robustness(result, files, args.run_id, args.experiment, checkpoint)
    except ValueError as err:
        print(f"robustness.py: error: {err}", file=sys.stderr)
        return 2
    print((args.out / "robustness.md").read_text())
    print(f"report in {args.out}; logged to MLflow run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
