"""The MLflow UI, for real: a search's experiment in MLflow, `mlflow ui` started on loopback by dashboards/ui.py,
the runs page opened in headless Chromium (Debian's `chromium`, never a downloaded browser). The parent run, its
trial runs and their metric columns must be on the page; the screenshot is kept in test-artifacts/."""
import importlib.util
import os
import re
import socket
from pathlib import Path

import pytest

from conftest import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
# Headless and offline: without the background-networking switches Chromium's connections are refused on a
# closed network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
EXPERIMENT, SPACE, METRIC = "ui-search", "lja", "val_occ/AP"
EPOCHS = 3
METRIC_COLUMNS = ("val/AP", "val_occ/AP", "val/O/AP", "train/loss")
WAIT_MS = 60_000  # for an element to appear: the first page load on a cold server takes seconds

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found (Debian package `chromium`; .ci/run "
                                                     "installs it when run as root)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="the playwright package is not importable (it is in pyproject.toml's dependencies)"),
]


def artifacts_dir() -> Path:
    path = Path(os.environ.get("OCCPOSE_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def epoch_result(trial: int, epoch: int) -> dict:
    """An epoch's result as trainables/train.py reports it (`split/metric` keys, epoch_time_s), values known."""
    return {"epoch": epoch, "training_iteration": epoch, "val/AP": round(0.1 * epoch + 0.01 * trial, 2),
            "val_occ/AP": round(0.05 * epoch + 0.01 * trial, 2), "val/O/AP": round(0.04 * epoch + 0.01 * trial, 2),
            "train/loss": round(1.0 / epoch, 2), "epoch_time_s": 2.0, "checkpoint_path": None}


@pytest.fixture
def search_experiment(tmp_path):
    """A finished search in a sqlite store, written by the search's own tracking code: SearchTracker's parent run,
    and MLflowTrialCallback fed Tune's hooks with real (stub) Tune trials named as search/tuner.py names them."""
    from ray.tune.experiment import Trial

    from search.tuner import short_trial_name
    from search.tracking import ROLE_TAG, MLflowTrialCallback, SearchTracker, git_commit

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SearchTracker(EXPERIMENT, tmp_path / "ray" / EXPERIMENT / "mlflow_runs.json", uri=uri)
    parent_name = f"search-{SPACE}"
    tracker.start_parent(run_name=parent_name, params={"space": SPACE, "metric": METRIC, "epochs": EPOCHS},
                         tags={"space": SPACE, "git_commit": git_commit(),
                               "experiment_dir": str(tmp_path / "ray" / EXPERIMENT)})
    callback = MLflowTrialCallback(tracker, {"epochs": EPOCHS}, METRIC)
    trials = []
    for i in range(3):
        trial = Trial("run_trial", config={"lja.quantity": 0.05 * (i + 1)}, trial_name_creator=short_trial_name,
                      stub=True)
        trials.append(trial)
        callback.on_trial_start(0, trials, trial)
        for epoch in range(1, EPOCHS + 1):
            trial.update_last_result(epoch_result(i, epoch))
            callback.on_trial_result(0, trials, trial, epoch_result(i, epoch))
        callback.on_trial_complete(0, trials, trial)
    tracker.end_parent("FINISHED")

    runs = tracker.client.search_runs([tracker.experiment_id])
    assert sorted(r.data.tags[ROLE_TAG] for r in runs) == ["parent", "trial", "trial", "trial"]
    run_ids = tracker.registry.read()["trials"]
    return {"uri": uri, "experiment_id": tracker.experiment_id, "parent": (parent_name, tracker.parent_run_id),
            "children": [(str(t), run_ids[t.trial_id], epoch_result(i, EPOCHS)) for i, t in enumerate(trials)]}


@pytest.fixture
def mlflow_ui(search_experiment, tmp_path):
    from dashboards.ui import start_mlflow_ui, stop_server

    port = free_port()
    server = start_mlflow_ui(search_experiment["uri"], port, tmp_path / "mlflow_ui.log", timeout_s=120)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_server(server)


def test_mlflow_ui_shows_the_search_runs_and_metrics(search_experiment, mlflow_ui):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    parent_name, parent_id = search_experiment["parent"]
    children = search_experiment["children"]
    screenshot = artifacts_dir() / "mlflow_ui.png"
    # The runs table of the experiment in the "Model training" view (MLflow 3 opens an experiment in its GenAI view).
    url = f"{mlflow_ui}/#/experiments/{search_experiment['experiment_id']}/runs?workflowType=machine_learning"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 2200, "height": 700})
            page.set_default_timeout(WAIT_MS)

            def row(run_id: str):
                """A run's row in the table (ag-grid: one element per pinned/scrolled part, each with the run id)."""
                return page.locator(f'[role="row"][row-id="{run_id}"]')

            page.goto(url)
            try:
                expect(row(parent_id).get_by_role("link", name=parent_name, exact=True)).to_be_visible()
                # MLflow 3.17's assistant panel narrows the table (whose columns outside the view are not drawn).
                try:
                    page.get_by_role("button", name="Close", exact=True).first.click(timeout=5_000)
                except PlaywrightTimeout:
                    pass  # a version without it

                # Trial runs are nested under the parent run: hidden until its Run Name cell's toggle expands it.
                for _, run_id, _ in children:
                    expect(row(run_id)).to_have_count(0)
                row(parent_id).locator('[col-id="attributes.`Run Name`"] button').click()
                parent_index = int(row(parent_id).first.get_attribute("row-index"))
                for name, run_id, _ in children:
                    expect(row(run_id).get_by_role("link", name=name, exact=True)).to_be_visible()
                    assert int(row(run_id).first.get_attribute("row-index")) > parent_index

                # Metric columns are off by default: the Columns menu's "Metrics (n)" node adds all of them.
                page.get_by_role("button", name="Columns", exact=True).click()
                page.get_by_title(re.compile(r"^Metrics \(\d+\)$")).click()
                page.keyboard.press("Escape")
                for metric in METRIC_COLUMNS:
                    header = page.locator(f'.ag-header-cell[col-id="metrics.`{metric}`"]')
                    expect(header).to_have_text(metric)
                    expect(header).to_be_in_viewport()
                # ...and each trial's row shows its last epoch's values.
                for name, run_id, last in children:
                    for metric in METRIC_COLUMNS:
                        cell = row(run_id).locator(f'[col-id="metrics.`{metric}`"]')
                        expect(cell).to_have_text(re.compile(r"^\s*[\d.]+\s*$"))
                        assert float(cell.inner_text()) == pytest.approx(last[metric], abs=5e-3), (name, metric)
            finally:
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000


def test_optuna_dashboard_serves_the_search_study_on_loopback(tmp_path):
    """dashboards/ui.py's optuna-dashboard: the study a search stored, listed by the dashboard's own API."""
    import json
    import urllib.request

    import optuna

    from dashboards.ui import default_optuna_storage, optuna_command, start_server, stop_server

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="ui-search", storage=storage, direction="maximize")
    study.optimize(lambda t: t.suggest_float("lja.size_ratio", 0.05, 0.4), n_trials=2)
    assert default_optuna_storage(f"sqlite:///{tmp_path / 'mlflow.db'}") == storage
    port = free_port()
    server = start_server(optuna_command(storage, port), f"http://127.0.0.1:{port}/", tmp_path / "optuna.log")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=10) as response:
            studies = json.loads(response.read())["study_summaries"]
        assert [s["study_name"] for s in studies] == ["ui-search"]
    finally:
        stop_server(server)
    assert server.poll() is not None
