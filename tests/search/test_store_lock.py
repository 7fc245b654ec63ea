"""A fresh sqlite MLflow store opened by two processes at the same moment is created once: a search starting
beside `mlflow ui` (or a second search) starts, and the schema ends whole."""
import os
import sqlite3
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT
from search.stores import open_tracking_store

ROUNDS = 3
# (imports, then what runs at the start signal): what a search does first with the store, and a bare MLflow client
# (as `mlflow ui` or a polling script opens it).
OURS = ("from pathlib import Path\nfrom search.tracking import SearchTracker\n",
        "SearchTracker('race', Path(sys.argv[3]), uri=sys.argv[1])\n")
BARE = ("from mlflow.tracking import MlflowClient\n", "MlflowClient(sys.argv[1]).search_experiments(max_results=1)\n")


def at_once(uri: str, start: float, body: tuple[str, str], registry) -> subprocess.Popen:
    imports, action = body
    code = ("import sys, time\n" + imports + "while time.time() < float(sys.argv[2]): time.sleep(0.001)\n" + action
            + "print('opened')\n")
    return subprocess.Popen([sys.executable, "-c", code, uri, str(start), str(registry)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


@pytest.mark.parametrize("other", ["mlflow-ui", "second-search"])
def test_a_fresh_store_opened_by_two_processes_at_once_is_created_once(tmp_path, other):
    for round_ in range(ROUNDS):
        db = tmp_path / f"mlflow{round_}.db"
        uri, start = f"sqlite:///{db}", time.time() + 8.0
        ours = at_once(uri, start, OURS, tmp_path / f"a{round_}.json")
        theirs = at_once(uri, start, OURS if other == "second-search" else BARE, tmp_path / f"b{round_}.json")
        outputs = [p.communicate(timeout=180)[0] for p in (ours, theirs)]
        assert ours.returncode == 0 and "opened" in outputs[0], f"round {round_}:\n{outputs[0][-3000:]}"
        if other == "second-search":
            assert theirs.returncode == 0 and "opened" in outputs[1], f"round {round_}:\n{outputs[1][-3000:]}"
        else:
            # A bare client's own migration, racing ours, may die and leave debris after our process is done: the
            # next opening by our code (the next search, report or UI) clears it and finds the schema whole.
            open_tracking_store(uri)
        with sqlite3.connect(db) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert not {t for t in tables if t.startswith("_alembic_tmp_")}
        assert MlflowClient(uri).get_experiment_by_name("race") is not None
