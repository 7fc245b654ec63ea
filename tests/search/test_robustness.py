"""search/robustness.py on a real (tiny) trained checkpoint, logging to a real MLflow sqlite store."""
import json
import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT
from datasets.layouts import resolve
from datasets.skeletons import COCO17
from trainables.config import TrialConfig
from trainables.runtime import LocalReporter
from trainables.train import fit


@pytest.fixture(scope="module")
def checkpoint(real_layouts, tmp_path_factory):
    layout = resolve("coco", real_layouts / "coco")
    cfg = TrialConfig.from_flat({
        "data.dataset": "coco", "data.train_ann": str(layout.train.ann), "data.train_images": str(layout.train.images),
        "data.val_ann": str(layout.val.ann), "data.val_images": str(layout.val.images), "data.input_h": 64,
        "data.input_w": 64, "model.deconv_channels": 16, "optim.epochs": 1, "optim.batch_size": 4})
    directory = tmp_path_factory.mktemp("checkpoint")
    fit(cfg, LocalReporter(directory))
    return directory


def robustness(tmp_path, *args):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    return subprocess.run([sys.executable, "search/robustness.py", *map(str, args), "--out", str(tmp_path / "out")],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_checkpoint_sweep_writes_table_curves_and_a_run(checkpoint, tmp_path):
    proc = robustness(tmp_path, "--checkpoint", checkpoint, "--attacks", "keypoint-blackout,part-meanout",
                      "--radii", "0,8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "out/robustness.json").read_text())
    assert result["metric"] == "AP" and result["persons"] == 12
    curve = result["keypoint"]["keypoint-blackout"]
    assert list(curve) == ["0.0", "8.0"] and curve["0.0"] == result["clean"]
    assert list(result["per_keypoint"]["keypoint-blackout"]) == list(COCO17.keypoints)
    assert list(result["part"]["part-meanout"]) == [name for name, _ in COCO17.parts]
    for png in ("keypoint_attacks.png", "keypoint-blackout_per_keypoint.png", "part-meanout_part.png"):
        assert (tmp_path / "out" / png).stat().st_size > 1000
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run, = client.search_runs([client.get_experiment_by_name("robustness").experiment_id])
    history = client.get_metric_history(run.info.run_id, "robustness/keypoint-blackout/AP")
    assert [m.step for m in history] == [0, 8]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "robustness")} >= {
        "robustness/robustness.json", "robustness/keypoint_attacks.png"}


def test_run_id_takes_the_trials_checkpoint_and_logs_back_to_it(checkpoint, tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    trial = client.create_run(client.create_experiment("search"), tags={"trial_id": "t1"}).info.run_id
    for item in checkpoint.iterdir():
        client.log_artifact(trial, str(item), "best_checkpoint")
    proc = robustness(tmp_path, "--run-id", trial, "--attacks", "keypoint-blur", "--radii", "0,6",
                      "--no-per-keypoint")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [m.step for m in client.get_metric_history(trial, "robustness/keypoint-blur/AP")] == [0, 6]
    assert client.get_experiment_by_name("robustness") is None  # nothing logged elsewhere


def test_bad_checkpoint_and_attack_exit_2(checkpoint, tmp_path):
    proc = robustness(tmp_path, "--checkpoint", tmp_path / "nowhere")
    assert proc.returncode == 2 and "model.pt" in proc.stderr
    proc = robustness(tmp_path, "--checkpoint", checkpoint, "--attacks", "keypoint-erase")
    assert proc.returncode == 2 and "unknown attack 'keypoint-erase'" in proc.stderr
