"""Population-based training: `search/run.py --space lja --scheduler pbt` (Jaderberg et al. 2017, "Population Based
Training of Neural Networks", arXiv:1711.09846) or `--scheduler pb2` (Parker-Holder et al. 2020, "Provably
Efficient Online Hyperparameter Optimization with Population-Based Bandits", arXiv:2002.02518), through Ray Tune's
own `PopulationBasedTraining` and `PB2`.

A population of `--num-samples` trials trains side by side; every `--perturbation-interval` epochs (synchronously:
all members at the same epoch) the lower quarter copies the weights, optimiser and scheduler state of a member of
the upper quarter (exploit) and continues with that member's hyperparameters perturbed (explore: x1.2 / x0.8 or a
resample for PBT, a GP-bandit's choice for PB2), clipped to the lja space's own ranges. Perturbed: the DSL weight
λ (`loss.lambda_max`, with `loss.schedule` fixed to `constant`, so λ(t) is the piecewise-constant schedule the
population learns), LJA's `lja.quantity_ratio`, `lja.size_ratio`, `lja.p`, and `optim.lr` (x0.1 steps on top).

The books: Tune refuses a searcher (Optuna's included) beside PBT, so Optuna samples the *initial population* -
the paper's LJA point and any warm-start points first, then the sampler's draws - and `PopulationSearch` (a
BasicVariantGenerator) hands those to Tune; each study trial is the member's starting point and receives the
member's final score, with its final perturbed values as user attribute `pbt.final`. Each trial's per-epoch result
carries `hparam/<key>` for every perturbed key and, on the first epoch after an exploit, `pbt/donor` (the donor's
trial index, the number after `_` in its trial id) and `pbt/donor_epoch`: MLflow keeps the schedule and lineage.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import uuid
import warnings
from dataclasses import dataclass

import ray.exceptions
from ray import tune
from ray.train.v2.api.callback import UserCallback
from ray.tune.schedulers import PopulationBasedTraining
from ray.tune.schedulers.pb2 import PB2
from ray.tune.search.basic_variant import BasicVariantGenerator

from search.masking import mask_uri
from search.spaces import SPACES, lja_space

log = logging.getLogger(__name__)

SCHEDULERS = ("pbt", "pb2")  # --scheduler values that make a search a population
PERTURBED = ("loss.lambda_max", "lja.quantity_ratio", "lja.size_ratio", "lja.p", "optim.lr")
FIXED = {"loss.schedule": "constant"}  # λ(t) is what the population learns
LR_FACTORS = (0.1, 10.0)  # the learning rate's range: these multiples of the recipe's
HPARAM_PREFIX, DONOR_METRIC, DONOR_EPOCH_METRIC = "hparam/", "pbt/donor", "pbt/donor_epoch"
FINAL_ATTR = "pbt.final"  # study trial user attribute: the member's perturbed values at its end
ACK_TIMEOUT_S = 3600.0  # a Train report waits this long for the driver to hand its checkpoint to Tune


class _RangeRecorder:
    """Runs a define-by-run space, recording each float's (low, high, log); the schedule taken as `constant`."""

    def __init__(self):
        self.ranges = {}

    def suggest_float(self, name, low, high, log=False, **_):
        self.ranges[name] = (float(low), float(high), bool(log))
        return low

    def suggest_categorical(self, name, choices):
        return FIXED.get(name, choices[0])


def bounds(base_lr: float) -> dict[str, tuple[float, float, bool]]:
    """{perturbed key: (low, high, log)}: the lja space's ranges (search/spaces.py); lr: LR_FACTORS x `base_lr`."""
    recorder = _RangeRecorder()
    lja_space(recorder)
    out = {key: recorder.ranges[key] for key in PERTURBED if key in recorder.ranges}
    out["optim.lr"] = (base_lr * LR_FACTORS[0], base_lr * LR_FACTORS[1], True)
    return out


@dataclass(frozen=True)
class Clip:
    """PBT's custom explore function: each perturbed value kept in its range (x1.2 of lja.p = 1 is no probability);
    a class, so that Tune can pickle the scheduler into the experiment."""

    ranges: tuple  # ((key, low, high), ...)

    def __call__(self, config: dict) -> dict:
        for key, low, high in self.ranges:
            if key in config:
                config[key] = min(max(float(config[key]), low), high)
        return config


class _NeverStalls:
    """Synchronous PBT waits at each perturbation epoch for every live member; a member that a trial's last epoch
    ended (the stop criterion, which Tune applies before the scheduler) or that a `--resume` restarted behind
    can leave the others paused at that epoch with nobody running to complete it. Then the paused member furthest
    behind runs on (Tune's own choice returns None there and the search would wait for ever).

    A `--resume` restores Tune's trials but not the scheduler's state: each restored member's is rebuilt from its
    last result (epoch, score; its last perturbation at the interval's multiple at or below that epoch), and it
    waits PAUSED (its checkpoint what a donor offers), so that the population syncs at the next such epoch of the
    member furthest behind; no member copies a donor behind it (it would train an epoch again)."""

    def on_trial_add(self, tune_controller, trial):
        from ray.tune.experiment import Trial

        super().on_trial_add(tune_controller, trial)
        epoch = (trial.last_result or {}).get(self._time_attr)
        if epoch and self._metric in trial.last_result:
            state = self._trial_state[trial]
            state.last_result, state.last_train_time = trial.last_result, int(epoch)
            state.last_score = self._metric_op * trial.last_result[self._metric]
            state.last_perturbation_time = int(epoch) // self._perturbation_interval * self._perturbation_interval
            self._resumed = True
            if trial.status == Trial.PENDING and trial.checkpoint is not None:  # Tune starts any PENDING trial
                trial.set_status(Trial.PAUSED)  # a PAUSED one waits for choose_trial_to_run: none trains past a sync
        if getattr(self, "_resumed", False):  # every live member, a restored one that never reported at epoch 0
            self._next_perturbation_sync = min(
                (s.last_perturbation_time for t, s in self._trial_state.items() if not t.is_finished()),
                default=self._next_perturbation_sync - self._perturbation_interval) + self._perturbation_interval

    def _checkpoint_or_exploit(self, trial, tune_controller, upper_quantile, lower_quantile):
        if trial in lower_quantile:  # only donors at or beyond the member's epoch (a resumed population)
            ahead = [t for t in upper_quantile
                     if self._trial_state[t].last_train_time >= self._trial_state[trial].last_train_time]
            upper_quantile, lower_quantile = (ahead, lower_quantile) if ahead else \
                (upper_quantile, [t for t in lower_quantile if t is not trial])
        super()._checkpoint_or_exploit(trial, tune_controller, upper_quantile, lower_quantile)

    def choose_trial_to_run(self, tune_controller):
        from ray.tune.experiment import Trial

        chosen = super().choose_trial_to_run(tune_controller)
        trials = tune_controller.get_trials()
        if chosen is None and not any(t.status == Trial.RUNNING for t in trials):
            waiting = [t for t in trials if t.status in (Trial.PAUSED, Trial.PENDING) and t in self._trial_state]
            chosen = min(waiting, key=lambda t: self._trial_state[t].last_train_time, default=None)
        return chosen


class SynchPBT(_NeverStalls, PopulationBasedTraining):
    """Tune's PopulationBasedTraining that never stalls (pickled into the experiment: this import path stays)."""


class SynchPB2(_NeverStalls, PB2):
    """Tune's PB2 that never stalls (pickled into the experiment: this import path stays)."""


def make_scheduler(args, base_lr: float):
    """Tune's PopulationBasedTraining (`pbt`) or PB2 (`pb2`) over PERTURBED, synchronous, on `args.metric`."""
    ranges = bounds(base_lr)
    common = dict(time_attr="epoch", metric=args.metric, mode="max", perturbation_interval=args.perturbation_interval,
                  quantile_fraction=0.25, synch=True,
                  custom_explore_fn=Clip(tuple((k, lo, hi) for k, (lo, hi, _) in ranges.items())))
    if args.scheduler == "pb2":
        return SynchPB2(hyperparam_bounds={k: [lo, hi] for k, (lo, hi, _) in ranges.items()}, **common)
    mutations = {k: tune.loguniform(lo, hi) if log else tune.uniform(lo, hi) for k, (lo, hi, log) in ranges.items()}
    return SynchPBT(hyperparam_mutations=mutations, resample_probability=0.25, **common)


def anchor(point: dict, base_lr: float, ranges: dict) -> dict:
    """A paper or warm-start point restricted to the perturbed keys (a schedule's own parameters dropped: under PBT
    λ is constant between exploits), clipped to the ranges, the learning rate the recipe's unless given."""
    out = {"optim.lr": base_lr}
    out |= {k: float(v) for k, v in point.items() if k in ranges}
    return {k: min(max(v, ranges[k][0]), ranges[k][1]) for k, v in out.items()}


def initial_population(args, paper_points, base_lr: float) -> tuple[list[dict], list[int]]:
    """(configs, their study trials' storage ids): `args.num_samples` members asked of the Optuna study
    `args.experiment` - the warm-start and paper points enqueued first, then the sampler's draws."""
    import optuna

    from search.study import study_storage, with_retries

    ranges = bounds(base_lr)
    sampler = optuna.samplers.RandomSampler(seed=args.seed) if args.searcher == "random" \
        else optuna.samplers.TPESampler(seed=args.seed)
    study = with_retries(lambda: optuna.create_study(study_name=args.experiment, storage=study_storage(
        args.optuna_storage), sampler=sampler, direction="maximize", load_if_exists=True), "creating the study")
    distributions = {k: optuna.distributions.FloatDistribution(lo, hi, log=log) for k, (lo, hi, log) in ranges.items()}
    anchors = []
    for point in [*(getattr(args, "warm_points", None) or []), *paper_points]:
        if (fixed := anchor(point, base_lr, ranges)) not in anchors:
            anchors.append(fixed)
    for fixed in anchors[:args.num_samples]:
        with_retries(lambda: study.enqueue_trial(fixed), "enqueuing a point")
    configs, ids = [], []
    for _ in range(args.num_samples):
        trial = with_retries(lambda: study.ask(distributions), "asking for a member")
        configs.append(dict(trial.params))
        ids.append(trial._trial_id)
    return configs, ids


class PopulationSearch(BasicVariantGenerator):
    """The initial population as Tune's trials, each study trial named with its Tune trial's id (user attribute
    `tune_trial_id`, as RecordingOptunaSearch does) when Tune creates the trial. Pickled into the experiment: this
    import path stays."""

    def __init__(self, configs: list[dict], study_ids: list[int], study_name: str, storage_url: str):
        super().__init__(points_to_evaluate=[dict(c) for c in configs])
        self._study_ids = list(study_ids)
        self._named = 0
        self._study_name = study_name
        self._storage_url = mask_uri(storage_url)

    def next_trial(self):
        trial = super().next_trial()
        if trial is not None and self._named < len(self._study_ids):
            from search.study import TUNE_TRIAL_ATTR, study_storage, with_retries

            storage, study_id = study_storage(self._storage_url), self._study_ids[self._named]
            with_retries(lambda: storage.set_trial_user_attr(study_id, TUNE_TRIAL_ATTR, trial.trial_id),
                         f"naming trial {trial.trial_id}")
            self._named += 1
        return trial


class PopulationRecorder(tune.Callback):
    """Tells the study each member's end (its last result's metric, as the Optuna searcher would) and its final
    perturbed values (`pbt.final`). What it cannot write, `settle_study` ends when the search ends."""

    def __init__(self, study_name: str, storage_url: str, metric: str):
        self.study_name, self.storage_url, self.metric = study_name, mask_uri(storage_url), metric

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._tell(trial, error=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._tell(trial, error=True)

    def _tell(self, trial, error: bool) -> None:
        import optuna

        from search.study import TUNE_TRIAL_ATTR, outcome, study_storage, with_retries

        try:
            study = optuna.load_study(study_name=self.study_name, storage=study_storage(self.storage_url))
            mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(TUNE_TRIAL_ATTR) == trial.trial_id]
            values, state = outcome(self.metric, trial.last_result, error)
            final = {k: trial.config.get(k) for k in PERTURBED}
            for member in mine:
                if member.state.is_finished():
                    continue
                with_retries(lambda: study._storage.set_trial_user_attr(member._trial_id, FINAL_ATTR, final),
                             f"recording trial {trial.trial_id}'s final values")
                with_retries(lambda: study.tell(member.number, values, state=state, skip_if_finished=True),
                             f"recording the end of trial {trial.trial_id}")
        except Exception as err:  # noqa: BLE001 - settle_study ends it at the search's end; the search goes on
            log.warning("trial %s: its end is not in the Optuna study yet (%s)", trial.trial_id, str(err)[:200])


# Tune's reuse-actors advice suits class trainables, not this driver; set on import: a --resume never calls setup.
warnings.filterwarnings("ignore", message="Consider boosting PBT performance", category=UserWarning)


def setup(args, base, callbacks: list) -> tuple:
    """(searcher, scheduler, extra tune.RunConfig settings) of a population search from the base trial config
    `base` (FIXED already applied); its Tune callback is appended to `callbacks`."""
    configs, study_ids = initial_population(args, SPACES[args.space].paper_points, base.optim.lr)
    searcher = PopulationSearch(configs, study_ids, args.experiment, args.optuna_storage)
    # 3 checkpoints kept (PBT warns below): a donor's outlives the exploit copying it. A trial's last epoch ends it
    # before the scheduler sees it (an exploit then would restart it with nothing left to train).
    run_settings = {"checkpoint_config": tune.CheckpointConfig(num_to_keep=3), "stop": {"epoch": args.epochs}}
    callbacks.append(PopulationRecorder(args.experiment, args.optuna_storage, args.metric))
    return searcher, make_scheduler(args, base.optim.lr), run_settings


def hparam_metrics(config: dict) -> dict[str, float]:
    """{`hparam/<key>`: value} of every perturbed key in a trial's (current) config."""
    return {HPARAM_PREFIX + key: float(config[key]) for key in PERTURBED if key in config}


def trial_index(trial_id: str) -> int:
    """A Tune trial id's index: `3` of `a1b2c_00003` (the run name `trial_a1b2c_00003` ends with it too)."""
    return int(str(trial_id).rsplit("_", 1)[-1])


class ForwardToDriver(UserCallback):
    """Ray Train callback (in Train's controller): each report's rank-0 metrics and checkpoint go to the trial
    driver, which hands both to Tune (Ray's TuneReportCallback forwards metrics and the checkpoint's path only:
    Tune could not pause or exploit the trial). The report waits for the driver's acknowledgement, so that Train
    does not replace its latest checkpoint before Tune has copied it."""

    def __init__(self, items, acks):
        self.items, self.acks = items, acks

    def after_report(self, run_context, metrics, checkpoint):
        self.items.put((dict(metrics[0]), checkpoint))
        self.acks.get(timeout=ACK_TIMEOUT_S)


def make_trial_driver(trainer_settings):
    """The PBT trial driver: one new Ray Train run per (re)start of a trial, reporting each epoch to Tune with its
    checkpoint, and started from Tune's checkpoint of the trial (its own after a pause or a `--resume`, a donor's
    after an exploit; none: from scratch) with the trial's current config: trainables/train.py applies its learning
    rate to the restored optimiser, and λ and LJA are built from it. Each run's name is new (the checkpoint it
    starts from and a random suffix): Tune's checkpoint is the one a member continues. A run named as an earlier
    one would resume that run's own checkpoint, which can be an epoch newer than Tune's (a Ctrl-C between the two),
    and report that epoch again without a checkpoint: the member was restarted from its older one at every pause."""

    def run_trial(config: dict) -> None:
        from ray.train.torch import TorchTrainer
        from ray.util.queue import Queue

        from trainables.runtime import START_FROM_KEY
        from trainables.train_loop import ray_train_loop

        trial_id = tune.get_context().get_trial_id()
        start = tune.get_checkpoint()
        train_config, name, restored_epoch, donor = dict(config), trial_id, 0, None
        if start is not None:
            origin = start.get_metadata()
            restored_epoch = int(origin["epoch"])
            name = f"{trial_id}_from_{origin['trial_id']}_e{restored_epoch}"
            donor = origin["trial_id"] if origin["trial_id"] != trial_id else None
            train_config[START_FROM_KEY] = start
        name += f"_{uuid.uuid4().hex[:8]}"
        items, acks = Queue(1, actor_options={"num_cpus": 0}), Queue(1, actor_options={"num_cpus": 0})
        trainer = TorchTrainer(ray_train_loop, train_loop_config=train_config, **trainer_settings(
            config, name, [ForwardToDriver(items, acks)]))
        failed = []

        def fit():
            try:
                trainer.fit()
            except BaseException as err:  # noqa: BLE001 - re-raised in the trial's thread below
                failed.append(err)
            finally:
                with contextlib.suppress(ray.exceptions.RayActorError):  # paused: Tune ended the trial's actors
                    items.put(None)

        threading.Thread(target=fit, name=f"train-{trial_id}", daemon=True).start()
        reported = restored_epoch
        while (item := items.get()) is not None:
            metrics, checkpoint = item
            # An epoch Tune has, reported once more by fit() after a restore: the one this run started from (a
            # donor's, for an exploit) or, after a Train worker restart within the run, the run's own last.
            if int(metrics.get("epoch", 0)) > reported:
                reported = int(metrics["epoch"])
                metrics |= hparam_metrics(config)
                if donor is not None:
                    metrics |= {DONOR_METRIC: float(trial_index(donor)), DONOR_EPOCH_METRIC: float(restored_epoch)}
                    donor = None
                if checkpoint is not None:  # Train's checkpoint, as Tune's (the same files; Tune copies them)
                    metrics["checkpoint_path"] = checkpoint.path
                    checkpoint = tune.Checkpoint(checkpoint.path, checkpoint.filesystem)
                    checkpoint.set_metadata({"trial_id": trial_id, "epoch": int(metrics["epoch"])})
                tune.report(metrics, checkpoint=checkpoint)
            acks.put(True)
        if failed:
            raise failed[0]

    return run_trial
