"""Is the gain worth it: each trial's score against what it cost, and the Pareto front of the two.

A trial's score is its best epoch's value of the search's metric (the occluded AP, as the tables read it); its
cost is the final value of the cumulative counters it logged (trainables/cost.py: device-seconds and FLOPs of its
whole run, early-stopped or resumed alike), whose sum over trials the parent run holds (search/tracking.py). A
trial is on the Pareto front when no other trial scores at least as high for at most the cost, better in one.
"""
from __future__ import annotations

from dataclasses import dataclass

from dashboards.figures import Figure, _save, plt
from dashboards.search_data import Search

AXES = (("cost/device_s", "device-seconds (wall s x devices held)"),
        ("cost/flops", "FLOPs (training + evaluation)"))


@dataclass(frozen=True)
class Point:
    """One trial: its name, score (higher is better) and cost {`cost/...` name: final value}."""
    name: str
    score: float
    cost: dict


def pareto_front(points: list[Point], cost: str) -> list[Point]:
    """The points no other point dominates (a score >= and a `cost` <=, one of them strictly), by rising cost.
    Points equal in both are all kept: neither is better. Points without `cost` are left out. O(n^2): a search
    has hundreds of trials at most."""
    have = [p for p in points if cost in p.cost]

    def dominates(q: Point, p: Point) -> bool:
        return (q.score >= p.score and q.cost[cost] <= p.cost[cost]
                and (q.score > p.score or q.cost[cost] < p.cost[cost]))

    front = [p for p in have if not any(dominates(q, p) for q in have)]
    return sorted(front, key=lambda p: (p.cost[cost], -p.score, p.name))


def label_offsets(front: list[Point], cost: str, line_pt: float = 9.0) -> list[tuple[Point, float]]:
    """(point, its name's height above the marker in points): names of points at the same place (trials that tie,
    as equal epochs give equal FLOPs) stacked one line apart instead of printed over each other."""
    seen: dict[tuple[float, float], int] = {}
    out = []
    for p in front:
        row = seen[(p.cost[cost], p.score)] = seen.get((p.cost[cost], p.score), -1) + 1
        out.append((p, 3.0 + line_pt * row))
    return out


def trial_costs(client, search: Search) -> dict[str, dict[str, float]]:
    """{run id: {`cost/...` counter: the trial's final (latest) value}} for every trial of `search`, read from its
    MLflow run (the per-epoch `cost/epoch/...` values left out)."""
    out = {}
    for trial in search.trials:
        metrics = client.get_run(trial.run_id).data.metrics
        out[trial.run_id] = {k: v for k, v in metrics.items() if k.startswith("cost/")
                             and not k.startswith("cost/epoch/")}
    return out


def cost_points(search: Search, costs: dict[str, dict[str, float]]) -> list[Point]:
    """The scored trials of `search` as Points: best-epoch score of search.metric, cost from `costs` (by run id)."""
    return [Point(t.name, t.at_best(search.metric)[search.metric], dict(costs.get(t.run_id, {})))
            for t in search.scored()]


def cost_figure(search: Search, points: list[Point], out) -> Figure:
    """search.metric against each cost axis (AXES) for every trial in `points`, the Pareto front joined and named;
    `cost.png` under `out`. No figure (a note says why) when no trial logged a cost."""
    title = f"{search.metric} against cost per trial"
    axes = [(key, label) for key, label in AXES if any(key in p.cost for p in points)]
    if not axes:
        return Figure("cost", title, None, "no trial logged its cost (cost/device_s, cost/flops: trainables/cost.py)")
    fig, panels = plt.subplots(1, len(axes), figsize=(6 * len(axes), 4.2), squeeze=False)
    data = {"points": [{"trial": p.name, search.metric: p.score, **p.cost} for p in points], "front": {}}
    for ax, (key, label) in zip(panels[0], axes):
        have = [p for p in points if key in p.cost]
        front = pareto_front(have, key)
        data["front"][key] = [p.name for p in front]
        ax.scatter([p.cost[key] for p in have], [p.score for p in have], s=18, color="#999999", label="trial")
        # The staircase: from each front trial, the best score reachable at that cost until the next one.
        ax.step([p.cost[key] for p in front], [p.score for p in front], where="post", color="#c44e52", lw=1.2)
        ax.scatter([p.cost[key] for p in front], [p.score for p in front], s=36, color="#c44e52",
                   label="Pareto front (max score, min cost)", zorder=3)
        for p, rise in label_offsets(front, key):
            ax.annotate(p.name, (p.cost[key], p.score), fontsize=7, xytext=(3, rise), textcoords="offset points")
        values = [p.cost[key] for p in have if p.cost[key] > 0]
        if values and max(values) > 30 * min(values):  # trials stopped at the grace period next to full ones
            ax.set_xscale("log")
        ax.set(xlabel=label, ylabel=search.metric, title=f"{search.metric} against {key}")
        ax.legend(fontsize=7, loc="lower right")
    totals = {k: v for k, v in search.parent_metrics.items() if k.startswith("total/cost/")}
    note = (f"Each trial's best-epoch {search.metric} against its whole run's cost (the last epoch's cumulative "
            "counters: trainables/cost.py); red: the Pareto front.")
    if totals:
        note += " The search in total (parent run): " + ", ".join(f"{k} = {v:.4g}" for k, v in sorted(totals.items()))
    data["totals"] = totals
    return _save(fig, out / "cost.png", Figure("cost", title, None, note, data=data))
