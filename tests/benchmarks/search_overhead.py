#!/usr/bin/env python
"""Search overhead: the share of trial wall time spent outside train and eval steps (Ray, Tune, Ray Train start-up,
data loading, checkpoints, MLflow), on the embedded default search.

    python tests/benchmarks/search_overhead.py --json                        # the embedded default: ~11 min
    python tests/benchmarks/search_overhead.py --json -- --num-samples 2 --epochs 2   # extra flags for run.py

Runs `search/run.py --space lja` in a scratch directory with its own sqlite MLflow store, then, per trial:
wall = the trial's MLflow run end - start (the driver opens the run when Tune starts the trial and closes it when
Tune reports its end); inside = the sum over its epochs of time/train_s + time/eval_s (trainables/train.py);
setup = time/setup_s (data and model set-up inside the training worker). Overhead = 1 - sum(inside) / sum(wall).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def trial_times(uri: str, experiment: str) -> list[dict]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    rows = []
    for run in client.search_runs([exp.experiment_id], "tags.`occpose.role` = 'trial'"):
        history = {name: {m.step: m.value for m in client.get_metric_history(run.info.run_id, name)}
                   for name in ("time/train_s", "time/eval_s", "time/setup_s", "epoch_time_s")}
        wall = (run.info.end_time - run.info.start_time) / 1000
        train, evaluation = sum(history["time/train_s"].values()), sum(history["time/eval_s"].values())
        rows.append({"trial": run.info.run_name, "epochs": len(history["time/train_s"]), "wall_s": round(wall, 1),
                     "train_s": round(train, 1), "eval_s": round(evaluation, 1),
                     "setup_s": round(max(history["time/setup_s"].values(), default=0.0), 1),
                     "checkpoint_and_report_s": round(sum(history["epoch_time_s"].values()) - train - evaluation, 1)})
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--keep", type=Path, help="run in this directory and keep it (default: a temporary one)")
    p.add_argument("run_args", nargs="*", help="extra search/run.py flags, after --")
    args = p.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="search-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    command = [sys.executable, str(REPO_ROOT / "search" / "run.py"), "--space", "lja", "--storage-path",
               str(work / "ray"), "--experiment", "overhead", *args.run_args]
    started = time.perf_counter()
    with (work / "search.log").open("w") as log:
        done = subprocess.run(command, cwd=work, env={**os.environ, "MLFLOW_TRACKING_URI": uri}, stdout=log,
                              stderr=subprocess.STDOUT, text=True)
    search_wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"search failed ({done.returncode}); its output: {work / 'search.log'}")
    trials = trial_times(uri, "overhead")
    wall = sum(t["wall_s"] for t in trials)
    inside = sum(t["train_s"] + t["eval_s"] for t in trials)
    result = {"command": " ".join(command[1:]), "search_wall_s": round(search_wall, 1), "trials": len(trials),
              "trial_wall_s": round(wall, 1), "train_eval_s": round(inside, 1),
              "setup_s": round(sum(t["setup_s"] for t in trials), 1),
              "checkpoint_and_report_s": round(sum(t["checkpoint_and_report_s"] for t in trials), 1),
              "overhead": round(1 - inside / wall, 4) if wall else None, "per_trial": trials}
    if not args.json:
        for t in trials:
            print(f"{t['trial']}: {t['epochs']} epochs, wall {t['wall_s']} s = train {t['train_s']} + eval "
                  f"{t['eval_s']} + setup {t['setup_s']} + checkpoint/report {t['checkpoint_and_report_s']} + "
                  f"rest {t['wall_s'] - t['train_s'] - t['eval_s'] - t['setup_s'] - t['checkpoint_and_report_s']:.1f}",
                  file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
