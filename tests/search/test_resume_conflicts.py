"""`--resume` with flags other than the search was started with is refused, naming each; `--check` of an unknown
experiment exits 2."""
import json

import pytest

import search.run as run

STARTED_WITH = {"space": "occluders", "num_samples": 2, "time_budget_min": 0.0, "epochs": 1, "grace_period": 1,
                "smoke": True, "seed": 0, "metric": "val_occ/AP", "workers_per_trial": 1, "cpus_per_worker": 1,
                "gpus_per_worker": 0.0, "gpu_augment": "off", "max_concurrent": None, "dataset": "synthetic",
                "data_root": None, "train_root": None, "det_file": None, "model": None, "searcher": "tpe",
                "scheduler": "asha", "multi_objective": False, "optuna_storage": "sqlite:///optuna.db",
                "clean_metric": "val/AP"}


@pytest.fixture
def interrupted(tmp_path, monkeypatch):
    """An interrupted experiment's state: its directory and its run registry holding the settings it started with;
    the search itself is replaced, so a resume that got that far returns 99."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    storage = tmp_path / "ray"
    (storage / "exp").mkdir(parents=True)
    (storage / "exp.mlflow_runs.json").write_text(json.dumps({"settings": STARTED_WITH}))
    monkeypatch.setattr(run, "data_settings", lambda args: {})
    monkeypatch.setattr(run, "base_trial_config", lambda args, data: None)
    monkeypatch.setattr(run, "run_search", lambda args, *rest: 99)
    return ["--experiment", "exp", "--storage-path", str(storage), "--resume"]


def test_resume_with_other_flags_is_refused_naming_each_and_its_stored_value(interrupted, capsys):
    assert run.main(["--space", "lja", *interrupted, "--num-samples", "5", "--seed", "0"]) == 2
    err = capsys.readouterr().err
    assert "--space lja conflicts with the value experiment 'exp' was started with: occluders" in err
    assert "--num-samples 5 conflicts with the value experiment 'exp' was started with: 2" in err
    assert "--seed" not in err  # the same value as stored


def test_resume_with_the_stored_values_or_defaults_continues_as_started(interrupted, capsys):
    """argparse's defaults (--seed 0, --searcher tpe, ...) are not flags given; an old space name is its new one."""
    assert run.main(["--space", "pocc", *interrupted, "--smoke", "--scheduler", "asha"]) == 99
    assert "conflicts" not in capsys.readouterr().err


def test_check_of_an_unknown_experiment_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert run.main(["--experiment", "nope", "--storage-path", str(tmp_path), "--check"]) == 2
    assert "no experiment 'nope'" in capsys.readouterr().err
