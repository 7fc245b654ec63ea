"""The bad-input corpus of the trainer, robustness, preview, report and UI command lines (issue 15): small hostile
inputs generated at test time, each run through the real command line as a subprocess, each asserting its class.

A case is refused when it exits 2 (bad input) or 1 (an environment failure), prints no traceback, names the flag,
file, field or run at fault, and leaves nothing behind in its directory that was not there before (it runs with
that directory as its working directory). tests/README.md lists every case, these and those covered elsewhere.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKER = ["-m", "trainables.worker"]
ROBUSTNESS = [str(ROOT / "search" / "robustness.py")]
PREVIEW = [str(ROOT / "datasets" / "preview.py"), "--dataset", "synthetic", "--aug", "lja"]
REPORT = [str(ROOT / "dashboards" / "report.py"), "--experiment", "no-such-search"]
UI = [str(ROOT / "dashboards" / "ui.py")]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A trial checkpoint directory (model.pt + trial_config.json) of an untrained small model: trains nothing."""
    import torch

    from trainables import checkpoint
    from trainables.build import build_model
    from trainables.config import TrialConfig

    cfg = TrialConfig.from_flat({"model.deconv_channels": 8})
    directory = tmp_path_factory.mktemp("checkpoint")
    torch.save(build_model(cfg).state_dict(), directory / checkpoint.MODEL_FILE)
    (directory / checkpoint.CONFIG_FILE).write_text(json.dumps(cfg.flat(), default=list))
    return directory


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> str:
    """An empty sqlite tracking store, created once outside every case's directory."""
    from search.stores import open_tracking_store

    return open_tracking_store(f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}")


# The hostile checkpoints: how each spoils a copy of the tiny checkpoint.
def _truncated(d):
    data = (d / "model.pt").read_bytes()
    (d / "model.pt").write_bytes(data[:4096])


def _foreign_keys(d):
    import torch

    torch.save({"backbone.nothing.weight": torch.zeros(3)}, d / "model.pt")


def _foreign_shapes(d):
    import torch

    state = torch.load(d / "model.pt", weights_only=True)
    state[next(iter(state))] = torch.zeros(1)
    torch.save(state, d / "model.pt")


def _torn_config(d):
    text = (d / "trial_config.json").read_text()
    (d / "trial_config.json").write_text(text[:len(text) // 2])


def _config_edit(**changes):
    def edit(d):
        flat = json.loads((d / "trial_config.json").read_text())
        (d / "trial_config.json").write_text(json.dumps({**flat, **changes}))
    return edit


SPOILED = {
    "zero-byte model.pt": (lambda d: (d / "model.pt").write_bytes(b""), "model.pt"),
    "truncated model.pt": (_truncated, "model.pt"),
    "random-byte model.pt": (lambda d: (d / "model.pt").write_bytes(os.urandom(2048)), "model.pt"),
    "no model.pt": (lambda d: (d / "model.pt").unlink(), "model.pt"),
    "model.pt of other keys": (_foreign_keys, "model.pt"),
    "model.pt of other shapes": (_foreign_shapes, "model.pt"),
    "trial_config.json cut in half": (_torn_config, "trial_config.json"),
    "trial_config.json a list": (lambda d: (d / "trial_config.json").write_text("[1, 2]"), "trial_config.json"),
    "trial_config.json of an unknown model": (_config_edit(**{"model.name": "foo"}), "model.name"),
    "trial_config.json of a wrong type": (_config_edit(**{"optim.epochs": "many"}), "optim.epochs"),
}


@pytest.mark.parametrize("case", sorted(SPOILED))
def test_robustness_refuses_a_spoiled_checkpoint(case, tiny_checkpoint, store, tmp_path):
    spoil, named = SPOILED[case]
    shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    spoil(tmp_path / "ckpt")
    err = _refused(ROBUSTNESS + ["--checkpoint", "ckpt", "--out", "out"], tmp_path, store, 2)
    assert named in err and "ckpt" in err, err


def _port_held(tmp_path):
    """A listening socket on a free loopback port, held for the test's duration."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    _port_held.sockets.append(holder)  # closed at the end of the test (held_sockets fixture)
    return str(holder.getsockname()[1])


_port_held.sockets = []


# (entry point + arguments (callables take the case's directory), exit status, what the message names)
CASES = {
    "worker: unknown --set key": (WORKER + ["--set", "optim.foo=1"], 2, "optim.foo"),
    "worker: unknown --set section": (WORKER + ["--set", "nothing.x=1"], 2, "nothing.x"),
    "worker: --set int not a number": (WORKER + ["--set", "optim.epochs=abc"], 2, "optim.epochs"),
    "worker: --set int given 1.5": (WORKER + ["--set", "optim.epochs=1.5"], 2, "optim.epochs"),
    "worker: --set bool given maybe": (WORKER + ["--set", "data.flip_test=maybe"], 2, "data.flip_test"),
    "worker: --set negative epochs": (WORKER + ["--set", "optim.epochs=-1"], 2, "optim.epochs"),
    "worker: --set without =": (WORKER + ["--set", "optim.epochs"], 2, "KEY=VALUE"),
    "worker: unknown model name": (WORKER + ["--set", "model.name=foo"], 2, "simplebaseline_r18"),
    "worker: --out an existing file": (WORKER + ["--out", "file"], 2, "--out"),
    "worker: --out below a file": (WORKER + ["--out", "file/sub"], 2, "not a directory"),
    "robustness: --max-samples -1": (ROBUSTNESS + ["--checkpoint", "x", "--max-samples", "-1"], 2, "--max-samples"),
    "robustness: --out an existing file": (ROBUSTNESS + ["--checkpoint", "x", "--out", "file"], 2, "--out"),
    "robustness: negative --radii": (ROBUSTNESS + ["--checkpoint", "x", "--radii", "0,-6"], 2, "--radii"),
    "robustness: unknown attack": (ROBUSTNESS + ["--checkpoint", "x", "--attacks", "nope"], 2, "--attacks"),
    "robustness: --run-id of no run": (ROBUSTNESS + ["--run-id", "0123456789abcdef", "--out", "out"], 2,
                                       "0123456789abcdef"),
    "preview: --n -1": (PREVIEW + ["--data-root", ".", "--out", "out", "--n", "-1"], 2, "--n"),
    "preview: --n 0": (PREVIEW + ["--data-root", ".", "--out", "out", "--n", "0"], 2, "--n"),
    "preview: --seed -1": (PREVIEW + ["--data-root", ".", "--out", "out", "--seed", "-1"], 2, "--seed"),
    "preview: --out an existing file": (PREVIEW + ["--data-root", ".", "--out", "file"], 2, "--out"),
    "report: --out an existing file": (REPORT + ["--out", "file"], 2, "--out"),
    "report: --robustness-max-samples -1": (REPORT + ["--robustness-max-samples", "-1"], 2,
                                             "--robustness-max-samples"),
    "report: unknown attack": (REPORT + ["--attacks", "nope"], 2, "--attacks"),
    "report: --baseline-run of no run": (REPORT + ["--baseline-run", "0123456789abcdef", "--out", "out"], 2,
                                         "--baseline-run"),
    "report: unusable --tracking-uri": (REPORT + ["--tracking-uri", "nosuchscheme://x", "--out", "out"], 1,
                                        "--tracking-uri"),
    "ui: --port 0": (UI + ["--port", "0", "--logs", "logs"], 2, "--port"),
    "ui: --port held by another server": (lambda d: UI + ["--port", _port_held(d), "--no-optuna", "--logs", "logs"],
                                          2, "already in use"),
    "ui: --optuna-port held": (lambda d: UI + ["--port", str(_free_port()), "--optuna-port", _port_held(d),
                                               "--optuna-storage", "sqlite:///optuna.db", "--logs", "logs"], 2,
                               "--optuna-port"),
}


@pytest.fixture
def held_sockets():
    yield
    while _port_held.sockets:
        _port_held.sockets.pop().close()


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused(case, store, tmp_path, held_sockets):
    argv, status, named = CASES[case]
    (tmp_path / "file").write_text("a file where a directory is expected\n")
    argv = argv(tmp_path) if callable(argv) else argv
    err = _refused(argv, tmp_path, store, status)
    assert named in err, err


def test_robustness_with_an_unusable_store_is_an_environment_failure(tiny_checkpoint, tmp_path):
    shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    err = _refused(ROBUSTNESS + ["--checkpoint", "ckpt", "--out", "out"], tmp_path, "nosuchscheme://x", 1)
    assert "MLFLOW_TRACKING_URI" in err, err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refused(argv: list[str], cwd: Path, store: str, status: int) -> str:
    """Run the command line in `cwd`; assert it exits `status` with no traceback and leaves `cwd` as it was.
    Returns its stderr."""
    before = sorted(cwd.rglob("*"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": store, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == status, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert sorted(cwd.rglob("*")) == before, "left behind: " + str(set(cwd.rglob("*")) - set(before))
    return done.stderr
