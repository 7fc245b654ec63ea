"""dashboards/cost.py: the Pareto front of score against cost, and the figure the report embeds."""
import json

from dashboards.cost import Point, cost_figure, cost_points, label_offsets, pareto_front
from dashboards.search_data import Search, Trial
from dashboards.report import render_html


def point(name, score, device_s, flops=None):
    return Point(name, score, {"cost/device_s": device_s, **({"cost/flops": flops} if flops is not None else {})})


# Hand-made: cheap-but-weak a, balanced b, best-but-dear d; c is dominated by b (costs more, scores less), e is
# dominated by b (same cost, scores less), f equals b in both (neither is better: both kept), g has no cost.
POINTS = [point("a", 0.30, 10, 1e12), point("b", 0.45, 40, 3e12), point("c", 0.40, 60, 2e12),
          point("d", 0.50, 200, 9e12), point("e", 0.44, 40, 5e12), point("f", 0.45, 40, 3e12),
          Point("g", 0.9, {})]


def test_pareto_front_keeps_the_non_dominated_trials_by_rising_cost():
    assert [p.name for p in pareto_front(POINTS, "cost/device_s")] == ["a", "b", "f", "d"]
    # by FLOPs c (2e12) is no longer dominated: cheaper than b and better than a
    assert [p.name for p in pareto_front(POINTS, "cost/flops")] == ["a", "c", "b", "f", "d"]
    assert pareto_front([], "cost/flops") == [] and pareto_front(POINTS[-1:], "cost/flops") == []
    single = [point("only", 0.1, 5)]
    assert pareto_front(single, "cost/device_s") == single


def test_names_of_tied_front_trials_are_stacked_not_printed_over_each_other():
    front = pareto_front(POINTS, "cost/flops")  # b and f tie: the same FLOPs and score
    offsets = {p.name: rise for p, rise in label_offsets(front, "cost/flops")}
    assert offsets["b"] != offsets["f"] and abs(offsets["b"] - offsets["f"]) >= 9
    assert offsets["a"] == offsets["c"] == offsets["d"] == min(offsets.values())


def trial(name, occ_ap_by_epoch):
    return Trial(run_id=f"run-{name}", name=name, trial_id=name, status="FINISHED", params={},
                 history={"val_occ/AP": [(e + 1, v) for e, v in enumerate(occ_ap_by_epoch)]})


def test_points_take_the_best_epoch_score_and_the_final_cost(tmp_path):
    search = Search("exp", "1", "parent", {"space": "lja", "metric": "val_occ/AP"},
                    {"total/cost/device_s": 50.0, "total/cost/flops": 4e12, "cost/flops": 1.0},
                    [trial("t1", [0.2, 0.35, 0.3]), trial("t2", [0.4]), trial("unscored", [])])
    costs = {"run-t1": {"cost/device_s": 30.0, "cost/flops": 3e12}, "run-t2": {"cost/device_s": 20.0,
                                                                              "cost/flops": 1e12}}
    points = cost_points(search, costs)
    assert [(p.name, p.score, p.cost["cost/device_s"]) for p in points] == [("t1", 0.35, 30.0), ("t2", 0.4, 20.0)]

    figure = cost_figure(search, points, tmp_path)
    png = (tmp_path / "cost.png").read_bytes()
    assert figure.path == tmp_path / "cost.png" and png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert figure.data["front"] == {"cost/device_s": ["t2"], "cost/flops": ["t2"]}  # t2: better and cheaper
    # the totals are the parent's total/cost/... (its cost/... are the best trial's: search/status.py)
    assert figure.data["totals"] == {"total/cost/device_s": 50.0, "total/cost/flops": 4e12}
    assert "total/cost/flops = 4e+12" in figure.note
    json.dumps(figure.data)  # report.json takes it as it is

    page = render_html(search, [], [figure], None, tmp_path).read_text()
    assert "val_occ/AP against cost per trial" in page and page.count("data:image/png;base64,") == 1


def test_a_search_without_cost_metrics_gets_a_reason_not_a_figure(tmp_path):
    search = Search("exp", "1", "parent", {"space": "lja", "metric": "val_occ/AP"}, {}, [trial("old", [0.3])])
    figure = cost_figure(search, cost_points(search, {}), tmp_path)
    assert figure.path is None and "no trial logged its cost" in figure.note
    assert not (tmp_path / "cost.png").exists()
