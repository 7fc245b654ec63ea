"""The report's figures as PNG files: parallel coordinates and fANOVA parameter importance from the Optuna study,
learning curves and robustness curves from MLflow. Each function returns a Figure, or a reason it has none."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402

from dashboards.search_data import CURVE_METRICS, Search  # noqa: E402
from search.masking import mask_uri  # noqa: E402


# Tune's OptunaSearch tells the study each trial's last reported result, not its best epoch as the tables use.
LAST_REPORTED = ("Objective values are what Tune told the Optuna study: each trial's last reported value (an "
                 "ASHA-stopped trial's last epoch), not its best epoch as in the tables.")


@dataclass
class Figure:
    key: str
    title: str
    path: Path | None  # None: not drawable for this search; `note` says why
    note: str = ""
    data: dict | None = None  # the numbers behind the figure, for report.json


def load_study(search: Search, storage: str | None):
    """The search's Optuna study (named after the experiment, stored where the search put it), or None + why."""
    import optuna

    from search.study import study_storage

    storage = storage or search.parent_params.get("optuna_storage")
    if not storage:
        return None, "the parent run names no optuna_storage; pass --optuna-storage"
    shown = mask_uri(storage)  # the notes go into the report: no password (search/masking.py)
    try:
        study = optuna.load_study(study_name=search.experiment, storage=study_storage(storage))
    except KeyError:
        return None, f"no Optuna study {search.experiment!r} in {shown}"
    except Exception as err:  # an unreachable server, a moved sqlite file, a masked URL: the report goes on
        why = mask_uri(str(err)).splitlines()[0][:200]
        return None, f"Optuna storage {shown} unreadable ({type(err).__name__}: {why})"
    return study, ""


def _objective(study, search: Search):
    """(target, name): multi-objective studies hold (clean metric, searched metric); the searched one is shown."""
    if len(study.directions) > 1:
        return (lambda t: t.values[-1]), search.metric
    return None, search.metric


def _complete(study) -> list:
    import optuna

    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def parallel_coordinates(study, search: Search, out: Path) -> Figure:
    import optuna

    title = "Parallel coordinates (Optuna study)"
    if study is None or len(_complete(study)) < 2:
        return Figure("parallel", title, None, "needs an Optuna study with at least two completed trials")
    target, name = _objective(study, search)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_parallel_coordinate(study, target=target, target_name=name)
    return _save(ax.figure, out / "parallel_coordinates.png", Figure("parallel", title, None, LAST_REPORTED))


def importance(study, search: Search, out: Path) -> Figure:
    """fANOVA (Hutter et al.) over the parameters every completed trial has, as Optuna computes it."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator

    title = f"Parameter importance for {search.metric} (fANOVA)"
    if study is None or len(_complete(study)) < 2:
        return Figure("importance", title, None, "needs an Optuna study with at least two completed trials")
    target, _ = _objective(study, search)
    try:
        scores = optuna.importance.get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0),
                                                         target=target)
    except (RuntimeError, ValueError) as err:  # e.g. no parameter varies across the completed trials
        return Figure("importance", title, None, f"fANOVA not computable: {err}")
    if not scores:
        return Figure("importance", title, None, "no parameter is shared by all completed trials")
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(scores) + 1.2))
    names = list(scores)[::-1]
    ax.barh(names, [scores[n] for n in names], color="#4c72b0")
    ax.set(xlabel="importance (share of the objective's variance)", title=title)
    figure = Figure("importance", title, None, f"{len(_complete(study))} completed trials. {LAST_REPORTED}",
                    data={k: round(v, 4) for k, v in scores.items()})
    return _save(fig, out / "param_importance.png", figure)


def learning_curves(search: Search, out: Path) -> Figure:
    title = "Learning curves"
    metrics = [m for m in (search.metric, search.clean_metric(), *CURVE_METRICS) if m]
    metrics = list(dict.fromkeys(m for m in metrics if any(m in t.history for t in search.trials)))
    if not metrics:
        return Figure("learning", title, None, "no trial has logged an epoch yet")
    best = search.best()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for trial in search.trials:
            points = trial.history.get(metric)
            if points:
                is_best = best is not None and trial.run_id == best.run_id
                ax.plot(*zip(*points), marker="o", ms=3, lw=2.5 if is_best else 1, alpha=1 if is_best else 0.6,
                        label=f"{trial.name} (best)" if is_best else trial.name)
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if len(search.trials) <= 12:
        axes[0][0].legend(fontsize=7)
    return _save(fig, out / "learning_curves.png", Figure("learning", title, None))


def robustness_curves(search: Search, out: Path) -> Figure:
    """AP (or PCKh) against the keypoint-attack radius for every trial that was attacked (search/robustness.py)."""
    title = "Robustness: accuracy under keypoint attacks"
    curves = {}  # attack -> trial name -> [(radius, value)]
    for trial in search.trials:
        for name, points in trial.robustness_curves.items():
            attack = name.split("/")[1]
            if attack.startswith("keypoint") and len(points) > 1:
                curves.setdefault(name, {})[trial.name] = points
    if not curves:
        return Figure("robustness", title, None, "no trial has keypoint-attack results (search/robustness.py)")
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.8), squeeze=False)
    for ax, (name, by_trial) in zip(axes[0], sorted(curves.items())):
        for trial_name, points in by_trial.items():
            ax.plot(*zip(*points), marker="o", label=trial_name)
        ax.set(xlabel="attack radius (input px)", ylabel=name.split("/")[-1], title=name.split("/")[1])
        ax.legend(fontsize=7)
    data = {name: {t: dict(p) for t, p in by_trial.items()} for name, by_trial in curves.items()}
    return _save(fig, out / "robustness_curves.png", Figure("robustness", title, None, data=data))


def all_figures(search: Search, study, study_note: str, out: Path) -> list[Figure]:
    out.mkdir(parents=True, exist_ok=True)
    figures = [parallel_coordinates(study, search, out), importance(study, search, out),
               learning_curves(search, out), robustness_curves(search, out)]
    for figure in figures[:2]:
        if figure.path is None and study is None:
            figure.note = study_note
    return figures


def _save(fig, path: Path, figure: Figure) -> Figure:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    figure.path = path
    return figure
