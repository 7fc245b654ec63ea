"""A Ray Train worker SIGKILLed mid-epoch: the trial restarts from its last checkpoint and completes."""
import os
import signal
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc), so the test only ever touches the search it started."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_killed_train_worker_restarts_from_its_checkpoint(tmp_path, search_cli):
    uri = search_cli.tracking_uri
    search = search_cli.start("--space", "lja", "--smoke", "--num-samples", "1", "--epochs", "4", "--scheduler",
                              "fifo", "--storage-path", tmp_path / "ray", "--experiment", "killed")
    lines = []
    try:
        while not any("] epoch 1:" in line for line in lines[-1:]):
            line = search.stdout.readline()
            assert line, "".join(lines[-40:])
            lines.append(line)
        workers = []
        deadline = time.monotonic() + 60
        while not workers and time.monotonic() < deadline:
            workers = [p for p in descendants(search.pid) if cmdline(p).startswith("ray::RayTrainWorker")]
            time.sleep(0.2)
        assert workers, "no Ray Train worker process found under the search"
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        output, _ = search.communicate(timeout=900)
    finally:
        if search.poll() is None:
            search.kill()
    output = "".join(lines) + output
    assert search.returncode == 0, output[-4000:]
    client = MlflowClient(uri)
    child, = client.search_runs([client.get_experiment_by_name("killed").experiment_id], "tags.trial_id != ''")
    assert child.info.status == "FINISHED"
    # each epoch once: the restart continued from the epoch-1 (or later) checkpoint, not from scratch
    assert [m.step for m in client.get_metric_history(child.info.run_id, "val/AP")] == [1, 2, 3, 4]
    restored = [line for line in output.splitlines() if "restored from" in line and "continuing at epoch" in line]
    assert restored, output[-4000:]
