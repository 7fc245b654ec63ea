"""The real-data smoke a user can run offline: `search/run.py --space lja --dataset NAME --data-root DIR --smoke` on
each benchmark's official layout built from the real fixtures (tests/conftest.py `real_layouts`), evaluated on
person-detector boxes where the fixtures hold them (COCO: HRNet's AP-56 boxes; CrowdPose: MMPose's YOLOv3 boxes;
the fixtures have none for OCHuman, whose val_occ split then uses its ground-truth boxes, nor does MPII's protocol
take any). One trial of the smallest budget each: what is checked is that every dataset goes end to end.

Beside them run the smoke searches of the model families issue 18 added: OASNet on the 2-stack hourglass with MPII
(OASNet's ablation setting) and LJA on SRPose-HRNet-W32 (on COCO). The smoke budget shrinks the data (24 training, 8
validation crops, one epoch) and the input, so the large models train in seconds; Ray's start dominates. So the
searches share one local Ray cluster (each joins it with --address, as on a cluster), and SRPose runs the COCO
search: one search checks both."""
import pytest
from mlflow.tracking import MlflowClient

from conftest import SearchCLI
from datasets import meta

pytestmark = pytest.mark.e2e

DET_FILES = {"coco": "coco/test_coco_det_AP_H_56.json", "crowdpose": "crowdpose/test_crowdpose_det_AP_40.json"}


DATASETS = ("coco", "crowdpose", "ochuman", "mpii")


# The searches each test reads: SRPose's is COCO's.
SEARCH_OF = {**{name: name for name in (*DATASETS, "hourglass")}, "srpose": "coco"}


@pytest.fixture(scope="module")
def searches(real_layouts, shared_data, tmp_path_factory, dataset_cache) -> dict:
    """{name: (its SearchCLI, stdout + stderr, exit status)}: every search of this module started at once on one local
    Ray cluster of one logical CPU per search (most of a smoke search is Ray starting and waiting: side by side on
    one cluster they cost little more than one), each with its own store."""
    from ray.cluster_utils import Cluster

    commands = {}
    for dataset in DATASETS:
        det = ["--det-file", shared_data / DET_FILES[dataset]] if dataset in DET_FILES else []
        commands[dataset] = ["--space", "lja", "--dataset", dataset, "--data-root", real_layouts / dataset, *det]
    commands["coco"] += ["--model", "srpose_hrnet_w32"]
    commands["hourglass"] = ["--space", "oasnet", "--model", "hourglass_2stack", "--dataset", "mpii", "--data-root",
                             real_layouts / "mpii"]
    started, cluster = {}, Cluster(initialize_head=True, head_node_args={"num_cpus": len(commands)})
    try:
        for name, command in commands.items():
            work = tmp_path_factory.mktemp(f"search-{name}")
            # as a search's own local Ray has it: no spot nodes, so no preemption watcher per trial
            cli = SearchCLI(work, dataset_cache, RAY_TRAIN_ENABLE_PREEMPTION_WATCHER="0")
            started[name] = cli, cli.start(*command, "--smoke", "--num-samples", "1", "--address", cluster.address,
                                           "--storage-path", work / "ray", "--experiment", f"real-{name}")
        done = {name: (cli, proc.communicate(timeout=1200)[0], proc.returncode)
                for name, (cli, proc) in started.items()}
    finally:
        for _, proc in started.values():
            if proc.poll() is None:
                proc.kill()
        cluster.shutdown()
    return {name: done[search] for name, search in SEARCH_OF.items()}


def only_child(search_cli, name: str):
    client = MlflowClient(search_cli.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(f"real-{name}").experiment_id], "tags.trial_id != ''")
    assert len(runs) == 1
    return runs[0]


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


def test_oasnet_space_on_the_two_stack_hourglass_with_mpii(searches):
    search_cli, output, status = searches["hourglass"]
    assert status == 0, output[-4000:]
    child = only_child(search_cli, "hourglass")
    assert child.info.status == "FINISHED"
    assert child.data.params["model.name"] == "hourglass_2stack" and child.data.params["oasnet.enabled"] == "True"
    assert 0.0 <= child.data.metrics["val/PCKh_0.5"] <= 100.0
    # OASNet's three terms, its joint term over both stacks of both views
    assert child.data.metrics["train/loss_joints"] > 0 and child.data.metrics["train/loss_occlusion"] > 0


def test_lja_space_on_srpose(searches):
    search_cli, output, status = searches["srpose"]
    assert status == 0, output[-4000:]
    child = only_child(search_cli, "coco")
    assert child.info.status == "FINISHED" and child.data.params["model.name"] == "srpose_hrnet_w32"
    assert 0.0 <= child.data.metrics["val/AP"] <= 1.0
    # DSL over SRPose's five supervised heatmaps, each logged
    assert {f"train/loss_stage{i}" for i in range(5)} <= set(child.data.metrics)
