"""The bad-input corpus of the trainer, robustness, preview, report and UI command lines (issue 15): small hostile
inputs generated at test time, each run through the real command line as a subprocess, each asserting its class.

A case is refused when it exits 2 (bad input) or 1 (an environment failure), prints no traceback, names the flag,
file, field or run at fault, and leaves nothing behind in its directory that was not there before (it runs with
that directory as its working directory). tests/README.md lists every case, these and those covered elsewhere.

Most cases start Python with torch, so the commands run side by side (one per core, at most 8), once per session;
each case is then its own test.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, NamedTuple

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


class Case(NamedTuple):
    argv: list[str]  # "{held}" is a port another server holds, "{free}" a free one
    status: int  # 2 bad input, 1 an environment failure
    named: str  # what the message must name
    setup: Callable[[Path], None] | None = None  # prepares the case's directory
    store: str | None = None  # MLFLOW_TRACKING_URI other than the session's empty store


def _spoiled(spoil):
    def setup(directory: Path):
        shutil.copytree(directory.parent / "checkpoint", directory / "ckpt")
        if spoil:
            spoil(directory / "ckpt")
    return setup


def _unreadable_images(directory: Path):
    """A valid COCO annotation file whose images are nowhere under --data-root."""
    keypoints = [10, 10, 2] * 17
    (directory / "ann.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "missing.jpg", "width": 64, "height": 96}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "keypoints": keypoints, "num_keypoints": 17,
                         "iscrowd": 0, "area": 800.0, "bbox": [2, 2, 30, 60]}],
        "categories": [{"id": 1, "name": "person"}]}))
    (directory / "images").mkdir()


COCO_PREVIEW = [str(ROOT / "datasets" / "preview.py"), "--dataset", "coco", "--aug", "lja"]
CHECKPOINT = ROBUSTNESS + ["--checkpoint", "ckpt", "--out", "out"]
CASES = {
    **{f"robustness: {name}": Case(CHECKPOINT, 2, named, _spoiled(spoil)) for name, (spoil, named) in SPOILED.items()},
    "robustness: unusable MLFLOW_TRACKING_URI": Case(CHECKPOINT, 1, "MLFLOW_TRACKING_URI", _spoiled(None),
                                                     store="nosuchscheme://x"),
    "worker: unknown --set key": Case(WORKER + ["--set", "optim.foo=1"], 2, "optim.foo"),
    "worker: unknown --set section": Case(WORKER + ["--set", "nothing.x=1"], 2, "nothing.x"),
    "worker: --set int not a number": Case(WORKER + ["--set", "optim.epochs=abc"], 2, "optim.epochs"),
    "worker: --set int given 1.5": Case(WORKER + ["--set", "optim.epochs=1.5"], 2, "optim.epochs"),
    "worker: --set bool given maybe": Case(WORKER + ["--set", "data.flip_test=maybe"], 2, "data.flip_test"),
    "worker: --set negative epochs": Case(WORKER + ["--set", "optim.epochs=-1"], 2, "optim.epochs"),
    "worker: --set without =": Case(WORKER + ["--set", "optim.epochs"], 2, "KEY=VALUE"),
    "worker: unknown model name": Case(WORKER + ["--set", "model.name=foo"], 2, "simplebaseline_r18"),
    "worker: --out an existing file": Case(WORKER + ["--out", "file"], 2, "--out"),
    "worker: --out below a file": Case(WORKER + ["--out", "file/sub"], 2, "not a directory"),
    "robustness: --max-samples -1": Case(ROBUSTNESS + ["--checkpoint", "x", "--max-samples", "-1"], 2,
                                         "--max-samples"),
    "robustness: --out an existing file": Case(ROBUSTNESS + ["--checkpoint", "x", "--out", "file"], 2, "--out"),
    "robustness: negative --radii": Case(ROBUSTNESS + ["--checkpoint", "x", "--radii", "0,-6"], 2, "--radii"),
    "robustness: unknown attack": Case(ROBUSTNESS + ["--checkpoint", "x", "--attacks", "nope"], 2, "--attacks"),
    "robustness: --run-id of no run": Case(ROBUSTNESS + ["--run-id", "0123456789abcdef", "--out", "out"], 2,
                                           "0123456789abcdef"),
    "preview: --n -1": Case(PREVIEW + ["--data-root", ".", "--out", "out", "--n", "-1"], 2, "--n"),
    "preview: --n 0": Case(PREVIEW + ["--data-root", ".", "--out", "out", "--n", "0"], 2, "--n"),
    "preview: --seed -1": Case(PREVIEW + ["--data-root", ".", "--out", "out", "--seed", "-1"], 2, "--seed"),
    "preview: --out an existing file": Case(PREVIEW + ["--data-root", ".", "--out", "file"], 2, "--out"),
    "preview: --data-root that does not exist": Case(COCO_PREVIEW + ["--data-root", "nope", "--out", "out"], 2,
                                                     "--data-root"),
    "preview: no readable image under --data-root": Case(COCO_PREVIEW + ["--data-root", "images", "--ann", "ann.json",
                                                                         "--out", "out"], 2, "--data-root",
                                                         _unreadable_images),
    "preview: synthetic with a --data-root": Case(PREVIEW + ["--data-root", ".", "--out", "out"], 2, "--data-root"),
    "report: --out an existing file": Case(REPORT + ["--out", "file"], 2, "--out"),
    "report: a store that does not exist": Case(REPORT + ["--out", "out"], 1, "no MLflow store",
                                                store="sqlite:///nothing-here.db"),
    "robustness: --run-id in a store that does not exist": Case(ROBUSTNESS + ["--run-id", "0123", "--out", "out"], 1,
                                                                "no MLflow store", store="sqlite:///nothing-here.db"),
    "ui: a plain path as --tracking-uri": Case(UI + ["--tracking-uri", "relative/x", "--logs", "logs"], 2,
                                               "plain path"),
    "report: --robustness-max-samples -1": Case(REPORT + ["--robustness-max-samples", "-1"], 2,
                                                "--robustness-max-samples"),
    "report: unknown attack": Case(REPORT + ["--attacks", "nope"], 2, "--attacks"),
    "report: --baseline-run of no run": Case(REPORT + ["--baseline-run", "0123456789abcdef", "--out", "out"], 2,
                                             "--baseline-run"),
    "report: unusable --tracking-uri": Case(REPORT + ["--tracking-uri", "nosuchscheme://x", "--out", "out"], 1,
                                            "--tracking-uri"),
    "ui: --port 0": Case(UI + ["--port", "0", "--logs", "logs"], 2, "--port"),
    "ui: --port held by another server": Case(UI + ["--port", "{held}", "--no-optuna", "--logs", "logs"], 2,
                                              "already in use"),
    "ui: --optuna-port held": Case(UI + ["--port", "{free}", "--optuna-port", "{held}", "--optuna-storage",
                                         "sqlite:///optuna.db", "--logs", "logs"], 2, "--optuna-port"),
}


@pytest.fixture(scope="session")
def outcomes(tiny_checkpoint, store, tmp_path_factory) -> dict[str, tuple[int, str, set]]:
    """{case: (exit status, stderr, what it left behind in its directory)}, every case run once, side by side."""
    base = tmp_path_factory.mktemp("cases")
    shutil.copytree(tiny_checkpoint, base / "checkpoint")
    held = socket.socket()  # a server of someone else's, for the ui cases
    held.bind(("127.0.0.1", 0))
    held.listen()
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        ports = {"{held}": str(held.getsockname()[1]), "{free}": str(spare.getsockname()[1])}

    def run(name: str):
        case = CASES[name]
        directory = base / re.sub(r"[^A-Za-z0-9]+", "-", name)
        directory.mkdir()
        (directory / "file").write_text("a file where a directory is expected\n")
        if case.setup:
            case.setup(directory)
        before = set(directory.rglob("*"))
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": case.store or store,
               "PYTHONWARNINGS": "ignore"}
        argv = [ports.get(arg, arg) for arg in case.argv]
        done = subprocess.run([sys.executable, *argv], cwd=directory, env=env, capture_output=True, text=True,
                              timeout=300)
        return done.returncode, done.stderr, set(directory.rglob("*")) - before

    try:
        with ThreadPoolExecutor(min(8, os.cpu_count() or 2)) as pool:
            return dict(zip(CASES, pool.map(run, CASES)))
    finally:
        held.close()


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused(case, outcomes):
    """Exit 2 (or 1 for the environment), no traceback, the culprit named, nothing left behind."""
    status, stderr, left = outcomes[case]
    expected = CASES[case]
    assert status == expected.status, (status, stderr[-3000:])
    assert "Traceback" not in stderr, stderr[-3000:]
    assert expected.named in stderr, stderr[-3000:]
    if expected.setup and "ckpt" in expected.argv:  # a spoiled checkpoint is named by its directory too
        assert "ckpt" in stderr or expected.store, stderr[-3000:]
    assert not left, f"left behind: {sorted(map(str, left))}"
