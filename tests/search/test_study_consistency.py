"""A search stopped by its time budget leaves one finished study trial per Tune trial, its value MLflow's, and
`--check` agrees; a value changed in one book is listed and exits 1."""
import os
import subprocess
import sys

import optuna
import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT

pytestmark = pytest.mark.e2e
CLEAN = "consistency check: Tune, Optuna and MLflow agree on all"


def run(work, dataset_cache, *args, timeout=900):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "OCCPOSE_CACHE": str(dataset_cache)}
    return subprocess.run([sys.executable, str(REPO_ROOT / "search" / "run.py"), "--storage-path", str(work / "ray"),
                           "--experiment", "books", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=work, env=env)


def test_budget_stopped_search_keeps_its_books_and_check_lists_a_disagreement(tmp_path, dataset_cache):
    result = run(tmp_path, dataset_cache, "--space", "lja", "--smoke", "--num-samples", "6", "--epochs", "2",
                 "--max-concurrent", "1", "--time-budget", "2.5")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert CLEAN in result.stdout

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("books")
    children = {r.data.tags["trial_id"]: r for r in client.search_runs([experiment.experiment_id],
                                                                       "tags.trial_id != ''")}
    study = optuna.load_study(study_name="books", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert study.trials and all(t.state.is_finished() for t in study.trials)
    by_tune = {}
    for trial in study.trials:
        by_tune.setdefault(trial.user_attrs["tune_trial_id"], []).append(trial)
    assert all(len(trials) == 1 for trials in by_tune.values())
    for trial_id, run_ in children.items():
        trial, = by_tune[trial_id]
        if "val_occ/AP" in run_.data.metrics:
            assert trial.state == optuna.trial.TrialState.COMPLETE
            assert trial.value == pytest.approx(run_.data.metrics["val_occ/AP"], abs=1e-12)

    checked = run(tmp_path, dataset_cache, "--check", timeout=300)
    assert checked.returncode == 0 and CLEAN in checked.stdout, checked.stdout[-2000:] + checked.stderr[-2000:]

    changed_id, changed = next((tid, r) for tid, r in children.items() if "val_occ/AP" in r.data.metrics)
    client.log_metric(changed.info.run_id, "val_occ/AP", 0.987654, step=99)
    checked = run(tmp_path, dataset_cache, "--check", timeout=300)
    assert checked.returncode == 1, checked.stdout[-2000:] + checked.stderr[-2000:]
    assert f"{changed_id}: Tune finished" in checked.stdout and "MLflow finished 0.987654" in checked.stdout
