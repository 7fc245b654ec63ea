"""The search's state files (search/journal.py) written atomically and read as journals: a run registry cut
mid-write is recovered as far as it is whole (or refused with a message naming it), a spool whose last record is
torn delivers every whole record, now and on every later flush. Real torn files, cut at every length."""
import errno
import json
import os
from types import SimpleNamespace

import pytest

from search.journal import CorruptStateError, RunRegistry, Spool, salvage_object

SETTINGS = {"space": "lja", "epochs": 3, "num_samples": 4, "dataset": "synthetic", "seed": 0}


def full_registry(path) -> RunRegistry:
    registry = RunRegistry(path)
    with registry.editing() as data:
        data["settings"] = dict(SETTINGS)
    with registry.editing() as data:
        data["parent"] = "parent-run"
    for i in range(3):
        with registry.editing() as data:
            data["trials"][f"t{i}"] = f"run-{i}"
            data["best"][f"t{i}"] = {"score": 0.1 * i, "epoch": i, "metrics": {"val/AP": 0.1 * i}}
    return registry


def test_registry_writes_settings_first_and_atomically(tmp_path, monkeypatch):
    registry = full_registry(tmp_path / "exp.mlflow_runs.json")
    assert list(json.loads(registry.path.read_text())) == ["settings", "parent", "trials", "best"]
    before = registry.path.read_text()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(OSError), registry.editing() as data:
        data["trials"]["t9"] = "run-9"
    monkeypatch.undo()
    assert registry.path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.mlflow_runs.json"], "a temporary file was left"


def test_torn_registry_at_every_length(tmp_path, capsys):
    """Cut at every byte: read() never raises JSONDecodeError. With the settings whole it recovers what is whole,
    warns naming the file and its .corrupt copy; without, it raises CorruptStateError saying so. Either way the
    registry is valid JSON afterwards and the torn original is kept."""
    text = full_registry(tmp_path / "whole.json").path.read_text()
    settings_end = text.index("},") + 1
    for cut in range(0, len(text) - 1, 3):
        path = tmp_path / f"cut{cut}" / "exp.mlflow_runs.json"
        path.parent.mkdir()
        path.write_text(text[:cut])
        registry = RunRegistry(path)
        if cut > settings_end:
            data = registry.read()
            assert data["settings"] == SETTINGS
            warning = capsys.readouterr().out
            assert str(path) in warning and "exp.mlflow_runs.json.corrupt" in warning and "recovered" in warning
            for trial, run in data["trials"].items():
                assert run == f"run-{trial[1:]}"
        else:
            with pytest.raises(CorruptStateError, match="settings are lost") as err:
                registry.read()
            assert str(path) in str(err.value) and "--resume" in str(err.value)
            assert registry.read()["settings"] == {}  # now the flags given with --resume take over
        assert (path.parent / "exp.mlflow_runs.json.corrupt").read_text() == text[:cut]
        json.loads(path.read_text())


def test_resume_reads_a_torn_registry(tmp_path, capsys):
    """The resume's first read (search/settings.py restore_settings) on a registry cut inside its `best` section."""
    from search.settings import RESUMED_SETTINGS, restore_settings

    text = full_registry(tmp_path / "whole.json").path.read_text()
    path = tmp_path / "exp.mlflow_runs.json"
    path.write_text(text[:text.rindex('"metrics"')])
    args = SimpleNamespace(**{key: None for key in RESUMED_SETTINGS})
    assert restore_settings(SimpleNamespace(registry=RunRegistry(path)), args)
    assert (args.space, args.epochs, args.num_samples) == ("lja", 3, 4)
    out = capsys.readouterr().out
    assert "parent" in out and "trials (3 entries)" in out and "best after its first" in out


@pytest.mark.parametrize("garbage", [b"", b"\x00" * 64, b"\xff\xfe random", b"[1, 2]", b'"a string"'])
def test_registry_that_is_no_json_object(tmp_path, garbage):
    path = tmp_path / "exp.mlflow_runs.json"
    path.write_bytes(garbage)
    with pytest.raises(CorruptStateError, match="exp.mlflow_runs.json"):
        RunRegistry(path).read()


def test_salvage_keeps_whole_entries_of_a_cut_section():
    found, lost = salvage_object('{"settings": {"a": 1}, "trials": {"t1": "r1", "t2": "r')
    assert found == {"settings": {"a": 1}, "trials": {"t1": "r1"}} and lost == ["trials after its first 1 entries"]


# --- the spool -----------------------------------------------------------------------------------------------------

def torn_spool(path, whole: int = 3) -> Spool:
    spool = Spool(path)
    for i in range(whole):
        spool.append({"op": "epoch", "trial_id": f"t{i}", "step": i})
    line = json.dumps({"op": "epoch", "trial_id": "torn", "step": 9})
    with path.open("a") as f:
        f.write(line[: len(line) // 2])  # the driver died in the middle of this append
    return spool


def test_torn_last_record_dropped_with_a_warning(tmp_path, capsys):
    spool = torn_spool(tmp_path / "exp.mlflow_spool.jsonl")
    assert [e["trial_id"] for e in spool.read()] == ["t0", "t1", "t2"]
    out = capsys.readouterr().out
    assert str(spool.path) in out and "dropped 1 torn record" in out and "line 4" in out
    assert (tmp_path / "exp.mlflow_spool.jsonl.corrupt").read_text().startswith('{"op": "epoch", "trial_')
    assert len(spool.read()) == 3 and capsys.readouterr().out == "", "warned once: the file was repaired"


def test_append_after_a_torn_record_starts_a_new_line(tmp_path):
    spool = torn_spool(tmp_path / "exp.mlflow_spool.jsonl", whole=1)
    spool.append({"op": "finish", "trial_id": "t0"})
    assert [e["op"] for e in spool.read()] == ["epoch", "finish"]


def test_flush_delivers_everything_after_a_torn_record(tmp_path):
    """MLflowTrialCallback.flush over a torn spool: the whole records arrive, the file empties, later records too."""
    from search.tracking import MLflowTrialCallback

    callback = MLflowTrialCallback.__new__(MLflowTrialCallback)
    callback.spool, callback._down_since, delivered = torn_spool(tmp_path / "exp.mlflow_spool.jsonl"), None, []
    callback._apply = delivered.append
    assert callback.flush()
    assert [e["trial_id"] for e in delivered] == ["t0", "t1", "t2"] and callback.spool.read() == []
    callback._submit({"op": "finish", "trial_id": "t0"})
    assert delivered[-1]["op"] == "finish" and callback.spool.read() == []
