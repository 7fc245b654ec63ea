"""The search's Optuna study: its storage, the searcher that records every trial's end in it, and the settling of
the study when a search ends.

Ray's OptunaSearch tells the study a trial's end once and swallows any storage error with a warning, so a study
whose sqlite file another process holds locked (every search started in one folder shares `optuna.db`) keeps the
trial RUNNING with no value for good. Here every write waits for a locked sqlite file (its busy timeout) and is
retried with back-off; an end that still cannot be written stays queued in the searcher (pickled with it into
Tune's experiment state) and is written by the next call, and `settle_study` at the search's end writes the end of
every trial Tune stopped without telling the searcher (the time budget) or whose end never reached the study.
Tune pickles the searcher into the experiment state: `RecordingOptunaSearch` keeps this import path.
"""
from __future__ import annotations

import logging
import math
import pickle
import time
from pathlib import Path

from optuna.storages import RDBStorage
from ray.tune.search.optuna import OptunaSearch

from search.masking import mask_uri, reveal

log = logging.getLogger(__name__)

TUNE_TRIAL_ATTR = "tune_trial_id"  # the user attribute naming a study trial's Tune trial
ENDED_BY_ATTR = "occpose.ended_by"  # set on the trials settle_study ends
SQLITE_BUSY_TIMEOUT_S = 30.0  # how long one sqlite statement waits for another process's write lock
RETRY_FOR_S = 600.0  # how long one write is retried (with back-off) before it is queued for the next call


def study_storage(url: str):
    """The RDB storage of `url` (a masked one is revealed from the environment: search/masking.py); a sqlite file
    waits SQLITE_BUSY_TIMEOUT_S for another writer instead of 5 s. Pickled (Tune saves the searcher), it keeps the
    URL masked."""
    url = reveal(url)
    engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}} if url.startswith("sqlite:") else None
    return StudyStorage(url, engine_kwargs=engine_kwargs)


class StudyStorage(RDBStorage):
    """Optuna's RDBStorage whose pickled state holds its URL masked: the password stays in the process environment
    (search/masking.py OPTUNA_STORAGE_ENV), where unpickling finds it again."""

    def __getstate__(self):
        state = super().__getstate__()
        state["url"] = mask_uri(state["url"])
        return state

    def __setstate__(self, state):
        state = {**state, "url": reveal(state["url"])}
        super().__setstate__(state)


def _retryable() -> tuple[type[BaseException], ...]:
    import sqlite3

    import optuna
    import sqlalchemy.exc

    return optuna.exceptions.StorageInternalError, sqlalchemy.exc.OperationalError, sqlite3.OperationalError


def with_retries(action, what: str, retry_for_s: float | None = None, first_s: float = 0.5, cap_s: float = 30.0):
    """`action()`, retried with exponential back-off while the storage is locked or unreachable; the last error is
    raised once `retry_for_s` has passed."""
    retryable = _retryable()
    deadline, delay = time.monotonic() + (RETRY_FOR_S if retry_for_s is None else retry_for_s), first_s
    while True:
        try:
            return action()
        except retryable as err:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("Optuna storage busy while %s (%s); retrying in %.1f s", what, str(err)[:200], delay)
            time.sleep(delay)
            delay = min(cap_s, delay * 2)


def outcome(metric, result: dict | None, error: bool):
    """(values, state) a trial's end gives the study, as Ray's OptunaSearch decides it: the last result's metric
    (a list for several objectives) and COMPLETE, else FAIL for an error and PRUNED for a trial stopped without one."""
    from optuna.trial import TrialState

    values = None
    if result:
        values = [result.get(m) for m in metric] if isinstance(metric, list) else result.get(metric)
    missing = values is None or (isinstance(values, list) and any(v is None for v in values))
    if missing:
        return None, TrialState.FAIL if error else TrialState.PRUNED
    return values, TrialState.COMPLETE


class RecordingOptunaSearch(OptunaSearch):
    """OptunaSearch whose study writes wait, retry and never drop a trial's end; each study trial carries its Tune
    trial's id (user attribute `tune_trial_id`), which the consistency check (search/consistency.py) reads."""

    @property
    def _untold(self) -> dict:
        # Not in __init__: searchers pickled before this attribute existed are restored without it.
        return self.__dict__.setdefault("_untold_ends", {})

    def suggest(self, trial_id: str):
        self._tell_untold()
        config = with_retries(lambda: OptunaSearch.suggest(self, trial_id), f"asking for trial {trial_id}")
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:
            with_retries(lambda: ot_trial.set_user_attr(TUNE_TRIAL_ATTR, trial_id), f"naming trial {trial_id}")
        return config

    def on_trial_result(self, trial_id: str, result: dict):
        with_retries(lambda: OptunaSearch.on_trial_result(self, trial_id, result), f"reporting trial {trial_id}")

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return OptunaSearch.on_trial_complete(self, trial_id, result, error)
        self._untold[trial_id] = outcome(self.metric, result, error)
        self._completed_trials.add(trial_id)
        self._tell_untold()

    def _tell_untold(self) -> None:
        """Write every queued end; one the storage still refuses after RETRY_FOR_S stays queued (and is logged)."""
        for trial_id, (values, state) in list(self._untold.items()):
            ot_trial = self._ot_trials[trial_id]
            try:
                with_retries(lambda: self._ot_study.tell(ot_trial, values, state=state, skip_if_finished=True),
                             f"recording the end of trial {trial_id}")
            except _retryable() as err:
                log.error("the end of trial %s is not in the Optuna study yet (%s); it is retried on the next "
                          "trial event and at the end of the search", trial_id, str(err)[:200])
                return
            except ValueError as err:  # e.g. a value Optuna refuses: the trial is recorded FAIL, never left open
                log.warning("trial %s: Optuna refused %r (%s); recorded as FAIL", trial_id, values, err)
                with_retries(lambda: self._ot_study.tell(ot_trial, None, state=_fail(), skip_if_finished=True),
                             f"recording trial {trial_id} as failed")
            del self._untold[trial_id]


def _fail():
    from optuna.trial import TrialState

    return TrialState.FAIL


def searcher_trial_ids(experiment_dir: str) -> dict[int, str]:
    """{study trial id: Tune trial id} from the searcher state Tune saved in the experiment directory (for study
    trials made before they carried `tune_trial_id`)."""
    states = sorted(Path(experiment_dir).glob("searcher-state-*.pkl"), key=lambda p: p.stat().st_mtime)
    if not states:
        return {}
    try:
        with states[-1].open("rb") as f:
            state = pickle.load(f)
        return {t._trial_id: tid for tid, t in state.get("_ot_trials", {}).items()}
    except Exception as err:  # noqa: BLE001 - an unreadable state only loses this fallback
        log.warning("cannot read %s: %s", states[-1], err)
        return {}


def study_by_tune_trial(study, experiment_dir: str) -> tuple[dict[str, list], list]:
    """({Tune trial id: its study trials}, study trials of no Tune trial)."""
    fallback = None
    by_tune, orphans = {}, []
    for trial in study.get_trials(deepcopy=False):
        tune_id = trial.user_attrs.get(TUNE_TRIAL_ATTR)
        if tune_id is None:
            fallback = searcher_trial_ids(experiment_dir) if fallback is None else fallback
            tune_id = fallback.get(trial._trial_id)
        (by_tune.setdefault(tune_id, []) if tune_id else orphans).append(trial)
    return by_tune, orphans


def settle_study(study, experiment_dir: str, tune_trials: dict, metric) -> list[str]:
    """End every study trial still open when the search has ended: a Tune trial stopped by the time budget (or
    whose end never reached the study) as its last result says, a trial Tune never started and a study trial of no
    Tune trial as FAIL. `tune_trials`: {trial id: (Tune status, last result)}. Returns what it did, one line each."""
    from optuna.trial import TrialState

    by_tune, orphans = study_by_tune_trial(study, experiment_dir)
    done = []
    for tune_id, trials in by_tune.items():
        status, last = tune_trials.get(tune_id, (None, None))
        for trial in trials:
            if trial.state.is_finished():
                continue
            values, state = outcome(metric, last, error=status == "ERROR")
            if status is None:
                values, state = None, TrialState.FAIL
            _end(study, trial, values, state, f"search ended with Tune trial {tune_id} {status or 'unknown'}")
            done.append(f"{tune_id}: {state.name}" + (f" {values}" if values is not None else ""))
    for trial in orphans:
        if not trial.state.is_finished():
            _end(study, trial, None, TrialState.FAIL, "asked for but never run by Tune")
            done.append(f"study trial {trial.number}: FAIL (no Tune trial)")
    return done


def _end(study, trial, values, state, why: str) -> None:
    if isinstance(values, float) and not math.isfinite(values):
        values, state = None, _fail()
    with_retries(lambda: study._storage.set_trial_user_attr(trial._trial_id, ENDED_BY_ATTR, why), "settling")
    with_retries(lambda: study.tell(trial.number, values, state=state, skip_if_finished=True), "settling")
