"""--time-budget: when it runs out, running trials are stopped, their runs closed, and the search ends normally;
its books agree (one finished study trial per Tune trial, its value MLflow's) and `--check` lists a value changed in
one of them."""
import json

import optuna
import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e
CLEAN = "consistency check: Tune, Optuna and MLflow agree on all"


def test_time_budget_ends_the_search_and_closes_the_stopped_trials(tmp_path, search_cli):
    result = search_cli.run("--space", "lja", "--smoke", "--num-samples", "4", "--epochs", "50", "--max-concurrent",
                            "1", "--time-budget", "1.2", "--storage-path", tmp_path / "ray", "--experiment", "budget",
                            "--json")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout)  # --json: the summary alone on stdout, the person's lines on stderr
    assert summary["ended_by"] == "time budget"
    assert summary["trials_ended"] < 4

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("budget")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert children and all(c.info.status == "FINISHED" for c in children)
    stopped = [c for c in children if c.data.tags.get("stopped_by") == "time budget"]
    assert len(stopped) == 1  # one trial at a time: the one running when the budget ran out
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent[0].info.status == "FINISHED"

    # The books: the end-of-search check, the study, and --check on its own.
    assert CLEAN in result.stderr
    study = optuna.load_study(study_name="budget", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert study.trials and all(t.state.is_finished() for t in study.trials)
    by_tune = {}
    for trial in study.trials:
        by_tune.setdefault(trial.user_attrs["tune_trial_id"], []).append(trial)
    assert all(len(trials) == 1 for trials in by_tune.values())
    scored = {c.data.tags["trial_id"]: c for c in children if "val_occ/AP" in c.data.metrics}
    assert scored, "no trial finished an epoch within the budget"
    for trial_id, run in scored.items():
        trial, = by_tune[trial_id]
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.value == pytest.approx(run.data.metrics["val_occ/AP"], abs=1e-12)

    check = ("--experiment", "budget", "--storage-path", tmp_path / "ray", "--check")
    checked = search_cli.run(*check, timeout=300)
    assert checked.returncode == 0 and CLEAN in checked.stdout, checked.stdout[-2000:] + checked.stderr[-2000:]
    changed_id, changed = next(iter(scored.items()))
    client.log_metric(changed.info.run_id, "val_occ/AP", 0.987654, step=99)
    checked = search_cli.run(*check, timeout=300)
    assert checked.returncode == 1, checked.stdout[-2000:] + checked.stderr[-2000:]
    assert f"{changed_id}: Tune finished" in checked.stdout and "MLflow finished 0.987654" in checked.stdout
