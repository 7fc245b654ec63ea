"""Where a search keeps things: the one list of store locations, read by search/ and dashboards/ alike.

- MLflow tracking store: MLFLOW_TRACKING_URI, default `sqlite:///mlflow.db` (relative to the working directory).
- A fresh sqlite store's schema is created once: `open_tracking_store` holds `<db>.lock` (fcntl) around our
  first open of it and retries while another process (`mlflow ui`, a script) is creating it.
- MLflow artifacts: `mlartifacts/` beside a sqlite store (MLflow's own default for a sqlite store would be
  `./mlruns`, relative to whichever directory a process runs in); the server's default otherwise.
- Tune and Ray Train state: `--storage-path` (default `ray_results/` in the checkout), the experiment in
  `<storage>/<experiment>`, each trial's Ray Train run and checkpoints in `<storage>/<experiment>.train`.
- The run registry (trial -> MLflow run) and the tracking spool: beside the experiment in a local
  `--storage-path`, under `.cache/experiments/` for a remote one.
- Optuna study: `optuna.db` beside a sqlite MLflow store, else in a local `--storage-path`; a remote storage
  with a non-sqlite MLflow store needs `--optuna-storage`.
- A trial's best checkpoint in MLflow: the `best_checkpoint/` artifacts of its run (model.pt, trial_config.json).
- Reports: `reports/<experiment>/`. UIs: MLflow on 127.0.0.1:5000, optuna-dashboard on 127.0.0.1:8080.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import sqlite3
import time
from pathlib import Path

from datasets.cli import directory_problem, nearest_existing
from search.masking import mask_uri

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_STORAGE_PATH = REPO_ROOT / "ray_results"
REMOTE_REGISTRY_DIR = REPO_ROOT / ".cache" / "experiments"
REPORTS_DIR = REPO_ROOT / "reports"
BEST_CHECKPOINT = "best_checkpoint"  # the artifact path of a trial run's best checkpoint
CHECKPOINT_FILES = ("model.pt", "trial_config.json")  # what a checkpoint directory holds and MLflow keeps
UI_HOST = "127.0.0.1"  # loopback only: on a cluster the ports are forwarded (README "Cluster")
MLFLOW_UI_PORT = 5000
OPTUNA_UI_PORT = 8080


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def open_tracking_store(uri: str | None = None, wait_s: float = 120.0, create: bool = True) -> str:
    """Open the MLflow store `uri` once, creating or upgrading its schema, and return `uri`. For a sqlite store
    our processes take turns on a lock file beside it (`<db>.lock`), and a schema another process is creating at
    the same moment (its alembic migration, e.g. `mlflow ui`) is waited for and retried; the error is raised after
    `wait_s`. With create=False a missing sqlite file raises FileNotFoundError instead. A committed leftover of a migration that died half-way (`_alembic_tmp_*`) is removed before a retry
    and after a successful open."""
    from mlflow.tracking import MlflowClient

    uri = uri or tracking_uri()
    db = Path(uri.removeprefix("sqlite:///").split("?", 1)[0]).resolve() if uri.startswith("sqlite:///") else None
    if db is None:
        return uri
    if not create and not db.is_file():  # a lookup (report, robustness) must not leave an empty store behind
        raise FileNotFoundError(f"no MLflow store at {db} (point the tracking URI at the search's store)")
    db.parent.mkdir(parents=True, exist_ok=True)
    deadline, delay = time.monotonic() + wait_s, 0.2
    with _locked(db.with_name(db.name + ".lock")):
        while True:
            try:
                MlflowClient(uri).search_experiments(max_results=1)
                _drop_leftover_migration_tables(db)  # debris of another client's migration that died
                return uri
            except Exception as err:  # noqa: BLE001 - alembic, sqlalchemy and MLflow errors alike
                if time.monotonic() + delay > deadline:
                    raise
                if "_alembic_tmp_" in str(err):
                    _drop_leftover_migration_tables(db)
                time.sleep(delay)
                delay = min(5.0, delay * 2)


@contextlib.contextmanager
def _locked(path: Path):
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _drop_leftover_migration_tables(db: Path) -> None:
    """Alembic's batch-migration copies left committed by a process that died: another connection's migration in
    progress is invisible here (sqlite DDL is transactional), so what is seen is a leftover."""
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as connection:
        names = [row[0] for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE '\\_alembic\\_tmp\\_%' ESCAPE '\\'")]
        for name in names:
            connection.execute(f'DROP TABLE IF EXISTS "{name}"')
        connection.commit()


def sqlite_dir(uri: str) -> Path | None:
    """The directory holding a `sqlite:///PATH` store's file (resolved); None for any other store."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).resolve().parent
    return None


def artifact_location(uri: str) -> str | None:
    """Where a new experiment of the store `uri` keeps its artifacts: `mlartifacts/` beside a sqlite store (as
    a file URI); None lets the server choose."""
    directory = sqlite_dir(uri)
    return (directory / "mlartifacts").as_uri() if directory is not None else None


def optuna_beside(uri: str) -> str | None:
    """`sqlite:///DIR/optuna.db` for a sqlite MLflow store in DIR, whether or not the file exists yet."""
    directory = sqlite_dir(uri)
    return f"sqlite:///{directory / 'optuna.db'}" if directory is not None else None


def default_optuna_storage(storage_path: str, uri: str | None = None) -> str:
    """Where a new search keeps its Optuna study: optuna.db beside a sqlite MLflow store, else inside a local
    --storage-path. SystemExit for a remote --storage-path with a non-sqlite store (no local place to choose)."""
    beside = optuna_beside(uri or tracking_uri())
    if beside is not None:
        return beside
    if "://" in storage_path:
        raise SystemExit("error: with a remote --storage-path and a non-sqlite MLflow store, pass --optuna-storage "
                         "URL (e.g. the PostgreSQL server MLflow uses)")
    return f"sqlite:///{Path(storage_path) / 'optuna.db'}"


def existing_optuna_storage(uri: str) -> str | None:
    """The Optuna storage a search put beside the sqlite MLflow store `uri`, if that file is there (for the UI)."""
    beside = optuna_beside(uri)
    return beside if beside is not None and Path(beside.removeprefix("sqlite:///")).exists() else None


EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def experiment_name_problem(name: str) -> str | None:
    """Why `name` cannot name an experiment (one directory in --storage-path, one MLflow experiment), or None."""
    if EXPERIMENT_NAME.fullmatch(name) and ".." not in name:
        return None
    return (f"{name!r}: use letters, digits, '.', '_' and '-' (at most 200, starting with a letter or digit, no "
            "'..'): the name is a directory in --storage-path and an MLflow experiment")


def experiment_dir(storage_path: str, experiment: str) -> str:
    """Tune's experiment directory (a path or a remote URI)."""
    return f"{storage_path}/{experiment}"


def train_storage(experiment_dir: str) -> str:
    """Ray Train's storage for a search's trials: beside Tune's experiment directory, never inside it (Tune
    re-syncs that directory from its staging copy on restore)."""
    return f"{experiment_dir}.train"


def run_registry_path(storage_path: str, experiment: str) -> Path:
    """The search's run registry (search/tracking.py RunRegistry). Beside Tune's experiment directory, never
    inside it: Tune syncs that directory from its own staging copy on restore and would overwrite the registry with
    the copy it had when the search stopped. A remote storage keeps it on the head node's checkout."""
    registry_dir = REMOTE_REGISTRY_DIR if "://" in storage_path else Path(storage_path)
    return registry_dir / f"{experiment}.mlflow_runs.json"


def fetch_checkpoint(run_id: str, into: Path, client=None) -> Path:
    """The trial run's best checkpoint directory, downloaded into `into`; ValueError when the run has none (a
    trial that failed or was killed before the tracker stored it). MlflowException for an unknown run."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient()
    client.get_run(run_id)  # a clear MLflow error for an unknown run
    try:
        return Path(client.download_artifacts(run_id, BEST_CHECKPOINT, str(into)))
    except (MlflowException, OSError) as err:
        raise ValueError(f"run {run_id} has no {BEST_CHECKPOINT} artifact ({type(err).__name__})") from err


def mlflow_ui_args(uri: str, port: int = MLFLOW_UI_PORT) -> list[str]:
    """`mlflow` arguments serving the store `uri` on loopback."""
    return ["ui", "--backend-store-uri", uri, "--host", UI_HOST, "--port", str(port)]


def mlflow_ui_command(uri: str | None = None) -> str:
    """The command a search prints at its end to browse its runs (a password in the URI masked: the UI is started
    with MLFLOW_TRACKING_URI's real one)."""
    return mask_uri(" ".join(["mlflow", *mlflow_ui_args(uri or tracking_uri())]))


def optuna_ui_args(storage: str, port: int = OPTUNA_UI_PORT) -> list[str]:
    """`optuna-dashboard` arguments serving the study storage on loopback."""
    return [storage, "--host", UI_HOST, "--port", str(port), "--quiet"]


# -- the environment a search checks before it writes anything (search/run.py pre-flight) ---------------------------

MLFLOW_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql", "file", "http", "https", "databricks",
                  "databricks-uc", "uc")
MIN_FREE_BYTES = 64 * 1024**2  # below this a search cannot write its checkpoints and Tune's state


def writable_dir_problem(directory: Path) -> str | None:
    """Why files cannot be created in `directory` (made where missing), or None: its nearest existing ancestor must
    be a directory this process may write, on a file system with MIN_FREE_BYTES free."""
    existing = nearest_existing(directory)
    problem = directory_problem(existing)
    if problem:
        return problem
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        return f"{existing} has {free / 1024**2:.0f} MiB free (a search needs at least {MIN_FREE_BYTES // 1024**2})"
    return None


def sqlite_problem(uri: str) -> str | None:
    """Why the sqlite store `sqlite:///PATH` cannot be written, or None."""
    db = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    if not str(db) or str(db) == ":memory:":
        return "is not a file"
    db = db.resolve()
    if db.exists():
        if not db.is_file():
            return f"{db} is not a file"
        if not os.access(db, os.R_OK | os.W_OK):
            return f"{db} is read-only"
    return writable_dir_problem(db.parent)


def tracking_uri_problem(uri: str) -> str | None:
    """Why MLflow cannot track in `uri` (MLFLOW_TRACKING_URI), or None; checked before a search writes anything."""
    if uri == "databricks":
        return None
    if "://" not in uri:
        return (f"is a plain path, not a URI: use sqlite:///{Path(uri).resolve() / 'mlflow.db'} (a sqlite file, "
                "created if missing) or a server's http://HOST:PORT")
    scheme = uri.split("://", 1)[0].lower()
    if scheme.split("+", 1)[0] not in MLFLOW_SCHEMES:
        return f"has an unknown scheme {scheme!r} (MLflow stores: {', '.join(MLFLOW_SCHEMES)})"
    if scheme == "sqlite":
        return sqlite_problem(uri) if uri.startswith("sqlite:///") else "needs three slashes: sqlite:///PATH"
    if scheme == "file":
        return writable_dir_problem(Path(uri.removeprefix("file://")))
    return driver_problem(uri)


DATABASE_SCHEMES = ("postgresql", "postgres", "mysql", "mssql", "oracle")


def driver_problem(url: str) -> str | None:
    """Why SQLAlchemy cannot load the database driver a `postgresql://`, `mysql://`, ... URL names, or None (also
    for URLs that are no database's); no connection is made."""
    if url.split("://", 1)[0].split("+", 1)[0].lower() not in DATABASE_SCHEMES:
        return None
    try:
        from sqlalchemy.engine import make_url

        make_url(url).get_dialect().import_dbapi()
    except Exception as err:  # noqa: BLE001 - ImportError, NoSuchModuleError, ArgumentError alike
        return (f"names a database whose driver cannot be loaded ({type(err).__name__}: {mask_uri(str(err))}); "
                "install the driver into .venv (e.g. psycopg[binary] for postgresql)")
    return None


def environment_problems(uri: str, storage_path: str, optuna_storage: str | None) -> list[str]:
    """One line per store a search cannot write: the MLflow tracking URI, a local --storage-path and a sqlite
    --optuna-storage; URIs masked (search/masking.py)."""
    problems = []
    problem = tracking_uri_problem(uri)
    if problem:
        problems.append(f"MLFLOW_TRACKING_URI={mask_uri(uri)} {problem}")
    if "://" not in storage_path:
        problem = writable_dir_problem(Path(storage_path))
        if problem:
            problems.append(f"--storage-path {storage_path}: {problem}")
    if optuna_storage and optuna_storage.startswith("sqlite:"):
        problem = sqlite_problem(optuna_storage) if optuna_storage.startswith("sqlite:///") \
            else "needs three slashes: sqlite:///PATH"
        if problem:
            problems.append(f"--optuna-storage {mask_uri(optuna_storage)}: {problem}")
    elif optuna_storage and (problem := driver_problem(optuna_storage)):
        problems.append(f"--optuna-storage {mask_uri(optuna_storage)} {problem}")
    return problems
