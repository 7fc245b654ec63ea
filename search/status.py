"""A search's trials as a person reads them, from what is on disk: the end-of-search summary and `--status`.

The same table for a running, interrupted or finished search, read without changing anything: the run registry
(`<experiment>.mlflow_runs.json`: settings, trial -> run, each trial's best epoch and its metrics), Tune's
experiment state (trials not started yet) and MLflow (each run's state, epochs, parameters; the parent run's
mean-pose floor, `baseline_mean_pose/...`, logged by search/tuner.py on the embedded dataset). Trials come best first
by the searched metric at their best epoch, the epoch their best checkpoint holds; the trial run at the space's
paper point (search/spaces.py `paper_points`, the LJA paper's from `LJAConfig`'s defaults) is marked.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.table import Table

from search.masking import mask_uri
from search.progress import SEARCHED_SECTIONS, best_first, fmt, score
from search.spaces import SPACES, canonical
from search.stores import (DEFAULT_TRACKING_URI, experiment_dir, mlflow_ui_command, run_registry_path,
                           tracking_uri)
from search.tracking import STEP_MARKER_METRIC

MLFLOW_STATES = {"RUNNING": "running", "FAILED": "failed", "KILLED": "interrupted", "SCHEDULED": "pending"}
TUNE_STATES = {"RUNNING": "running", "PENDING": "pending", "PAUSED": "paused", "TERMINATED": "done", "ERROR": "failed"}


def log_path(storage_path: str, experiment: str) -> Path:
    """Where a quiet search's console output goes (search/console.py): beside its run registry."""
    return run_registry_path(storage_path, experiment).with_name(f"{experiment}.log")


def summary_path(storage_path: str, experiment: str) -> Path:
    """The search's machine-readable summary, written at its end."""
    return run_registry_path(storage_path, experiment).with_name(f"{experiment}.summary.json")


@dataclass
class TrialRow:
    trial_id: str
    state: str
    epoch: int | None = None
    best_epoch: int | None = None
    score: float | None = None  # the searched metric at the best epoch
    clean: float | None = None  # the clean metric at that epoch
    params: dict = field(default_factory=dict)
    paper_point: bool = False
    run_id: str | None = None


@dataclass
class SearchStatus:
    experiment: str
    space: str
    metric: str
    clean_metric: str
    epochs: int
    num_samples: int
    parent_run_id: str | None
    parent_state: str
    rows: list[TrialRow]
    searched: list[str]
    floor: dict
    experiment_id: str | None = None

    def best(self) -> TrialRow | None:
        return self.rows[0] if self.rows and self.rows[0].score is not None else None

    def to_json(self) -> dict:
        return {"experiment": self.experiment, "state": self.parent_state, "metric": self.metric,
                "clean_metric": self.clean_metric, "mean_pose_floor": self.floor,
                "table": [asdict(row) for row in self.rows]}


class UnknownSearch(ValueError):
    """Nothing of that experiment in --storage-path, or nothing readable."""


def _param(text):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
    return a == b


def collect(experiment: str, storage_path: str, uri: str | None = None) -> SearchStatus:
    """The search's status from disk; UnknownSearch when neither its registry nor its Tune state exists."""
    from mlflow.tracking import MlflowClient

    from search.stores import open_tracking_store

    registry_file, where = run_registry_path(storage_path, experiment), experiment_dir(storage_path, experiment)
    if not registry_file.is_file() and ("://" in where or not Path(where).is_dir()):
        raise UnknownSearch(f"no experiment {experiment!r} in {storage_path} (no {registry_file.name} there)")
    try:
        registry = json.loads(registry_file.read_text()) if registry_file.is_file() else {}
    except ValueError as err:  # read only: `--check` or `--resume` recover a torn registry (search/journal.py)
        raise UnknownSearch(f"the run registry {registry_file} is not valid JSON ({err}); `--check` recovers "
                            "what it can") from None
    settings = registry.get("settings") or {}
    client = MlflowClient(open_tracking_store(uri or tracking_uri(), create=False))
    parent = client.get_run(registry["parent"]) if registry.get("parent") else None
    params = parent.data.params if parent else {}
    space = canonical(settings.get("space") or params.get("space", ""))
    metric = settings.get("metric") or params.get("metric", "val_occ/AP")
    clean = settings.get("clean_metric") or "val/AP"
    tune = tune_state(where)
    rows = []
    for trial_id in sorted(set(registry.get("trials", {})) | set(tune)):
        run_id = registry.get("trials", {}).get(trial_id)
        best = registry.get("best", {}).get(trial_id) or {}
        row = TrialRow(trial_id, "pending", run_id=run_id, best_epoch=best.get("epoch"), score=best.get("score"),
                       clean=(best.get("metrics") or {}).get(clean))
        if run_id:
            run = client.get_run(run_id)
            steps = [m.step for m in client.get_metric_history(run_id, STEP_MARKER_METRIC)]
            row.epoch = max(steps, default=0)
            row.params = {k: _param(v) for k, v in run.data.params.items() if k.startswith(SEARCHED_SECTIONS)}
            row.state = _state(run, row.epoch, int(settings.get("epochs") or params.get("epochs") or 0))
        else:  # not in MLflow yet: Tune's word and config
            status, config = tune.get(trial_id, ("PENDING", {}))
            row.state = TUNE_STATES.get(status, status.lower())
            row.params = {k: v for k, v in config.items() if k.startswith(SEARCHED_SECTIONS)}
        rows.append(row)
    searched = _searched(space, rows)
    points = SPACES[space].paper_points if space in SPACES else ()
    for row in rows:
        row.paper_point = any(all(_same(row.params.get(k), v) for k, v in p.items()) for p in points)
        # A conditional parameter another branch of the space uses (a linear schedule's step_at) is the base
        # config's value, not the trial's choice: shown as none.
        own = trial_parameters(space, row.params)
        row.params = {k: row.params.get(k) if k in own else None for k in searched}
    rows.sort(key=lambda r: best_first(r.score, r.trial_id))
    metrics = parent.data.metrics if parent else {}
    floor = {m: metrics[f"baseline_mean_pose/{m}"] for m in dict.fromkeys((clean, metric))
             if f"baseline_mean_pose/{m}" in metrics}
    return SearchStatus(experiment, space, metric, clean, int(settings.get("epochs") or params.get("epochs") or 0),
                        int(settings.get("num_samples") or params.get("num_samples") or len(rows)),
                        registry.get("parent"), _parent_state(parent), rows, searched, floor,
                        parent.info.experiment_id if parent else None)


def tune_state(where: str) -> dict[str, tuple[str, dict]]:
    """{trial id: (Tune status, config)} from the experiment state Tune saved (read only); {} when there is none yet
    or Tune is rewriting it (MLflow's view then suffices)."""
    import logging

    if "://" in where or not Path(where).is_dir():
        return {}
    quiet = logging.getLogger("ray")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "Failed to fetch metrics" for trials without results yet
    try:
        from ray.tune import ExperimentAnalysis

        return {t.trial_id: (t.status, dict(t.config or {})) for t in ExperimentAnalysis(where).trials}
    except Exception:  # noqa: BLE001 - a state file being rewritten, or none yet
        return {}
    finally:
        quiet.setLevel(level)


def _state(run, epoch: int, epochs: int) -> str:
    status = run.info.status
    if status != "FINISHED":
        return MLFLOW_STATES.get(status, status.lower())
    if run.data.tags.get("stopped_by"):
        return f"stopped ({run.data.tags['stopped_by']})"
    return "done" if not epochs or epoch >= epochs else "stopped early"


def _parent_state(parent) -> str:
    if parent is None:
        return "not started"
    return {"FINISHED": "finished", "RUNNING": "running", "KILLED": "interrupted", "FAILED": "failed"}.get(
        parent.info.status, parent.info.status.lower())


def trial_parameters(space: str, params: dict) -> set[str]:
    """The parameters `space`'s define function draws for a trial whose config holds `params` (all of them where
    the space is unknown)."""
    from search.warm_start import Replay

    if space not in SPACES or not SPACES[space].define:
        return set(params)
    replay = Replay(params)
    try:
        SPACES[space].define(replay)
    except Exception:  # noqa: BLE001 - only the display depends on it; the values stay shown
        return set(params)
    return set(replay.defined)


def _searched(space: str, rows: list[TrialRow]) -> list[str]:
    """The space's paper-point keys that trials carry, then every other parameter whose value varies across them."""
    keys = [k for p in (SPACES[space].paper_points if space in SPACES else ()) for k in p]
    varying = {k for row in rows for k in row.params
               if len({json.dumps(r.params.get(k), sort_keys=True) for r in rows if r.params}) > 1}
    present = {k for row in rows for k in row.params}
    return list(dict.fromkeys([k for k in keys if k in present] + sorted(varying)))


def short_names(keys: list[str]) -> dict[str, str]:
    """`lja.quantity_ratio` -> `quantity_ratio` where the last part is unique among the keys shown."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def table(status: SearchStatus) -> Table:
    """The trials best first: state, epochs, searched parameters, the clean and searched metrics at the best epoch;
    the paper point marked, the mean-pose floor last."""
    metrics = list(dict.fromkeys((status.clean_metric, status.metric)))
    names = short_names(status.searched)
    out = Table(title=f"{status.experiment}: trials best first by {status.metric} (at each trial's best epoch)",
                title_justify="left", pad_edge=False)
    for column in ("#", "trial", "state", "epochs", *names.values(), *metrics, "note"):
        out.add_column(column, justify="right" if column in ("#", "epochs", *metrics) else "left")
    for rank, row in enumerate(status.rows, 1):
        values = {status.clean_metric: row.clean, status.metric: row.score}
        note = "paper point" if row.paper_point else ""
        out.add_row(str(rank), row.trial_id, row.state, f"{row.epoch or 0}/{status.epochs}",
                    *(fmt(row.params.get(k)) for k in names), *(score(values[m]) for m in metrics), note,
                    style="bold" if rank == 1 and row.score is not None else None)
    if status.floor:
        out.add_row("", "mean pose", "floor", "", *("" for _ in names), *(score(status.floor.get(m)) for m in metrics),
                    "train-set mean pose in each box")
    return out


def next_commands(status: SearchStatus, storage_path: str, uri: str | None = None) -> list[tuple[str, str]]:
    """MLflow UI, the report, and `--resume` (an unfinished search) or `--status` (a finished one)."""
    uri = uri or tracking_uri()
    report = f"python dashboards/report.py --experiment {status.experiment}"
    if uri != DEFAULT_TRACKING_URI:
        report += f" --tracking-uri {mask_uri(uri)}"
    again = "--resume" if status.parent_state in ("interrupted", "failed") else "--status"  # finished, running
    space = f"--space {status.space} " if again == "--resume" else ""
    return [("browse the runs", f"{mlflow_ui_command(uri)}  (experiment {status.experiment})"),
            ("build the report", report),
            ("resume" if again == "--resume" else "status again",
             f"python search/run.py {space}--experiment {status.experiment} --storage-path {storage_path} {again}")]


def show(status: SearchStatus, console, storage_path: str, uri: str | None = None) -> None:
    """The table and the next commands on `console` (search/console.py)."""
    done = sum(r.state not in ("running", "pending") for r in status.rows)
    console.line(f"experiment {status.experiment}: {status.parent_state}, {done}/{status.num_samples} trials ended; "
                 f"space {status.space}, searching {status.metric}")
    console.show(table(status))
    if status.best() is None:
        console.line("no trial has reported an epoch yet")
    for label, command in next_commands(status, storage_path, uri):
        console.line(f"{label + ':':18s}{command}")


def record_on_parent(tracker, status: SearchStatus) -> None:
    """The parent run as the search's summary in MLflow: the best trial's metrics (at its best epoch, under the
    children's own names, so the runs table's parent row shows them) and searched parameters, tags naming and
    linking the best child run, and a description (`mlflow.note.content`) saying how to read the experiment."""
    from mlflow.entities import Metric

    best, parent = status.best(), status.parent_run_id
    lines = [f"**Search `{status.experiment}`** over the `{status.space}` space, maximising `{status.metric}`: "
             f"{len(status.rows)} trials, each a nested child run of this one (expand it in the runs table).",
             "This row shows the best trial's parameters and its metrics at its best epoch (the checkpoint kept); "
             "`baseline_mean_pose/...` is the floor a trained model must clear. Compare trials with the chart view "
             "or `python dashboards/report.py --experiment " + status.experiment + "`, whose HTML is then logged "
             "here under `report/`. `search_summary.json` holds every trial's numbers."]
    if best is not None:
        registry = tracker.registry.read()
        metrics = (registry["best"].get(best.trial_id) or {}).get("metrics", {})
        step, now = int(best.best_epoch or 0), int(time.time() * 1000)
        tracker.client.log_batch(parent, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])
        tracker._log_params(parent, {k: v for k, v in best.params.items() if v is not None})
        link = f"#/experiments/{status.experiment_id}/runs/{best.run_id}"
        for key, value in (("best_trial", best.trial_id), ("best_run_id", best.run_id), ("best_run_link", link)):
            tracker.client.set_tag(parent, key, value)
        lines.insert(1, f"Best: [trial_{best.trial_id}]({link}) with {status.metric} = {best.score:.4f} at epoch "
                     f"{best.best_epoch}{' (the paper point)' if best.paper_point else ''}.")
    tracker.client.set_tag(parent, "mlflow.note.content", "\n\n".join(lines))


def show_summary(args, tracker, summary: dict, console, complete: bool) -> None:
    """The end of a search: its trials as a table (search/status.py, the table `--status` prints), the parent run
    made the search's summary in MLflow, the summary JSON in a file (and on stdout with --json), the next commands."""
    from datasets import atomic

    table = collect(args.experiment, args.storage_path, tracker.uri)
    if complete:
        record_on_parent(tracker, table)
    summary["table"] = table.to_json()["table"]
    summary["mean_pose_floor"] = table.floor
    summary["cost"] = tracker.cost_totals()  # what the parent run totals (search/tracking.py)
    for key, value in summary.get("best", {}).items():
        if isinstance(value, (int, float)) and key != "epoch":
            tracker.client.log_metric(tracker.parent_run_id, f"best/{key}", value)
    tracker.client.log_dict(tracker.parent_run_id, summary, "search_summary.json")
    path = summary_path(args.storage_path, args.experiment)
    atomic.write_json(path, summary, indent=1, default=str)
    console.line("")
    show(table, console, args.storage_path, tracker.uri)
    if args.multi_objective and summary.get("pareto_front"):
        console.line("Pareto front (clean, occluded): " + "; ".join(
            ", ".join(f"{v:.3f}" for v in point["values"].values()) for point in summary["pareto_front"]))
    console.line(f"summary JSON: {path}")
    if args.json:
        console.raw(json.dumps(summary, indent=1, default=str) + "\n")
