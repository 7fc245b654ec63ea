"""A local search needs nothing reachable from the network: Ray started with search/local_ray.py's init arguments
listens on the loopback interface only (every process of its session), with token authentication on."""
import ipaddress
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

PROBE = """
import json, os, ray
from search.local_ray import init_kwargs
import psutil  # Ray's bundled copy, on the path once ray is imported
ray.init(num_cpus=1, **init_kwargs())
listening = set()
for proc in [psutil.Process()] + psutil.Process().children(recursive=True):
    try:
        listening |= {(c.laddr.ip, c.laddr.port, proc.name()) for c in proc.net_connections("inet")
                      if c.status == psutil.CONN_LISTEN}
    except psutil.Error:
        pass
print(json.dumps({"node_ip": ray.util.get_node_ip_address(), "auth": os.environ.get("RAY_AUTH_MODE"),
                  "listening": sorted(listening)}))
ray.shutdown()
"""


@pytest.mark.e2e
def test_local_ray_listens_on_loopback_only(tmp_path):
    """...and starts a Ray of its own: RAY_ADDRESS naming another instance (here one that does not exist; as a
    `ray start` head's /tmp/ray/ray_current_cluster would) does not make a search join it."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HOME": str(tmp_path)}  # a fresh ~/.ray/auth_token
    env.pop("RAY_AUTH_MODE", None)
    env["RAY_ADDRESS"] = "127.0.0.1:1"
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["node_ip"] == "127.0.0.1"
    assert found["auth"] == "token", "a local Ray without token authentication"
    assert len(found["listening"]) >= 4, found  # GCS, raylet, dashboard, agents
    exposed = [(ip, port, name) for ip, port, name in found["listening"]
               if not ipaddress.ip_address(ip.removeprefix("::ffff:")).is_loopback]
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_token_file_is_private(tmp_path, monkeypatch):
    """Ray writes ~/.ray/auth_token with the umask's mode (0644): the search makes it, or tightens it to, 0600."""
    from search.local_ray import private_token

    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    token = private_token()
    assert token == tmp_path / ".ray" / "auth_token" and len(token.read_text()) == 64
    assert token.stat().st_mode & 0o777 == 0o600
    token.chmod(0o644)
    assert private_token().read_text() == token.read_text() and token.stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert private_token() is None
