"""search/stores.py: where each store of a search lies, the rules search/ and dashboards/ share."""
from pathlib import Path

import pytest

from search import stores


def test_optuna_storage_beside_a_sqlite_store_else_in_the_storage_path(tmp_path):
    beside = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert stores.default_optuna_storage("/elsewhere", f"sqlite:///{tmp_path / 'mlflow.db'}") == beside
    assert stores.default_optuna_storage(str(tmp_path / "ray"), "http://127.0.0.1:5000") == \
        f"sqlite:///{tmp_path / 'ray' / 'optuna.db'}"
    with pytest.raises(SystemExit, match="--optuna-storage"):
        stores.default_optuna_storage("s3://bucket/ray", "http://127.0.0.1:5000")
    # The UI offers the study only once a search has written it.
    assert stores.existing_optuna_storage(f"sqlite:///{tmp_path / 'mlflow.db'}") is None
    (tmp_path / "optuna.db").touch()
    assert stores.existing_optuna_storage(f"sqlite:///{tmp_path / 'mlflow.db'}") == beside


def test_artifacts_registry_and_ui_command(tmp_path, monkeypatch):
    assert stores.artifact_location(f"sqlite:///{tmp_path / 'mlflow.db'}") == (tmp_path / "mlartifacts").as_uri()
    assert stores.artifact_location("http://127.0.0.1:5000") is None
    assert stores.run_registry_path(str(tmp_path), "exp") == tmp_path / "exp.mlflow_runs.json"
    assert stores.run_registry_path("s3://bucket/ray", "exp").parent == stores.REMOTE_REGISTRY_DIR
    assert stores.train_storage(stores.experiment_dir("/ray", "exp")) == "/ray/exp.train"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert stores.tracking_uri() == stores.DEFAULT_TRACKING_URI == "sqlite:///mlflow.db"
    assert stores.mlflow_ui_command() == "mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000"
    assert Path(stores.DEFAULT_STORAGE_PATH).name == "ray_results"
