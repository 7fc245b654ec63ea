"""datasets/atomic.py and the local trial's checkpoint (trainables/runtime.py LocalReporter): a write or a move
interrupted at any point leaves the old file or the new one, never a 0-byte or half-written one; moves across file
systems (EXDEV) work, simulated and, where /dev/shm is a tmpfs, for real."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from datasets import atomic
from trainables.checkpoint import MODEL_FILE, STATE_FILE, has_state
from trainables.runtime import LocalReporter


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "state.json"
    atomic.write_json(target, {"a": 1})
    atomic.write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2} and leftovers(tmp_path) == []
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask, "a plain open()'s mode, not mkstemp's 0600"


@pytest.mark.parametrize("fail", ["replace", "fsync", "write"])
def test_interrupted_write_keeps_the_old_content(tmp_path, monkeypatch, fail):
    target = tmp_path / "registry.json"
    atomic.write_text(target, "old")

    def boom(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if fail == "write":
        with pytest.raises(OSError), atomic.atomic_writer(target) as f:
            f.write("half of the new")
            boom()
    else:
        monkeypatch.setattr(os, fail, boom)
        with pytest.raises(OSError):
            atomic.write_text(target, "new content")
        monkeypatch.undo()
    assert target.read_text() == "old" and leftovers(tmp_path) == []


def test_killed_writer_never_leaves_a_torn_file(tmp_path):
    """A process SIGKILLed while it rewrites a file in a loop: whatever moment it died at, the file parses."""
    target = tmp_path / "registry.json"
    script = ("import sys; from datasets.atomic import write_json\n"
              "i = 0\nwhile True:\n    write_json(sys.argv[1], {'n': i, 'pad': 'x' * 200000}); i += 1\n")
    for delay in (0.3, 0.45, 0.6):
        proc = subprocess.Popen([sys.executable, "-c", script, str(target)], cwd=REPO_ROOT,
                                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        deadline = time.monotonic() + 30
        while not target.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert len(json.loads(target.read_text())["pad"]) == 200000


def cross_device_rename(monkeypatch, foreign: Path, real_replace=os.replace):
    """os.replace/os.rename raise EXDEV between `foreign` and the rest, as between two file systems."""
    def replace(src, dst, *args, **kwargs):
        if Path(src).resolve().is_relative_to(foreign) != Path(dst).resolve().is_relative_to(foreign):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", replace)


def test_move_across_file_systems_simulated(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    source, destination = tmp_path / "a" / "model.pt", tmp_path / "b" / "model.pt"
    source.write_bytes(b"weights" * 1000)
    cross_device_rename(monkeypatch, tmp_path / "a")
    atomic.move_file(source, destination)
    assert destination.read_bytes() == b"weights" * 1000 and not source.exists()
    assert leftovers(destination.parent) == []


def tmpfs() -> Path:
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)) or shm.stat().st_dev == Path(REPO_ROOT).stat().st_dev:
        pytest.skip("no writable tmpfs on another file system than the checkout")
    return shm


def test_move_across_file_systems_for_real(tmp_path):
    source = tmpfs() / f"occpose-atomic-{os.getpid()}"
    try:
        source.write_bytes(b"state")
        if source.stat().st_dev == tmp_path.stat().st_dev:
            pytest.skip("tmp_path is on the tmpfs too")
        atomic.move_file(source, tmp_path / "state.pt")
        assert (tmp_path / "state.pt").read_bytes() == b"state" and not source.exists()
    finally:
        source.unlink(missing_ok=True)


# --- the local trial's checkpoint ----------------------------------------------------------------------------------

def epoch_checkpoint(directory: Path, epoch: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in (MODEL_FILE, STATE_FILE, "trial_config.json", "metrics.json"):
        (directory / name).write_text(f"{name} of epoch {epoch}")
    return directory


def contents(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in directory.iterdir() if p.is_file()}


def test_local_checkpoint_on_another_file_system_simulated(tmp_path, monkeypatch):
    """The worker's default --out (.cache/local-trial) while $TMPDIR is a tmpfs: each epoch's files arrive."""
    cross_device_rename(monkeypatch, tmp_path / "tmp")
    reporter = LocalReporter(tmp_path / "out")
    for epoch in (1, 2):
        reporter.report({"epoch": epoch}, epoch_checkpoint(tmp_path / "tmp" / str(epoch), epoch))
        assert set(contents(tmp_path / "out").values()) == {f"{n} of epoch {epoch}" for n in contents(
            tmp_path / "out")}
    assert reporter.restore() == tmp_path / "out" and not (tmp_path / "out" / LocalReporter.STAGING).exists()


def test_local_checkpoint_on_another_file_system_for_real(tmp_path):
    source = tmpfs() / f"occpose-checkpoint-{os.getpid()}"
    try:
        LocalReporter(tmp_path / "out").report({"epoch": 1}, epoch_checkpoint(source, 1))
        assert contents(tmp_path / "out")[STATE_FILE] == f"{STATE_FILE} of epoch 1"
    finally:
        for item in source.glob("*"):
            item.unlink()
        source.rmdir()


@pytest.mark.parametrize("fail_at", range(1, 7))
def test_checkpoint_interrupted_at_any_rename_keeps_a_whole_epoch(tmp_path, monkeypatch, fail_at):
    """The n-th rename of an epoch's install fails (a kill at that moment): the directory holds epoch 1 whole, or
    epoch 2 after `restore` rolls the staged set forward; no file is empty or mixed."""
    out = tmp_path / "out"
    reporter = LocalReporter(out)
    reporter.report({"epoch": 1}, epoch_checkpoint(tmp_path / "e1", 1))
    real_replace, calls = os.replace, []

    def replace(src, dst, *args, **kwargs):
        calls.append(dst)
        if len(calls) == fail_at:
            raise OSError(errno.EIO, "killed here")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        reporter.report({"epoch": 2}, epoch_checkpoint(tmp_path / "e2", 2))
    monkeypatch.undo()
    assert all(text for text in contents(out).values()), "an empty file"
    fresh = LocalReporter(out)  # the next run of the worker
    assert fresh.restore() == out and has_state(out)
    epochs = {text.rsplit(" ", 1)[1] for text in contents(out).values()}
    assert len(epochs) == 1, f"files of different epochs: {contents(out)}"
    fresh.report({"epoch": 2}, epoch_checkpoint(tmp_path / "e2b", 2))
    assert {text.rsplit(" ", 1)[1] for text in contents(out).values()} == {"2"}
    assert not (out / LocalReporter.STAGING).exists()
