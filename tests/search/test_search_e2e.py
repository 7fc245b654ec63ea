"""End to end: a --smoke search on a real local Ray cluster, tracked in a real MLflow sqlite store."""
import hashlib
import json
import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO_ROOT, SearchCLI

pytestmark = pytest.mark.e2e

EXPECTED_METRICS = ("val/AP", "val/AP50", "val/AP75", "val/AR", "val_occ/AP", "val/PCKh_0.5", "train/loss",
                    "train/images_per_s", "epoch_time_s")


@pytest.fixture(scope="module")
def smoke_search(tmp_path_factory, dataset_cache):
    work = tmp_path_factory.mktemp("search")
    search = SearchCLI(work, dataset_cache)
    result = search.run("--space", "lja", "--smoke", "--num-samples", "2", "--epochs", "1", "--storage-path",
                        work / "ray", "--experiment", "e2e-smoke", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, MlflowClient(search.tracking_uri), work


def test_parent_run_with_two_nested_child_runs(smoke_search):
    _, client, _ = smoke_search
    experiment = client.get_experiment_by_name("e2e-smoke")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.data.params["space"] == "lja"
    assert parent.data.tags["git_commit"]
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert len({c.data.tags["trial_id"] for c in children}) == 2
    assert "baseline_mean_pose/val/AP" in parent.data.metrics


def test_parent_run_reads_as_the_search_summary(smoke_search):
    """The parent row of the runs table: the best trial's searched parameters and its metrics at its best epoch,
    tags naming and linking the best child run, and a description of how to read the experiment."""
    _, client, _ = smoke_search
    experiment = client.get_experiment_by_name("e2e-smoke")
    parent, = client.search_runs([experiment.experiment_id], "tags.`occpose.role` = 'parent'")
    children = client.search_runs([experiment.experiment_id], "tags.trial_id != ''")
    tags = parent.data.tags
    best, = [c for c in children if c.data.tags["trial_id"] == tags["best_trial"]]
    assert best.data.metrics["best/val_occ/AP"] == max(c.data.metrics["best/val_occ/AP"] for c in children)
    assert tags["best_run_id"] == best.info.run_id and tags["best_trial"] == best.data.tags["trial_id"]
    assert tags["best_run_link"] == f"#/experiments/{experiment.experiment_id}/runs/{best.info.run_id}"
    for key in ("lja.quantity_ratio", "lja.size_ratio", "lja.p", "loss.schedule", "loss.lambda_max"):
        assert parent.data.params[key] == best.data.params[key], key
    with open(client.download_artifacts(best.info.run_id, "best_metrics.json")) as handle:
        best_metrics = json.load(handle)
    for name in ("val/AP", "val_occ/AP", "val/PCKh_0.5", "train/loss"):
        assert parent.data.metrics[name] == pytest.approx(best_metrics["metrics"][name]), name
    note = tags["mlflow.note.content"]
    assert f"[trial_{best.data.tags['trial_id']}]({tags['best_run_link']})" in note
    assert "nested child run" in note and "dashboards/report.py --experiment e2e-smoke" in note


def test_child_runs_log_every_hyperparameter_and_epoch_metric(smoke_search):
    _, client, _ = smoke_search
    experiment = client.get_experiment_by_name("e2e-smoke")
    children = client.search_runs([experiment.experiment_id], "tags.trial_id != ''")
    paper = [c for c in children if c.data.params["lja.quantity_ratio"] == "0.15"
             and c.data.params["lja.size_ratio"] == "0.2" and c.data.params["loss.schedule"] == "step"]
    assert paper, "the paper's point is evaluated first"
    for child in children:
        assert child.info.status == "FINISHED"
        for key in ("lja.quantity_ratio", "lja.size_ratio", "lja.p", "loss.schedule", "loss.lambda_max",
                    "model.name", "optim.lr", "data.input_h"):
            assert key in child.data.params
        for name in EXPECTED_METRICS:
            history = client.get_metric_history(child.info.run_id, name)
            assert [m.step for m in history] == [1], name
        ap = child.data.metrics["val/AP"]
        assert 0.0 <= ap <= 1.0
        assert child.data.metrics["train/images_per_s"] > 0
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"best_checkpoint", "best_metrics.json", "final_metrics.json"} <= artifacts
        checkpoint = {a.path for a in client.list_artifacts(child.info.run_id, "best_checkpoint")}
        assert "best_checkpoint/model.pt" in checkpoint


def test_parent_run_totals_the_cost_of_its_trials(smoke_search):
    """Each trial logs its cost (trainables/cost.py); the parent run and the summary JSON hold the sums of the
    trials' final values, and each trial's values are its own: the images of its training set (none dropped or
    skipped at this size), FLOPs = images x FlopCounterMode's count of one sample + its evaluation crops'."""
    from dashboards.search_data import parse_param
    from datasets.annotations import load_records
    from datasets.meta import get
    from trainables import cost
    from trainables.config import TrialConfig
    from trainables.build import build_model

    _, client, work = smoke_search
    experiment = client.get_experiment_by_name("e2e-smoke")
    parent, = client.search_runs([experiment.experiment_id], "tags.`occpose.role` = 'parent'")
    children = client.search_runs([experiment.experiment_id], "tags.trial_id != ''")
    summary = json.loads((work / "ray" / "e2e-smoke.summary.json").read_text())
    assert parent.data.metrics["total/cost/trials"] == summary["cost"]["total/cost/trials"] == len(children) == 2
    for counter in cost.COUNTERS:
        final = [c.data.metrics[cost.metric(counter)] for c in children]
        assert all(value > 0 for value in final), counter
        total = "total/" + cost.metric(counter)  # the parent's cost/... are its best trial's (search/status.py)
        assert parent.data.metrics[total] == pytest.approx(sum(final), rel=1e-12), counter
        assert summary["cost"][total] == pytest.approx(sum(final), rel=1e-12), counter
    for child in children:
        known = set(TrialConfig().flat())
        cfg = TrialConfig.from_flat({k: parse_param(v) for k, v in child.data.params.items() if k in known})
        metrics = child.data.metrics
        records = load_records(cfg.data.train_ann, cfg.data.train_images, get(cfg.data.dataset).skeleton)
        trained = min(len(records), cfg.data.max_train_samples or len(records))
        if trained > cfg.optim.batch_size:  # trainables/loaders.py drops the last partial batch
            trained -= trained % cfg.optim.batch_size
        assert metrics["cost/images"] == metrics["cost/epoch/images"] == trained  # one epoch
        model = build_model(cfg)
        hw = (cfg.data.input_h, cfg.data.input_w)
        expected = trained * cost.flops_per_sample(model, hw, train=True) + metrics["cost/eval_images"] * (
            cost.flops_per_sample(model, hw, train=False) * (2 if cfg.data.flip_test else 1))
        assert metrics["cost/flops"] == pytest.approx(expected, rel=1e-12)
        # device-seconds: the trial's fit, at least its setup, training and evaluation, x the CPUs it holds
        spent = sum(metrics[f"time/{part}_s"] for part in ("setup", "train", "eval"))
        assert metrics["cost/device_s"] >= cfg.runtime.workers * cfg.runtime.cpus_per_worker * spent


def test_console_is_short_quiet_and_ends_with_the_summary_table(smoke_search):
    """Off a terminal (CI, a log file) the search prints at most 40 lines: the log's path, one line per trial event,
    the summary table (trials best first, the paper point, the mean-pose floor) and the next commands; Ray's own
    output is in the log; the summary JSON is in a file (printed to stdout only with --json)."""
    result, client, work = smoke_search
    shown = (result.stdout + result.stderr).splitlines()
    assert len(shown) <= 40, "\n".join(shown)
    log = work / "ray" / "e2e-smoke.log"
    assert shown[0] == f"log: {log} (Ray's output; --verbose shows it here)"
    for noise in ("TrainingReport", "Trial status", "╭", "RayTrainWorker", "[I 20", "INFO"):
        assert noise not in result.stdout + result.stderr, noise
    logged = log.read_text()
    assert "TrainingReport" in logged and "Trial status" in logged
    summary = json.loads((work / "ray" / "e2e-smoke.summary.json").read_text())
    assert f"summary JSON: {work / 'ray' / 'e2e-smoke.summary.json'}" in shown
    assert '"best"' not in result.stdout  # no JSON on stdout without --json
    ids = [row["trial_id"] for row in summary["table"]]
    assert sorted(ids) == sorted(t["trial_id"] for t in summary["trials"]) and len(ids) == 2
    epochs = [line for line in shown if "] epoch 1: val/AP=" in line]
    assert sorted(line[1:9] for line in epochs) == sorted(ids)
    table = shown[shown.index("e2e-smoke: trials best first by val_occ/AP (at each trial's best epoch)"):]
    rows = [line.split() for line in table if line.split()[:1] in (["1"], ["2"])]
    assert [row[1] for row in rows] == ids  # best first, as in the JSON
    assert [row["score"] for row in summary["table"]] == sorted((row["score"] for row in summary["table"]),
                                                                reverse=True)
    paper = [row for row in summary["table"] if row["paper_point"]]
    assert len(paper) == 1 and paper[0]["params"]["lja.quantity_ratio"] == 0.15
    assert any(row[1] == paper[0]["trial_id"] and row[-2:] == ["paper", "point"] for row in rows)
    parent, = client.search_runs([client.get_experiment_by_name("e2e-smoke").experiment_id],
                                 "tags.`occpose.role` = 'parent'")
    floor = next(line.split() for line in table if line.split()[:2] == ["mean", "pose"])
    assert floor[3:5] == [f"{parent.data.metrics['baseline_mean_pose/val/AP']:.3f}",
                          f"{parent.data.metrics['baseline_mean_pose/val_occ/AP']:.3f}"]
    commands = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in shown[-4:-1] if ":" in line}
    assert commands["browse the runs"].startswith(f"mlflow ui --backend-store-uri sqlite:///{work / 'mlflow.db'}")
    assert commands["build the report"].startswith("python dashboards/report.py --experiment e2e-smoke")
    assert commands["status again"] == f"python search/run.py --experiment e2e-smoke --storage-path {work / 'ray'} " \
        "--status"


def test_status_of_the_finished_search_prints_its_table_and_changes_nothing(smoke_search, dataset_cache):
    result, _, work = smoke_search
    books = [work / "mlflow.db", work / "optuna.db", work / "ray" / "e2e-smoke.mlflow_runs.json"]
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in books}
    listing = sorted(str(p) for p in (work / "ray").rglob("*"))
    status = SearchCLI(work, dataset_cache).run("--status", "--experiment", "e2e-smoke", "--storage-path",
                                                work / "ray", timeout=300)
    assert status.returncode == 0, status.stdout[-3000:] + status.stderr[-3000:]
    assert status.stdout.splitlines()[0] == "experiment e2e-smoke: finished, 2/2 trials ended; space lja, searching " \
        "val_occ/AP"
    def table(text: str) -> list[str]:  # the trial rows and the floor row
        return [line for line in text.splitlines()
                if line.split()[:1] in (["1"], ["2"]) or line.split()[:3] == ["mean", "pose", "floor"]]

    assert table(status.stdout) == table(result.stdout) and len(table(status.stdout)) == 3
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in books} == before
    assert sorted(str(p) for p in (work / "ray").rglob("*")) == listing
    unknown = SearchCLI(work, dataset_cache).run("--status", "--experiment", "nope", "--storage-path", work / "ray",
                                                 timeout=300)
    assert unknown.returncode == 2 and "no experiment 'nope'" in unknown.stderr


def test_oasnet_grid_fifo_multi_objective_and_optuna_storage(tmp_path, search_cli):
    """The OASNet space (siamese training under Ray Train) walked by --searcher grid (mimic x detach) with FIFO
    scheduling; --multi-objective ends with the Pareto front; the Optuna study lives in optuna.db beside the MLflow
    sqlite store, one trial per Tune trial, both objectives recorded."""
    import optuna

    result = search_cli.run("--space", "oasnet", "--smoke", "--searcher", "grid", "--scheduler", "fifo",
                            "--multi-objective", "--num-samples", "2", "--storage-path", tmp_path / "ray",
                            "--experiment", "e2e-grid")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = MlflowClient(search_cli.tracking_uri)
    experiment = client.get_experiment_by_name("e2e-grid")
    children = client.search_runs([experiment.experiment_id], "tags.trial_id != ''")
    assert len(children) == 2
    for child in children:
        assert child.data.params["oasnet.enabled"] == "True" and child.data.params["oasnet.lambda_mimic"] == "0.01"
        assert child.data.params["oasnet.mimic"] in ("l2", "cosine", "kl", "sinkhorn")
        assert child.data.metrics["train/loss_mimic"] >= 0 and child.data.metrics["train/loss_occlusion"] > 0
    parent, = client.search_runs([experiment.experiment_id], "tags.space = 'oasnet'")
    assert parent.data.params["searcher"] == "optuna-grid" and parent.data.params["scheduler"] == "fifo"
    study = optuna.load_study(study_name="e2e-grid", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2 and all(len(t.values) == 2 for t in complete)
    assert len(study.directions) == 2
    summary = json.loads((tmp_path / "ray" / "e2e-grid.summary.json").read_text())
    assert summary["pareto_front"] and "Pareto front (clean, occluded):" in result.stdout


def _report(work, *extra):
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "dashboards" / "report.py"), "--experiment", "e2e-smoke",
         "--out", str(work / "report"), "--robustness-max-samples", "20", *extra],
        capture_output=True, text=True, timeout=600, cwd=work,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"},
    )


def test_report_registers_the_best_model_and_logs_html_to_the_parent_run(smoke_search):
    """dashboards/report.py on the finished search: tables whose numbers are MLflow's, PNG figures, the report
    in the parent run, the best trial attacked for robustness curves and its model registered under the
    experiment's name; a second run replaces the report and registers nothing twice."""
    import mlflow
    import torch

    _, client, work = smoke_search
    experiment = client.get_experiment_by_name("e2e-smoke")
    ended = {r.info.run_id: (r.info.status, r.info.end_time)
             for r in client.search_runs([experiment.experiment_id], "tags.trial_id != ''")}
    result = _report(work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "registered model" not in result.stderr.lower() and "Created version" not in result.stderr  # MLflow's
    summary = json.loads((work / "report" / "report.json").read_text())

    experiment = client.get_experiment_by_name("e2e-smoke")
    children = client.search_runs([experiment.experiment_id], "tags.trial_id != ''")
    best_at = {}
    for child in children:  # each trial's best epoch by the searched metric, from MLflow's own histories
        history = client.get_metric_history(child.info.run_id, "val_occ/AP")
        top = max(history, key=lambda m: (m.value, m.step))
        best_at[child.info.run_name] = (top.value, child)
    best_name = max(best_at, key=lambda n: best_at[n][0])
    best_value, best_run = best_at[best_name]
    comparison = summary["tables"]["comparison"]
    row = comparison["rows"][0]
    assert row[0] == "best" and row[1] == summary["best_trial"]
    assert row[comparison["columns"].index("val_occ/AP")] == pytest.approx(best_value)
    paper = comparison["rows"][1]
    assert paper[0] == "paper default" and "lja.quantity_ratio=0.15" in paper[-1]
    assert {"comparison", "lja_grid", "schedules"} <= set(summary["tables"])

    for name in ("parallel_coordinates.png", "learning_curves.png", "robustness_curves.png", "cost.png"):
        png = (work / "report" / "figures" / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, name
    page = (work / "report" / "report.html").read_text()
    assert "Best trial against the baselines" in page and page.count("data:image/png;base64,") >= 3

    parent, = client.search_runs([experiment.experiment_id], "tags.`occpose.role` = 'parent'")
    assert parent.data.tags["report"] == "report/report.html"
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.html", "report/report.json", "report/figures"} <= logged

    best_run_id = client.get_model_version("e2e-smoke", "1").run_id
    assert client.get_run(best_run_id).info.run_name == summary["best_trial"]
    after = client.get_run(best_run_id).info
    assert (after.status, after.end_time) == ended[best_run_id]  # logging the model kept the trial's own record
    attacked = client.get_metric_history(best_run_id, "robustness/keypoint-blackout/AP")
    assert [m.step for m in attacked] == [0, 6, 12, 18]
    version = client.get_model_version("e2e-smoke", "1")
    assert float(version.tags["metric.val_occ/AP"]) == pytest.approx(best_at[summary["best_trial"]][0], abs=1e-6)
    assert "lja.quantity_ratio" in version.description
    mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
    model = mlflow.pytorch.load_model("models:/e2e-smoke/1")
    height, width = int(best_run.data.params["data.input_h"]), int(best_run.data.params["data.input_w"])
    assert model(torch.zeros(2, 3, height, width)).shape == (2, 17, height // 4, width // 4)

    again = _report(work, "--no-robustness")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already registered" in again.stdout
    assert [str(v.version) for v in client.search_model_versions("name = 'e2e-smoke'")] == ["1"]
    assert len(client.get_metric_history(best_run_id, "robustness/keypoint-blackout/AP")) == 4


def test_warm_start_enqueues_a_finished_searchs_best_trial_first_and_records_it(smoke_search, dataset_cache):
    """--warm-start e2e-smoke:1 (issue 19 item 3): the finished study's best trial, read from the shared optuna.db,
    is the new search's first trial, and the parent run records the source and what became of each trial."""
    _, client, work = smoke_search
    search = SearchCLI(work, dataset_cache)
    result = search.run("--space", "lja", "--smoke", "--num-samples", "1", "--storage-path", work / "ray",
                        "--experiment", "e2e-warm", "--warm-start", "e2e-smoke:1", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "warm start: trial" in result.stdout and "enqueued" in result.stdout
    experiment = client.get_experiment_by_name("e2e-warm")
    parent, = client.search_runs([experiment.experiment_id], "tags.space = 'lja'")
    child, = client.search_runs([experiment.experiment_id], "tags.trial_id != ''")
    assert parent.data.params["warm_start"] == "e2e-smoke:1"
    record = client.download_artifacts(parent.info.run_id, "warm_start.json", str(work / "warm"))
    trials = json.loads(open(record).read())["trials"]
    assert len(trials) == 1 and trials[0]["outcome"] == "enqueued"
    for key, value in trials[0]["params"].items():
        assert child.data.params[key] == str(value), key
