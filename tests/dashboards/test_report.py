"""The report's tables and figures on searches built in memory (the end-to-end run is in test_search_e2e.py)."""
import optuna
import pytest

from dashboards.figures import importance, learning_curves
from dashboards.search_data import Search, Trial, occludes, parse_param
from dashboards.tables import comparison, lja_grid, mimic_table, schedule_table

LJA_DEFAULTS = {"lja.enabled": True, "lja.p": 1.0, "loss.structure": True, "loss.schedule": "step",
                "loss.lambda_max": 0.25, "loss.step_at": 0.5}


def trial(name, occ_ap_by_epoch, clean_ap=0.5, **params):
    history = {"val_occ/AP": [(e + 1, v) for e, v in enumerate(occ_ap_by_epoch)],
               "val/AP": [(e + 1, clean_ap + 0.01 * e) for e in range(len(occ_ap_by_epoch))]}
    return Trial(run_id=f"run-{name}", name=name, trial_id=name, status="FINISHED",
                 params={**LJA_DEFAULTS, **params}, history=history)


def search_of(*trials, space="lja", **parent_metrics):
    return Search("exp", "1", "parent", {"space": space, "metric": "val_occ/AP"}, parent_metrics, list(trials))


def test_params_come_back_typed():
    assert parse_param("True") is True and parse_param("0.15") == 0.15 and parse_param("step") == "step"
    assert parse_param("[0.8, 0.95]") == [0.8, 0.95] and parse_param("3") == 3


def test_best_epoch_and_comparison_against_paper_default_and_plain_model():
    paper = trial("paper", [0.30, 0.42, 0.40], **{"lja.quantity_ratio": 0.15, "lja.size_ratio": 0.20})
    best = trial("best", [0.35, 0.50, 0.45], **{"lja.quantity_ratio": 0.25, "lja.size_ratio": 0.10,
                                                 "loss.schedule": "linear"})
    plain = trial("plain", [0.20, 0.31], **{"lja.enabled": False, "lja.quantity_ratio": 0.15,
                                             "lja.size_ratio": 0.20, "loss.structure": False})
    search = search_of(paper, best, plain, **{"baseline_mean_pose/val_occ/AP": 0.05})
    assert best.best_epoch("val_occ/AP") == 2 and best.at_best("val_occ/AP")["val/AP"] == pytest.approx(0.51)
    assert search.best() is best and search.paper_default() is paper and search.occlusion_free() is plain
    table = comparison(search)
    rows = {row[0]: row for row in table.rows}
    column = table.columns.index("val_occ/AP")
    assert rows["best"][column] == 0.50 and rows["paper default"][column] == 0.42
    assert rows["no occlusion"][column] == 0.31
    assert rows["best"][table.columns.index("Δ val_occ/AP vs paper default")] == "+0.0800"
    assert rows["mean pose in box (floor)"][column] == 0.05
    assert "lja.quantity_ratio=0.25" in rows["best"][-1] and "lja.quantity_ratio=0.15" in rows["paper default"][-1]


def test_comparison_says_how_to_get_a_missing_baseline():
    search = search_of(trial("a", [0.3], **{"lja.quantity_ratio": 0.3, "lja.size_ratio": 0.3}))
    rows = {row[0]: row for row in comparison(search).rows}
    assert "--baseline-run" in rows["no occlusion"][-1]
    assert "paper point was not evaluated" in rows["paper default"][-1]


def test_occlusion_free_means_no_occlusion_of_any_kind():
    assert not occludes({"lja.enabled": True, "lja.p": 0.0})
    assert occludes({"lja.enabled": True, "lja.p": 0.3})
    assert occludes({"lja.enabled": False, "occ.p_occ": 0.5})
    assert occludes({"lja.enabled": False, "occ.targeted": "partmix"})
    assert occludes({"lja.enabled": False, "oasnet.enabled": True})


def test_lja_grid_bins_ratios_to_the_paper_grid_and_keeps_each_cells_best():
    search = search_of(
        trial("a", [0.40], **{"lja.quantity_ratio": 0.151, "lja.size_ratio": 0.199}),
        trial("b", [0.45], **{"lja.quantity_ratio": 0.148, "lja.size_ratio": 0.21}),
        trial("c", [0.30], **{"lja.quantity_ratio": 0.05, "lja.size_ratio": 0.30}),
    )
    table = lja_grid(search)
    assert table.columns == ["quantity \\ size", "0.20", "0.30"]
    assert table.rows == [["0.05", "", "0.3000 (1)"], ["0.15", "0.4500 (2)", ""]]


def test_schedule_and_mimic_tables_group_by_their_choice():
    search = search_of(
        trial("s1", [0.40]), trial("s2", [0.44], **{"loss.lambda_max": 1.0}),
        trial("lin", [0.41], **{"loss.schedule": "linear"}),
        trial("mse", [0.38], **{"loss.structure": False}),
    )
    rows = {row[0]: row for row in schedule_table(search).rows}
    assert set(rows) == {"step", "linear", "none (MSE only)"}
    assert rows["step"][1:3] == [2, "s2"] and rows["step"][-1] == "1"
    assert mimic_table(search) is None

    oas = {"oasnet.enabled": True, "oasnet.lambda_mimic": 0.01}
    search = search_of(trial("l2", [0.4], **oas, **{"oasnet.mimic": "l2", "oasnet.detach": True}),
                       trial("kl", [0.5], **oas, **{"oasnet.mimic": "kl", "oasnet.detach": False}), space="oasnet")
    rows = {row[0]: row for row in mimic_table(search).rows}
    assert set(rows) == {"l2, detached", "kl, not detached"} and rows["kl, not detached"][2] == "kl"


def test_fanova_ranks_the_parameter_that_drives_the_objective_first(tmp_path):
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: 3 * t.suggest_float("lja.size_ratio", 0, 1) + 0.01 * t.suggest_float("lja.p", 0, 1),
                   n_trials=30)
    figure = importance(study, search_of(), tmp_path)
    assert figure.path.exists() and list(figure.data) == ["lja.size_ratio", "lja.p"]
    assert figure.data["lja.size_ratio"] > 0.9


def test_fanova_is_skipped_with_a_reason_for_a_single_trial(tmp_path):
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    figure = importance(study, search_of(), tmp_path)
    assert figure.path is None and "at least two" in figure.note


def test_learning_curves_draw_every_trial(tmp_path):
    figure = learning_curves(search_of(trial("a", [0.1, 0.2]), trial("b", [0.3])), tmp_path)
    assert figure.path.read_bytes()[:4] == b"\x89PNG"


def test_the_registered_model_comes_from_the_best_trial_that_finished():
    failed = trial("failed", [0.6])
    failed.status = "FAILED"  # its scores are real, but no checkpoint of it reached MLflow
    done = trial("done", [0.4])
    search = search_of(failed, done)
    assert search.best() is failed and search.best(finished_only=True) is done


def test_an_unreadable_optuna_storage_is_a_reason_not_a_crash(tmp_path):
    from dashboards.figures import load_study

    study, why = load_study(search_of(), f"sqlite:///{tmp_path / 'gone' / 'optuna.db'}")
    assert study is None and "unreadable" in why and "optuna.db" in why


def test_old_space_and_method_names_read_as_the_current_ones():
    """A search stored under `pocc` reads as `occluders` (its paper point found); `search.method` = `tilting`
    of an old `--space all` trial reads as `targeted`."""
    from types import SimpleNamespace

    from dashboards.search_data import trial_from_run

    paper = trial("paper", [0.3], **{"lja.enabled": False, "occ.p_occ": 0.5, "occ.occluder_area_max": 0.15,
                                      "model.name": "simplebaseline_r18"})
    search = search_of(paper, space="pocc")
    assert search.space == "occluders" and search.paper_default() is paper
    run = SimpleNamespace(info=SimpleNamespace(run_id="r", run_name="t", status="FINISHED"),
                          data=SimpleNamespace(tags={"trial_id": "t"}, params={"search.method": "tilting"}, metrics={}))
    assert trial_from_run(None, run).params["search.method"] == "targeted"


def test_mlflows_registration_lines_are_dropped_from_stderr_and_other_lines_kept(capsys):
    """dashboards/report.py says what it registered itself; MLflow's own registration prints are dropped."""
    from mlflow.utils.logging_utils import eprint

    from dashboards.registry import without_registration_chatter

    with without_registration_chatter():
        eprint("Successfully registered model 'e2e'.")
        eprint("Created version '1' of model 'e2e'.")
        eprint("a warning the user needs")
    assert capsys.readouterr().err == "a warning the user needs\n"
