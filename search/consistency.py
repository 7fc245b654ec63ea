"""The search's books agree: Tune's trials (the experiment state on disk), the Optuna study and the MLflow runs.

`search/run.py --experiment NAME --check` prints every trial they disagree on (missing in one, another state,
another value) and exits 1, or prints one line and exits 0; the end of every search runs the same check.

Each book's record of a trial is brought to one of: `finished` with the searched metric's value (None when the
trial reported none: Optuna PRUNED), `failed`, or `unfinished` (Tune running/pending/paused, Optuna running, MLflow
running or KILLED: an interrupted search). A trial the time budget stopped is still running in Tune's state and
finished in MLflow (tag `stopped_by`) and Optuna: it counts as finished with Tune's last result. A trial Tune never
started has no MLflow run and counts as finished without a value. Under `--scheduler pbt`/`pb2` a trial's config
changes as it trains: Optuna and MLflow hold its initial config, Tune its final one, which must be the last values
MLflow logged (`config_problems`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from search.masking import MaskedSecret, mask_uri
from search.stores import experiment_dir, open_tracking_store, run_registry_path, tracking_uri

UNFINISHED_TUNE = ("RUNNING", "PENDING", "PAUSED")


class UnknownExperiment(ValueError):
    """No experiment of that name in the --storage-path."""


@dataclass(frozen=True)
class Record:
    state: str  # finished | failed | unfinished | missing | "N study trials"
    value: tuple | None = None  # the searched metric(s) of a finished trial

    def __str__(self) -> str:
        shown = "" if self.value is None else " " + ",".join(f"{v:.6g}" if v is not None else "-" for v in self.value)
        return self.state + shown

    def agrees(self, other: "Record") -> bool:
        if self.state != other.state:
            return False
        if self.value is None or other.value is None:
            return self.value == other.value
        return all(_same(a, b) for a, b in zip(self.value, other.value))


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def _value(source: dict, metrics: list[str]) -> tuple | None:
    values = tuple(source.get(m) for m in metrics)
    return None if all(v is None for v in values) else values


def tune_trials(where: str) -> dict[str, tuple[str, dict]]:
    """{trial id: (Tune status, last result)} from the experiment state Tune saved in `where`."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(where)
    return {t.trial_id: (t.status, dict(t.last_result or {})) for t in analysis.trials}


def settings_of(registry: dict, client, experiment: str) -> dict:
    """The search's settings (metric, clean_metric, multi_objective, optuna_storage): the registry's, else the
    parent run's params (experiments from before the registry kept them)."""
    settings = dict(registry.get("settings") or {})
    if "metric" not in settings and registry.get("parent"):
        params = client.get_run(registry["parent"]).data.params
        settings |= {"metric": params.get("metric"), "optuna_storage": params.get("optuna_storage"),
                     "multi_objective": params.get("multi_objective") == "True", "clean_metric": "val/AP"}
    return settings


def check(experiment: str, storage_path: str, uri: str | None = None) -> tuple[int, list[str]]:
    """(number of trials, one line per disagreement) for the search `experiment` in `storage_path`.
    UnknownExperiment when neither its Tune state nor its run registry is there."""
    import optuna
    from mlflow.tracking import MlflowClient

    from search.journal import RunRegistry
    from search.study import ENDED_BY_ATTR, study_by_tune_trial, study_storage

    where = experiment_dir(storage_path, experiment)
    registry_path = run_registry_path(storage_path, experiment)
    if "://" not in where and not Path(where).is_dir():
        raise UnknownExperiment(f"no experiment {experiment!r} in {storage_path}")
    registry = RunRegistry(registry_path).read()
    client = MlflowClient(open_tracking_store(uri or tracking_uri()))
    settings = settings_of(registry, client, experiment)
    metric = settings.get("metric")
    metrics = [settings["clean_metric"], metric] if settings.get("multi_objective") else [metric]
    problems: list[str] = []

    tune = tune_trials(where)
    runs = {}
    mlflow_experiment = client.get_experiment_by_name(experiment)
    if mlflow_experiment is None:
        problems.append(f"MLflow has no experiment {experiment!r}")
    else:
        for run in client.search_runs([mlflow_experiment.experiment_id], "tags.trial_id != ''", max_results=50000):
            runs.setdefault(run.data.tags["trial_id"], []).append(run)
    studies = {}
    if settings.get("optuna_storage"):
        try:
            study = optuna.load_study(study_name=experiment, storage=study_storage(settings["optuna_storage"]))
            studies, orphans = study_by_tune_trial(study, where)
            problems += [f"study trial {t.number}: {t.state.name} and of no Tune trial" for t in orphans
                         if not t.state.is_finished() or not t.user_attrs.get(ENDED_BY_ATTR)]
        except KeyError:
            problems.append(f"Optuna has no study {experiment!r} in {mask_uri(settings['optuna_storage'])}")
        except MaskedSecret as err:
            problems.append(f"cannot read the Optuna study: {err}")

    if settings.get("scheduler") in ("pbt", "pb2"):  # a member's config changes as it trains
        problems += config_problems(where, runs, studies)
    parent = registry.get("parent")
    search_ended = bool(parent) and client.get_run(parent).info.status == "FINISHED"
    for trial_id in sorted(set(tune) | set(runs) | {k for k in studies if k}):
        status, last = tune.get(trial_id, (None, {}))
        trial_runs = runs.get(trial_id, [])
        budget_stopped = any(r.data.tags.get("stopped_by") for r in trial_runs)
        never_started = status == "PENDING" and not trial_runs
        books = {
            "Tune": _tune_record(status, last, metrics, budget_stopped, never_started),
            "MLflow": _mlflow_record(trial_runs, metrics, never_started),
            "Optuna": _optuna_record(studies.get(trial_id, [])),
        }
        if never_started and books["Optuna"].state == "unfinished" and not search_ended:
            books["Optuna"] = Record("finished")  # a member asked for, not started yet: settle_study ends it
        if not books["Tune"].agrees(books["MLflow"]) or not books["Tune"].agrees(books["Optuna"]):
            problems.append(f"{trial_id}: " + " | ".join(f"{name} {record}" for name, record in books.items()))
    return len(tune), problems


def _tune_record(status, last: dict, metrics, budget_stopped: bool, never_started: bool) -> Record:
    if status is None:
        return Record("missing")
    if status == "TERMINATED" or (status in UNFINISHED_TUNE and budget_stopped):
        return Record("finished", _value(last, metrics))
    if never_started:
        return Record("finished")
    return Record("failed") if status == "ERROR" else Record("unfinished")


def _mlflow_record(runs: list, metrics, never_started: bool) -> Record:
    if not runs:
        return Record("finished") if never_started else Record("missing")
    if len(runs) > 1:
        return Record(f"{len(runs)} runs")
    run = runs[0]
    status = run.info.status
    if status == "FINISHED":
        return Record("finished", _value(run.data.metrics, metrics))
    return Record("failed") if status == "FAILED" else Record("unfinished")


def _optuna_record(trials: list) -> Record:
    from optuna.trial import TrialState

    if not trials:
        return Record("missing")
    if len(trials) > 1:
        return Record(f"{len(trials)} study trials")
    trial = trials[0]
    if trial.state == TrialState.COMPLETE:
        return Record("finished", tuple(trial.values))
    if trial.state == TrialState.PRUNED:
        return Record("finished")
    return Record("failed") if trial.state == TrialState.FAIL else Record("unfinished")


def report(experiment: str, storage_path: str, uri: str | None = None, out=None) -> bool:
    """Run the check and print its outcome (one line when clean); True when the books agree."""
    import sys

    out = out or sys.stdout
    count, problems = check(experiment, storage_path, uri)
    if not problems:
        print(f"consistency check: Tune, Optuna and MLflow agree on all {count} trials of {experiment}", file=out,
              flush=True)
        return True
    print(f"consistency check: Tune, Optuna and MLflow disagree on {len(problems)} of the {count} trials of "
          f"{experiment} (each: its state and searched metric in each book):", file=out, flush=True)
    for line in problems:
        print(f"  {line}", file=out, flush=True)
    return False


def config_problems(where: str, runs: dict, studies: dict) -> list[str]:
    """The books' rule for a population search (`--scheduler pbt`/`pb2`, search/pbt.py): a member's study trial
    params and its MLflow run's params are its *initial* config, the same numbers; Tune's config of its last result
    is its *final* one, which for each perturbed key equals the last `hparam/<key>` its run logged (the initial value
    if it trained no epoch). (A trial exploited just before the time budget stopped it holds a config it never trained
    with: its last result's config is the one compared.)
    `runs` / `studies`: {Tune trial id: its MLflow runs / study trials}. One line per value that breaks the rule;
    trials missing from a book, or in it twice, are the state check's to report."""
    from ray.tune import ExperimentAnalysis

    from search.pbt import HPARAM_PREFIX, PERTURBED

    def differ(a, b) -> bool:
        return a is None or b is None or not math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12)

    problems = []
    for trial in ExperimentAnalysis(where).trials:
        trial_runs, members = runs.get(trial.trial_id, []), studies.get(trial.trial_id, [])
        if len(trial_runs) != 1 or len(members) != 1:
            continue
        params, metrics, initial = trial_runs[0].data.params, trial_runs[0].data.metrics, members[0].params
        config = (trial.last_result or {}).get("config") or trial.config
        for key, value in sorted(initial.items()):
            if differ(value, params.get(key)):
                problems.append(f"{trial.trial_id}: initial {key}: Optuna {value} | MLflow {params.get(key)}")
        for key in PERTURBED:
            final = metrics.get(HPARAM_PREFIX + key, initial.get(key))
            if key in config and differ(config[key], final):
                problems.append(f"{trial.trial_id}: final {key}: Tune {config[key]} | MLflow last "
                                f"{HPARAM_PREFIX + key} {final}")
    return problems
