"""What was made before the restructuring still works with the current code (issue 13, item 8): the code of commit
5f1e7d2, exported from this clone's history, runs a --smoke search that is interrupted after its first trial and
registers that trial's model; the current code then `--resume`s the search to its end and loads the model."""
import os
import re
import signal
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT, SearchCLI, wait_for_line

pytestmark = pytest.mark.e2e

OLD_COMMIT = "5f1e7d2"  # the last commit before the restructuring
EXPERIMENT = "made-before"
EPOCH_LINE = re.compile(r"^\[(\w+)\] epoch (\d+):")  # search/tracking.py ProgressPrinter


@pytest.fixture(scope="module")
def old_code(tmp_path_factory):
    """The checkout of OLD_COMMIT (git archive: tracked files only, no .venv; the tests' interpreter runs it)."""
    known = subprocess.run(["git", "-C", str(REPO_ROOT), "cat-file", "-e", f"{OLD_COMMIT}^{{commit}}"],
                           capture_output=True)
    if known.returncode != 0:
        pytest.skip(f"commit {OLD_COMMIT} (the code before the restructuring) is not in this clone's history, e.g. "
                    "a shallow clone; `git fetch --unshallow` to run this test")
    root = tmp_path_factory.mktemp("old-code")
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", "--format=tar", OLD_COMMIT],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    return root


def checkout_cli(code, work, dataset_cache) -> SearchCLI:
    """`code`'s search/run.py, `code` first on the path of the driver and, through the environment, of every Ray
    worker it starts."""
    return SearchCLI(work, dataset_cache, code=code,
                     PYTHONPATH=os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")]))


def environment(code, work, dataset_cache) -> dict:
    return checkout_cli(code, work, dataset_cache).env


def search(code, work, dataset_cache, *extra):
    return checkout_cli(code, work, dataset_cache).start("--space", "lja", "--smoke", "--storage-path", work / "ray",
                                                         "--experiment", EXPERIMENT, *extra)


def test_old_experiment_resumes_and_old_registered_model_loads(old_code, tmp_path, dataset_cache):
    """The old code's search (2 trials x 2 epochs, one at a time) is stopped with Ctrl-C once the second trial has
    reported an epoch, so the first has ended; the old report registers the first trial's model. The current code
    resumes the search: one FINISHED parent, two FINISHED trials each with epochs [1, 2] logged once, two COMPLETE
    trials in the Optuna study. The registered model loads through MLflow with the current code on the path and
    maps a batch of crops to heatmaps."""
    import optuna

    proc = search(old_code, tmp_path, dataset_cache, "--num-samples", "2", "--epochs", "2", "--max-concurrent", "1",
                  "--scheduler", "fifo")
    trials = []
    while len(trials) < 2:  # epoch lines until a second trial reports: the first trial has ended by then
        trial_id = EPOCH_LINE.match(wait_for_line(proc, "] epoch ", timeout=600)[-1]).group(1)
        trials += [trial_id] if trial_id not in trials else []
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, output[-3000:]

    old_env = environment(old_code, tmp_path, dataset_cache)
    report = subprocess.run([sys.executable, str(old_code / "dashboards" / "report.py"), "--experiment", EXPERIMENT,
                             "--no-robustness", "--out", str(tmp_path / "report")],
                            capture_output=True, text=True, timeout=600, cwd=tmp_path, env=old_env)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    registered = client.get_run(client.get_model_version(EXPERIMENT, "1").run_id)
    assert registered.data.tags["trial_id"] == trials[0]

    resumed = search(REPO_ROOT, tmp_path, dataset_cache, "--resume")
    output, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, output[-4000:]
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(c.data.tags["trial_id"] for c in children) == sorted(trials)
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert [m.step for m in client.get_metric_history(child.info.run_id, "val/AP")] == [1, 2]
    study = optuna.load_study(study_name=EXPERIMENT, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2

    height, width = int(registered.data.params["data.input_h"]), int(registered.data.params["data.input_w"])
    load = ("import mlflow, torch\n"
            f"model = mlflow.pytorch.load_model('models:/{EXPERIMENT}/1')\n"
            f"print('heatmaps', tuple(model(torch.zeros(2, 3, {height}, {width})).shape))\n")
    loaded = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path, env=environment(REPO_ROOT, tmp_path, dataset_cache))
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert f"heatmaps {(2, 17, height // 4, width // 4)}" in loaded.stdout
