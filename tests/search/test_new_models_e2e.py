"""End to end: a one-trial --smoke search on each model family issue 18 added - OASNet on the 2-stack hourglass
with MPII in its official layout (OASNet's ablation setting), and LJA on SRPose-HRNet-W32 - on a real local Ray
cluster, tracked in a real MLflow sqlite store. The smoke budget shrinks the data (24 training, 8 validation
crops, one epoch) and the input (96x64), so the large models train in seconds; Ray's start dominates."""
import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e


def only_child(client, experiment):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], "tags.trial_id != ''")
    assert len(runs) == 1
    return runs[0]


def test_oasnet_space_on_the_two_stack_hourglass_with_mpii(real_layouts, tmp_path, search_cli):
    result = search_cli.run("--space", "oasnet", "--model", "hourglass_2stack", "--dataset", "mpii", "--data-root",
                            real_layouts / "mpii", "--smoke", "--num-samples", "1", "--storage-path", tmp_path / "ray",
                            "--experiment", "e2e-hourglass")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    child = only_child(MlflowClient(search_cli.tracking_uri), "e2e-hourglass")
    assert child.info.status == "FINISHED"
    assert child.data.params["model.name"] == "hourglass_2stack" and child.data.params["oasnet.enabled"] == "True"
    assert 0.0 <= child.data.metrics["val/PCKh_0.5"] <= 100.0
    # OASNet's three terms, its joint term over both stacks of both views
    assert child.data.metrics["train/loss_joints"] > 0 and child.data.metrics["train/loss_occlusion"] > 0


def test_lja_space_on_srpose(tmp_path, search_cli):
    result = search_cli.run("--space", "lja", "--model", "srpose_hrnet_w32", "--smoke", "--num-samples", "1",
                            "--storage-path", tmp_path / "ray", "--experiment", "e2e-srpose")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    child = only_child(MlflowClient(search_cli.tracking_uri), "e2e-srpose")
    assert child.info.status == "FINISHED" and child.data.params["model.name"] == "srpose_hrnet_w32"
    assert 0.0 <= child.data.metrics["val/AP"] <= 1.0
    # DSL over SRPose's five supervised heatmaps, each logged
    assert {f"train/loss_stage{i}" for i in range(5)} <= set(child.data.metrics)
