#!/usr/bin/env python
"""A search's report: HTML with PNG figures from MLflow and the Optuna study, logged to the search's parent run;
the best trial's model registered in the MLflow Model Registry under the experiment's name.

    python dashboards/report.py --experiment lja-20261122-101500
    python dashboards/report.py --experiment NAME --out reports/NAME --baseline-run RUN_ID --no-robustness

Tables: the best trial against the paper-default and no-occlusion baselines (clean and occluded columns), LJA's
quantity x size grid, the λ-schedule table and the mimic-loss comparison (each where the search explored it).
Figures: parallel coordinates, fANOVA importance (Optuna), learning and robustness curves, AP against cost. The
best and paper-default trials are attacked (trainables/robustness.py, as search/robustness.py does) first unless
they already were.
"""
from __future__ import annotations

import argparse
import base64
import html
import os
import sys
import tempfile
from pathlib import Path

from datasets import atomic
from datasets.cli import non_negative_int, output_dir, output_dir_problem
from search.console import current
from search.masking import mask_uri
from search.stores import REPORTS_DIR, open_tracking_store, tracking_uri


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--experiment", required=True, help="the search's MLflow experiment (search/run.py --experiment)")
    p.add_argument("--out", type=output_dir, help="output directory (default reports/EXPERIMENT)")
    p.add_argument("--tracking-uri", default=None,
                   help="the MLflow tracking store (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--optuna-storage", help="the study's storage (default: the parent run's optuna_storage param)")
    p.add_argument("--baseline-run", help="MLflow run of a model trained without occlusion, for the comparison "
                   "table when the search itself has no such trial")
    p.add_argument("--no-robustness", dest="robustness", action="store_false",
                   help="do not attack the best and paper-default trials (search/robustness.py) for the curves")
    p.add_argument("--attacks", default="keypoint-blackout", help="robustness attacks (comma-separated)")
    p.add_argument("--radii", default="0,6,12,18", help="keypoint attack radii in input pixels")
    p.add_argument("--robustness-max-samples", type=non_negative_int, default=500, help="persons per robustness evaluation")
    p.add_argument("--no-register", dest="register", action="store_false",
                   help="do not log and register the best trial's model")
    return p


def attack_trials(client, search, args) -> list[str]:
    """The robustness sweep (trainables/robustness.py, as search/robustness.py runs it) on the best and
    paper-default trials that have no robustness results yet, logged to their runs."""
    from search.stores import fetch_checkpoint
    from search.tracking import log_robustness
    from trainables import robustness

    attacks = [name for name in args.attacks.split(",") if name]
    radii = [float(r) for r in args.radii.split(",") if r]
    attacked, targets = [], {t.run_id: t for t in (search.best(finished_only=True), search.paper_default())
                             if t is not None and t.status == "FINISHED"}
    pending = [t for t in targets.values() if not any(n.startswith("robustness/clean/") for n in t.robustness)]
    with current().progress("robustness attacks", "trials") as advance:  # a bar on a terminal, a line otherwise
        for trial in pending:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    checkpoint = fetch_checkpoint(trial.run_id, Path(tmp), client)
                    result, files = robustness.attack(checkpoint, attacks, radii, out=Path(tmp) / "robustness",
                                                      per_keypoint=False, max_samples=args.robustness_max_samples)
                    log_robustness(result, files, trial.run_id, search.experiment, checkpoint, client)
                except ValueError as err:
                    raise ValueError(f"the robustness sweep failed on trial {trial.name} (run {trial.run_id}): "
                                     f"{err}; rerun with --no-robustness to skip the attacks") from err
                print((Path(tmp) / "robustness" / "robustness.md").read_text(), flush=True)
            attacked.append(trial.name)
            advance(len(attacked), len(pending))
    return attacked


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape("" if value is None else str(value))


def render_html(search, tables, figures, model: dict | None, out: Path) -> Path:
    best = search.best()
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Search report: {html.escape(search.experiment)}</title>",
        "<style>body{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
        "th{background:#f3f3f3}td{text-align:right}td:first-child,td:last-child{text-align:left}"
        ".note{color:#666;font-size:12px}img{max-width:100%}</style></head><body>",
        f"<h1>Search report: {html.escape(search.experiment)}</h1>",
        f"<p>Space <b>{html.escape(search.space)}</b> on <b>{html.escape(str(search.dataset))}</b>, searching "
        f"<b>{html.escape(search.metric)}</b>; {len(search.trials)} trials ({len(search.scored())} scored). "
        f"MLflow parent run <code>{search.parent_run_id}</code>.</p>",
    ]
    if best is not None:
        parts.append(f"<p>Best trial <b>{html.escape(best.name)}</b>: {html.escape(search.metric)} = "
                     f"{best.at_best(search.metric)[search.metric]:.4f} at epoch {best.best_epoch(search.metric)}.</p>")
    if model:
        parts.append(f"<p>Registered model <code>{html.escape(model['model_uri'])}</code> "
                     f"(from run <code>{model['run_id']}</code>, the best trial that finished).</p>")
    for table in tables:
        parts.append(f"<h2 id='{table.key}'>{html.escape(table.title)}</h2><table><tr>"
                     + "".join(f"<th>{html.escape(c)}</th>" for c in table.columns) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in table.rows]
        parts.append(f"</table><p class='note'>{html.escape(table.note)}</p>")
    for figure in figures:
        parts.append(f"<h2 id='{figure.key}'>{html.escape(figure.title)}</h2>")
        if figure.path is None:
            parts.append(f"<p class='note'>Not drawn: {html.escape(figure.note)}</p>")
            continue
        # Embedded as well as written beside the page: MLflow's artifact viewer shows the page on its own.
        encoded = base64.b64encode(figure.path.read_bytes()).decode()
        parts.append(f"<img alt='{html.escape(figure.title)}' src='data:image/png;base64,{encoded}'>")
        if figure.note:
            parts.append(f"<p class='note'>{html.escape(figure.note)}</p>")
    parts.append("</body></html>")
    page = out / "report.html"
    atomic.write_text(page, "\n".join(parts))
    return page


def build_report(args) -> dict:
    from mlflow.exceptions import MlflowException

    from dashboards.cost import cost_figure, cost_points, trial_costs
    from dashboards.figures import all_figures, load_study
    from dashboards.registry import register_best_model
    from dashboards.search_data import load_search, trial_from_run
    from dashboards.tables import all_tables

    args.tracking_uri = args.tracking_uri or tracking_uri()
    # mlflow.pytorch uses the default client: point it at the same store.
    os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = open_client(args.tracking_uri)
    # Every run the report names is resolved before any attack, registration or write.
    try:
        baseline = trial_from_run(client, client.get_run(args.baseline_run)) if args.baseline_run else None
    except MlflowException:
        raise ValueError(f"--baseline-run {args.baseline_run}: no such run in the tracking store") from None
    search = load_search(client, args.experiment)
    if not search.scored():
        raise ValueError(f"experiment {args.experiment!r}: no trial has logged {search.metric} yet")
    out = args.out or REPORTS_DIR / args.experiment
    problem = output_dir_problem(out)
    if problem:
        raise ValueError(f"--out: {problem}")
    out.mkdir(parents=True, exist_ok=True)

    study, study_note = load_study(search, args.optuna_storage)  # before anything is written: it may be absent
    attacked = attack_trials(client, search, args) if args.robustness else []
    if attacked:
        search = load_search(client, args.experiment)
    model, model_error, registrable = None, None, search.best(finished_only=True)
    if args.register and registrable is not None:
        try:
            model = register_best_model(client, search, registrable)
        except (MlflowException, ValueError) as err:  # e.g. its checkpoint never reached MLflow: report without it
            model_error = f"best model not registered: {str(err).splitlines()[0][:300]}"
            print(f"report.py: warning: {model_error}", file=sys.stderr)
    tables = all_tables(search, baseline)
    figures = all_figures(search, study, study_note, out / "figures")
    figures.append(cost_figure(search, cost_points(search, trial_costs(client, search)), out / "figures"))
    if search.parent_params.get("scheduler") in ("pbt", "pb2"):  # learned λ(t) and occlusion strength
        from dashboards.schedules import learned_schedules
        figures.append(learned_schedules(client, search, out / "figures"))
    page = render_html(search, tables, figures, model, out)
    summary = {
        "experiment": search.experiment, "parent_run_id": search.parent_run_id, "metric": search.metric,
        "trials": len(search.trials), "best_trial": search.best().name, "robustness_attacked": attacked,
        "model": model, "model_error": model_error,
        "tables": {t.key: {"title": t.title, "columns": t.columns, "rows": t.rows, "note": t.note} for t in tables},
        "figures": {f.key: {"file": f.path.name if f.path else None, "note": f.note, "data": f.data}
                    for f in figures},
    }
    atomic.write_json(out / "report.json", summary, indent=1, default=str)
    # Same artifact paths on every run: a regenerated report replaces the previous one in the parent run.
    client.log_artifacts(search.parent_run_id, str(out), "report")
    client.set_tag(search.parent_run_id, "report", "report/report.html")
    if model:
        client.set_tag(search.parent_run_id, "best_model", model["model_uri"])
    summary["html"] = str(page)
    return summary


def open_client(uri: str):
    """An MlflowClient of the store `uri`, opened and answering; SystemExit 1 (an environment failure) naming
    --tracking-uri when it cannot be."""
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(open_tracking_store(uri, wait_s=10, create=False))
        client.search_experiments(max_results=1)
    except Exception as err:  # noqa: BLE001 - MLflow, sqlalchemy and OS errors alike
        first = str(err).splitlines()[0][:300] if str(err) else ""
        raise SystemExit(f"report.py: error: --tracking-uri (or MLFLOW_TRACKING_URI): the tracking store cannot be "
                         f"opened: {type(err).__name__}: {mask_uri(first)}") from None
    return client


def parse_args(argv=None):
    """The flags, with --attacks and --radii checked too (exit 2 before any work)."""
    from trainables.robustness import check_attacks

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.robustness:
        try:
            check_attacks([name for name in args.attacks.split(",") if name])
        except ValueError as err:
            parser.error(f"--attacks: {err}")
        try:
            radii = [float(r) for r in args.radii.split(",") if r]
        except ValueError:
            parser.error(f"--radii: expected comma-separated numbers, got {args.radii!r}")
        if any(r < 0 for r in radii):
            parser.error(f"--radii: radii must be >= 0, got {args.radii!r}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        summary = build_report(args)
    except ValueError as err:
        print(f"report.py: error: {err}", file=sys.stderr)
        return 2
    model = summary["model"]
    print(f"report: {summary['html']} (logged to MLflow run {summary['parent_run_id']} under report/)")
    if model:
        print(f"best model: {model['model_uri']} ({'already registered' if model['reused'] else 'registered'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
