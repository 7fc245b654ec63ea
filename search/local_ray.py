"""The local Ray instance a search starts without --address: reachable from this machine only.

Ray binds its GCS, raylet, object manager, workers and dashboard agent to the node's IP address, which on Linux it
takes to be the routable one (`ray._private.services.get_node_ip_address`), and some of them to every interface; an
`_node_ip_address="127.0.0.1"` is turned back into that routable address (`resolve_ip_for_localhost`). Ray's one
switch to a loopback node address is RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (a local-only "cluster", the default on
macOS and Windows), read when `ray` is imported: `loopback_only` sets it for Ray's processes and for this already
imported driver. A search joining a cluster (--address) must not call it: its driver needs the node's real address.

Token authentication (Ray's default for a local `ray.init`: RAY_AUTH_MODE=token, the token in ~/.ray/auth_token)
keeps other users of the machine out of what stays reachable on 127.0.0.1. Ray writes that file with the umask's
mode (0644 under the usual 022), so `private_token` makes it (or tightens it to) 0600 first.
"""
from __future__ import annotations

import os
import secrets
import socket
import stat
from pathlib import Path

from datasets.atomic import atomic_writer

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"  # read first by ray.dashboard.utils.get_address_for_submission_client


def loopback_only() -> None:
    """Make the next local `ray.init` bind every Ray process to 127.0.0.1."""
    os.environ[LOOPBACK_ENV] = "0"  # Ray's processes (GCS, raylet, workers, agents) read it at their start
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # this driver imported ray before: its node address too


def private_token() -> Path | None:
    """The token file Ray will read (RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token), created with a fresh token as Ray
    would, or tightened, so that only this user can read it; None where token authentication is off or the token
    comes from RAY_AUTH_TOKEN."""
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token" or os.environ.get("RAY_AUTH_TOKEN"):
        return None
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if not path.exists():
        with atomic_writer(path, permissions=0o600) as f:
            f.write(secrets.token_hex(32))  # ray._private.authentication's own format: 256 random bits in hex
    mode = path.stat()
    if mode.st_uid == os.getuid() and stat.S_IMODE(mode.st_mode) & 0o077:
        path.chmod(0o600)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def own_state_api(port: int) -> None:
    """Point Ray's state API clients of this search (Ray Train's placement-group cleaner among them) at this search's
    own dashboard. Without an address they look for "the" local Ray, and with two searches on one machine find two
    ("Found multiple active Ray instances", ray._private.services). Ray's processes inherit the variable."""
    os.environ[API_SERVER_ENV] = f"http://127.0.0.1:{port}"


def init_kwargs() -> dict:
    """`ray.init(**init_kwargs())` for a search without --address: loopback only, the dashboard (whose state API
    Ray Train's placement-group cleaner polls) on 127.0.0.1, on a port of its own that this search's Ray processes
    are told (two local searches on one machine each keep to their own Ray, whatever RAY_ADDRESS says)."""
    loopback_only()
    private_token()
    port = free_port()
    own_state_api(port)
    # "local": a Ray of its own even where RAY_ADDRESS or /tmp/ray/ray_current_cluster (written by `ray start` and
    # by ray.cluster_utils) names another one; without it ray.init() joins that instance, another search's included.
    from search.tuner import HEAD_TRIAL_SLOTS, TRIAL_SLOTS  # each trial driver holds its share (driver_resources)

    return {"address": "local", "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": port,
            "resources": {TRIAL_SLOTS: HEAD_TRIAL_SLOTS}}
