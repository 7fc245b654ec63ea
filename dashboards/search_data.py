"""A finished (or running) search read back from MLflow: its parent run, its trials and their metric histories.

Everything the report shows is derived from what the search logged; nothing is recomputed here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from mlflow.tracking import MlflowClient

from datasets.meta import DATASETS, VISIBILITY_SPLITS, metric_name
from search.masking import mask_uri
from search.spaces import SPACES, canonical
from search.tracking import MAIN_KEYS, ROLE_TAG


def _occluded_metrics(key: str) -> list[str]:
    """An occluded split's `key` where some dataset has one, then `key` on the occluded and visible joints."""
    occluded_split = any(meta.has_val_occ and meta.main_key == key for meta in DATASETS.values())
    return ([metric_name("val_occ", key)] if occluded_split else []) + [
        metric_name("val", key, visibility) for visibility in VISIBILITY_SPLITS]


# The columns of the papers' tables: clean accuracy, then accuracy under occlusion (an occluded split, or the
# occluded / visible joints of the clean split). The first present of each group is "the" clean/occluded number.
CLEAN_METRICS = tuple(metric_name("val", key) for key in MAIN_KEYS)  # val/AP, val/PCKh_0.5
# val_occ/AP, val/O/AP, val/NO/AP, val/O/PCKh_0.5, val/NO/PCKh_0.5
OCCLUDED_METRICS = tuple(name for key in MAIN_KEYS for name in _occluded_metrics(key))
CURVE_METRICS = ("train/loss",)
METHOD_PARAM = "search.method"  # the --space all search's top-level choice


def parse_param(text: str):
    """MLflow keeps params as strings; the tracker wrote lists/dicts as JSON and Python's str() otherwise."""
    if text in ("True", "False"):
        return text == "True"
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass
class Trial:
    run_id: str
    name: str
    trial_id: str
    status: str
    params: dict
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric -> [(epoch, value)]
    robustness: dict[str, float] = field(default_factory=dict)  # robustness/... metrics, latest values
    robustness_curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def best_epoch(self, metric: str) -> int | None:
        """The epoch whose `metric` is highest (ties: the later one, as the search's own bookkeeping)."""
        points = self.history.get(metric)
        if not points:
            return None
        return max(points, key=lambda p: (p[1], p[0]))[0]

    def at_best(self, metric: str) -> dict[str, float]:
        """Every tracked metric at the trial's best epoch for `metric`: the numbers its best checkpoint scores."""
        epoch = self.best_epoch(metric)
        if epoch is None:
            return {}
        out = {}
        for name, points in self.history.items():
            values = [v for step, v in points if step == epoch]
            if values:
                out[name] = values[-1]
        out["epoch"] = epoch
        return out

    def param(self, key: str, default=None):
        return self.params.get(key, default)


@dataclass
class Search:
    experiment: str
    experiment_id: str
    parent_run_id: str
    parent_params: dict
    parent_metrics: dict
    trials: list[Trial]

    @property
    def space(self) -> str:
        """The space's current name (a search stored under an old name, `pocc` or `tilting`, reads as the new)."""
        return canonical(self.parent_params.get("space", ""))

    @property
    def metric(self) -> str:
        return self.parent_params.get("metric") or DATASETS.get(self.dataset, DATASETS["synthetic"]).occluded_metric

    @property
    def dataset(self) -> str:
        return self.parent_params.get("dataset", "synthetic")

    def scored(self) -> list[Trial]:
        return [t for t in self.trials if t.history.get(self.metric)]

    def best(self, finished_only: bool = False) -> Trial | None:
        """The top trial by its best epoch; finished_only: among trials that ended normally, the only ones whose
        best checkpoint the tracker stored (a FAILED or KILLED trial's scores are real, its weights are not kept)."""
        scored = [t for t in self.scored() if t.status == "FINISHED" or not finished_only]
        return max(scored, key=lambda t: t.at_best(self.metric)[self.metric]) if scored else None

    def metrics_present(self, names) -> list[str]:
        return [n for n in names if any(n in t.history for t in self.trials)]

    def clean_metric(self) -> str | None:
        present = self.metrics_present(CLEAN_METRICS)
        return present[0] if present else None

    def paper_default(self) -> Trial | None:
        """The trial run at the space's published point (every search evaluates it first)."""
        points = SPACES[self.space].paper_points if self.space in SPACES else ()
        for trial in self.scored():
            if any(all(_same(trial.param(k), v) for k, v in point.items()) for point in points):
                return trial
        return None

    def occlusion_free(self) -> Trial | None:
        """A trial trained without any artificial occlusion: no LJA, no occluders, no targeted augmentation, no
        OASNet; the best one if several."""
        plain = [t for t in self.scored() if not occludes(t.params)]
        return max(plain, key=lambda t: t.at_best(self.metric)[self.metric]) if plain else None


def occludes(params: dict) -> bool:
    """Whether a trial with these (flat, logged) parameters trained on occluded crops or with OASNet: the one
    predicate, datasets.occlusion.occludes, on the trial's own config."""
    from datasets.occlusion import occludes as trains_occluded
    from trainables.config import TrialConfig

    known = set(TrialConfig().flat())
    cfg = TrialConfig.from_flat({k: v for k, v in params.items() if k in known})
    return trains_occluded(cfg.lja, cfg.occ) or cfg.oasnet.enabled


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
    return a == b


def trial_from_run(client: MlflowClient, run, metrics=None) -> Trial:
    """A trial run as the report reads it: typed params, the histories of `metrics` (None: all), and its
    robustness/... results (search/robustness.py), whose steps are attack radii."""
    trial = Trial(run_id=run.info.run_id, name=run.info.run_name or run.data.tags.get("trial_id", ""),
                  trial_id=run.data.tags.get("trial_id", ""), status=run.info.status,
                  params={k: parse_param(v) for k, v in run.data.params.items()})
    if isinstance(trial.params.get(METHOD_PARAM), str):  # old method names read as the current ones
        trial.params[METHOD_PARAM] = canonical(trial.params[METHOD_PARAM])
    for name in run.data.metrics:
        robustness = name.startswith("robustness/")
        if robustness or metrics is None or name in metrics:
            points = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, name))
            if robustness:
                trial.robustness[name] = run.data.metrics[name]
                trial.robustness_curves[name] = points
            else:
                trial.history[name] = points
    return trial


def load_search(client: MlflowClient, experiment: str) -> Search:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ValueError(f"no MLflow experiment named {experiment!r} at {mask_uri(client.tracking_uri)} "
                         f"(experiments there: {', '.join(names) or 'none'})")
    parents = client.search_runs([found.experiment_id], f"tags.`{ROLE_TAG}` = 'parent'", max_results=2)
    if not parents:
        raise ValueError(f"experiment {experiment!r} has no search parent run (tag {ROLE_TAG}=parent); "
                         "was it written by search/run.py?")
    parent = parents[0]
    runs = client.search_runs([found.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'", max_results=50000,
                              order_by=["attributes.start_time ASC"])
    shown = (parent.data.params.get("metric"),) + CLEAN_METRICS + OCCLUDED_METRICS + CURVE_METRICS
    trials = [trial_from_run(client, run, shown) for run in runs]
    return Search(experiment=experiment, experiment_id=found.experiment_id, parent_run_id=parent.info.run_id,
                  parent_params={k: parse_param(v) for k, v in parent.data.params.items()},
                  parent_metrics=dict(parent.data.metrics), trials=trials)
