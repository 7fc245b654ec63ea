"""Credentials never leave the process environment (issue 15 item 7): the one masker, each place a store URI is
shown or stored, and one real --smoke search with a planted secret in --optuna-storage, whose every file is
grepped for it; a second search started beside it at the same moment makes it the two-searches-at-once test too."""
import pickle
from pathlib import Path

import pytest

from conftest import SearchCLI
from search.masking import OPTUNA_STORAGE_ENV, MaskedSecret, mask_uri, reveal

PLANTED = "PLANTEDsecret42"


@pytest.mark.parametrize("uri, masked", [
    ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
    ("postgresql+psycopg2://:p%40ss@h:5432/db?sslmode=require", "postgresql+psycopg2://:***@h:5432/db?sslmode=require"),
    ("sqlite:////x/optuna.db?password=s3", "sqlite:////x/optuna.db?password=***"),
    ("mysql://u:pw@h/db?charset=utf8&Token=t", "mysql://u:***@h/db?charset=utf8&Token=***"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("mysql://u@h/db", "mysql://u@h/db"),
    ("error at https://a:b@c/d: refused", "error at https://a:***@c/d: refused"),
])
def test_mask_uri(uri, masked):
    assert mask_uri(uri) == masked
    assert mask_uri(masked) == masked


def test_reveal_takes_the_supplied_url_that_masks_to_the_stored_one(monkeypatch):
    monkeypatch.delenv(OPTUNA_STORAGE_ENV, raising=False)
    real = f"postgresql://u:{PLANTED}@h/db"
    assert reveal("sqlite:////x.db", None) == "sqlite:////x.db"
    assert reveal(mask_uri(real), "postgresql://u:other@elsewhere/db", real) == real
    with pytest.raises(MaskedSecret, match="--optuna-storage"):
        reveal(mask_uri(real), None)
    monkeypatch.setenv(OPTUNA_STORAGE_ENV, real)
    assert reveal(mask_uri(real)) == real


def test_the_study_storage_pickles_masked_and_reopens_from_the_environment(tmp_path, monkeypatch):
    from search.study import study_storage

    url = f"sqlite:///{tmp_path / 'optuna.db'}?password={PLANTED}"
    monkeypatch.setenv(OPTUNA_STORAGE_ENV, url)
    storage = study_storage(url)
    blob = pickle.dumps(storage)
    assert PLANTED.encode() not in blob
    restored = pickle.loads(blob)
    assert restored.url == url and restored.get_all_studies() == []
    monkeypatch.delenv(OPTUNA_STORAGE_ENV)
    with pytest.raises(MaskedSecret):
        pickle.loads(blob)


def test_the_trial_callback_pickles_the_tracking_uri_masked(tmp_path, monkeypatch):
    from search.tracking import MLflowTrialCallback, SearchTracker

    uri = f"https://u:{PLANTED}@127.0.0.1:9"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracker = SearchTracker("exp", tmp_path / "exp.mlflow_runs.json", uri, connect=False)
    blob = pickle.dumps(MLflowTrialCallback(tracker, {}, "val/AP"))
    assert PLANTED.encode() not in blob
    assert pickle.loads(blob).tracker.uri == uri  # the real one, from MLFLOW_TRACKING_URI


def test_settings_and_printed_commands_are_masked(tmp_path):
    from types import SimpleNamespace

    from search.stores import environment_problems, mlflow_ui_command
    from search.settings import RESUMED_SETTINGS, record_settings, resume_conflicts

    real = f"postgresql://u:{PLANTED}@h/db"
    assert PLANTED not in mlflow_ui_command(real)
    assert PLANTED not in "".join(environment_problems(f"ftp://u:{PLANTED}@h", str(tmp_path), None))
    registry = SimpleNamespace(path=tmp_path / "r.json")
    from search.journal import RunRegistry

    tracker = SimpleNamespace(registry=RunRegistry(tmp_path / "r.json"))
    args = SimpleNamespace(**{key: None for key in RESUMED_SETTINGS} | {"optuna_storage": real})
    record_settings(tracker, args)
    assert PLANTED not in Path(registry.path).read_text()
    assert resume_conflicts(tracker, {"optuna_storage": real}) == []
    assert resume_conflicts(tracker, {"optuna_storage": "postgresql://u:x@other/db"})


@pytest.mark.e2e
def test_a_planted_secret_is_in_no_file_two_simultaneous_searches_write(tmp_path, dataset_cache):
    """Two searches started at the same moment on one machine, on one fresh sqlite MLflow store (issue 15 item 6):
    the store is created once, each search runs its own local Ray, both end with their books agreeing (a search
    whose books disagree exits 1). One of them holds a planted password in --optuna-storage: no file either writes
    holds it (item 7)."""
    search = SearchCLI(tmp_path, dataset_cache)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}?password={PLANTED}"
    common = ("--space", "lja", "--smoke", "--num-samples", "1", "--storage-path", tmp_path / "ray")
    secret = search.start(*common, "--experiment", "secret", "--optuna-storage", storage)
    beside = search.start(*common, "--experiment", "beside")
    outputs = {}
    for name, proc in (("secret", secret), ("beside", beside)):
        outputs[name] = proc.communicate(timeout=900)[0]
        assert proc.returncode == 0, f"{name}:\n{outputs[name][-4000:]}"
    assert "Found multiple active Ray instances" not in "".join(outputs.values())
    assert (tmp_path / "optuna.db").is_file() and (tmp_path / "mlflow.db").is_file()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(search.tracking_uri)
    for name in outputs:
        runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
        assert len(runs) == 2 and sum(r.data.tags.get("mlflow.parentRunId") is None for r in runs) == 1, name
    assert PLANTED not in "".join(outputs.values())
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 10
    leaks = [p for p in files if PLANTED.encode() in p.read_bytes()]
    assert leaks == []
    # The registry keeps the storage masked: a resume is given the real URL again, or says how.
    again = search.run("--space", "lja", "--experiment", "secret", "--storage-path", tmp_path / "ray", "--resume")
    assert again.returncode == 2 and "--optuna-storage" in again.stderr and PLANTED not in again.stderr
    again = search.run("--space", "lja", "--experiment", "secret", "--storage-path", tmp_path / "ray", "--resume",
                       "--optuna-storage", storage)
    assert again.returncode == 0 and "already finished" in again.stdout, again.stderr[-2000:]
