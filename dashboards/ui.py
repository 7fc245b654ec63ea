#!/usr/bin/env python
"""Start the MLflow UI (and optuna-dashboard) against the search's stores, on loopback only.

    python dashboards/ui.py                  # MLFLOW_TRACKING_URI, default sqlite:///mlflow.db, on port 5000;
                                             # optuna-dashboard on 8080 when optuna.db lies beside that store
    python dashboards/ui.py --port 5001 --optuna-storage sqlite:///optuna.db --optuna-port 8081

In MLflow 3 an experiment opens on its GenAI overview: the search's runs are under "Model training", the view the
printed address opens directly. On a cluster, forward the ports first (README "Cluster").

From Python (tests, scripts), `start_mlflow_ui` runs it in the background and returns once it answers HTTP;
`stop_server` ends it with its workers.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from datasets.cli import port as port_number
from search.masking import mask_uri
from search.stores import (MLFLOW_UI_PORT, OPTUNA_UI_PORT, mlflow_ui_args, open_tracking_store, optuna_ui_args,
                           tracking_uri, tracking_uri_problem)
from search.stores import UI_HOST as HOST
# optuna.db beside a sqlite MLflow store, where search/run.py puts the study by default, if it is there.
from search.stores import existing_optuna_storage as default_optuna_storage

# MLflow's job runner (a pool of huey consumers) serves GenAI features - trace scoring, issue detection - that this
# project never uses; left on, it doubles the UI's start time on a small machine. The environment can still enable it.
UI_ENV_DEFAULTS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def ui_command(uri: str, port: int, workers: int | None = None) -> list[str]:
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    return [mlflow, *mlflow_ui_args(uri, port)] + (["--workers", str(workers)] if workers else [])


def ui_env() -> dict[str, str]:
    return {**UI_ENV_DEFAULTS, **os.environ}


def start_server(command: list[str], url: str, log_path: Path, timeout_s: float = 120.0,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    """Run `command` in a session of its own (so `stop_server` reaches the workers it forks), its output going to
    log_path; return once `url` answers HTTP. Raises RuntimeError with the log's tail if it exits or stays silent."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                return proc
            except urllib.error.HTTPError:
                return proc  # it answers, if not with 200
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                why = f"exited with {proc.returncode}" if proc.poll() is not None \
                    else f"did not answer in {timeout_s:g} s"
                tail = log_path.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"{' '.join(command)}: {url} {why}; its output ({log_path}):\n{tail}")
            time.sleep(0.5)
    except BaseException:  # a failed start, or Ctrl-C while waiting: the caller never gets the process to stop
        stop_server(proc)
        raise


def stop_server(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM the server's process group (it and the workers it forked), then SIGKILL whatever is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # the whole group is gone
            break
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
    proc.wait()


def start_mlflow_ui(uri: str, port: int, log_path: Path, workers: int = 1, timeout_s: float = 120.0):
    """The MLflow UI on http://127.0.0.1:port, running and answering; end it with stop_server. The store is
    created first, once, under the lock a search takes too (search/stores.py)."""
    open_tracking_store(uri)
    return start_server(ui_command(uri, port, workers), f"http://{HOST}:{port}/health", log_path, timeout_s,
                        env=ui_env())


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on host:port now (SO_REUSEADDR, as the servers bind, so that a connection
    closing in TIME_WAIT does not count as held)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def port_holder(port: int) -> str:
    """Who listens on `port`, best effort (Linux /proc; the process is found where its owner is ours): "process
    PID (COMMAND)", else "another process"."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{cols[9]}]")
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                return f"process {proc.name} ({command[:160]})"
        except OSError:
            continue
    return "another process"


def free_port(start: int) -> int | None:
    """The first free port from `start` on (within 100), or None."""
    return next((p for p in range(start, min(start + 100, 65536)) if port_is_free(p)), None)


def check_ports(ports: dict[str, int]) -> str | None:
    """Why the servers cannot start on their ports ({flag: port}): a port held by another server would have the
    printed address open that server instead. None when all are free."""
    for flag, port in ports.items():
        if not port_is_free(port):
            spare = free_port(port + 1)
            hint = f"; e.g. {flag} {spare} is free" if spare else ""
            return f"{flag} {port}: {HOST}:{port} is already in use by {port_holder(port)}{hint}"
    if len(set(ports.values())) < len(ports):
        return f"{' and '.join(ports)} must differ, got {list(ports.values())}"
    return None


def optuna_command(storage: str, port: int) -> list[str]:
    dashboard = shutil.which("optuna-dashboard") or str(Path(sys.executable).with_name("optuna-dashboard"))
    return [dashboard, *optuna_ui_args(storage, port)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default=tracking_uri())
    parser.add_argument("--port", type=port_number, default=MLFLOW_UI_PORT)
    parser.add_argument("--optuna-storage", help="the searches' Optuna storage (default: optuna.db beside a "
                        "sqlite tracking store, if present)")
    parser.add_argument("--optuna-port", type=port_number, default=OPTUNA_UI_PORT)
    parser.add_argument("--no-optuna", dest="optuna", action="store_false", help="start the MLflow UI only")
    parser.add_argument("--logs", type=Path, default=Path(".cache/ui"), help="where the servers' output goes")
    args = parser.parse_args(argv)
    if problem := tracking_uri_problem(args.tracking_uri):
        parser.error(f"--tracking-uri (or MLFLOW_TRACKING_URI) {mask_uri(args.tracking_uri)} {problem}")
    storage = (args.optuna_storage or default_optuna_storage(args.tracking_uri)) if args.optuna else None
    # A port another server holds is refused before anything starts (exit 2, naming the port and its holder):
    # started anyway, our server would fail to bind while the printed address opened that other server.
    held = check_ports({"--port": args.port, **({"--optuna-port": args.optuna_port} if storage else {})})
    if held:
        parser.error(held)
    # The servers run in sessions of their own, out of the terminal's reach: a closed terminal or a kill must
    # still end them, through the finally below.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    servers = []
    try:
        servers.append(start_mlflow_ui(args.tracking_uri, args.port, args.logs / "mlflow-ui.log", workers=None))
        print(f"MLflow UI:        http://{HOST}:{args.port}/#/experiments  (a search's runs: its experiment's "
              "'Model training' view)", flush=True)
        if storage:
            servers.append(start_server(optuna_command(storage, args.optuna_port), f"http://{HOST}:{args.optuna_port}/",
                                        args.logs / "optuna-dashboard.log"))
            print(f"optuna-dashboard: http://{HOST}:{args.optuna_port}/  ({storage})", flush=True)
        print(f"logs in {args.logs}; Ctrl-C stops the servers", flush=True)
        while all(proc.poll() is None for proc in servers):
            time.sleep(1)
        print("a server exited; see its log in " + str(args.logs), file=sys.stderr)
    except KeyboardInterrupt:
        pass
    except RuntimeError as err:
        sys.exit(f"ui.py: error: {err}")
    finally:
        for proc in servers:
            stop_server(proc)


if __name__ == "__main__":
    main()
