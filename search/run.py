#!/usr/bin/env python
"""Search occlusion and loss hyperparameters: Ray Tune + Optuna over Ray Train trials, tracked in MLflow.

    python search/run.py --space lja            # embedded synthetic dataset, a real small search
    python search/run.py --space lja --smoke    # about a minute, for tests

The command line: flags, budgets and recipes, the pre-flight checks (cluster address, annotation files, the
experiment directory), then search/tuner.py runs the search. Store locations: search/stores.py.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

# The command line lives in search/cli.py; these names stay importable from here.
from search.cli import (DEFAULT_BUDGET, REAL_DATA_BUDGET, SMOKE_BUDGET, Budget, build_parser,  # noqa: F401
                        choose_budget, explicit_flags, experiment_name, parse_args)
from search.masking import MaskedSecret, keep_optuna_storage, mask_uri, reveal
from search.spaces import SPACES
from search.stores import default_optuna_storage, environment_problems, experiment_dir, run_registry_path, tracking_uri
from search.settings import record_settings, restore_settings, resume_conflicts, search_finished
from search.tuner import run_search


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
    from datasets.synthetic import SyntheticSpec
    from trainables.config import TrialConfig
    from trainables.worker import with_synthetic_paths

    b = args.budget
    if args.dataset == "synthetic":
        spec = SyntheticSpec(seed=args.seed, num_train_images=b.train_images, num_val_images=b.val_images)
        flat = with_synthetic_paths(TrialConfig(), dataset_progress(spec)).flat()
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
    if args.region_store:  # the config's own check (trainables/config.py), worded for the flag
        store = str(Path(args.region_store).resolve())
        try:
            TrialConfig().replace(**{"data.region_store": store}).validate()
        except ValueError as err:
            raise ValueError(str(err).replace("data.region_store:", "--region-store", 1)) from None
        settings["data.region_store"] = store
    return settings


def dataset_progress(spec):
    """The synthetic dataset, generated once with a progress bar (a terminal) or a line per tenth (otherwise)."""
    from datasets.synthetic import ensure_dataset
    from search.console import current

    console = current()
    what = f"dataset: synthetic (seed {spec.seed}, {spec.num_train_images} train / {spec.num_val_images} val images)"
    console.line(what)
    with console.progress("generating the synthetic dataset", "images") as advance:
        return ensure_dataset(spec, progress=advance)


def check_annotations(data: dict, dataset: str) -> None:
    """Parse every annotation file once up front, so a malformed one stops the search with a message naming the
    file, annotation and field, rather than failing each trial on its workers."""
    from datasets.validation import check_annotations as check

    check(data, dataset)


def base_trial_config(args, data: dict):
    from trainables.config import TrialConfig
    from trainables.presets import recipe_for

    b = args.budget
    recipe = recipe_for(args.dataset, args.smoke, args.recipe)
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


def show_status(args) -> int:
    """--status: the experiment's trial table from disk (search/status.py), changing nothing; 2 for an unknown one."""
    from search.console import current
    from search.status import UnknownSearch, collect, show

    from mlflow.exceptions import MlflowException

    try:
        status = collect(args.experiment, args.storage_path)
    except (UnknownSearch, FileNotFoundError, MlflowException) as err:
        first = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        print(f"error: {first}; check --experiment, --storage-path and MLFLOW_TRACKING_URI (the search's own "
              "tracking store)", file=sys.stderr)
        return 2
    if args.json:  # the machine-readable table alone on stdout
        print(json.dumps(status.to_json(), indent=1, default=str))
        return 0
    show(status, current(), args.storage_path)
    return 0


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
    if args.status:
        return show_status(args)
    # An unreachable tracking server must fail a request in seconds, not minutes of retries: the trial callback
    # queues what it cannot deliver (search/tracking.py Spool) and retries on its own.
    for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")):
        os.environ.setdefault(name, value)
    # Quiet by default: INFO goes to the search's log once it is open (search/console.py), not to the console.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # MLflow's own INFO ("Creating initial MLflow database tables...") too
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    if args.address:
        check_reachable(args.address)
    if not args.resume:
        args.optuna_storage = args.optuna_storage or default_optuna_storage(args.storage_path)
    if problems := environment_problems(tracking_uri(), args.storage_path, args.optuna_storage):
        print("\n".join(f"error: {problem}" for problem in problems), file=sys.stderr)  # before any write
        return 2
    if args.warm_start:
        from search.study import study_storage
        from search.warm_start import WarmStartError, missing_sqlite_file, warm_points

        try:  # the study is read before anything is written
            missing_sqlite_file(args.warm_start, args.optuna_storage)
            args.warm_points, args.warm_record = warm_points(args.warm_start, study_storage(args.optuna_storage),
                                                             SPACES[args.space].define)
        except WarmStartError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        for trial in args.warm_record:
            print(f"warm start: trial {trial['number']} of {args.warm_start.experiment} (scored "
                  f"{', '.join(f'{v:.4g}' for v in trial['values'])}): {trial['outcome']}",
                  file=sys.stderr if args.json else sys.stdout)
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
    from search.console import quiet_console
    from search.status import log_path

    with quiet_console(log_path(args.storage_path, args.experiment), args.verbose, args.json):
        return run_search(args, tracker, where, base_trial_config(args, data_settings(args)), started)


if __name__ == "__main__":
    sys.exit(main())
