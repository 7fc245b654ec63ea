"""What README "Security" promises of cluster.yaml: only a bundle of HEAD leaves the machine (no .git), head and
workers get distinct least-privilege instance profiles (the README's IAM commands create them), Ray's token
authentication is on for every node and the token reaches every node, and no Ray, dashboard or MLflow port is
opened beyond what the README states. The file still passes Ray's autoscaler schema."""
import copy
import json
import re

import pytest
from ray.autoscaler._private.util import prepare_config, validate_config

from test_cluster_config import (README, all_commands, commands, load_config, mlflow_server_options,
                                 ray_start_args, readme_cluster_commands, worker_types)

TOKEN = ".cache/ray-cluster-token"
BUCKET = "YOUR-BUCKET"


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config()


def test_still_valid_against_rays_schema(config):
    validate_config(prepare_config(copy.deepcopy(config)))


def test_no_git_directory_leaves_the_machine(config):
    locals_ = [str(local).rstrip("/") for local in config["file_mounts"].values()]
    assert not any(local == ".git" or local.endswith("/.git") or "/.git/" in local for local in locals_), locals_
    assert ".cache/occpose-HEAD.bundle" in locals_
    assert ".git" not in str(config.get("cluster_synced_files", []))
    for cmd in all_commands(config):
        assert "remote add" not in cmd and "clone http" not in cmd, cmd


def policies(role: str) -> list[dict]:
    """The policy documents the README's IAM commands attach to `role` (the loop's $role stands for each)."""
    text = re.sub(r"\\\n\s*", " ", README.read_text())
    loop = re.search(r"for role in ([\w -]+); do(.*?)\ndone", text, re.S)
    found = []
    command = r"put-role-policy\s+--role-name\s+(\S+)\s+--policy-name\s+\S+\s+--policy-document\s+'([^']+)'"
    for match in re.finditer(command, text):
        name, document = match.groups()
        in_loop = loop and loop.start(2) <= match.start() < loop.end(2)
        if name == role or (in_loop and name == "$role" and role in loop.group(1).split()):
            found.append(json.loads(document))
    return found


def statements(role: str) -> list[dict]:
    return [s for doc in policies(role) for s in doc["Statement"]]


def actions(statement: dict) -> list[str]:
    return [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]


def test_head_and_workers_have_distinct_profiles(config):
    head = config["available_node_types"][config["head_node_type"]]["node_config"]["IamInstanceProfile"]["Name"]
    workers = {t["node_config"]["IamInstanceProfile"]["Name"] for t in worker_types(config).values()}
    assert head == "occpose-head" and workers == {"occpose-worker"}
    assert "ray-autoscaler-v1" not in str(config), "Ray's default profile (EC2 and S3 full access)"
    joined = [" ".join(tokens) for tokens in readme_cluster_commands()]
    for name in ("occpose-head", "occpose-worker"):
        assert policies(name), f"README attaches no policy to {name}"
    assert any("create-instance-profile" in line for line in joined)
    assert any("add-role-to-instance-profile" in line for line in joined)


def test_worker_may_use_the_bucket_only():
    for statement in statements("occpose-worker"):
        assert statement["Effect"] == "Allow"
        assert all(action.startswith("s3:") and "*" not in action for action in actions(statement)), statement
        resources = [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]
        assert all(r in (f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*") for r in resources), statement


def test_head_has_what_the_autoscaler_needs_and_no_more():
    granted = {action: s for s in statements("occpose-head") for action in actions(s)}
    assert not [a for a in granted if a.endswith("*")], "no wildcard actions"
    assert {a.split(":")[0] for a in granted} <= {"ec2", "s3", "iam"}
    assert {"ec2:RunInstances", "ec2:TerminateInstances", "ec2:CreateTags", "ec2:DescribeInstances"} <= set(granted)
    assert [a for a in granted if a.startswith("iam:")] == ["iam:PassRole"]
    assert granted["iam:PassRole"]["Resource"] == "arn:aws:iam::*:role/occpose-worker"
    terminate = granted["ec2:TerminateInstances"]
    assert terminate["Condition"]["StringEquals"] == {"ec2:ResourceTag/ray-cluster-name": load_config()["cluster_name"]}
    for action, statement in granted.items():
        if action.startswith("s3:"):
            assert BUCKET in str(statement["Resource"]) and statement["Resource"] != "*"


def test_token_authentication_on_every_node(config):
    mounts = config["file_mounts"]
    assert mounts.get("/home/ubuntu/.ray/auth_token") == TOKEN, "the token must reach Ray's default path on each node"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(cmd for cmd in commands(config, key) if "ray start" in cmd)
        before = start[:start.index("ray start")]
        assert re.search(r"export (?:\S+ )*RAY_AUTH_MODE=token\b", before), f"{key}: Ray starts without its token"
    assert not any("RAY_AUTH_MODE=disabled" in cmd for cmd in all_commands(config))
    readme = [" ".join(tokens) for tokens in readme_cluster_commands()]
    make = next((line for line in readme if TOKEN in line and "token_hex" in line), None)
    assert make and "umask 077" in make, "README must make the token, private"
    assert any(f'RAY_AUTH_TOKEN_PATH=$PWD/{TOKEN}' in line and "RAY_AUTH_MODE=token" in line for line in readme)


def test_ports_as_documented(config):
    head = ray_start_args(config, "head_start_ray_commands")
    worker = ray_start_args(config, "worker_start_ray_commands")
    assert head["--dashboard-host"] == "127.0.0.1" and mlflow_server_options(config)["--host"] == "127.0.0.1"
    for args in (head, worker):
        assert "--node-ip-address" not in args, "Ray binds the node's private address"
        assert "--ray-debugger-external" not in args
    assert "security_group" not in config["provider"] or all(
        rule.get("FromPort") == rule.get("ToPort") == 22 for rule in config["provider"]["security_group"].get(
            "IpPermissions", []))
    security = README.read_text().split("## Security", 1)[1]
    for port in ("22", "8265", "5000", head["--port"], "10001", head["--object-manager-port"]):
        assert port in security, f"README Security does not say where port {port} listens"
