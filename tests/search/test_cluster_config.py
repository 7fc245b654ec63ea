"""cluster.yaml (the Ray autoscaler config for AWS) checked offline: against Ray's own autoscaler schema, after Ray's
defaults are filled in as `ray up` does; for the properties the cluster relies on (no trials on the head, bounded
GPU worker types, private dashboard and MLflow, PostgreSQL + S3 tracking, the committed HEAD installed); and the
README "Cluster (AWS)" commands against the CLIs they call (Ray's and search/run.py's). Nothing here reaches AWS."""
import copy
import ipaddress
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from conftest import REPO_ROOT

CLUSTER_YAML = REPO_ROOT / "cluster.yaml"
README = REPO_ROOT / "README.md"
# vCPUs and GPUs of the instance types the config uses (AWS's published specs), to catch a mistyped `resources`.
INSTANCE_SPECS = {"g5.2xlarge": (8, 1), "p4d.24xlarge": (96, 8), "p5.48xlarge": (192, 8)}
ACCELERATED_FAMILY = re.compile(r"^(g\d|p\d|inf\d|trn\d|dl\d)")


def load_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())  # how `ray up` reads it (autoscaler/_private/commands.py)


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config()


@pytest.fixture(scope="module")
def prepared(config) -> dict:
    """The config as `ray up` has it before asking AWS anything: merged with Ray's AWS defaults.yaml, setup commands
    merged per node kind, per-type worker bounds filled in."""
    return prepare_config(copy.deepcopy(config))


def worker_types(config) -> dict:
    return {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}


def commands(config, key: str) -> list[str]:
    return list(config.get(key) or [])


def all_commands(config) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    return [cmd for key in keys for cmd in commands(config, key)]


def option_values(args: list[str]) -> dict[str, str | None]:
    """--flag value / --flag=value / bare --flag from an argument list."""
    found, i = {}, 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            if "=" in arg:
                name, value = arg.split("=", 1)
            elif i + 1 < len(args) and not args[i + 1].startswith("-"):
                name, value = arg, args[i + 1]
                i += 1
            else:
                name, value = arg, None
            found[name] = value
        i += 1
    return found


def program_args(command: str, marker: str) -> list[str] | None:
    """The arguments after `marker` (e.g. 'mlflow server'), also inside a quoted `bash -c '...'` script."""
    tokens = shlex.split(command)
    first, second = marker.split()
    for i, token in enumerate(tokens[:-1]):
        if Path(token).name == first and tokens[i + 1] == second:
            end = next((j for j in range(i + 2, len(tokens)) if tokens[j] in {"&", "&&", ";", "|", "||"}),
                       len(tokens))
            return [t for t in tokens[i + 2:end] if not re.match(r"^\d?[<>]", t)]
    for token in tokens:
        if marker in token and token != command:
            found = program_args(token, marker)
            if found is not None:
                return found
    return None


def ray_start_args(config, key: str) -> dict[str, str | None]:
    starts = [program_args(cmd, "ray start") for cmd in commands(config, key)]
    starts = [args for args in starts if args is not None]
    assert len(starts) == 1, f"{key}: expected one `ray start`, found {len(starts)}"
    return option_values(starts[0])


def mlflow_server_options(config) -> dict[str, str | None]:
    found = [program_args(cmd, "mlflow server") for cmd in commands(config, "head_start_ray_commands")]
    found = [args for args in found if args]  # not the stop command's `grep "mlflow server"`
    assert len(found) == 1, "head_start_ray_commands must start exactly one `mlflow server`"
    return option_values(found[0])


def checkout_dir(config) -> str:
    """Where the setup builds the project's .venv (the directory bootstrap.sh runs in)."""
    dirs = {m.group(1) for cmd in commands(config, "setup_commands")
            for m in [re.search(r"cd (\S+) && .*scripts/bootstrap\.sh", cmd)] if m}
    assert len(dirs) == 1, "setup_commands must run scripts/bootstrap.sh in one checkout directory"
    return dirs.pop()


# --- Ray's schema --------------------------------------------------------------------------------------------------

def test_valid_against_rays_autoscaler_schema(prepared):
    validate_config(prepared)  # ray/autoscaler/ray-schema.json via jsonschema, plus Ray's own cross-field checks


def test_schema_is_the_one_the_cluster_runs():
    """The schema comes from the Ray installed here; the nodes install requirements.lock's Ray. Same version, so a
    config valid here is valid for the autoscaler on the head."""
    pinned = re.search(r"^ray==(\S+)$", (REPO_ROOT / "requirements.lock").read_text(), re.M)
    assert pinned and ray.__version__ == pinned.group(1)


@pytest.mark.parametrize("break_it", [
    lambda c: c["available_node_types"]["gpu_a10g"]["resources"].update(GPU=0.5),  # resources are integers
    lambda c: c.update(idle_timeout_minute=5),  # a misspelt top-level key
    lambda c: c["available_node_types"]["gpu_a10g"].update(max_workers="8"),
    lambda c: c["available_node_types"]["head"].pop("node_config"),
    lambda c: c["available_node_types"]["gpu_a10g"].update(min_workers=c["max_workers"] + 1),
], ids=["fractional-gpu", "unknown-key", "string-bound", "no-node-config", "min-above-global-max"])
def test_schema_check_rejects_broken_variants(config, break_it):
    """The validation above is live: small breakages of this very file fail it."""
    broken = copy.deepcopy(config)
    break_it(broken)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_config(prepare_config(broken))


def test_no_command_list_falls_back_to_rays_defaults(config, prepared):
    """Ray's AWS defaults.yaml fills any command list the file omits (a nightly Ray wheel, boto3 into the system
    pip). Every list is the file's own, and packages only go into the project venv, through uv."""
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands", "head_start_ray_commands",
                "worker_start_ray_commands"):
        assert key in config, f"{key} missing: Ray's default commands would run"
    for cmd in prepared["head_setup_commands"] + prepared["worker_setup_commands"]:
        assert "pip install" not in cmd or ".venv/bin/uv pip install" in cmd, cmd


# --- nodes ---------------------------------------------------------------------------------------------------------

def test_head_node_runs_no_trials(config):
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "trials (which reserve CPUs) must not be placed on the head"
    assert head["resources"].get("GPU", 0) == 0
    assert not ACCELERATED_FAMILY.match(head["node_config"]["InstanceType"]), "the head needs no accelerator"
    assert head.get("max_workers", 0) == 0 and head.get("min_workers", 0) == 0
    from search.tuner import HEAD_TRIAL_SLOTS, TRIAL_SLOTS  # the trial drivers' shares (search/tuner.py)

    assert head["resources"].get(TRIAL_SLOTS) == HEAD_TRIAL_SLOTS
    assert all(TRIAL_SLOTS not in kind.get("resources", {}) for name, kind in config["available_node_types"].items()
               if name != config["head_node_type"]), "drivers on a worker would not reach the head's state API"


def test_gpu_worker_types_are_bounded_and_described(config):
    workers = worker_types(config)
    instance_types = {t["node_config"]["InstanceType"] for t in workers.values()}
    assert "g5.2xlarge" in instance_types and instance_types & {"p4d.24xlarge", "p5.48xlarge"}
    assert config["idle_timeout_minutes"] > 0
    for name, node_type in workers.items():
        low, high = node_type["min_workers"], node_type["max_workers"]
        assert isinstance(low, int) and isinstance(high, int), name
        assert 0 <= low <= high <= config["max_workers"], name
        assert node_type["resources"]["GPU"] >= 1, f"{name} is not a GPU worker"
        spec = INSTANCE_SPECS.get(node_type["node_config"]["InstanceType"])
        if spec:
            assert (node_type["resources"]["CPU"], node_type["resources"]["GPU"]) == spec, name
        # Workers write checkpoints to the S3 storage path themselves.
        assert "IamInstanceProfile" in node_type["node_config"], f"{name} has no instance profile for S3"
    images = {t["node_config"]["ImageId"] for t in config["available_node_types"].values()}
    assert len(images) == 1, "every node must boot the same image"


# --- network -------------------------------------------------------------------------------------------------------

def test_dashboard_and_services_are_not_public(config):
    head = ray_start_args(config, "head_start_ray_commands")
    assert "--head" in head
    assert head.get("--dashboard-host") == "127.0.0.1"
    worker = ray_start_args(config, "worker_start_ray_commands")
    assert worker["--address"] == f"$RAY_HEAD_IP:{head['--port']}"
    for cmd in all_commands(config):
        assert "0.0.0.0" not in cmd, cmd
    # No security-group rule beyond Ray's own (SSH from anywhere, everything within the cluster).
    for rule in config["provider"].get("security_group", {}).get("IpPermissions", []):
        assert rule.get("FromPort") == rule.get("ToPort") == 22, rule


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # SQLAlchemy notices from importing MLflow's CLI
def test_mlflow_server_is_private_and_backed_by_postgres_and_s3(config):
    from mlflow.cli import server

    options = mlflow_server_options(config)
    known = {opt for param in server.params for opt in param.opts}
    assert set(options) <= known, f"unknown mlflow server options: {set(options) - known}"
    host = ipaddress.ip_address(options["--host"])
    assert (host.is_loopback or host.is_private) and not host.is_unspecified
    backend = options["--backend-store-uri"]
    assert backend.startswith("postgresql://")
    assert "@" not in backend.split("?")[0], "no credentials in the URI: PostgreSQL peer authentication"
    assert options["--artifacts-destination"].startswith("s3://")
    uri = f"http://{options['--host']}:{options['--port']}"
    start = " ".join(commands(config, "head_start_ray_commands"))
    assert f"export MLFLOW_TRACKING_URI={uri};" in start, "Ray (and so the search driver) must log to this server"
    assert f"{uri}/health" in start, "ray up must wait until the server answers"


def test_postgres_serves_mlflow_and_optuna(config):
    import sqlalchemy.engine.url

    head_setup = " ".join(commands(config, "head_setup_commands"))
    assert re.search(r"apt-get install .*\bpostgresql\b", head_setup)
    uris = [mlflow_server_options(config)["--backend-store-uri"]]
    uris += [option_values(args)["--optuna-storage"] for args in run_py_invocations(readme_cluster_commands())
             if "--optuna-storage" in option_values(args)]
    assert len(uris) >= 2, "the README's cluster search must name its Optuna storage"
    create_loop = re.search(r"for db in ([\w ]+); do .*createdb", head_setup)
    assert create_loop, "head_setup_commands must create the databases"
    for uri in uris:
        url = sqlalchemy.engine.url.make_url(uri)
        assert url.database in create_loop.group(1).split(), f"{uri}: database not created on the head"
        # The driver SQLAlchemy picks for this URL is the one installed (psycopg2 vs psycopg differ).
        driver = url.get_dialect().driver
        package = {"psycopg": r"psycopg\[binary\]==", "psycopg2": r"psycopg2-binary=="}[driver]
        assert re.search(package + r"[\d.]+", head_setup), f"{uri} needs {driver}"


def test_extra_head_packages_are_pinned_after_bootstrap(config, prepared):
    """bootstrap.sh's `uv pip sync` removes what the lock lacks, so the extras must come after it, pinned, and agree
    with the lock where it lists them too."""
    head = prepared["head_setup_commands"]
    bootstrap = next(i for i, cmd in enumerate(head) if "scripts/bootstrap.sh" in cmd)
    extras = [i for i, cmd in enumerate(head) if "uv pip install" in cmd]
    assert extras and all(i > bootstrap for i in extras)
    lock = dict(re.findall(r"^([\w.-]+)==(\S+)$", (REPO_ROOT / "requirements.lock").read_text(), re.M))
    pins = re.findall(r"([\w.-]+)(?:\[\w+\])?==([\w.]+)", " ".join(head[i] for i in extras))
    assert {name for name, _ in pins} >= {"boto3"}
    for name, version in pins:
        assert lock.get(name, version) == version, f"{name}=={version} conflicts with requirements.lock"


# --- the committed HEAD on every node ------------------------------------------------------------------------------

GIT_ENV = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def git(*args, cwd=None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env=GIT_ENV).stdout.strip()


def test_setup_checks_out_the_mounted_commit(config, tmp_path):
    """Runs the file's own checkout commands against a bundle of this repository's HEAD (what file_mounts ships,
    made as the README says), with /home/ubuntu moved under tmp_path: the checkout is exactly HEAD, survives a
    re-run, and follows a new commit."""
    mounts = {remote: local for remote, local in config["file_mounts"].items()}
    bundles = [remote for remote, local in mounts.items() if local == ".cache/occpose-HEAD.bundle"]
    assert len(bundles) == 1, "file_mounts must ship the bundle of HEAD"
    assert all((REPO_ROOT / local).resolve() not in (REPO_ROOT, REPO_ROOT / ".git") for local in mounts.values()), \
        "neither the working tree (uncommitted edits) nor .git (its config) may be mounted"
    assert any("git bundle create .cache/occpose-HEAD.bundle HEAD" in " ".join(tokens)
               for tokens in readme_cluster_commands()), "README must show how the bundle is made"
    mirror_path = bundles[0]
    checkout = checkout_dir(config)
    setup = commands(config, "setup_commands")
    bootstrap = next(i for i, cmd in enumerate(setup) if "scripts/bootstrap.sh" in cmd)
    checkout_cmds = [cmd for cmd in setup[:bootstrap] if mirror_path in cmd]
    assert checkout_cmds and all("git" in cmd for cmd in checkout_cmds)
    assert any("--detach" in cmd for cmd in checkout_cmds)
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True).returncode:
        pytest.skip("this copy of the project is not a git clone")

    home = str(Path(mirror_path).parent)
    assert Path(checkout).parent == Path(home)
    mirror, work = tmp_path / Path(mirror_path).name, tmp_path / Path(checkout).name
    git("bundle", "create", str(mirror), "HEAD", cwd=REPO_ROOT)

    def run_setup():
        for cmd in checkout_cmds:
            subprocess.run(["bash", "-c", f"({cmd.replace(home, str(tmp_path))})"], check=True, env=GIT_ENV,
                           capture_output=True, text=True)

    work.mkdir()
    (work / "README.md").write_text("a file left by an earlier, non-git setup\n")
    run_setup()
    head = git("rev-parse", "HEAD", cwd=REPO_ROOT)
    assert git("rev-parse", "HEAD", cwd=work) == head
    assert git("status", "--porcelain", "--untracked-files=no", cwd=work) == "", "the tree is not the commit's"
    assert git("remote", cwd=work) == "", "the node's checkout knows no remote"

    (work / ".venv").mkdir()
    (work / ".venv" / "marker").write_text("built")
    (work / "README.md").write_text("edited on the node\n")
    run_setup()  # `ray up` again: idempotent, tracked files reset, ignored ones (the venv) kept
    assert git("rev-parse", "HEAD", cwd=work) == head
    assert git("status", "--porcelain", "--untracked-files=no", cwd=work) == ""
    assert (work / ".venv" / "marker").read_text() == "built"

    source = tmp_path / "source"  # a new commit, bundled by the next `ray up`
    git("clone", "--quiet", "--no-checkout", str(mirror), str(source))
    new_commit = git("commit-tree", git("rev-parse", "HEAD^{tree}", cwd=source), "-p", head, "-m", "next",
                     cwd=source)
    git("update-ref", "HEAD", new_commit, cwd=source)
    git("bundle", "create", str(mirror), "HEAD", cwd=source)
    run_setup()
    assert git("rev-parse", "HEAD", cwd=work) == new_commit != head


# --- README and the commands in cluster.yaml's comments ---------------------------------------------------------

def readme_cluster_section() -> str:
    text = README.read_text()
    match = re.search(r"^## Cluster \(AWS\)\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, 'README has no "## Cluster (AWS)" section'
    return match.group(1)


def shell_commands(text: str) -> list[list[str]]:
    """Commands of shell text: continuation lines joined, comments dropped, each split as the shell would."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [tokens for line in joined.splitlines() if (tokens := shlex.split(line, comments=True))]


def readme_cluster_commands() -> list[list[str]]:
    blocks = re.findall(r"^```bash\n(.*?)^```", readme_cluster_section(), re.M | re.S)
    return [tokens for block in blocks for tokens in shell_commands(block)]


def readme_cluster_inline_ray_commands() -> list[list[str]]:
    """`ray ...` commands quoted inline in the section's prose (e.g. the MLflow UI port forward)."""
    spans = re.findall(r"`((?:\.venv/bin/)?ray [^`]+)`", readme_cluster_section())
    return [shlex.split(span) for span in spans if "cluster.yaml" in span or " job " in span]


def yaml_comment_commands() -> list[list[str]]:
    """The `ray ...` command lines (with their continuation lines) in cluster.yaml's comments."""
    comments = [re.sub(r"^\s*# ?", "", line).strip() for line in CLUSTER_YAML.read_text().splitlines()
                if line.lstrip().startswith("#")]
    lines, continued = [], False
    for line in comments:
        if continued or line.startswith("ray "):
            lines.append(line)
        continued = (continued or line.startswith("ray ")) and line.endswith("\\")
    return shell_commands("\n".join(lines))


def run_py_invocations(cmds: list[list[str]]) -> list[list[str]]:
    return [tokens[i + 1:] for tokens in cmds for i, token in enumerate(tokens) if token.endswith("search/run.py")]


def is_ray(tokens: list[str], *sub: str) -> bool:
    return Path(tokens[0]).name == "ray" and tuple(tokens[1:1 + len(sub)]) == sub


def test_readme_documents_the_cluster_lifecycle():
    cmds = readme_cluster_commands()
    order = [next((i for i, t in enumerate(cmds) if is_ray(t, *sub) and (sub[0] == "job" or "cluster.yaml" in t)),
                  None) for sub in (("up",), ("dashboard",), ("job", "submit"), ("down",))]
    assert None not in order, "README must show ray up / ray dashboard / ray job submit / ray down on cluster.yaml"
    assert order == sorted(order)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydantic notices from importing Ray's CLI
def test_readme_ray_commands_parse_with_rays_cli():
    from ray.scripts.scripts import cli

    ray_cmds = readme_cluster_commands() + readme_cluster_inline_ray_commands() + yaml_comment_commands()
    ray_cmds = [tokens for tokens in ray_cmds if Path(tokens[0]).name == "ray"]
    assert len(ray_cmds) > 8
    for tokens in ray_cmds:
        command, args = cli, tokens[1:]
        while hasattr(command, "commands"):  # ray job submit: a group, then its command
            command, args = command.commands[args[0]], args[1:]
        command.make_context(" ".join(tokens[:len(tokens) - len(args)]), list(args))  # click's own parsing


def test_readme_forwards_the_ports_the_head_serves(config):
    served = {"8265", mlflow_server_options(config)["--port"]}
    cmds = readme_cluster_commands() + readme_cluster_inline_ray_commands()
    assert any(option_values(tokens).get("--remote-port") == mlflow_server_options(config)["--port"]
               for tokens in cmds if is_ray(tokens, "dashboard")), "README must show the MLflow UI port forward"
    for tokens in cmds:
        if is_ray(tokens, "dashboard"):
            assert option_values(tokens).get("--remote-port", "8265") in served
        if is_ray(tokens, "job", "submit"):
            assert option_values(tokens[:tokens.index("--")])["--address"] == "http://127.0.0.1:8265"


def test_cluster_search_commands_parse_with_run_py(config):
    """Every search/run.py command of the README's cluster section and of cluster.yaml's comments uses flags that
    search/run.py has, with values its parser accepts, from the checkout the setup builds."""
    from search.run import build_parser, parse_args

    known = {opt for action in build_parser()._actions for opt in action.option_strings}
    checkout = checkout_dir(config)
    for source, cmds in (("README", readme_cluster_commands()), ("cluster.yaml", yaml_comment_commands())):
        submits = [tokens for tokens in cmds if is_ray(tokens, "job", "submit")]
        assert submits, f"{source}: no `ray job submit`"
        for tokens in submits:
            entrypoint = tokens[tokens.index("--") + 1:]
            assert entrypoint[:2] == [f"{checkout}/.venv/bin/python", f"{checkout}/search/run.py"], entrypoint
        invocations = run_py_invocations(cmds)
        assert invocations, f"{source}: no search/run.py command"
        for args in invocations:
            flags = {arg.split("=")[0] for arg in args if arg.startswith("--")}
            assert flags <= known, f"{source}: search/run.py has no {flags - known}"
            parse_args(args)  # argparse exits (failing the test) on a bad choice or a missing value
            options = option_values(args)
            assert options["--address"] == "auto" and options["--storage-path"].startswith("s3://"), args
            if "--resume" not in options:
                # The cluster starts without worker CPUs: run.py's default concurrency would be one trial.
                assert "--max-concurrent" in options and "--optuna-storage" in options, args
