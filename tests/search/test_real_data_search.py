"""The real-data smoke a user can run offline: `search/run.py --space lja --dataset NAME --data-root DIR --smoke` on
each benchmark's official layout built from the real fixtures (tests/conftest.py `real_layouts`), evaluated on
person-detector boxes where the fixtures hold them (COCO: HRNet's AP-56 boxes; CrowdPose: MMPose's YOLOv3 boxes;
the fixtures have none for OCHuman, whose val_occ split then uses its ground-truth boxes, nor does MPII's protocol
take any). One trial of the smallest budget each: what is checked is that every dataset goes end to end."""
import pytest
from mlflow.tracking import MlflowClient

from conftest import SearchCLI
from datasets import meta

pytestmark = pytest.mark.e2e

DET_FILES = {"coco": "coco/test_coco_det_AP_H_56.json", "crowdpose": "crowdpose/test_crowdpose_det_AP_40.json"}


DATASETS = ("coco", "crowdpose", "ochuman", "mpii")


@pytest.fixture(scope="module")
def searches(real_layouts, shared_data, tmp_path_factory, dataset_cache) -> dict:
    """{dataset: (its SearchCLI, stdout + stderr, exit status)}: the four searches started at once, each with its own
    local Ray and store (most of a smoke search is Ray starting and waiting: side by side they cost ~2 of them)."""
    started = {}
    for dataset in DATASETS:
        work = tmp_path_factory.mktemp(f"real-{dataset}")
        cli = SearchCLI(work, dataset_cache)
        det = ["--det-file", shared_data / DET_FILES[dataset]] if dataset in DET_FILES else []
        started[dataset] = cli, cli.start("--space", "lja", "--smoke", "--num-samples", "1", "--dataset", dataset,
                                          "--data-root", real_layouts / dataset, *det, "--storage-path", work / "ray",
                                          "--experiment", f"real-{dataset}")
    return {dataset: (cli, proc.communicate(timeout=900)[0], proc.returncode)
            for dataset, (cli, proc) in started.items()}


@pytest.mark.parametrize("dataset", DATASETS)
def test_smoke_search_on_a_real_dataset_layout(dataset, searches):
    search_cli, output, status = searches[dataset]
    assert status == 0, output[-4000:]
    entry = meta.get(dataset)
    client = MlflowClient(search_cli.tracking_uri)
    experiment = client.get_experiment_by_name(f"real-{dataset}")
    parent, = client.search_runs([experiment.experiment_id], "tags.space = 'lja'")
    assert parent.data.params["metric"] == entry.occluded_metric and parent.data.params["dataset"] == dataset
    child, = client.search_runs([experiment.experiment_id], "tags.trial_id != ''")
    params = child.data.params
    assert params["data.dataset"] == dataset
    if dataset in DET_FILES:
        assert params["data.det_file"].endswith(DET_FILES[dataset].split("/")[1])
    else:
        assert params.get("data.det_file") in (None, "None", "")
    assert params["data.flip_p"] == "0.5" and params["data.flip_test"] == "True"
    for name in {entry.clean_metric, entry.occluded_metric}:
        assert 0.0 <= child.data.metrics[name] <= 1.0, name
    # The summary table's header names the dataset's search metric.
    assert entry.occluded_metric in next(line for line in output.splitlines() if line.split()[:2] == ["#", "trial"])
