"""The real-data smoke a user can run offline: `search/run.py --space lja --dataset NAME --data-root DIR --smoke` on
each benchmark's official layout built from the real fixtures (tests/conftest.py `real_layouts`), evaluated on
person-detector boxes where the fixtures hold them (COCO: HRNet's AP-56 boxes; CrowdPose: MMPose's YOLOv3 boxes;
the fixtures have none for OCHuman, whose val_occ split then uses its ground-truth boxes, nor does MPII's protocol
take any). One trial of the smallest budget each: what is checked is that every dataset goes end to end."""
import pytest
from mlflow.tracking import MlflowClient

from datasets import meta

pytestmark = pytest.mark.e2e

DET_FILES = {"coco": "coco/test_coco_det_AP_H_56.json", "crowdpose": "crowdpose/test_crowdpose_det_AP_40.json"}


@pytest.mark.parametrize("dataset", ["coco", "crowdpose", "ochuman", "mpii"])
def test_smoke_search_on_a_real_dataset_layout(dataset, real_layouts, shared_data, tmp_path, search_cli):
    det = ["--det-file", shared_data / DET_FILES[dataset]] if dataset in DET_FILES else []
    result = search_cli.run("--space", "lja", "--smoke", "--num-samples", "1", "--dataset", dataset, "--data-root",
                            real_layouts / dataset, *det, "--storage-path", tmp_path / "ray", "--experiment",
                            f"real-{dataset}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    entry = meta.get(dataset)
    client = MlflowClient(search_cli.tracking_uri)
    experiment = client.get_experiment_by_name(f"real-{dataset}")
    parent, = client.search_runs([experiment.experiment_id], "tags.space = 'lja'")
    assert parent.data.params["metric"] == entry.occluded_metric and parent.data.params["dataset"] == dataset
    child, = client.search_runs([experiment.experiment_id], "tags.trial_id != ''")
    params = child.data.params
    assert params["data.dataset"] == dataset
    if det:
        assert params["data.det_file"].endswith(DET_FILES[dataset].split("/")[1])
    else:
        assert params.get("data.det_file") in (None, "None", "")
    assert params["data.flip_p"] == "0.5" and params["data.flip_test"] == "True"
    for name in {entry.clean_metric, entry.occluded_metric}:
        assert 0.0 <= child.data.metrics[name] <= 1.0, name
    assert f'"{entry.occluded_metric}"' in result.stdout
