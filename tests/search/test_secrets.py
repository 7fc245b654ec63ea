"""Credentials never leave the process environment (issue 15 item 7): the one masker, each place a store URI is
shown or stored, and one real --smoke search with a planted secret in --optuna-storage, whose every file is
grepped for it."""
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
    from search.tuner import RESUMED_SETTINGS, record_settings, resume_conflicts

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
def test_a_planted_secret_is_in_no_file_a_search_writes(tmp_path, dataset_cache):
    search = SearchCLI(tmp_path, dataset_cache)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}?password={PLANTED}"
    result = search.run("--space", "lja", "--smoke", "--num-samples", "2", "--epochs", "1", "--storage-path",
                        tmp_path / "ray", "--experiment", "secret", "--optuna-storage", storage, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "optuna.db").is_file() and (tmp_path / "mlflow.db").is_file()
    assert PLANTED not in result.stdout + result.stderr
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
