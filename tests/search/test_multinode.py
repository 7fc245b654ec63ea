"""The search on a real multi-node Ray cluster built on this machine (ray.cluster_utils.Cluster: a head and two
worker nodes of one CPU each, a head without CPUs): trials spread over the nodes, checkpoints go through the shared --storage-path, and a
worker node removed mid-trial sends its trial elsewhere, continuing from its checkpoint."""
import re

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.e2e


def test_trials_spread_and_survive_a_removed_node(tmp_path, search_cli):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})  # trials run on the worker nodes
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        uri = search_cli.tracking_uri
        search = search_cli.start("--space", "lja", "--smoke", "--num-samples", "2", "--epochs", "2", "--scheduler",
                                  "fifo", "--max-concurrent", "2", "--address", cluster.address, "--storage-path",
                                  tmp_path / "shared", "--experiment", "multinode")
        lines = []
        try:
            # Wait for a trial's first epoch from a worker node (the progress line names the node), then take that
            # node away while the trial still has its second epoch to run.
            by_prefix = {node.node_id[:12]: node for node in workers}
            victim = None
            while victim is None:
                line = search.stdout.readline()
                assert line, "".join(lines[-40:])
                lines.append(line)
                match = re.search(r"\[(\w+)\] epoch (1):.* on node (\w+)", line)
                if match and match.group(3) in by_prefix:
                    victim = (match.group(1), by_prefix[match.group(3)].node_id)
            cluster.remove_node(by_prefix[victim[1][:12]], allow_graceful=False)  # its node dies mid-trial
            output, _ = search.communicate(timeout=1200)
        finally:
            if search.poll() is None:
                search.kill()
        assert search.returncode == 0, output[-4000:]
    finally:
        cluster.shutdown()

    client = MlflowClient(uri)
    children = client.search_runs([client.get_experiment_by_name("multinode").experiment_id], "tags.trial_id != ''")
    assert len(children) == 2
    nodes = set()
    for child in children:
        assert child.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(child.info.run_id, "val/AP")] == [1, 2]
        ran_on = child.data.tags["ray_nodes"].split(",")
        nodes |= set(ran_on)
        if child.data.tags["trial_id"] == victim[0]:
            # it ran on the removed node, then finished elsewhere without repeating an epoch
            assert ran_on[0] == victim[1] and ran_on[-1] != victim[1], ran_on
    assert len(nodes) >= 2, nodes  # the trials ran on more than one node
    assert list((tmp_path / "shared" / "multinode.train").glob("*/checkpoint_*"))
