"""Warm start (issue 19): the best configurations of a finished search become the first trials of a new one, e.g. a
cheap synthetic or ResNet-18 search seeding a COCO search with ResNet-50.

`--warm-start EXPERIMENT[:k]` names a study in the new search's Optuna storage (by default the `optuna.db` every
search in a folder shares). Its k best completed trials (by its search metric; a two-objective study by its
occluded metric, the second objective) are replayed through the new space's define function: a trial with a
parameter the new space does not define, or a value outside the new space's range, is reported and skipped; one
lacking a parameter the new space defines is enqueued as it is, and the sampler draws the rest. What was enqueued
and skipped is recorded on the search's parent run (search/tuner.py).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

DEFAULT_K = 5


@dataclass(frozen=True)
class WarmStart:
    """`--warm-start EXPERIMENT[:k]`: the source experiment (its Optuna study's name) and how many of its best."""

    experiment: str
    k: int = DEFAULT_K

    def __str__(self) -> str:
        return f"{self.experiment}:{self.k}"


def parse_warm_start(text: str) -> WarmStart:
    """An argparse type for EXPERIMENT[:k]: an experiment name as --experiment takes it, k a positive integer
    (default DEFAULT_K)."""
    from search.stores import experiment_name_problem

    name, sep, k = text.rpartition(":") if ":" in text else (text, "", "")
    if problem := experiment_name_problem(name):
        raise argparse.ArgumentTypeError(f"expected EXPERIMENT[:k], got {text!r}: {problem}")
    if sep and (not k.isdigit() or int(k) < 1):
        raise argparse.ArgumentTypeError(f"k in EXPERIMENT[:k] must be a positive integer, got {k!r}")
    return WarmStart(name, int(k) if sep else DEFAULT_K)


class WarmStartError(ValueError):
    """The source study is missing or has no completed trial; str() names it and the storage."""


@dataclass
class Replay:
    """An Optuna trial stand-in that runs a space's define function on a fixed point: it answers each suggestion with
    the point's value (or the distribution's first value where the point has none, so that the define function runs
    on) and records what the space defines."""

    point: dict
    defined: dict = field(default_factory=dict)  # name -> distribution
    out_of_range: dict = field(default_factory=dict)  # name -> the point's value

    def _answer(self, name, distribution, fallback):
        self.defined[name] = distribution
        if name not in self.point:
            return fallback
        value = self.point[name]
        try:
            inside = distribution._contains(distribution.to_internal_repr(value))
        except (TypeError, ValueError):
            inside = False
        if not inside:
            self.out_of_range[name] = value
        return value

    def suggest_float(self, name, low, high, *, step=None, log=False):
        return self._answer(name, FloatDistribution(low, high, step=step, log=log), low)

    def suggest_int(self, name, low, high, *, step=1, log=False):
        return self._answer(name, IntDistribution(low, high, step=step, log=log), low)

    def suggest_categorical(self, name, choices):
        return self._answer(name, CategoricalDistribution(choices), choices[0])


def judge(point: dict, define) -> tuple[dict | None, str]:
    """(the point to enqueue, or None, and why in words) for one source trial's parameters under `define`."""
    replay = Replay(point)
    define(replay)
    foreign = sorted(set(point) - set(replay.defined))
    if foreign:
        return None, f"not in the new space: {', '.join(foreign)}"
    if replay.out_of_range:
        ranges = ", ".join(f"{k}={v!r}" for k, v in sorted(replay.out_of_range.items()))
        return None, f"outside the new space's range: {ranges}"
    missing = sorted(set(replay.defined) - set(point))
    return dict(point), (f"enqueued; the sampler draws {', '.join(missing)}" if missing else "enqueued")


def best_trials(study, k: int) -> list:
    """The `k` best completed trials of `study`, best first; a two-objective study's by its second objective (the
    occluded metric, as search/tuner.py orders them)."""
    import optuna

    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if t.values and all(math.isfinite(v) for v in t.values)]
    signs = [1 if d == optuna.study.StudyDirection.MAXIMIZE else -1 for d in study.directions]
    index = len(signs) - 1
    return sorted(done, key=lambda t: -signs[index] * t.values[index])[:k]


def missing_sqlite_file(spec: WarmStart, url: str) -> None:
    """WarmStartError when `url` is a sqlite storage whose file does not exist: opening it would create an empty
    store, a write before the search has even been accepted."""
    from pathlib import Path

    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):].split("?")[0]).exists():
        raise WarmStartError(f"--warm-start {spec}: the Optuna storage {url.split('?')[0]} does not exist, so it "
                             f"holds no study {spec.experiment!r} (see --optuna-storage)")


def warm_points(spec: WarmStart, storage, define) -> tuple[list[dict], list[dict]]:
    """(points to enqueue first, best first; a record of every source trial considered: its number, value, params,
    and what became of it) for the new space's `define` function. WarmStartError when the study does not exist in
    `storage` (an Optuna storage object or URL) or has no completed trial."""
    import optuna

    try:
        study = optuna.load_study(study_name=spec.experiment, storage=storage)
    except KeyError:
        raise WarmStartError(f"--warm-start {spec}: no Optuna study named {spec.experiment!r} in the search's "
                             "Optuna storage (see --optuna-storage)") from None
    trials = best_trials(study, spec.k)
    if not trials:
        raise WarmStartError(f"--warm-start {spec}: study {spec.experiment!r} has no completed trial to start from")
    points, record = [], []
    for trial in trials:
        point, outcome = judge(trial.params, define)
        if point is not None:
            points.append(point)
        record.append({"number": trial.number, "values": list(trial.values), "params": trial.params,
                       "outcome": outcome})
    return points, record
