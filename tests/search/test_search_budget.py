"""--time-budget: when it runs out, running trials are stopped, their runs closed, and the search ends normally."""
import json

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e


def test_time_budget_ends_the_search_and_closes_the_stopped_trials(tmp_path, search_cli):
    result = search_cli.run("--space", "lja", "--smoke", "--num-samples", "4", "--epochs", "50", "--max-concurrent",
                            "1", "--time-budget", "0.6", "--storage-path", tmp_path / "ray", "--experiment", "budget")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout[result.stdout.index("{\n"):result.stdout.index("\n}\n") + 2])
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
