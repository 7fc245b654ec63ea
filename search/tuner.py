"""The search's Tune side: the trial driver (one Ray Train run per trial), the Optuna searcher and the early-stopping
scheduler, the Tuner that runs them (`--resume`: search/settings.py restores its settings), and the end-of-search
summary.

search/run.py parses the command line and calls `run_search`. Tune pickles the trainable, the searcher (with its
define function from search/spaces.py), the callbacks (search/tracking.py) and `short_trial_name` into the
experiment state; the trainable is handed in again on restore, the others are found by their import paths, which
therefore stay as they are. (Experiments made while this code lived in search/run.py, run as a script, hold
`short_trial_name` by value: they need nothing from here.)
"""
from __future__ import annotations

import os
import time

from datasets.meta import get as dataset_meta
from datasets.meta import metric_name
from search.masking import mask_uri
from search.progress import best_first
from search.spaces import SPACES
from search.stores import train_storage

DRIVER_MEMORY_BYTES = 256 * 1024**2
HEAD_NODE_RESOURCE = "node:__internal_head__"  # Ray gives every head node this resource, 1 of it
# A logical resource that only the head declares (search/local_ray.py; cluster.yaml's head node type) and only trial
# drivers use: each holds HEAD_TRIAL_SLOTS // max_concurrent of it, so exactly max_concurrent fit (n(n+1) <= slots).
TRIAL_SLOTS, HEAD_TRIAL_SLOTS = "occpose_trial_slots", 1_000_000


def driver_resources(max_concurrent: int, slots: bool = True):
    """The trial driver's placement group: no CPU (it only waits on its TorchTrainer, whose workers hold the CPUs),
    memory, a token of HEAD_NODE_RESOURCE (the drivers run on the head: Ray Train's placement-group cleaner reads the
    dashboard's state API, which a cluster serves on the head's 127.0.0.1 only, and the run registry beside the
    experiment lives there too) and, with `slots` (the cluster declares TRIAL_SLOTS), 1/`max_concurrent` of the
    trial slots, so that at most `max_concurrent` trials *run* at once. Tune's max_concurrent_trials cannot do that
    for a population: it limits a Searcher's live trials (a paused PBT member stays live, and the population's
    generator is no Searcher, so Tune ignores it); all members started at once and their Train runs timed out
    waiting for the CPUs. A paused member releases its slots. (Not shares of HEAD_NODE_RESOURCE itself: Ray Train's
    own head actors need 0.001 of it each, and drivers holding all of it left them unschedulable.)"""
    from ray import tune

    bundle = {"CPU": 0, "memory": DRIVER_MEMORY_BYTES, HEAD_NODE_RESOURCE: 0.001}
    if slots:
        bundle[TRIAL_SLOTS] = HEAD_TRIAL_SLOTS // max_concurrent
    return tune.PlacementGroupFactory([bundle])


def make_trial_driver(experiment_storage: str, metric: str, population: bool = False):
    """The Tune function trainable: one Ray Train run (TorchTrainer) per trial, reporting back to Tune (for
    `--scheduler pbt`/`pb2`, search/pbt.py's: it hands Tune each epoch's checkpoint too)."""
    storage = train_storage(experiment_storage)

    def trainer_settings(config: dict, name: str, callbacks: list) -> dict:
        import ray.train
        gpus = float(config["runtime.gpus_per_worker"])
        resources = {"CPU": float(config["runtime.cpus_per_worker"]), **({"GPU": gpus} if gpus else {})}
        return dict(
            scaling_config=ray.train.ScalingConfig(num_workers=int(config["runtime.workers"]), use_gpu=gpus > 0,
                                                   resources_per_worker=resources),
            # Outside Tune's own experiment directory, which Tune re-syncs from its staging copy on restore.
            run_config=ray.train.RunConfig(
                name=name, storage_path=storage, callbacks=callbacks,
                failure_config=ray.train.FailureConfig(max_failures=2),
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute=metric,
                                                             checkpoint_score_order="max")))

    if population:
        from search.pbt import make_trial_driver as population_driver
        return population_driver(trainer_settings)

    def run_trial(config: dict) -> None:
        from ray import tune
        from ray.train.torch import TorchTrainer
        from ray.tune.integration.ray_train import TuneReportCallback

        from trainables.train_loop import ray_train_loop

        # A stable name per trial: a restarted trial finds its Train run and resumes its checkpoint.
        TorchTrainer(ray_train_loop, train_loop_config=config, **trainer_settings(
            config, tune.get_context().get_trial_id(), [TuneReportCallback()])).fit()

    return run_trial


def short_trial_name(trial) -> str:
    return f"trial_{trial.trial_id}"


def make_searcher(args, space):
    """OptunaSearch with the chosen sampler, its study persisted in --optuna-storage under the experiment's name;
    every end of a trial reaches the study (search/study.py)."""
    import optuna

    from search.study import RecordingOptunaSearch, study_storage

    storage = study_storage(args.optuna_storage)
    if args.searcher == "grid":
        sampler, define, points = optuna.samplers.GridSampler(space.grid, seed=args.seed), space.grid_define(), None
    else:
        sampler = optuna.samplers.RandomSampler(seed=args.seed) if args.searcher == "random" \
            else optuna.samplers.TPESampler(seed=args.seed)
        define = space.define
        # A warm start's points first (search/warm_start.py), then the paper's, each once.
        points = list(getattr(args, "warm_points", None) or [])
        points += [point for point in space.paper_points if point not in points]
    metric, mode = ([args.clean_metric, args.metric], ["max", "max"]) if args.multi_objective else (args.metric, "max")
    return RecordingOptunaSearch(define, metric=metric, mode=mode, sampler=sampler, study_name=args.experiment,
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


def run_search(args, tracker, experiment_dir: str, base, started: float) -> int:
    """Run (or continue) the search of `args` from the trial config `base`, tracked by `tracker`; 0 when every
    trial ended or the time budget was spent, 130 when it was interrupted (continue with --resume). What it shows
    goes to the search's console (search/console.py), the live view to search/progress.py, the summary to
    search/status.py."""
    import ray
    from ray import tune

    from search.console import current, forward_worker_warnings
    from search.progress import board_for
    from search.tracking import MLflowTrialCallback, ProgressPrinter, git_commit
    from search import pbt

    console = current()
    population = args.scheduler in pbt.SCHEDULERS
    base = base.replace(**pbt.FIXED) if population else base  # λ constant between exploits: PBT learns λ(t)
    base_flat = base.flat()
    resuming = tracker.parent_run_id is not None
    parent = tracker.start_parent(
        run_name=f"search-{args.space}",
        params={"space": args.space, "searcher": f"optuna-{args.searcher}", "scheduler": args.scheduler,
                "metric": args.metric, "multi_objective": args.multi_objective, "optuna_storage": mask_uri(args.optuna_storage),
                "num_samples": args.num_samples, "epochs": args.epochs, "grace_period": args.grace_period,
                "seed": args.seed, "smoke": args.smoke, "dataset": args.dataset,
                **({"warm_start": str(args.warm_start)} if getattr(args, "warm_start", None) else {}),
                **{f"base.{k}": v for k, v in base_flat.items()}},
        tags={"space": args.space, "git_commit": git_commit(), "experiment_dir": experiment_dir},
    )
    if not resuming and args.dataset == "synthetic":
        log_mean_pose_baseline(base, tracker, parent)
    if not resuming and getattr(args, "warm_record", None):  # which source trials were enqueued, which skipped
        tracker.client.log_dict(parent, {"source": str(args.warm_start), "trials": args.warm_record},
                                "warm_start.json")

    if args.address:
        ray.init(address=args.address)
    else:
        # The dashboard serves Ray's state API, which Ray Train's placement-group cleaner polls to free the
        # CPUs of trials that ASHA stopped; without it, stopped trials keep their resources and the search stalls.
        # A local Ray has no spot nodes to be reclaimed: no preemption-watcher process per trial (~1 s of a CPU).
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        from search import local_ray

        ray.init(**local_ray.init_kwargs())  # loopback only, token file private
    forward_worker_warnings()
    cpus = int(ray.cluster_resources().get("CPU", 1))
    per_trial = args.workers_per_trial * args.cpus_per_worker
    max_concurrent = args.max_concurrent or max(1, cpus // per_trial)

    slots = ray.cluster_resources().get(TRIAL_SLOTS, 0) >= HEAD_TRIAL_SLOTS
    if not slots and population and args.num_samples > max_concurrent:
        console.line(f"warning: this Ray cluster's head declares no {TRIAL_SLOTS} (cluster.yaml does): all "
                     f"{args.num_samples} members may start at once, beyond --max-concurrent {max_concurrent}")
    trainable = tune.with_resources(make_trial_driver(experiment_dir, args.metric, population),
                                    driver_resources(max_concurrent, slots))
    callbacks = [MLflowTrialCallback(tracker, base_flat, args.metric), ProgressPrinter()]
    if args.resume:
        console.line(f"resuming experiment {args.experiment} from {experiment_dir}")
        # The saved run config brings its callbacks back (MLflowTrialCallback re-reads its registry on load). The
        # saved param_space too: Tune refuses one that differs, and a config section that gained a field since the
        # search started (data.codec, optim.optimizer) would make every older search unresumable; a trial config
        # lacking a field takes its default (TrialConfig.from_flat).
        tuner = tune.Tuner.restore(experiment_dir, trainable, resume_unfinished=True, resume_errored=True)
    else:
        if population:  # Optuna samples the initial population; PBT/PB2 perturb it (search/pbt.py)
            searcher, scheduler, run_settings = pbt.setup(args, base, callbacks)
        else:
            searcher, scheduler, run_settings = make_searcher(args, SPACES[args.space]), make_scheduler(args), {}
        tuner = tune.Tuner(
            trainable,
            param_space=base_flat,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=args.num_samples,
                                        time_budget_s=args.time_budget_min * 60 or None,
                                        max_concurrent_trials=max_concurrent,
                                        trial_name_creator=short_trial_name,
                                        trial_dirname_creator=short_trial_name),
            # Ray's own status tables (verbose=1) land in the search's log unless --verbose (search/console.py).
            run_config=tune.RunConfig(name=args.experiment, storage_path=args.storage_path, callbacks=callbacks,
                                      failure_config=tune.FailureConfig(max_failures=2), verbose=1, **run_settings),
        )
    budget_note = f", {args.time_budget_min:g} min budget" if args.time_budget_min else ""
    console.line(f"experiment {args.experiment}: {args.num_samples} trials x <= {args.epochs} epochs{budget_note}, "
                 f"{max_concurrent} at a time; MLflow parent run {parent}")
    searched = tuple(k for point in SPACES[args.space].paper_points for k in point)
    fit_started = time.monotonic()
    with board_for(console, args, base_flat, searched).live() as board:
        results = tuner.fit()
        board.settle()  # trials the time budget or Ctrl-C stopped were never reported ended
    # Whatever the trial callback could not deliver (MLflow was down) goes now, before the runs are read back.
    MLflowTrialCallback(tracker, base_flat, args.metric).drain()

    # A search ends when every trial has ended or its time budget is spent; Tune then stops the running trials
    # without reporting their end, so their runs are closed here.
    budget_spent = bool(args.time_budget_min) and time.monotonic() - fit_started >= args.time_budget_min * 60
    if budget_spent:
        tracker.finish_running_trials(args.metric, stopped_by="time budget")
    ended = tracker.ended_trials()
    complete = len(ended) >= args.num_samples or budget_spent
    if complete:
        settle(args, experiment_dir)
    if not complete:
        tracker.mark_unfinished_killed()
    from search.consistency import report as check_books

    books_agree = check_books(args.experiment, args.storage_path, tracker.uri, out=console.stream)
    tracker.end_parent("FINISHED" if complete else "KILLED")
    summary = summarize(results, args, time.perf_counter() - started)
    summary["trials_ended"] = len(ended)
    if args.multi_objective:
        summary["pareto_front"] = pareto_front(args)
    summary["ended_by"] = "all trials" if len(ended) >= args.num_samples else "time budget" if complete else "interrupt"
    from search.status import show_summary

    show_summary(args, tracker, summary, console, complete)
    if not complete:
        console.line(f"search stopped with {len(ended)} of {args.num_samples} trials ended; state is in "
                     f"{experiment_dir}. Continue with the resume command above.")
        return 130
    if not books_agree:
        console.line(f"error: the books of {args.experiment} disagree (listed above); `python search/run.py "
                     f"--experiment {args.experiment} --storage-path {args.storage_path} --check` lists them again")
        return 1
    return 0


def settle(args, experiment_dir: str) -> None:
    """End the study trials a finished search left open (search/study.py settle_study)."""
    import optuna

    from search.consistency import tune_trials
    from search.console import current
    from search.study import settle_study, study_storage, with_retries

    study = with_retries(lambda: optuna.load_study(study_name=args.experiment,
                                                   storage=study_storage(args.optuna_storage)), "loading the study")
    metric = [args.clean_metric, args.metric] if args.multi_objective else args.metric
    for line in settle_study(study, experiment_dir, tune_trials(experiment_dir), metric):
        current().line(f"Optuna study: ended {line} (the searcher was not told of its end)")


def log_mean_pose_baseline(base, tracker, parent: str) -> None:
    """The floor a trained model must clear: the training set's mean pose placed in each ground-truth box."""
    from datasets.annotations import load_records
    from datasets.evaluation.mean_pose import mean_pose_ap
    from datasets.evaluation.splits import load_eval_split

    from search.console import current

    meta = dataset_meta(base.data.dataset)
    floor = []
    train_records = load_records(base.data.train_ann, base.data.train_images, meta.skeleton)
    for split, ann in (("val", base.data.val_ann), ("val_occ", base.data.val_occ_ann)):
        loaded = load_eval_split(meta.protocol, ann, base.data.val_images, meta.skeleton)
        baseline = mean_pose_ap(train_records, loaded.records, loaded.gt, meta.skeleton.sigmas_array())
        tracker.client.log_metric(parent, f"baseline_mean_pose/{metric_name(split, 'AP')}", baseline["AP"])
        floor.append(f"{metric_name(split, 'AP')} = {baseline['AP']:.3f}")
    current().line(f"mean pose in each box (the floor to clear): {', '.join(floor)}")


def summarize(results, args, wall_s: float) -> dict:
    """The search's outcome for the terminal and MLflow: the best trial (its headline metrics, epoch and searched
    config) and every scored trial, best first."""
    from search.tracking import HEADLINE_METRICS

    summary = {"experiment": args.experiment, "wall_s": round(wall_s, 1)}
    scored = [r for r in results if r.metrics and isinstance(r.metrics.get(args.metric), (int, float))]
    if scored:
        best = min(scored, key=lambda r: best_first(best_score(r, args.metric), r.metrics.get("trial_id")))
        shown = dict.fromkeys((*HEADLINE_METRICS, args.metric, "epoch"))
        summary["best"] = {k: best.metrics.get(k) for k in shown if k in best.metrics}
        summary["best"]["trial_id"] = best.metrics.get("trial_id")
        searched = tuple(f"{section}." for section in ("lja", "loss", "occ", "oasnet", "model"))
        summary["best"]["config"] = {k: v for k, v in sorted(best.config.items()) if k.startswith(searched)}
        summary["trials"] = sorted(
            ({"trial_id": r.metrics.get("trial_id"), "epochs": r.metrics.get("epoch"),
              args.clean_metric: r.metrics.get(args.clean_metric), args.metric: r.metrics.get(args.metric)}
             for r in scored),
            key=lambda t: best_first(t[args.metric], t["trial_id"]))
    return summary


def best_score(result, metric: str) -> float:
    """A Tune result's best reported `metric` over its epochs (its last one where Tune kept no history)."""
    history = result.metrics_dataframe
    if history is not None and metric in history and history[metric].notna().any():
        return float(history[metric].max())
    return float(result.metrics[metric])
