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

from datasets.cli import non_negative_int, output_dir
from datasets.occlusion.attacks import ATTACKS
from datasets.meta import DATASETS
from search.masking import mask_uri
from search.stores import fetch_checkpoint, open_tracking_store, tracking_uri
from trainables.robustness import DEFAULT_ATTACKS, check_attacks, load_trial, sweep, write_report


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
    p.add_argument("--max-samples", type=non_negative_int, default=0, help="evaluate on at most this many persons (0 = all)")
    p.add_argument("--out", type=output_dir, default=Path("robustness"), help="output directory")
    p.add_argument("--experiment", default="robustness", help="MLflow experiment for --checkpoint results")
    return p


def open_store(run_id: str | None):
    """An MlflowClient of the tracking store the results go to (and that holds `run_id`, if given), checked before
    any work. SystemExit 2 naming the run when the store has no such run, 1 when it cannot be opened at all."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    try:
        client = MlflowClient(open_tracking_store(uri, wait_s=10, create=run_id is None))  # a lookup creates nothing
        client.search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - MLflow, sqlalchemy and OS errors alike
        raise SystemExit(f"robustness.py: error: the tracking store (MLFLOW_TRACKING_URI) cannot be opened: "
                         f"{type(err).__name__}: {mask_uri(str(err).splitlines()[0][:300]) if str(err) else ''}") from None
    try:
        if run_id:
            client.get_run(run_id)
    except MlflowException:
        print(f"robustness.py: error: --run-id {run_id}: no such run in the tracking store (MLFLOW_TRACKING_URI)",
              file=sys.stderr)
        raise SystemExit(2) from None
    return client


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_attacks(args.attacks)
    except ValueError as err:
        parser.error(f"--attacks: {err}")
    if any(r < 0 for r in args.radii):
        parser.error(f"--radii: radii must be >= 0, got {args.radii}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            # Everything that can be refused is, before the sweep: the checkpoint (a torn or foreign one names
            # its file), the run, the store; a --checkpoint is read before the store is opened (nothing written).
            if args.checkpoint:
                trial = load_trial(args.checkpoint, args.dataset, args.data_root, args.split)
            client = open_store(args.run_id)
            checkpoint = fetch_checkpoint(args.run_id, Path(tmp), client) if args.run_id else args.checkpoint
            if args.run_id:
                trial = load_trial(checkpoint, args.dataset, args.data_root, args.split)
            model, cfg, split = trial
            result = sweep(model, cfg, args.attacks, args.radii, split, args.per_keypoint, args.max_samples)
            files = write_report(result, args.out)
            from search.tracking import log_robustness  # MLflow and Ray Tune: imported once there is a result

            run_id = log_robustness(result, files, args.run_id, args.experiment, checkpoint, client)
    except ValueError as err:
        print(f"robustness.py: error: {err}", file=sys.stderr)
        return 2
    print((args.out / "robustness.md").read_text())
    print(f"report in {args.out}; logged to MLflow run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
