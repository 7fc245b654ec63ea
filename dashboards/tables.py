"""The report's tables, in the shape of the papers' own: best trial against its baselines, LJA's quantity x size
grid, the structure-loss schedules and the mimic losses. Each is a Table of strings/numbers, rendered elsewhere."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from dashboards.search_data import OCCLUDED_METRICS, Search, Trial
from datasets.meta import DATASETS
from datasets.occlusion.lja import paper_point as lja_paper_point

SEARCHED_PREFIXES = ("lja.", "loss.", "occ.", "oasnet.", "model.name", "search.method")
GRID_STEP = 0.05  # the LJA paper's grid spacing; searched ratios are binned to it


@dataclass
class Table:
    key: str
    title: str
    columns: list[str]
    rows: list[list] = field(default_factory=list)
    note: str = ""


def searched_config(trial: Trial, varying: set[str]) -> str:
    return ", ".join(f"{k}={_short(trial.params[k])}" for k in sorted(varying) if k in trial.params)


def varying_params(search: Search) -> set[str]:
    """Parameters whose value differs between trials: what the search actually explored."""
    values = defaultdict(set)
    for trial in search.trials:
        for key, value in trial.params.items():
            if key.startswith(SEARCHED_PREFIXES):
                values[key].add(repr(value))
    return {k for k, v in values.items() if len(v) > 1}


def occluded_metrics(search: Search) -> list[str]:
    """The occluded-side columns in the clean metric's own family (AP beside AP, PCKh beside PCKh)."""
    clean = search.clean_metric()
    family = clean.rsplit("/", 1)[-1] if clean else DATASETS.get(search.dataset, DATASETS["synthetic"]).main_key
    return [m for m in search.metrics_present(OCCLUDED_METRICS) if m.endswith("/" + family)]


def comparison(search: Search, baseline: Trial | None = None) -> Table:
    """Best trial vs the paper's default point vs a model trained without occlusion, clean and occluded."""
    clean = search.clean_metric()
    occluded = occluded_metrics(search)
    metric = search.metric
    columns = ["", "trial"] + ([clean] if clean else []) + occluded
    if metric not in columns:
        columns.append(metric)
    columns += [f"Δ {metric} vs paper default", "config"]
    table = Table("comparison", "Best trial against the baselines", columns)
    varying = varying_params(search)
    best, paper = search.best(), search.paper_default()
    plain = baseline or search.occlusion_free()
    reference = paper.at_best(metric).get(metric) if paper else None
    for label, trial in (("best", best), ("paper default", paper), ("no occlusion", plain)):
        if trial is None:
            why = {"paper default": "the space's paper point was not evaluated",
                   "no occlusion": "no trial trained without occlusion here; pass --baseline-run RUN_ID"}
            table.rows.append([label, "—"] + ["—"] * (len(columns) - 3) + [why.get(label, "no scored trial")])
            continue
        scores = trial.at_best(metric)
        delta = scores[metric] - reference if reference is not None and metric in scores else None
        table.rows.append([label, trial.name] + [scores.get(c) for c in columns[2:-2]]
                          + [_signed(delta), searched_config(trial, varying) or "(defaults)"])
    floor = {c: search.parent_metrics.get(f"baseline_mean_pose/{c}") for c in columns[2:-2]}
    if any(v is not None for v in floor.values()):
        table.rows.append(["mean pose in box (floor)", "—"] + list(floor.values()) + ["", "no training"])
    table.note = (f"Each trial's numbers are from its best epoch by {metric}, the epoch its best checkpoint holds. "
                  "Δ is against the paper-default trial.")
    return table


def lja_grid(search: Search) -> Table | None:
    """LJA's quantity ratio x size ratio: the best searched metric in each cell (trials binned to the paper's 0.05
    grid), with the number of trials."""
    cells = defaultdict(list)
    for trial in search.scored():
        if not trial.param("lja.enabled") or float(trial.param("lja.p", 1.0)) <= 0 \
                or "lja.quantity_ratio" not in trial.params:
            continue  # ratios of an LJA that never fires say nothing
        q, s = (_bin(trial.param(k)) for k in ("lja.quantity_ratio", "lja.size_ratio"))
        cells[q, s].append(trial.at_best(search.metric)[search.metric])
    if len({q for q, _ in cells}) < 2 and len({s for _, s in cells}) < 2:
        return None
    sizes = sorted({s for _, s in cells})
    table = Table("lja_grid", f"LJA quantity × size: best {search.metric} (trials)",
                  ["quantity \\ size"] + [f"{s:.2f}" for s in sizes])
    for q in sorted({q for q, _ in cells}):
        table.rows.append([f"{q:.2f}"] + [f"{max(cells[q, s]):.4f} ({len(cells[q, s])})" if cells.get((q, s))
                                          else "" for s in sizes])
    paper = lja_paper_point()
    table.note = (f"Searched ratios are binned to the nearest {GRID_STEP:g}; the paper's point is "
                  f"{paper['lja.quantity_ratio']:.2f} × {paper['lja.size_ratio']:.2f}.")
    return table


def schedule_table(search: Search) -> Table | None:
    """The dynamic structure loss's λ schedules (and no structure loss), each at its best trial."""
    groups = defaultdict(list)
    for trial in search.scored():
        if "loss.schedule" in trial.params:
            groups[trial.param("loss.schedule") if trial.param("loss.structure") else "none (MSE only)"].append(trial)
    if len(groups) < 2:
        return None
    return _grouped(search, "schedules", "Structure-loss λ schedule", "schedule", groups,
                    extra=("loss.lambda_max",))


def mimic_table(search: Search) -> Table | None:
    """OASNet's mimic losses (L2, cosine, KL, Sinkhorn), detached or not, each at its best trial."""
    groups = defaultdict(list)
    for trial in search.scored():
        if trial.param("oasnet.enabled"):
            detached = "detached" if trial.param("oasnet.detach") else "not detached"
            groups[f"{trial.param('oasnet.mimic')}, {detached}"].append(trial)
    if not groups:
        return None
    return _grouped(search, "mimic", "OASNet mimic loss", "mimic loss", groups, extra=("oasnet.lambda_mimic",))


def _grouped(search: Search, key: str, title: str, label: str, groups: dict, extra: tuple) -> Table:
    clean = search.clean_metric()
    shown = ([clean] if clean else []) + occluded_metrics(search)
    if search.metric not in shown:
        shown.append(search.metric)
    table = Table(key, title, [label, "trials", "best trial"] + shown + list(extra))
    for name, trials in sorted(groups.items(), key=lambda kv: kv[0]):
        best = max(trials, key=lambda t: t.at_best(search.metric)[search.metric])
        scores = best.at_best(search.metric)
        table.rows.append([name, len(trials), best.name] + [scores.get(m) for m in shown]
                          + [_short(best.param(e)) for e in extra])
    table.note = f"Each row's numbers are its best trial's (by {search.metric}) at that trial's best epoch."
    return table


def all_tables(search: Search, baseline: Trial | None = None) -> list[Table]:
    tables = [comparison(search, baseline)]
    tables += [t for t in (lja_grid(search), schedule_table(search), mimic_table(search)) if t is not None]
    return tables


def _bin(value) -> float:
    return round(round(float(value) / GRID_STEP) * GRID_STEP, 4)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _signed(value) -> str:
    return "" if value is None else f"{value:+.4f}"
