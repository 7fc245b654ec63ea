#!/usr/bin/env python
"""Search occlusion and loss hyperparameters: Ray Tune + Optuna over Ray Train trials, tracked in MLflow.

    python search/run.py --space lja            # embedded synthetic dataset, a real small search
    python search/run.py --space lja --smoke    # about a minute, for tests
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `python search/run.py` from a checkout without an editable install
    sys.path.insert(0, str(REPO_ROOT))

from datasets.meta import DATASETS  # noqa: E402
from search.spaces import SPACES  # noqa: E402

DRIVER_MEMORY_BYTES = 256 * 1024**2


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
    input_h: int
    input_w: int
    deconv_channels: int
    batch_size: int


# Sized for a 2-core laptop: see README "Measured" for the wall time and AP this gives.
DEFAULT_BUDGET = Budget(num_samples=5, time_budget_min=13.0, epochs=6, grace_period=1, reduction_factor=3,
                        train_images=1200, val_images=250, input_h=96, input_w=64, deconv_channels=128, batch_size=16)
SMOKE_BUDGET = Budget(num_samples=2, time_budget_min=0.0, epochs=1, grace_period=1, reduction_factor=2, train_images=24,
                      val_images=8, input_h=96, input_w=64, deconv_channels=32, batch_size=16)
# Real datasets on a GPU cluster: whole splits, the dataset's input size (set in base_trial_config), 256-channel
# deconvolutions; epochs and trials are the user's to raise towards the papers' 210 epochs.
REAL_DATA_BUDGET = Budget(num_samples=20, time_budget_min=0.0, epochs=30, grace_period=5, reduction_factor=3,
                          train_images=0, val_images=0, input_h=0, input_w=0, deconv_channels=256, batch_size=32)
# HRNet's COCO/MPII training recipe (random scale 0.35, rotation 45 deg with p 0.6, flip, half-body 0.3) and
# flip-test evaluation, with SimpleBaseline-R50.
REAL_DATA_RECIPE = {"model.name": "simplebaseline_r50", "data.scale_factor": 0.35, "data.rotation": 45.0,
                    "data.rotation_p": 0.6, "data.flip_p": 0.5, "data.half_body_p": 0.3, "data.flip_test": True}


def choose_budget(smoke: bool, dataset: str) -> Budget:
    return SMOKE_BUDGET if smoke else DEFAULT_BUDGET if dataset == "synthetic" else REAL_DATA_BUDGET


def bounded(kind, minimum, label: str):
    """An argparse type: `kind` parsed from text, at least `minimum`; argparse turns errors into exit 2."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {label}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {label}, got {value}")
        return value

    return parse


positive_int = bounded(int, 1, "a positive integer")
non_negative_float = bounded(float, 0.0, "a number >= 0")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Search occlusion-robustness hyperparameters with Ray Tune + Optuna; trials train with "
        "Ray Train and are logged to MLflow (MLFLOW_TRACKING_URI, default sqlite:///mlflow.db).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--space", required=True, choices=sorted(SPACES), help="which search space to explore")
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
    p.add_argument("--metric", help="metric the search maximises (default: val_occ/AP on synthetic and ochuman, "
                   "val/O/AP - AP on occluded joints - on coco and crowdpose, val/PCKh_0.5 on mpii)")
    p.add_argument("--workers-per-trial", type=positive_int, default=1, help="Ray Train (DDP) workers per trial")
    p.add_argument("--cpus-per-worker", type=positive_int, default=1, help="CPUs each training worker reserves")
    p.add_argument("--gpus-per-worker", type=non_negative_float, default=0.0, help="GPUs each worker reserves")
    p.add_argument("--gpu-augment", default="off", choices=["auto", "on", "off"],
                   help="decode, warp, LJA and heatmaps on the GPU for the whole batch (auto: on GPUs where the "
                   "space allows it; BENCHMARKS.md)")
    p.add_argument("--address", help="Ray cluster address (host:port or 'auto'); default starts a local Ray")
    p.add_argument("--storage-path", default=str(REPO_ROOT / "ray_results"),
                   help="where Tune and Train keep experiment state and checkpoints")
    p.add_argument("--experiment", help="experiment name (MLflow experiment and Tune run); default: "
                   "<space>-<timestamp>, or the name to continue with --resume")
    p.add_argument("--resume", action="store_true", help="continue the interrupted --experiment")
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


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
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
    input_h, input_w = layout.meta.input_hw
    if not args.smoke:
        settings |= {"data.input_h": input_h, "data.input_w": input_w}
    return settings


def check_annotations(data: dict, dataset: str) -> None:
    """Parse every annotation file once up front, so a malformed one stops the search with a message naming the
    file, annotation and field, rather than failing each trial on its workers."""
    from datasets.validation import check_annotations as check

    check(data, dataset)


def base_trial_config(args, data: dict):
    from trainables.config import TrialConfig

    b = args.budget
    recipe = {} if args.dataset == "synthetic" else dict(REAL_DATA_RECIPE)
    if args.smoke:
        recipe.pop("model.name", None)  # the smallest model
    if args.model:
        recipe["model.name"] = args.model
    sizes = {"data.input_h": b.input_h, "data.input_w": b.input_w} if b.input_h else {}
    return TrialConfig().replace(**{
        **recipe, **sizes, **data,
        "model.deconv_channels": b.deconv_channels,
        "optim.epochs": args.epochs, "optim.batch_size": b.batch_size,
        "runtime.seed": args.seed, "runtime.workers": args.workers_per_trial,
        "runtime.cpus_per_worker": args.cpus_per_worker, "runtime.gpus_per_worker": args.gpus_per_worker,
        # The GPU path's loader reads bytes and draws parameters in processes of its own: the worker's other CPUs.
        "runtime.gpu_augment": args.gpu_augment,
        "runtime.loader_workers": args.cpus_per_worker - 1 if args.gpu_augment != "off" else 0,
        **SPACES[args.space].fixed,
    }).validate()


HEAD_NODE_RESOURCE = "node:__internal_head__"  # Ray gives every head node this resource, 1 of it


def make_trial_driver(experiment_storage: str, metric: str):
    """The Tune function trainable: one Ray Train run (TorchTrainer) per trial, reporting back to Tune."""

    def run_trial(config: dict) -> None:
        import ray.train
        from ray import tune
        from ray.train.torch import TorchTrainer
        from ray.tune.integration.ray_train import TuneReportCallback

        from trainables.train_loop import ray_train_loop

        runtime_workers = int(config["runtime.workers"])
        gpus = float(config["runtime.gpus_per_worker"])
        resources = {"CPU": float(config["runtime.cpus_per_worker"])}
        if gpus:
            resources["GPU"] = gpus
        trainer = TorchTrainer(
            ray_train_loop,
            train_loop_config=config,
            scaling_config=ray.train.ScalingConfig(
                num_workers=runtime_workers, use_gpu=gpus > 0, resources_per_worker=resources
            ),
            run_config=ray.train.RunConfig(
                # A stable name per trial: a restarted trial finds its Train run and resumes its checkpoint.
                name=tune.get_context().get_trial_id(),
                # Outside Tune's own experiment directory, which Tune re-syncs from its staging copy on restore.
                storage_path=f"{experiment_storage}.train",
                callbacks=[TuneReportCallback()],
                checkpoint_config=ray.train.CheckpointConfig(
                    num_to_keep=1, checkpoint_score_attribute=metric, checkpoint_score_order="max"
                ),
                failure_config=ray.train.FailureConfig(max_failures=2),
            ),
        )
        trainer.fit()

    return run_trial


def short_trial_name(trial) -> str:
    return f"trial_{trial.trial_id}"


RESUMED_SETTINGS = ("space", "num_samples", "time_budget_min", "epochs", "grace_period", "smoke", "seed", "metric",
                    "workers_per_trial", "cpus_per_worker", "gpus_per_worker", "gpu_augment", "max_concurrent",
                    "dataset", "data_root", "train_root", "det_file", "model", "searcher", "scheduler",
                    "multi_objective", "optuna_storage", "clean_metric")


def main(argv=None) -> int:
    args = parse_args(argv)
    # An unreachable tracking server must fail a request in seconds, not minutes of retries: the trial callback
    # queues what it cannot deliver (search/tracking.py Spool) and retries on its own.
    for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")):
        os.environ.setdefault(name, value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.address:
        check_reachable(args.address)
    if not args.resume and args.dataset != "synthetic":
        try:  # before anything is written: a wrong --data-root must not leave an empty experiment behind
            check_annotations(data_settings(args), args.dataset)
        except ValueError as err:  # LayoutError, AnnotationError and a missing --det-file
            print(f"error: {err}", file=sys.stderr)
            return 2

    from search.tracking import SearchTracker

    experiment_dir = f"{args.storage_path}/{args.experiment}"
    local_experiment = "://" not in experiment_dir
    if local_experiment and Path(experiment_dir).exists() != args.resume:
        problem = "already exists; pass --resume to continue it or choose another --experiment" if not args.resume \
            else "does not exist; check --experiment and --storage-path"
        print(f"error: experiment {args.experiment!r} in {args.storage_path} {problem}", file=sys.stderr)
        return 2
    # Beside Tune's experiment directory, never inside it: Tune syncs that directory from its own staging copy on
    # restore and would overwrite the registry with the copy it had when the search stopped.
    registry_dir = Path(args.storage_path) if local_experiment else REPO_ROOT / ".cache" / "experiments"
    tracker = SearchTracker(args.experiment, registry_dir / f"{args.experiment}.mlflow_runs.json")
    settings = tracker.registry.read()["settings"]
    if args.resume and settings:
        # The search continues as it was started; flags given now cannot change it half-way.
        for key in RESUMED_SETTINGS:
            setattr(args, key, settings.get(key, getattr(args, key)))
        args.budget = choose_budget(args.smoke, args.dataset)
        parent = tracker.parent_run_id
        if parent is not None and tracker.client.get_run(parent).info.status == "FINISHED":
            print(f"experiment {args.experiment} already finished ({len(tracker.ended_trials())} trials); "
                  "nothing to resume", flush=True)
            return 0
    else:
        args.optuna_storage = args.optuna_storage or default_optuna_storage(args.storage_path)
        with tracker.registry.editing() as data:
            data["settings"] = {key: getattr(args, key) for key in RESUMED_SETTINGS}
    return run_search(args, tracker, experiment_dir)


def run_search(args, tracker, experiment_dir: str) -> int:
    import ray
    from ray import tune

    from search.tracking import MLflowTrialCallback, ProgressPrinter, git_commit, mlflow_ui_command, tracking_uri

    started = time.perf_counter()
    space = SPACES[args.space]
    base = base_trial_config(args, data_settings(args))
    base_flat = base.flat()

    resuming = tracker.parent_run_id is not None
    parent = tracker.start_parent(
        run_name=f"search-{args.space}",
        params={"space": args.space, "searcher": f"optuna-{args.searcher}", "scheduler": args.scheduler,
                "metric": args.metric, "multi_objective": args.multi_objective, "optuna_storage": args.optuna_storage,
                "num_samples": args.num_samples, "epochs": args.epochs, "grace_period": args.grace_period,
                "seed": args.seed, "smoke": args.smoke, "dataset": args.dataset,
                **{f"base.{k}": v for k, v in base_flat.items()}},
        tags={"space": args.space, "git_commit": git_commit(), "experiment_dir": experiment_dir},
    )
    if not resuming and args.dataset == "synthetic":
        log_mean_pose_baseline(base, tracker, parent)

    if args.address:
        ray.init(address=args.address)
    else:
        # The dashboard serves Ray's state API, which Ray Train's placement-group cleaner polls to free the
        # CPUs of trials that ASHA stopped; without it, stopped trials keep their resources and the search stalls.
        # A local Ray has no spot nodes to be reclaimed: no preemption-watcher process per trial (~1 s of a CPU).
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        ray.init(include_dashboard=True, dashboard_host="127.0.0.1")
    cpus = int(ray.cluster_resources().get("CPU", 1))
    per_trial = args.workers_per_trial * args.cpus_per_worker
    max_concurrent = args.max_concurrent or max(1, cpus // per_trial)

    # The trial driver only waits on its TorchTrainer: it reserves memory, not a CPU the workers need. It runs on the
    # head node: Ray Train's placement-group cleaner reads the dashboard's state API, which a cluster serves on the
    # head's 127.0.0.1 only (cluster.yaml), and the run registry beside the experiment lives there too.
    trainable = tune.with_resources(make_trial_driver(experiment_dir, args.metric), tune.PlacementGroupFactory(
        [{"CPU": 0, "memory": DRIVER_MEMORY_BYTES, HEAD_NODE_RESOURCE: 0.001}]))
    callbacks = [MLflowTrialCallback(tracker, base_flat, args.metric), ProgressPrinter()]
    if args.resume:
        print(f"resuming experiment {args.experiment} from {experiment_dir}", flush=True)
        # The saved run config brings its callbacks back (MLflowTrialCallback re-reads its registry on load).
        tuner = tune.Tuner.restore(experiment_dir, trainable, resume_unfinished=True, resume_errored=True,
                                   param_space=base_flat)
    else:
        searcher, scheduler = make_searcher(args, space), make_scheduler(args)
        tuner = tune.Tuner(
            trainable,
            param_space=base_flat,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=args.num_samples,
                                        time_budget_s=args.time_budget_min * 60 or None,
                                        max_concurrent_trials=max_concurrent,
                                        trial_name_creator=short_trial_name,
                                        trial_dirname_creator=short_trial_name),
            run_config=tune.RunConfig(name=args.experiment, storage_path=args.storage_path, callbacks=callbacks,
                                      failure_config=tune.FailureConfig(max_failures=2), verbose=1),
        )
    budget_note = f", {args.time_budget_min:g} min budget" if args.time_budget_min else ""
    print(f"experiment {args.experiment}: {args.num_samples} trials x <= {args.epochs} epochs{budget_note}, "
          f"{max_concurrent} at a time; MLflow parent run {parent}", flush=True)
    fit_started = time.monotonic()
    results = tuner.fit()
    # Whatever the trial callback could not deliver (MLflow was down) goes now, before the runs are read back.
    MLflowTrialCallback(tracker, base_flat, args.metric).drain()

    # A search ends when every trial has ended or its time budget is spent; Tune then stops the running trials
    # without reporting their end, so their runs are closed here.
    budget_spent = bool(args.time_budget_min) and time.monotonic() - fit_started >= args.time_budget_min * 60
    if budget_spent:
        tracker.finish_running_trials(args.metric, stopped_by="time budget")
    ended = tracker.ended_trials()
    complete = len(ended) >= args.num_samples or budget_spent
    summary = summarize(results, args, base_flat, time.perf_counter() - started)
    summary["trials_ended"] = len(ended)
    if args.multi_objective:
        summary["pareto_front"] = pareto_front(args)
    summary["ended_by"] = "all trials" if len(ended) >= args.num_samples else "time budget" if complete else "interrupt"
    for key, value in summary.get("best", {}).items():
        if isinstance(value, (int, float)) and key != "epoch":
            tracker.client.log_metric(parent, f"best/{key}", value)
    tracker.client.log_dict(parent, summary, "search_summary.json")
    print(json.dumps(summary, indent=1, default=str))
    print(f"\nMLflow runs: {mlflow_ui_command(tracking_uri())}  (experiment {args.experiment!r})")
    if not complete:
        tracker.mark_unfinished_killed()
        tracker.end_parent("KILLED")
        print(f"search stopped with {len(ended)} of {args.num_samples} trials ended; state is in {experiment_dir}. "
              f"Continue with: python search/run.py --space {args.space} --experiment {args.experiment} "
              f"--storage-path {args.storage_path} --resume", file=sys.stderr)
        return 130
    tracker.end_parent("FINISHED")
    return 0


def default_optuna_storage(storage_path: str) -> str:
    """optuna.db beside a sqlite MLflow store, else inside a local --storage-path."""
    from search.tracking import tracking_uri

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve().parent / 'optuna.db'}"
    if "://" in storage_path:
        raise SystemExit("error: with a remote --storage-path and a non-sqlite MLflow store, pass --optuna-storage "
                         "URL (e.g. the PostgreSQL server MLflow uses)")
    return f"sqlite:///{Path(storage_path) / 'optuna.db'}"


def make_searcher(args, space):
    """OptunaSearch with the chosen sampler, its study persisted in --optuna-storage under the experiment's name."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    storage = optuna.storages.RDBStorage(args.optuna_storage)
    if args.searcher == "grid":
        sampler, define, points = optuna.samplers.GridSampler(space.grid, seed=args.seed), space.grid_define(), None
    else:
        sampler = optuna.samplers.RandomSampler(seed=args.seed) if args.searcher == "random" \
            else optuna.samplers.TPESampler(seed=args.seed)
        define, points = space.define, list(space.paper_points)
    metric, mode = ([args.clean_metric, args.metric], ["max", "max"]) if args.multi_objective else (args.metric, "max")
    return OptunaSearch(define, metric=metric, mode=mode, sampler=sampler, study_name=args.experiment,
                        storage=storage, points_to_evaluate=points)


def make_scheduler(args):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler

    if args.scheduler == "fifo":
        return FIFOScheduler()
    if args.scheduler == "hyperband":
        return HyperBandScheduler(time_attr="epoch", metric=args.metric, mode="max", max_t=args.epochs,
                                  reduction_factor=args.budget.reduction_factor)
    return ASHAScheduler(time_attr="epoch", metric=args.metric, mode="max", max_t=args.epochs,
                        grace_period=args.grace_period, reduction_factor=args.budget.reduction_factor)


def pareto_front(args) -> list[dict]:
    """The multi-objective study's non-dominated trials (clean metric, occluded metric) and their parameters."""
    import optuna

    study = optuna.load_study(study_name=args.experiment, storage=args.optuna_storage)
    return [{"values": {args.clean_metric: t.values[0], args.metric: t.values[1]}, "params": t.params}
            for t in study.best_trials]


def log_mean_pose_baseline(base, tracker, parent: str) -> None:
    """The floor a trained model must clear: the training set's mean pose placed in each ground-truth box."""
    from datasets.annotations import load_records
    from datasets.mean_pose import mean_pose_ap
    from trainables.worker import load_eval_split

    skeleton = DATASETS[base.data.dataset].skeleton
    train_records = load_records(base.data.train_ann, base.data.train_images, skeleton)
    for split, ann in (("val", base.data.val_ann), ("val_occ", base.data.val_occ_ann)):
        loaded = load_eval_split("coco", ann, base.data.val_images, skeleton)
        baseline = mean_pose_ap(train_records, loaded.records, loaded.gt, skeleton.sigmas_array())
        tracker.client.log_metric(parent, f"baseline_mean_pose/{split}/AP", baseline["AP"])
        print(f"mean-pose-in-box baseline {split}/AP = {baseline['AP']:.3f}", flush=True)


def summarize(results, args, base_flat: dict, wall_s: float) -> dict:
    summary = {"experiment": args.experiment, "wall_s": round(wall_s, 1)}
    scored = [r for r in results if r.metrics and isinstance(r.metrics.get(args.metric), (int, float))]
    if scored:
        best = results.get_best_result(metric=args.metric, mode="max", scope="all")
        shown = dict.fromkeys(("val/AP", "val_occ/AP", "val/PCKh_0.5", args.metric, "epoch"))
        summary["best"] = {k: best.metrics.get(k) for k in shown if k in best.metrics}
        summary["best"]["trial_id"] = best.metrics.get("trial_id")
        searched = tuple(f"{section}." for section in ("lja", "loss", "occ", "oasnet", "model"))
        summary["best"]["config"] = {k: v for k, v in sorted(best.config.items()) if k.startswith(searched)}
        summary["trials"] = sorted(
            ({"trial_id": r.metrics.get("trial_id"), "epochs": r.metrics.get("epoch"),
              "val/AP": r.metrics.get("val/AP"), args.metric: r.metrics.get(args.metric)} for r in scored),
            key=lambda t: -(t[args.metric] or 0))
    return summary


if __name__ == "__main__":
    sys.exit(main())
