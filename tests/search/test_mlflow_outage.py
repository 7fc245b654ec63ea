"""A real MLflow tracking server goes down mid-search and comes back: no trial dies, nothing is lost or doubled."""
import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT, SearchCLI

pytestmark = pytest.mark.e2e
MLFLOW = str(REPO_ROOT / ".venv" / "bin" / "mlflow") if (REPO_ROOT / ".venv" / "bin" / "mlflow").exists() else "mlflow"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(work, port) -> subprocess.Popen:
    proc = subprocess.Popen(
        [MLFLOW, "server", "--backend-store-uri", f"sqlite:///{work / 'server.db'}", "--artifacts-destination",
         str(work / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        # no job runner (MLflow's background jobs, for its GenAI features): half the server's start-up CPU
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            time.sleep(1)
    stop_server(proc)
    raise AssertionError("mlflow server did not come up in 120 s")


def stop_server(proc) -> None:
    with contextlib.suppress(ProcessLookupError):  # already stopped (a test failing mid-outage)
        os.killpg(proc.pid, signal.SIGKILL)  # the server and its workers, by our own process group
    proc.wait(timeout=30)


def test_search_survives_a_tracking_server_outage(tmp_path, dataset_cache):
    port = free_port()
    server = start_server(tmp_path, port)
    uri = f"http://127.0.0.1:{port}"
    search = SearchCLI(tmp_path, dataset_cache, tracking_uri=uri).start(
        # Two epochs a trial: the first trial's second epoch and the second trial's start fall in the outage.
        "--space", "lja", "--smoke", "--num-samples", "2", "--epochs", "2", "--max-concurrent", "1", "--scheduler",
        "fifo", "--storage-path", tmp_path / "ray", "--experiment", "outage", "--optuna-storage",
        f"sqlite:///{tmp_path / 'optuna.db'}")
    lines = []
    try:
        while "] epoch 1:" not in (lines[-1] if lines else ""):
            line = search.stdout.readline()
            assert line, "".join(lines[-40:])
            lines.append(line)
        stop_server(server)
        # Down until the search has found it gone and the second trial has started: the first trial's last epoch,
        # its end and the second trial's start are queued while it is down, however fast the machine.
        unreachable = False
        while not (unreachable and "] started:" in lines[-1]):
            line = search.stdout.readline()
            assert line, "".join(lines[-40:])
            lines.append(line)
            unreachable = unreachable or "MLflow unreachable" in line
        server = start_server(tmp_path, port)
        output, _ = search.communicate(timeout=900)
    except BaseException:
        stop_server(server)  # the test ends here: no server left running
        raise
    finally:
        if search.poll() is None:
            search.kill()
    output = "".join(lines) + output
    try:
        assert search.returncode == 0, output[-4000:]
        assert "MLflow unreachable" in output and "queued records delivered" in output
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("outage")
        runs = client.search_runs([experiment.experiment_id])
        parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert len(children) == 2 and len({c.data.tags["trial_id"] for c in children}) == 2
        for child in children:
            assert child.info.status == "FINISHED"
            assert [m.step for m in client.get_metric_history(child.info.run_id, "val/AP")] == [1, 2]
            assert len(client.get_metric_history(child.info.run_id, "best/val_occ/AP")) == 1
            paths = {a.path for a in client.list_artifacts(child.info.run_id, "best_checkpoint")}
            assert "best_checkpoint/model.pt" in paths
    finally:
        stop_server(server)
