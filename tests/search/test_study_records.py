"""The Optuna study records every trial's end, whatever holds its sqlite file and however the trial ended."""
import argparse
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from search.spaces import SPACES
from search.study import settle_study
from search.tuner import make_searcher

METRIC = "val_occ/AP"
HOLD_S = 8


def searcher_for(tmp_path, name="books"):
    args = argparse.Namespace(searcher="tpe", seed=0, multi_objective=False, metric=METRIC, clean_metric="val/AP",
                              experiment=name, optuna_storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    return make_searcher(args, SPACES["lja"]), args.optuna_storage


def hold_write_lock(db, seconds: float) -> subprocess.Popen:
    """Another process holding the sqlite file's write lock for `seconds` (as a second search writing would)."""
    code = ("import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "time.sleep(float(sys.argv[2]))\n"
            "c.execute('COMMIT')\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_trial_ending_while_another_process_holds_the_study_locked_is_recorded(tmp_path):
    searcher, storage = searcher_for(tmp_path)
    searcher.suggest("t1")
    searcher.on_trial_result("t1", {METRIC: 0.3, "training_iteration": 1})
    holder = hold_write_lock(tmp_path / "optuna.db", HOLD_S)
    started = time.monotonic()
    try:
        searcher.on_trial_complete("t1", result={METRIC: 0.42, "training_iteration": 2})
    finally:
        holder.wait(timeout=60)
    assert time.monotonic() - started >= HOLD_S - 1  # it waited for the lock rather than giving up
    trial, = optuna.load_study(study_name="books", storage=storage).trials
    assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(0.42)
    assert trial.user_attrs["tune_trial_id"] == "t1"


def test_every_way_a_trial_ends_leaves_one_finished_study_trial(tmp_path):
    """Finished, stopped by the scheduler (Tune passes its last result), failed, stopped while pending (no result)
    and stopped by the time budget (Tune tells nothing; settle_study ends it from Tune's last result)."""
    searcher, storage = searcher_for(tmp_path)
    for tid in ("done", "asha", "failed", "pending", "budget"):
        searcher.suggest(tid)
    searcher.on_trial_complete("done", result={METRIC: 0.5})
    searcher.on_trial_complete("asha", result={METRIC: 0.1})
    searcher.on_trial_complete("failed", error=True)
    searcher.on_trial_complete("pending")
    searcher.on_trial_complete("done", result={METRIC: 0.9})  # a second end changes nothing
    study = optuna.load_study(study_name="books", storage=storage)
    study.ask()  # a study trial asked for by a driver killed before Tune recorded its trial
    settled = settle_study(study, str(tmp_path), {"budget": ("RUNNING", {METRIC: 0.25})}, METRIC)
    assert len(settled) == 2
    trials = optuna.load_study(study_name="books", storage=storage).trials
    by_tune = {t.user_attrs.get("tune_trial_id"): t for t in trials}
    assert {k: (t.state, t.value) for k, t in by_tune.items()} == {
        "done": (TrialState.COMPLETE, 0.5), "asha": (TrialState.COMPLETE, 0.1), "failed": (TrialState.FAIL, None),
        "pending": (TrialState.PRUNED, None), "budget": (TrialState.COMPLETE, 0.25), None: (TrialState.FAIL, None)}
    assert not [t for t in trials if not t.state.is_finished()]


def test_an_end_the_storage_refuses_for_long_stays_queued_and_is_written_later(tmp_path, monkeypatch):
    """Past its retries an end is not dropped: it stays queued (pickled with the searcher) and the next searcher
    call writes it."""
    import search.study as study_module

    searcher, storage = searcher_for(tmp_path)
    searcher.suggest("t1")
    monkeypatch.setattr(study_module, "RETRY_FOR_S", 0.0)
    study, tell = searcher._ot_study, searcher._ot_study.tell

    def locked(*args, **kwargs):
        raise optuna.exceptions.StorageInternalError("database is locked")

    monkeypatch.setattr(study, "tell", locked)
    searcher.on_trial_complete("t1", result={METRIC: 0.7})
    assert "t1" in searcher._untold
    monkeypatch.setattr(study, "tell", tell)
    searcher.suggest("t2")
    trial = optuna.load_study(study_name="books", storage=storage).trials[0]
    assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(0.7)
    assert not searcher._untold
