#!/usr/bin/env python
"""Search occlusion and loss hyperparameters: Ray Tune + Optuna over Ray Train trials, tracked in MLflow.

    python search/run.py --space lja            # embedded synthetic dataset, a real small search
    python search/run.py --space lja --smoke    # about a minute, for tests

The command line: flags, budgets and recipes, the pre-flight checks (cluster address, annotation files, the
experiment directory), then search/tuner.py runs the search. Store locations: search/stores.py.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from datasets.cli import non_negative_float, positive_int
from datasets.meta import DATASETS
from search.masking import MaskedSecret, keep_optuna_storage, mask_uri, reveal
from search.spaces import ALIASES, SPACES, canonical
from search.stores import (DEFAULT_STORAGE_PATH, default_optuna_storage, environment_problems, experiment_dir,
                           experiment_name_problem, run_registry_path, tracking_uri)
from search.tuner import record_settings, restore_settings, resume_conflicts, run_search, search_finished


@dataclass(frozen=True)
class Budget:
    """What a search spends; --smoke picks the small one, explicit flags override either."""

    num_samples: int
    time_budget_min: float  # 0 = no limit
    epochs: int
    grace_period: int
    reduction_factor: int
    train_images: int
    val_images: int
    deconv_channels: int
    batch_size: int


# Sized for a 2-core laptop: see README "Measured" for the wall time and AP this gives.
DEFAULT_BUDGET = Budget(num_samples=5, time_budget_min=13.0, epochs=6, grace_period=1, reduction_factor=3,
                        train_images=1200, val_images=250, deconv_channels=128, batch_size=16)
SMOKE_BUDGET = Budget(num_samples=2, time_budget_min=0.0, epochs=1, grace_period=1, reduction_factor=2, train_images=24,
                      val_images=8, deconv_channels=32, batch_size=16)
# Real datasets on a GPU cluster: whole splits, 256-channel deconvolutions; epochs and trials are the user's to raise
# towards the papers' 210 epochs. Augmentation, model and input size come from the recipe (trainables/presets.py).
REAL_DATA_BUDGET = Budget(num_samples=20, time_budget_min=0.0, epochs=30, grace_period=5, reduction_factor=3,
                          train_images=0, val_images=0, deconv_channels=256, batch_size=32)
def choose_budget(smoke: bool, dataset: str) -> Budget:
    return SMOKE_BUDGET if smoke else DEFAULT_BUDGET if dataset == "synthetic" else REAL_DATA_BUDGET


def experiment_name(text: str) -> str:
    """An argparse type: a name that is one directory in --storage-path and one MLflow experiment."""
    if problem := experiment_name_problem(text):
        raise argparse.ArgumentTypeError(problem)
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Search occlusion-robustness hyperparameters with Ray Tune + Optuna; trials train with "
        "Ray Train and are logged to MLflow (MLFLOW_TRACKING_URI, default sqlite:///mlflow.db).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--space", type=canonical, choices=sorted(SPACES),
                   help="which search space to explore (" + ", ".join(f"{old}: the old name of {new}"
                                                                for old, new in ALIASES.items()) + ")")
    p.add_argument("--dataset", default="synthetic", choices=sorted(DATASETS),
                   help="dataset; 'synthetic' is generated once and cached under .cache/, the others are read from "
                   "--data-root in their official layout (README 'Datasets')")
    p.add_argument("--data-root", help="directory of the real dataset (coco, crowdpose, ochuman, mpii)")
    p.add_argument("--train-root", help="ochuman only: the COCO directory to train on (default <data-root>/../coco)")
    p.add_argument("--det-file", help="person detector boxes (COCO results json) to evaluate on instead of the "
                   "ground-truth boxes (coco, crowdpose: val; ochuman: the OCHuman split)")
    p.add_argument("--num-samples", type=positive_int, help="number of trials (default 5; 2 with --smoke)")
    p.add_argument("--time-budget", dest="time_budget_min", type=non_negative_float,
                   help="minutes the search may run; trials still running then are stopped and it ends "
                   "(default 13 on the embedded default, 0 = no limit; 0 with --smoke)")
    p.add_argument("--epochs", type=positive_int, help="epochs of a trial that is never stopped early "
                   "(default 6; 1 with --smoke)")
    p.add_argument("--grace-period", type=positive_int, help="ASHA: epochs before a trial may be stopped")
    p.add_argument("--max-concurrent", type=positive_int,
                   help="trials at once (default: what the cluster's CPUs fit)")
    p.add_argument("--metric", help="metric the search maximises (default: " + ", ".join(
        f"{meta.occluded_metric} on {meta.name}" for meta in DATASETS.values()) + "; val/O/... is the metric on "
        "the occluded joints)")
    p.add_argument("--workers-per-trial", type=positive_int, default=1, help="Ray Train (DDP) workers per trial")
    p.add_argument("--cpus-per-worker", type=positive_int, default=1, help="CPUs each training worker reserves")
    p.add_argument("--gpus-per-worker", type=non_negative_float, default=0.0, help="GPUs each worker reserves")
    p.add_argument("--gpu-augment", default="off", choices=["auto", "on", "off"],
                   help="decode, warp, LJA and heatmaps on the GPU for the whole batch (auto: on GPUs where the "
                   "space allows it; BENCHMARKS.md)")
    p.add_argument("--address", help="Ray cluster address (host:port or 'auto'); default starts a local Ray")
    p.add_argument("--storage-path", default=str(DEFAULT_STORAGE_PATH),
                   help="where Tune and Train keep experiment state and checkpoints")
    p.add_argument("--experiment", type=experiment_name, help="experiment name (MLflow experiment and Tune run); default: "
                   "<space>-<timestamp>, or the name to continue with --resume")
    p.add_argument("--resume", action="store_true", help="continue the interrupted --experiment with the settings "
                   "it was started with (a flag given with another value is refused)")
    p.add_argument("--check", action="store_true", help="compare the --experiment's trials in Tune's state, the "
                   "Optuna study and MLflow, print those they disagree on (exit 1; 0 when they agree) and exit")
    p.add_argument("--smoke", action="store_true", help="shrink data, model and budget to run in ~1 minute")
    p.add_argument("--seed", type=int, default=0, help="seed of the dataset, the searcher and the trials")
    p.add_argument("--model", help="model of every trial (python -m trainables.models --list); default "
                   "simplebaseline_r18 on synthetic, simplebaseline_r50 on real datasets")
    p.add_argument("--searcher", default="tpe", choices=["tpe", "random", "grid"],
                   help="Optuna sampler; grid walks the papers' own grids (e.g. the LJA quantity x size table), "
                   "its size being the default --num-samples")
    p.add_argument("--scheduler", default="asha", choices=["asha", "hyperband", "fifo"],
                   help="early stopping of weak trials on --metric (fifo: none)")
    p.add_argument("--multi-objective", action="store_true",
                   help="optimise clean and occluded AP together (Optuna's Pareto front, printed at the end)")
    p.add_argument("--optuna-storage", help="Optuna study storage URL (default: optuna.db beside a sqlite MLflow "
                   "store, else in --storage-path), for optuna-dashboard and resume")
    return p


def explicit_flags(argv=None) -> dict:
    """{dest: value} of the flags given on the command line; argparse's defaults are not among them."""
    parser = build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    return vars(parser.parse_args(argv))


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.explicit = explicit_flags(argv)
    if args.check:
        if not args.experiment:
            parser.error("--check needs --experiment NAME")
        if "://" not in args.storage_path:
            args.storage_path = str(Path(args.storage_path).resolve())
        return args
    if args.space is None:
        parser.error("the following arguments are required: --space")
    if args.resume and not args.experiment:
        parser.error("--resume needs --experiment NAME (the name printed when the search started)")
    budget = choose_budget(args.smoke, args.dataset)
    if args.searcher == "grid":
        if not SPACES[args.space].grid:
            parser.error(f"--searcher grid: the {args.space} space has no grid; use tpe or random")
        if args.num_samples is None:
            args.num_samples = SPACES[args.space].grid_size()
    for flag in ("num_samples", "time_budget_min", "epochs", "grace_period"):
        if getattr(args, flag) is None:
            setattr(args, flag, getattr(budget, flag))
    args.grace_period = min(args.grace_period, args.epochs)
    args.budget = budget
    if args.dataset == "synthetic":
        for flag in ("data_root", "train_root", "det_file"):
            if getattr(args, flag):
                parser.error(f"--{flag.replace('_', '-')} applies to real datasets only, not --dataset synthetic")
    elif not args.data_root:
        parser.error(f"--dataset {args.dataset} needs --data-root DIR (its layout: see README 'Datasets')")
    if args.train_root and args.dataset != "ochuman":
        parser.error("--train-root applies to --dataset ochuman only (COCO to train on)")
    if args.det_file and args.dataset == "mpii":
        parser.error("--det-file does not apply to mpii: its protocol scores the annotated persons' boxes")
    args.metric = args.metric or DATASETS[args.dataset].occluded_metric
    args.clean_metric = DATASETS[args.dataset].clean_metric
    if args.multi_objective and args.clean_metric == args.metric:
        parser.error(f"--multi-objective needs distinct clean and occluded metrics; both are {args.metric}")
    args.experiment = args.experiment or f"{args.space}-{time.strftime('%Y%m%d-%H%M%S')}"
    if "://" not in args.storage_path:
        args.storage_path = str(Path(args.storage_path).resolve())
    return args


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast with a clear message instead of Ray's long connection retries."""
    if ":" not in address.removeprefix("ray://"):  # "auto" / "local": Ray resolves these itself
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: cannot reach the Ray cluster at --address {address!r}: {err}. "
                         "Is `ray start --head` (or `ray up cluster.yaml`) running there?") from None


def data_settings(args) -> dict:
    """The data.* part of the trial config: generated synthetic data, or a real dataset's official layout."""
    from datasets.layouts import resolve
    from datasets.synthetic import SyntheticSpec, ensure_dataset
    from trainables.config import TrialConfig
    from trainables.worker import with_synthetic_paths

    b = args.budget
    if args.dataset == "synthetic":
        spec = SyntheticSpec(seed=args.seed, num_train_images=b.train_images, num_val_images=b.val_images)
        print(f"dataset: synthetic (seed {args.seed}, {spec.num_train_images} train / {spec.num_val_images} val "
              "images) ...", flush=True)
        flat = with_synthetic_paths(TrialConfig(), ensure_dataset(spec)).flat()
        return {k: v for k, v in flat.items() if k.startswith("data.")}
    layout = resolve(args.dataset, args.data_root, args.train_root)
    settings = {
        "data.dataset": args.dataset, "data.root": str(Path(args.data_root).resolve()),
        "data.train_ann": str(layout.train.ann), "data.train_images": str(layout.train.images),
        "data.val_ann": str(layout.val.ann), "data.val_images": str(layout.val.images),
        "data.max_train_samples": b.train_images, "data.max_val_samples": b.val_images,
    }
    if layout.val_occ is not None:
        settings |= {"data.val_occ_ann": str(layout.val_occ.ann), "data.val_occ_images": str(layout.val_occ.images)}
    if layout.val_gt is not None:
        settings["data.val_gt"] = str(layout.val_gt)
    if args.det_file:
        det_file = Path(args.det_file).resolve()
        if not det_file.is_file():
            raise ValueError(f"--det-file {det_file}: no such file")
        settings |= {"data.det_file": str(det_file), "data.det_split": "val_occ" if layout.val_occ else "val"}
    return settings


def check_annotations(data: dict, dataset: str) -> None:
    """Parse every annotation file once up front, so a malformed one stops the search with a message naming the
    file, annotation and field, rather than failing each trial on its workers."""
    from datasets.validation import check_annotations as check

    check(data, dataset)


def base_trial_config(args, data: dict):
    from trainables.config import TrialConfig
    from trainables.presets import recipe_for

    b = args.budget
    recipe = recipe_for(args.dataset, args.smoke)
    if args.model:
        recipe["model.name"] = args.model
    return TrialConfig().replace(**{
        **recipe, **data,
        "model.deconv_channels": b.deconv_channels,
        "optim.epochs": args.epochs, "optim.batch_size": b.batch_size,
        "runtime.seed": args.seed, "runtime.workers": args.workers_per_trial,
        "runtime.cpus_per_worker": args.cpus_per_worker, "runtime.gpus_per_worker": args.gpus_per_worker,
        # The GPU path's loader reads bytes and draws parameters in processes of its own: the worker's other CPUs.
        "runtime.gpu_augment": args.gpu_augment,
        "runtime.loader_workers": args.cpus_per_worker - 1 if args.gpu_augment != "off" else 0,
        **SPACES[args.space].fixed,
    }).validate()


def check_books(args) -> int:
    """--check: 0 when Tune, Optuna and MLflow agree on every trial, 1 listing those they disagree on, 2 for an
    unknown experiment (search/consistency.py)."""
    from search.consistency import UnknownExperiment, report

    try:
        return 0 if report(args.experiment, args.storage_path) else 1
    except UnknownExperiment as err:
        print(f"error: {err}; check --experiment and --storage-path", file=sys.stderr)
        return 2


def refuse_resume_conflicts(args, tracker) -> bool:
    """Print each flag given on --resume with another value than the search was started with; True if any."""
    conflicts = resume_conflicts(tracker, args.explicit)
    flags = {action.dest: action.option_strings[0] for action in build_parser()._actions}
    for key, given, stored in conflicts:
        print(f"error: {flags.get(key, key)} {mask_uri(given)} conflicts with the value experiment {args.experiment!r} "
              f"was started with: {mask_uri(stored)}", file=sys.stderr)
    if conflicts:
        print("--resume continues a search with its own settings; drop these flags (or start another "
              "--experiment to use them)", file=sys.stderr)
    return bool(conflicts)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.check:
        return check_books(args)
    # An unreachable tracking server must fail a request in seconds, not minutes of retries: the trial callback
    # queues what it cannot deliver (search/tracking.py Spool) and retries on its own.
    for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")):
        os.environ.setdefault(name, value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.address:
        check_reachable(args.address)
    if not args.resume:
        args.optuna_storage = args.optuna_storage or default_optuna_storage(args.storage_path)
    if problems := environment_problems(tracking_uri(), args.storage_path, args.optuna_storage):
        print("\n".join(f"error: {problem}" for problem in problems), file=sys.stderr)  # before any write
        return 2
    if not args.resume and args.dataset != "synthetic":
        try:  # before anything is written: a wrong --data-root must not leave an empty experiment behind
            check_annotations(data_settings(args), args.dataset)
        except ValueError as err:  # LayoutError, AnnotationError and a missing --det-file
            print(f"error: {err}", file=sys.stderr)
            return 2

    from search.tracking import SearchTracker

    where = experiment_dir(args.storage_path, args.experiment)
    if "://" not in where and Path(where).exists() != args.resume:
        problem = "already exists; pass --resume to continue it or choose another --experiment" if not args.resume \
            else "does not exist; check --experiment and --storage-path"
        print(f"error: experiment {args.experiment!r} in {args.storage_path} {problem}", file=sys.stderr)
        return 2
    try:
        tracker = SearchTracker(args.experiment, run_registry_path(args.storage_path, args.experiment))
    except Exception as err:  # noqa: BLE001 - MLflow, sqlalchemy and network errors alike: nothing started yet
        first = str(err).splitlines()[0][:300] if str(err) else ""
        print(f"error: the tracking store MLFLOW_TRACKING_URI={mask_uri(tracking_uri())} cannot be opened: "
              f"{type(err).__name__}: {mask_uri(first)}", file=sys.stderr)
        return 1
    if args.resume and refuse_resume_conflicts(args, tracker):
        return 2
    if args.resume and restore_settings(tracker, args):
        # The search continues as it was started; flags given now cannot change it half-way.
        args.budget = choose_budget(args.smoke, args.dataset)
        try:  # kept masked in the registry: the real URL is given again (search/masking.py)
            args.optuna_storage = reveal(args.optuna_storage, args.explicit.get("optuna_storage"))
        except MaskedSecret as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if search_finished(tracker):
            print(f"experiment {args.experiment} already finished ({len(tracker.ended_trials())} trials); "
                  "nothing to resume", flush=True)
            return 0
    else:
        record_settings(tracker, args)
    keep_optuna_storage(args.optuna_storage)  # for the searcher Tune unpickles and the checks at the end
    started = time.perf_counter()
    return run_search(args, tracker, where, base_trial_config(args, data_settings(args)), started)


if __name__ == "__main__":
    sys.exit(main())
