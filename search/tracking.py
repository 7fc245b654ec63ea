"""MLflow tracking for a search: one parent run, one nested child run per Tune trial.

Logging happens in the driver through a Tune callback, so a single process writes the store (sqlite tolerates
one writer best) and run ids live in one file beside the experiment state, ready for resume.
"""
from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from ray import tune

from search.console import current as console
# The pickle path of ProgressPrinter in experiments made before it moved to search/progress.py.
from search.progress import HEADLINE_METRICS, MAIN_KEYS, ProgressPrinter  # noqa: F401
# Also the pickle path of these two: experiments saved before they moved to search/journal.py unpickle through here.
from search.journal import RunRegistry, Spool
from search.masking import mask_uri, reveal
from search.stores import BEST_CHECKPOINT, CHECKPOINT_FILES, artifact_location, open_tracking_store, tracking_uri

LOGGED_EXTRA_METRICS = ("epoch_time_s",)
STEP_MARKER_METRIC = "epoch_time_s"  # logged with every epoch; its history says which epochs a run has
# A trial's cost counters: `cost/<counter>` (cumulative), `cost/epoch/<counter>`; the parent's totals have their own
# names, as the parent also carries the best trial's metrics under theirs (search/status.py record_on_parent).
COST_PREFIX, COST_EPOCH_PREFIX, TOTAL_PREFIX = "cost/", "cost/epoch/", "total/"
ROLE_TAG = "occpose.role"  # "parent" or "trial": how a resume finds runs the registry never heard of


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def ensure_experiment(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    # sqlite stores need an explicit artifact root (search/stores.py).
    return client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri))


def epoch_metrics(result: dict) -> dict[str, float]:
    """The trial's own metrics from a Tune result: `split/metric` names plus a few extras, numbers only."""
    out = {}
    for key, value in result.items():
        if ("/" in key or key in LOGGED_EXTRA_METRICS) and isinstance(value, (int, float)) and not isinstance(
            value, bool
        ):
            if key != "checkpoint_path" and math.isfinite(value):
                out[key] = float(value)
    return out


class SearchTracker:
    """Owns the parent run; hands out child runs; survives restarts through its RunRegistry."""

    def __init__(self, experiment: str, registry_path: Path, uri: str | None = None, connect: bool = True):
        self.experiment = experiment
        self.uri = uri or tracking_uri()
        if connect:  # a fresh sqlite store is created once, whoever else opens it (search/stores.py)
            open_tracking_store(self.uri)
        self.client = MlflowClient(self.uri)
        self._experiment_id = ensure_experiment(self.client, experiment) if connect else None
        self.registry = RunRegistry(registry_path)
        self.spool_path = Path(registry_path).with_name(f"{experiment}.mlflow_spool.jsonl")

    @property
    def experiment_id(self) -> str:
        """Looked up on first use, so a tracker rebuilt while the server is down waits for it instead of failing."""
        if self._experiment_id is None:
            self._experiment_id = ensure_experiment(self.client, self.experiment)
        return self._experiment_id

    @property
    def parent_run_id(self) -> str | None:
        return self.registry.read()["parent"]

    def _find_run(self, filter_string: str) -> str | None:
        """A run this search created but whose id never reached the registry (the driver was killed in between):
        MLflow is asked before anything is created, so a resume reattaches it instead of duplicating it."""
        runs = self.client.search_runs([self.experiment_id], filter_string, max_results=1,
                                       order_by=["attributes.start_time ASC"])
        return runs[0].info.run_id if runs else None

    def start_parent(self, run_name: str, params: dict, tags: dict) -> str:
        if self.parent_run_id is not None:
            self.client.update_run(self.parent_run_id, status="RUNNING")
            return self.parent_run_id
        run_id = self._find_run(f"tags.{ROLE_TAG} = 'parent'")
        if run_id is None:
            run_id = self.client.create_run(self.experiment_id, run_name=run_name,
                                            tags={**tags, ROLE_TAG: "parent"}).info.run_id
        self._log_params(run_id, params)
        with self.registry.editing() as data:
            data["parent"] = run_id
        return run_id

    def _log_params(self, run_id: str, params: dict) -> None:
        """Params of a new run, or of one found after a crash that may have missed them (the same values again
        are accepted; a run that already holds other values keeps them)."""
        try:
            self.client.log_batch(run_id, params=[Param(k, _param(v)) for k, v in sorted(params.items())])
        except MlflowException as err:
            if "Changing param values is not allowed" not in str(err):
                raise

    def end_parent(self, status: str) -> None:
        """Close the parent run, its cost totals logged first (`log_cost_totals`)."""
        if self.parent_run_id is not None:
            self.log_cost_totals()
            self.client.set_terminated(self.parent_run_id, status=status)

    def cost_totals(self) -> dict[str, float]:
        """`total/cost/<counter>`: every epoch's `cost/epoch/<counter>` (trainables/cost.py) summed over the trials'
        runs, each epoch once (`_apply`): each trial's final `cost/<counter>`, except that a PBT member's carries its
        donor's history too (its model's cost), counted here once, by the donor. `total/cost/trials`: the runs."""
        totals, runs = {}, self.registry.read()["trials"].values()
        for run_id in runs:
            for key in [k for k in self.client.get_run(run_id).data.metrics if k.startswith(COST_EPOCH_PREFIX)]:
                total = TOTAL_PREFIX + COST_PREFIX + key.removeprefix(COST_EPOCH_PREFIX)
                history = self.client.get_metric_history(run_id, key)
                totals[total] = totals.get(total, 0.0) + sum(m.value for m in history)
        return {**dict(sorted(totals.items())), f"{TOTAL_PREFIX}{COST_PREFIX}trials": float(len(runs))}

    def log_cost_totals(self) -> None:
        """`cost_totals` on the parent run (the latest value is the total; a resumed search logs it again)."""
        now = int(time.time() * 1000)
        self.client.log_batch(self.parent_run_id, metrics=[Metric(k, v, now, 0) for k, v in self.cost_totals().items()])

    def child_run(self, trial_id: str, trial_name: str, params: dict) -> str:
        """The trial's run: created once, reattached (never duplicated) when a resumed search sees it again."""
        known = self.registry.read()["trials"].get(trial_id)
        if known is not None:
            return known
        run_id = self._find_run(f"tags.trial_id = '{trial_id}'")
        if run_id is None:
            run = self.client.create_run(
                self.experiment_id,
                run_name=trial_name,
                tags={"mlflow.parentRunId": self.parent_run_id, "trial_id": trial_id, ROLE_TAG: "trial"},
            )
            run_id = run.info.run_id
        self._log_params(run_id, params)
        with self.registry.editing() as data:
            data["trials"][trial_id] = run_id
        return run_id

    def finish_trial(self, trial_id: str, metric: str, final_metrics: dict, stopped_by: str | None = None) -> None:
        """Close a trial's run: best epoch's metrics and checkpoint as artifacts, final metrics, FINISHED."""
        registry = self.registry.read()
        run_id, best = registry["trials"][trial_id], registry["best"].get(trial_id)
        if best is not None:
            self.client.log_dict(run_id, best, "best_metrics.json")
            if not self.client.get_metric_history(run_id, f"best/{metric}"):  # a retried finish logs it once
                self.client.log_metric(run_id, f"best/{metric}", best["score"])
            checkpoint = best.get("checkpoint_path")
            if checkpoint and Path(checkpoint).is_dir():
                for name in CHECKPOINT_FILES:
                    if (Path(checkpoint) / name).exists():
                        self.client.log_artifact(run_id, str(Path(checkpoint) / name), BEST_CHECKPOINT)
            elif checkpoint:
                self.client.set_tag(run_id, "best_checkpoint_missing", checkpoint)
        self.client.log_dict(run_id, final_metrics, "final_metrics.json")
        if stopped_by:
            self.client.set_tag(run_id, "stopped_by", stopped_by)
        self.client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FINISHED))

    def finish_running_trials(self, metric: str, stopped_by: str) -> None:
        """Trials a search stopped without Tune reporting their end (its time budget ran out)."""
        trials = self.registry.read()["trials"]
        for trial_id in self.running_trials():
            run = self.client.get_run(trials[trial_id])
            self.finish_trial(trial_id, metric, dict(run.data.metrics), stopped_by)

    def trial_statuses(self) -> dict[str, str]:
        return {tid: self.client.get_run(rid).info.status for tid, rid in self.registry.read()["trials"].items()}

    def ended_trials(self) -> list[str]:
        return [tid for tid, status in self.trial_statuses().items() if status in ("FINISHED", "FAILED")]

    def running_trials(self) -> list[str]:
        return [tid for tid, status in self.trial_statuses().items() if status == "RUNNING"]

    def mark_unfinished_killed(self) -> None:
        trials = self.registry.read()["trials"]
        for tid in self.running_trials():
            self.client.set_terminated(trials[tid], status="KILLED")


# What a tracking server that is down raises through MlflowClient: its own errors, or requests' connection errors.
TRACKING_DOWN = (MlflowException, OSError)


class MLflowTrialCallback(tune.Callback):
    """Streams each trial's epochs into its child run; stores the best checkpoint when the trial ends.

    Operations go through a Spool, so an MLflow outage delays them instead of failing the search. Tune pickles its
    callbacks into the experiment state; a restored search unpickles this one, so only the store's coordinates are
    pickled and the live tracker is rebuilt from the registry file on disk.
    """

    def __init__(self, tracker: SearchTracker, base_config: dict, metric: str, mode: str = "max"):
        self.tracker = tracker
        self.base_config = base_config
        self.metric = metric
        self.sign = 1 if mode == "max" else -1
        self.spool = Spool(tracker.spool_path)
        self._down_since: float | None = None

    def __getstate__(self):
        return {"experiment": self.tracker.experiment, "registry": str(self.tracker.registry.path),
                "uri": mask_uri(self.tracker.uri), "base_config": self.base_config, "metric": self.metric,
                "sign": self.sign}

    def __setstate__(self, state):
        uri = reveal(state["uri"], tracking_uri(), what="the MLflow tracking URI", how="set MLFLOW_TRACKING_URI")
        self.__init__(SearchTracker(state["experiment"], Path(state["registry"]), uri, connect=False),
                      state["base_config"], state["metric"], "max" if state["sign"] > 0 else "min")

    # -- the Tune hooks: record the operation, then try to deliver everything queued ------------------------------

    def _trial(self, trial) -> dict:
        return {"trial_id": trial.trial_id, "name": str(trial), "params": {**self.base_config, **trial.config}}

    def on_trial_start(self, iteration, trials, trial, **info):
        self._submit({"op": "start", **self._trial(trial)})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        metrics = epoch_metrics(result)
        self._submit({"op": "epoch", **self._trial(trial), "step": step, "metrics": metrics,
                      "time": int(time.time() * 1000), "node": result.get("ray_node")})
        score = metrics.get(self.metric)
        if score is None:
            return
        with self.tracker.registry.editing() as data:
            best = data["best"].get(trial.trial_id)
            # Ties go to the later epoch, as Ray Train's checkpoint manager (num_to_keep=1) keeps the later one.
            if best is None or self.sign * score >= self.sign * best["score"]:
                data["best"][trial.trial_id] = {"score": score, "epoch": step, "metrics": metrics,
                                                "checkpoint_path": result.get("checkpoint_path")}

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._submit({"op": "finish", **self._trial(trial), "final": epoch_metrics(trial.last_result or {})})

    def on_trial_error(self, iteration, trials, trial, **info):
        error = getattr(trial, "error_msg", None) or "unknown error (see the trial's error.txt)"
        self._submit({"op": "error", **self._trial(trial), "error": str(error)[:5000]})

    def on_experiment_end(self, trials, **info):
        self.drain()

    # -- delivery -------------------------------------------------------------------------------------------------

    def _submit(self, entry: dict) -> None:
        self.spool.append(entry)
        self.flush()

    def flush(self) -> bool:
        """Deliver queued operations in order; True when none is left."""
        pending = self.spool.read()
        done = 0
        try:
            for entry in pending:
                self._apply(entry)
                done += 1
        except TRACKING_DOWN as err:
            if self._down_since is None:
                self._down_since = time.monotonic()
                console().line(f"warning: MLflow unreachable ({type(err).__name__}: {mask_uri(str(err))[:200]}); "
                               f"queuing its records in {self.spool.path} until it returns")
        finally:
            if done:
                self.spool.replace(pending[done:])
        if done == len(pending) and self._down_since is not None:
            console().line(f"MLflow is back after {time.monotonic() - self._down_since:.0f} s; queued records "
                           "delivered")
            self._down_since = None
        return done == len(pending)

    def drain(self, timeout_s: float = 900.0, every_s: float = 5.0) -> bool:
        """Flush until nothing is queued or timeout_s passes (the search's end waits for an absent server)."""
        deadline = time.monotonic() + timeout_s
        while not self.flush():
            if time.monotonic() > deadline:
                console().line(f"warning: MLflow still unreachable; {len(self.spool.read())} records stay in "
                               f"{self.spool.path} and are delivered by `--resume`")
                return False
            time.sleep(every_s)
        return True

    def _apply(self, entry: dict) -> None:
        tracker = self.tracker
        run_id = tracker.child_run(entry["trial_id"], entry["name"], entry["params"])
        op = entry["op"]
        if op == "start":
            tracker.client.update_run(run_id, status="RUNNING")
        elif op == "epoch":
            # Exactly once per epoch: a resumed trial re-reports its restored epoch, and a queued epoch may be
            # delivered again after a crash. MLflow itself is the record (log_batch is one transaction).
            logged = {m.step for m in tracker.client.get_metric_history(run_id, STEP_MARKER_METRIC)}
            if entry["step"] not in logged:
                tracker.client.log_batch(run_id, metrics=[Metric(k, v, entry["time"], entry["step"])
                                                          for k, v in entry["metrics"].items()])
            if entry.get("node"):  # tag ray_nodes: every Ray node the trial's epochs ran on, in order
                nodes = tracker.client.get_run(run_id).data.tags.get("ray_nodes", "")
                if entry["node"] not in nodes.split(","):
                    tracker.client.set_tag(run_id, "ray_nodes", ",".join(filter(None, [nodes, entry["node"]])))
        elif op == "finish":
            tracker.finish_trial(entry["trial_id"], self.metric, entry["final"])
        elif op == "error":
            tracker.client.set_tag(run_id, "error", entry["error"])
            tracker.client.set_terminated(run_id, status="FAILED")


def _param(value) -> str:
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)


def log_robustness(result: dict, files: list[Path], run_id: str | None, experiment: str, checkpoint: Path,
                   client: MlflowClient | None = None) -> str:
    """A robustness sweep (trainables/robustness.py) in MLflow: metrics `robustness/<attack>/<metric>` (step: the
    radius) and `robustness/<attack>/<part>/<metric>`, the report files under `robustness/`. Into the trial's run
    `run_id`, or a new run "robustness" of `experiment` tagged with the checkpoint; returns the run's id."""
    client = client or MlflowClient()
    if run_id is None:
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
        run_id = client.create_run(exp_id, tags={"mlflow.runName": "robustness",
                                                 "checkpoint": str(checkpoint)}).info.run_id
        client.set_terminated(run_id)
    metric = result["metric"]
    metrics = [Metric(f"robustness/clean/{metric}", result["clean"], 0, 0)]
    for name, curve in result["keypoint"].items():
        metrics += [Metric(f"robustness/{name}/{metric}", v, 0, int(r)) for r, v in curve.items()]
    for name, parts in result["part"].items():
        metrics += [Metric(f"robustness/{name}/{p}/{metric}", v, 0, 0) for p, v in parts.items()]
    client.log_batch(run_id, metrics=metrics)
    for path in files:
        client.log_artifact(run_id, str(path), "robustness")
    return run_id
