"""Issue 15: a disk that fills under `--out` in the middle of a run. On a real small file system (a tmpfs mounted for
the test; another file system than the trainer's temporary directory, so every checkpoint is copied) that holds one
epoch's checkpoint but not a second beside it: the worker ends with a sentence naming --out, the epoch and what was
kept (exit 1, no traceback), the first epoch's checkpoint is whole and nothing half-written is left."""
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch

from trainables import checkpoint

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ["optim.epochs=2", "data.max_train_samples=16", "data.max_val_samples=8", "model.deconv_channels=32"]


@pytest.fixture
def small_disk(tmp_path):
    """A 200 MiB tmpfs: one checkpoint of SETTINGS (132 MB: ResNet-18 SimpleBaseline with Adam's state) fits, a
    second one staged beside it does not."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m", f"occpose-{uuid.uuid4().hex[:8]}", str(where)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_full_disk_mid_run_keeps_the_last_whole_checkpoint_and_says_so(small_disk, dataset_cache):
    out = small_disk / "trial"
    done = subprocess.run([sys.executable, "-m", "trainables.worker", "--out", str(out), "--set", *SETTINGS],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "OCCPOSE_CACHE": str(dataset_cache), "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert f"--out {out}" in done.stderr and "epoch 2" in done.stderr and "No space left" in done.stderr
    assert "kept: the checkpoint of epoch 1" in done.stderr, done.stderr[-2000:]
    # Epoch 1's checkpoint is whole and loads; no staging directory or temporary file is left.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [checkpoint.MODEL_FILE, checkpoint.STATE_FILE, checkpoint.CONFIG_FILE, checkpoint.METRICS_FILE])
    assert checkpoint.saved_epochs(out) == 1
    torch.load(out / checkpoint.MODEL_FILE, weights_only=True)
    torch.load(out / checkpoint.STATE_FILE, weights_only=False)
