"""search/warm_start.py: a finished study's best trials, replayed through a new space, become the first trials of a
new search; those the new space cannot take are reported and skipped (issue 19 item 3)."""
import argparse

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from search.spaces import SPACES
from trainables.losses import SCHEDULES
from search.warm_start import WarmStart, WarmStartError, parse_warm_start, warm_points

LJA = SPACES["lja"].define


def test_parse_warm_start():
    assert parse_warm_start("lja-20261130-101500") == WarmStart("lja-20261130-101500", 5)
    assert parse_warm_start("cheap:3") == WarmStart("cheap", 3)
    for bad in ("cheap:0", "cheap:", ":3", "cheap:-1", "a:b:2", "../up:2"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_warm_start(bad)


def _add(study, params: dict, values):
    """A completed trial of `params` (values: one float, or a list for a two-objective study); wide ranges, as the
    source study's own space may differ from the new one."""
    distributions = {k: CategoricalDistribution(SCHEDULES) if isinstance(v, str) else FloatDistribution(-10.0, 10.0)
                     for k, v in params.items()}
    study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                              **({"values": values} if isinstance(values, list) else
                                                 {"value": values})))


STEP = {"lja.quantity_ratio": 0.15, "lja.size_ratio": 0.2, "lja.p": 0.5, "loss.schedule": "step",
        "loss.lambda_max": 0.25, "loss.step_at": 0.5}


@pytest.fixture
def storage(tmp_path):
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def test_the_best_trials_come_first_and_the_unfit_are_skipped_with_the_reason(storage):
    study = optuna.create_study(study_name="cheap", storage=storage, direction="maximize")
    _add(study, STEP, 0.30)
    _add(study, {**STEP, "occ.p_occ": 0.5}, 0.50)  # a parameter the lja space does not define
    _add(study, {**STEP, "lja.p": 1.5}, 0.45)  # outside lja.p's [0, 1]
    _add(study, {k: v for k, v in STEP.items() if k != "loss.lambda_max"}, 0.40)  # the sampler draws lambda_max
    linear = {**{k: v for k, v in STEP.items() if k != "loss.step_at"}, "loss.schedule": "linear",
              "loss.ramp_until": 0.7}
    _add(study, linear, 0.35)  # another branch of the conditional space
    _add(study, STEP, 0.10)  # below the top 5
    points, record = warm_points(WarmStart("cheap", 5), storage, LJA)
    assert [r["values"][0] for r in record] == [0.50, 0.45, 0.40, 0.35, 0.30]
    assert [r["outcome"] for r in record] == [
        "not in the new space: occ.p_occ",
        "outside the new space's range: lja.p=1.5",
        "enqueued; the sampler draws loss.lambda_max",
        "enqueued",
        "enqueued",
    ]
    assert points == [{k: v for k, v in STEP.items() if k != "loss.lambda_max"}, linear, STEP]


def test_a_two_objective_study_is_ranked_by_its_occluded_metric(storage):
    study = optuna.create_study(study_name="pareto", storage=storage, directions=["maximize", "maximize"])
    _add(study, {**STEP, "lja.p": 0.1}, [0.9, 0.2])
    _add(study, {**STEP, "lja.p": 0.2}, [0.5, 0.6])
    points, _ = warm_points(WarmStart("pareto", 1), storage, LJA)
    assert points == [{**STEP, "lja.p": 0.2}]


def test_a_missing_or_empty_study_is_named(storage):
    with pytest.raises(WarmStartError, match="no Optuna study named 'nothing'"):
        warm_points(WarmStart("nothing", 2), storage, LJA)
    optuna.create_study(study_name="empty", storage=storage)
    with pytest.raises(WarmStartError, match="'empty' has no completed trial"):
        warm_points(WarmStart("empty", 2), storage, LJA)


def test_points_of_one_space_fit_another_only_where_they_share_parameters(storage):
    study = optuna.create_study(study_name="lja-run", storage=storage, direction="maximize")
    _add(study, STEP, 0.3)
    points, record = warm_points(WarmStart("lja-run", 1), storage, SPACES["occluders"].define)
    assert points == [] and record[0]["outcome"].startswith("not in the new space: lja.p, lja.quantity_ratio")


def test_the_search_refuses_an_unknown_source_before_writing(tmp_path, monkeypatch, capsys):
    """search/run.py --warm-start of a study that is not there: exit 2 naming it, no store, study or experiment
    made (a missing sqlite file is not created by the lookup)."""
    from search.run import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    argv = ["--space", "lja", "--smoke", "--storage-path", str(tmp_path / "ray"), "--experiment", "new"]
    assert main(argv + ["--warm-start", "nothing:2"]) == 2
    assert "does not exist, so it holds no study 'nothing'" in capsys.readouterr().err
    optuna.create_study(study_name="other", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert main(argv + ["--warm-start", "nothing:2"]) == 2
    assert "no Optuna study named 'nothing'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optuna.db"]
    with pytest.raises(SystemExit):
        main(argv + ["--warm-start", "new"])
    assert "names the new search itself" in capsys.readouterr().err
