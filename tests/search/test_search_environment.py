"""search/run.py's pre-flight of the environment (issue 15 items 2, 3, 6): bad tracking URIs, storage paths and
sqlite stores, and bad --experiment names, each refused with exit 2 naming what is wrong, before anything is
written; each local search's Ray state API pointed at its own Ray."""
import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from search import local_ray
from search.stores import environment_problems, experiment_name_problem, tracking_uri_problem

ROOT = os.geteuid() == 0  # root writes through chmod: read-only cases use a file where a directory is expected


def run_search(work, *args, uri=None):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MLFLOW_TRACKING_URI": uri or f"sqlite:///{work / 'm.db'}"}
    return subprocess.run([sys.executable, str(REPO_ROOT / "search" / "run.py"), "--space", "lja", "--smoke",
                           "--storage-path", str(work / "ray"), *map(str, args)],
                          capture_output=True, text=True, cwd=work, env=env, timeout=300)


def written(work) -> set:
    return {p.relative_to(work) for p in work.rglob("*")}


@pytest.mark.parametrize("uri, says", [
    ("mlruns", "plain path"),
    ("ftp://host/mlruns", "unknown scheme 'ftp'"),
    ("sqlite://relative.db", "three slashes"),
])
def test_tracking_uris_mlflow_cannot_use_are_named(uri, says):
    assert says in tracking_uri_problem(uri)


def test_valid_tracking_uris_pass(tmp_path):
    for uri in (f"sqlite:///{tmp_path / 'new' / 'm.db'}", "http://127.0.0.1:5000", "databricks", tmp_path.as_uri()):
        assert tracking_uri_problem(uri) is None, uri


def test_a_database_whose_driver_is_missing_is_named_before_anything_is_written(tmp_path):
    """This environment has no PostgreSQL driver: a postgresql:// store (MLflow's or Optuna's) would fail deep inside
    SQLAlchemy after the search had created its experiment; the pre-flight names the driver instead."""
    pytest.importorskip("sqlalchemy")
    if importlib.util.find_spec("psycopg2") or importlib.util.find_spec("psycopg"):
        pytest.skip("a PostgreSQL driver is installed here")
    problem = tracking_uri_problem("postgresql+psycopg2://u:SECRET@127.0.0.1:1/db")
    assert problem and "psycopg2" in problem and "driver" in problem
    problems = environment_problems("http://127.0.0.1:5000", str(tmp_path / "ray"), "postgresql://u:SECRET@h/db")
    assert len(problems) == 1 and problems[0].startswith("--optuna-storage postgresql://u:***@h/db")
    assert "SECRET" not in problems[0] and not (tmp_path / "ray").exists()


def test_a_file_where_a_directory_is_expected_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    problems = environment_problems(f"sqlite:///{blocker / 'm.db'}", str(blocker / "ray"),
                                    f"sqlite:///{blocker / 'optuna.db'}")
    assert len(problems) == 3 and all(f"{blocker} is not a directory" in p for p in problems)
    assert problems[0].startswith("MLFLOW_TRACKING_URI=") and problems[1].startswith("--storage-path")


def test_a_directory_where_the_sqlite_file_is_expected_is_named(tmp_path):
    assert "is not a file" in tracking_uri_problem(f"sqlite:///{tmp_path}")


@pytest.mark.skipif(ROOT, reason="root writes read-only files and directories; the file-as-directory case covers it")
def test_read_only_store_and_storage_path_are_named(tmp_path):
    db, ro_dir = tmp_path / "m.db", tmp_path / "ro"
    db.write_bytes(b"")
    db.chmod(0o444)
    ro_dir.mkdir()
    ro_dir.chmod(0o555)
    try:
        assert "read-only" in tracking_uri_problem(f"sqlite:///{db}")
        assert "not writable" in environment_problems("http://h", str(ro_dir / "ray"), None)[0]
    finally:
        ro_dir.chmod(0o755)


def test_a_full_disk_is_named(tmp_path, monkeypatch):
    import shutil

    from search import stores

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1024, 1024))
    assert "MiB free" in stores.writable_dir_problem(tmp_path)


def test_search_refuses_a_bad_environment_before_writing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    before = written(tmp_path)
    result = run_search(tmp_path, "--experiment", "env", uri=f"sqlite:///{blocker / 'm.db'}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{blocker} is not a directory" in result.stderr and "Traceback" not in result.stderr
    result = run_search(tmp_path, "--experiment", "env", uri="mlruns")
    assert result.returncode == 2 and "plain path" in result.stderr and "Traceback" not in result.stderr
    assert written(tmp_path) == before


@pytest.mark.parametrize("name", ["a/b", "..", "../up", "a..b", ".hidden", "-x", "sp ace", "x" * 201])
def test_experiment_names_that_are_not_one_directory_are_refused(name):
    assert "letters, digits" in experiment_name_problem(name)


@pytest.mark.parametrize("name", ["e2e-smoke", "lja-20240101-120000", "run_1.v2"])
def test_ordinary_experiment_names_pass(name):
    assert experiment_name_problem(name) is None


def test_search_refuses_a_slash_or_dotdot_in_experiment_before_writing(tmp_path):
    before = written(tmp_path)
    for args in (("--experiment", "a/b"), ("--experiment", "../x", "--resume")):
        result = run_search(tmp_path, *args)
        assert result.returncode == 2 and "--experiment" in result.stderr and "letters, digits" in result.stderr
    assert written(tmp_path) == before


def test_each_local_search_points_rays_state_api_at_its_own_dashboard(monkeypatch):
    from ray.dashboard.utils import get_address_for_submission_client

    monkeypatch.delenv(local_ray.API_SERVER_ENV, raising=False)
    monkeypatch.setattr(local_ray, "loopback_only", lambda: None)
    monkeypatch.setattr(local_ray, "private_token", lambda: None)
    first = local_ray.init_kwargs()
    address = os.environ[local_ray.API_SERVER_ENV]
    assert address == f"http://127.0.0.1:{first['dashboard_port']}"
    # What Ray Train's placement-group cleaner asks (get_actor(address=None)): this search's dashboard, without
    # looking for "the" local Ray (which fails with two on the machine).
    assert get_address_for_submission_client(None) == address
    assert local_ray.init_kwargs()["dashboard_port"] != 0
