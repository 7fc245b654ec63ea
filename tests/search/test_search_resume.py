"""Ctrl-C then --resume: state on disk, MLflow runs reattached (never duplicated), epochs continue."""
import signal

import pytest
from mlflow.tracking import MlflowClient

from conftest import wait_for_line

pytestmark = pytest.mark.e2e


def search(search_cli, *extra):
    return search_cli.start("--space", "lja", "--smoke", "--storage-path", search_cli.work / "ray", "--experiment",
                            "interrupted", *extra)


def test_ctrl_c_and_sigkill_then_resume_log_each_trial_once(tmp_path, search_cli):
    """Ctrl-C after the first epoch (exit 130, state on disk, parent KILLED); --resume, SIGKILLed at a random later
    epoch; --resume again: exactly --num-samples child runs under one parent, each with its full epoch count logged
    once, no repeated trial_id. A further --resume of the finished search is a no-op."""
    import random

    proc = search(search_cli, "--num-samples", "2", "--epochs", "3", "--max-concurrent", "1",
                  "--scheduler", "fifo")
    wait_for_line(proc, "] epoch 1:", timeout=600)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, output[-3000:]
    assert "--resume" in output
    assert list((tmp_path / "ray" / "interrupted").glob("experiment_state*.json"))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("interrupted")
    parent = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    assert len(parent) == 1 and parent[0].info.status == "KILLED"

    seed = random.randrange(10**6)
    kill_after = random.Random(seed).randint(1, 3)  # epoch lines the resumed search prints before the kill
    proc = search(search_cli, "--resume")
    for _ in range(kill_after):
        wait_for_line(proc, "] epoch ", timeout=600)
    proc.kill()  # SIGKILL: no handler runs, nothing is closed
    proc.wait(timeout=60)

    resumed = search(search_cli, "--resume")
    output, _ = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, f"kill after {kill_after} epochs (seed {seed})\n" + output[-4000:]

    def snapshot():
        runs = client.search_runs([experiment.experiment_id])
        return {r.info.run_id: (r.info.status, r.info.end_time, tuple(sorted(r.data.metrics.items()))) for r in runs}

    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", (kill_after, seed)
    assert len(children) == 2 and len({c.data.tags["trial_id"] for c in children}) == 2, (kill_after, seed)
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val/AP")]
        assert steps == [1, 2, 3], (steps, kill_after, seed)

    before = snapshot()
    again = search(search_cli, "--resume")
    output, _ = again.communicate(timeout=300)
    assert again.returncode == 0 and "already finished" in output, output[-2000:]
    assert snapshot() == before
