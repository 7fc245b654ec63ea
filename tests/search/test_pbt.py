"""Population-based training (search/pbt.py): the perturbed ranges, clipping, the initial population from Optuna,
the learning rate a restored optimiser takes from the new config, and (e2e) a PBT smoke search that exploits,
records the schedule and lineage in MLflow, keeps its books in agreement and resumes after Ctrl-C."""
import math
import re
import signal
from argparse import Namespace

import optuna
import pytest
import torch

from conftest import wait_for_line
from search import pbt
from search.tracking import ROLE_TAG
from search.spaces import SPACES
from trainables import checkpoint, cost
from trainables.config import TrialConfig
from trainables.runtime import apply_config_lr

METRIC_NAME = re.compile(r"^[A-Za-z0-9_\-.:/ ]+$")  # what MLflow accepts in a metric name


def test_bounds_are_the_lja_spaces_own_ranges_and_the_lr_around_the_recipes():
    ranges = pbt.bounds(1e-3)
    assert set(ranges) == set(pbt.PERTURBED)
    assert ranges["lja.quantity_ratio"] == (0.05, 0.40, False) and ranges["lja.p"] == (0.0, 1.0, False)
    assert ranges["loss.lambda_max"] == (0.1, 3.0, True)
    assert ranges["optim.lr"][:2] == pytest.approx((1e-4, 1e-2)) and ranges["optim.lr"][2]


def test_clip_keeps_perturbed_values_in_range_and_leaves_others():
    clip = pbt.Clip((("lja.p", 0.0, 1.0), ("loss.lambda_max", 0.1, 3.0)))
    out = clip({"lja.p": 1.2, "loss.lambda_max": 0.08, "optim.epochs": 6})
    assert out == {"lja.p": 1.0, "loss.lambda_max": 0.1, "optim.epochs": 6}


def test_hparam_metric_names_are_valid_mlflow_names_and_trial_index():
    metrics = pbt.hparam_metrics({**TrialConfig().flat(), "optim.lr": 2e-3})
    assert set(metrics) == {f"hparam/{k}" for k in pbt.PERTURBED} and metrics["hparam/optim.lr"] == 2e-3
    assert all(METRIC_NAME.match(name) for name in [*metrics, pbt.DONOR_METRIC, pbt.DONOR_EPOCH_METRIC])
    assert pbt.trial_index("2f3a1_00003") == 3


def test_initial_population_starts_with_the_paper_point_and_records_each_member(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = Namespace(experiment="pop", optuna_storage=storage, searcher="tpe", seed=0, num_samples=3)
    configs, ids = pbt.initial_population(args, SPACES["lja"].paper_points, 1e-3)
    assert len(configs) == 3 and len(set(ids)) == 3
    # The paper's LJA point with its λ_max; the step schedule's own step_at is not perturbed, so it is dropped.
    assert configs[0] == {"lja.quantity_ratio": 0.15, "lja.size_ratio": 0.2, "lja.p": 1.0, "loss.lambda_max": 0.25,
                          "optim.lr": 1e-3}
    ranges = pbt.bounds(1e-3)
    for config in configs:
        assert set(config) == set(pbt.PERTURBED)
        assert all(ranges[k][0] <= v <= ranges[k][1] for k, v in config.items())
    study = optuna.load_study(study_name="pop", storage=storage)
    assert [t.state.name for t in study.trials] == ["RUNNING"] * 3
    assert [t.params for t in study.trials] == configs


def _optimizer(lr: float):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    return model, optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, [2], gamma=0.1)


def test_restored_optimizer_takes_the_new_configs_lr_and_keeps_its_decays(tmp_path):
    """A donor trained at 1e-3 through its x0.1 step at epoch 2; the exploiting trial's config says 4e-3: it goes on
    at 4e-4 (the decay taken stays), and the scheduler keeps counting epochs. The same rate is a no-op."""
    model, optimizer, scheduler = _optimizer(1e-3)
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)
    cfg = TrialConfig().replace(**{"optim.lr": 1e-3})
    checkpoint.save(tmp_path, model, optimizer, scheduler, 1, cfg, {"epoch": 2})

    model, optimizer, scheduler = _optimizer(4e-3)
    start, _ = checkpoint.restore(tmp_path, model, optimizer, scheduler, torch.device("cpu"))
    assert start == 2 and optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)  # the donor's
    assert apply_config_lr(optimizer, scheduler, tmp_path, 4e-3) == pytest.approx(4.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(4e-4)
    assert scheduler.base_lrs == pytest.approx([4e-3]) and scheduler.get_last_lr() == pytest.approx([4e-4])
    assert scheduler.last_epoch == 2
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(4e-4)  # no milestone left: the rate holds
    model, optimizer, scheduler = _optimizer(1e-3)
    checkpoint.restore(tmp_path, model, optimizer, scheduler, torch.device("cpu"))
    assert apply_config_lr(optimizer, scheduler, tmp_path, 1e-3) == 1.0  # a plain resume: unchanged
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)


@pytest.mark.parametrize("flags, message", [
    (["--space", "oasnet", "--scheduler", "pbt"], "it needs --space lja\n"),  # only what is wrong is named
    (["--space", "lja", "--scheduler", "pb2", "--searcher", "grid"], "it needs --searcher tpe or random"),
    (["--space", "lja", "--scheduler", "pbt", "--multi-objective"], "it needs one objective, not --multi-objective"),
    (["--space", "oasnet", "--scheduler", "pbt", "--multi-objective"], "--space lja; one objective"),
    (["--space", "lja", "--scheduler", "pbt", "--grace-period", "2"], "--grace-period applies to --scheduler asha"),
    (["--space", "lja", "--scheduler", "fifo", "--grace-period", "2"], "--grace-period applies to --scheduler asha"),
    (["--space", "lja", "--perturbation-interval", "2"], "applies to --scheduler pbt or pb2"),
    (["--space", "lja", "--scheduler", "pbt", "--perturbation-interval", "0"], "--perturbation-interval"),
    (["--space", "lja", "--scheduler", "pbt", "--perturbation-interval", "7"], "less than --epochs 6"),
    (["--space", "lja", "--scheduler", "pb2", "--epochs", "3", "--perturbation-interval", "3"], "less than --epochs 3"),
    (["--space", "lja", "--scheduler", "pbt", "--smoke", "--perturbation-interval", "2"], "less than --epochs 1"),
])
def test_bad_population_flags_exit_2_naming_the_flag(flags, message, capsys):
    from search.cli import parse_args

    with pytest.raises(SystemExit) as exit_:
        parse_args(flags)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_default_perturbation_interval_is_a_third_of_the_epochs():
    from search.cli import parse_args

    assert parse_args(["--space", "lja", "--scheduler", "pbt"]).perturbation_interval == 2  # 6 epochs
    assert parse_args(["--space", "lja", "--scheduler", "pbt", "--smoke"]).perturbation_interval == 1
    assert parse_args(["--space", "lja", "--scheduler", "pb2", "--epochs", "9", "--perturbation-interval", "4"]) \
        .perturbation_interval == 4
    assert parse_args(["--space", "lja"]).perturbation_interval is None
    # a resumed search's epochs are its own (not yet read here): the same interval again is not refused
    assert parse_args(["--space", "lja", "--scheduler", "pbt", "--resume", "--experiment", "x",
                       "--perturbation-interval", "10"]).perturbation_interval == 10


POPULATION_PROBE = """
import json, os, sys, tempfile, time
import ray
from ray import tune
from ray.tune.search.basic_variant import BasicVariantGenerator
from search import pbt, tuner
from search.local_ray import init_kwargs

log = sys.argv[1]

def member(config):
    started, epoch = time.time(), 0
    if (restored := tune.get_checkpoint()) is not None:
        epoch = int(open(os.path.join(restored.to_directory(), "epoch")).read())
    while epoch < 3:
        time.sleep(1.0)
        epoch += 1
        with open(log, "a") as f:
            f.write(json.dumps([tune.get_context().get_trial_id(), started, time.time()]) + chr(10))
        out = tempfile.mkdtemp()
        open(os.path.join(out, "epoch"), "w").write(str(epoch))
        tune.report({"epoch": epoch, "score": config["x"] * epoch}, checkpoint=tune.Checkpoint.from_directory(out))

ray.init(num_cpus=2, **init_kwargs())
scheduler = pbt.SynchPBT(time_attr="epoch", metric="score", mode="max", perturbation_interval=1, synch=True,
                         hyperparam_mutations={"x": tune.uniform(0.0, 1.0)}, quantile_fraction=0.34)
population = BasicVariantGenerator(points_to_evaluate=[{"x": v} for v in (.2, .5, .8)])  # as PopulationSearch
grid = tune.Tuner(tune.with_resources(member, tuner.driver_resources(2)), param_space={"x": 0.5},
                  tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=3, max_concurrent_trials=2,
                                              search_alg=population),
                  run_config=tune.RunConfig(storage_path=os.path.dirname(log), stop={"epoch": 3}, verbose=0)).fit()
print(json.dumps(sorted(r.metrics["epoch"] for r in grid)))
"""


@pytest.mark.parametrize("concurrent", [1, 2, 3, 7, 64, 999])
def test_each_driver_holds_a_share_of_the_trial_slots_that_fits_exactly_max_concurrent_times(concurrent):
    from search.local_ray import init_kwargs
    from search.tuner import HEAD_NODE_RESOURCE, TRIAL_SLOTS, driver_resources

    declared = init_kwargs()["resources"][TRIAL_SLOTS]  # what a local search's Ray has (cluster.yaml's head too)
    bundle, = driver_resources(concurrent).bundles
    assert bundle.get("CPU", 0) == 0 and bundle[HEAD_NODE_RESOURCE] == 0.001  # Ray Train's head actors need the rest
    assert bundle[TRIAL_SLOTS] * concurrent <= declared < bundle[TRIAL_SLOTS] * (concurrent + 1)
    assert TRIAL_SLOTS not in driver_resources(concurrent, slots=False).bundles[0]  # a cluster without them


def most_running_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


@pytest.mark.e2e
def test_a_population_larger_than_the_concurrent_trials_runs_that_many_at_once(tmp_path):
    """Tune ignores max_concurrent_trials for the population's generator and counts a paused member as live, so
    with the drivers' old token share of the head (0.001) all three members ran at once here (their Train runs then
    timed out waiting for two CPUs); search/tuner.py driver_resources gives each 1/max_concurrent of the head. Three
    members, 2 at a time, three epochs with a synchronous exploit after each: every member ends its last epoch and
    at most 2 run at any moment (each run of a member: from its (re)start to its last report)."""
    import json
    import os
    import subprocess
    import sys

    from conftest import REPO_ROOT

    log = tmp_path / "running.jsonl"
    out = subprocess.run([sys.executable, "-c", POPULATION_PROBE, str(log)], cwd=tmp_path, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [3, 3, 3]
    runs = {}
    for trial, started, reported in map(json.loads, log.read_text().splitlines()):
        runs[(trial, started)] = (started, max(reported, runs.get((trial, started), (0, 0))[1]))
    assert most_running_at_once(list(runs.values())) == 2


@pytest.mark.e2e
def test_pbt_smoke_search_exploits_records_its_schedule_and_resumes_after_ctrl_c(tmp_path, search_cli):
    """Two members, four epochs, a perturbation every epoch (synchronous: at each one the weaker member copies the
    stronger's checkpoint). Ctrl-C once a member trained an epoch after the first exploit; --resume finishes. Each
    run logs epochs 1-4 once with hparam/<key> per epoch; an exploited run names its donor (pbt/donor) at the epoch
    after the exploit, where its hyperparameters changed and its learning rate is the new one; the books agree."""
    from mlflow.tracking import MlflowClient

    common = ["--space", "lja", "--smoke", "--storage-path", tmp_path / "ray", "--experiment", "pop"]
    proc = search_cli.start(*common, "--scheduler", "pbt", "--num-samples", "2", "--epochs", "4",
                            "--perturbation-interval", "1")
    before = wait_for_line(proc, "] epoch 2:", timeout=900)  # epoch 2 follows the exploit at epoch 1
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=300)
    output = "".join(before) + output
    assert proc.returncode == 130, output[-3000:]

    resumed = search_cli.run(*common, "--resume", timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-2000:]
    assert "Tune, Optuna and MLflow agree on all 2 trials" in resumed.stdout + resumed.stderr

    client = MlflowClient(search_cli.tracking_uri)
    experiment = client.get_experiment_by_name("pop")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if "trial_id" in r.data.tags]
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    index = {pbt.trial_index(r.data.tags["trial_id"]): r for r in runs}

    def history(run, name):
        return {m.step: m.value for m in client.get_metric_history(run.info.run_id, name)}

    # Each epoch trained once: its metrics logged once (a member restarted behind its own checkpoint, or from a
    # donor's older one, would log an epoch's step again) and the console shows it once over both runs.
    for run in runs:
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/AP")) == [1, 2, 3, 4]
    shown = re.findall(r"^\[(\w+)\] epoch (\d+):", output + resumed.stdout, flags=re.M)
    assert len(shown) == len(set(shown)) == 8, shown  # (a member restored ahead trained past the sync, then again)
    exploits = 0
    for run in runs:
        hparams = {key: history(run, f"hparam/{key}") for key in pbt.PERTURBED}
        assert all(sorted(h) == [1, 2, 3, 4] for h in hparams.values())
        assert run.data.params["loss.schedule"] == "constant"
        for step, donor in history(run, pbt.DONOR_METRIC).items():
            exploits += 1
            assert int(donor) in index and index[int(donor)].info.run_id != run.info.run_id
            assert history(run, pbt.DONOR_EPOCH_METRIC)[step] == step - 1
            before, after = ({k: hparams[k][s] for k in pbt.PERTURBED} for s in (step - 1, step))
            assert before != after, (step, before, after)
            milestones = {max(1, round(f * 4)) for f in TrialConfig().optim.lr_decay_at}  # trainables/train.py's
            decays = sum(m < step for m in milestones)  # x0.1 steps taken before this epoch
            assert math.isclose(history(run, "train/lr")[step], after["optim.lr"] * 0.1 ** decays, rel_tol=1e-6)
    assert exploits >= 1
    # The search's cost counts each epoch once, by the member that ran it: an exploiting member's cumulative
    # counters continue its donor's (its model's cost), so the parent sums the per-epoch values, not the finals.
    parent, = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get(ROLE_TAG) == "parent"]
    for counter in cost.COUNTERS:
        ran = [history(run, cost.metric(counter, epoch=True)) for run in runs]
        assert all(sorted(epochs) == [1, 2, 3, 4] for epochs in ran)
        assert parent.data.metrics["total/" + cost.metric(counter)] == pytest.approx(sum(map(sum, (
            e.values() for e in ran))), rel=1e-9), counter
    study = optuna.load_study(study_name="pop", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "COMPLETE"]
    assert all(set(t.user_attrs[pbt.FINAL_ATTR]) == set(pbt.PERTURBED) for t in study.trials)


def test_tunes_reuse_actors_advice_is_silenced_on_import_for_a_resume_too():
    """A --resume restores the Tuner without calling pbt.setup: the filter must already hold once search.pbt is
    imported (run_search imports it on both paths), or the resumed search prints Tune's advice as a warning."""
    import subprocess
    import sys

    code = ("import warnings, search.pbt\n"
            "warnings.warn('Consider boosting PBT performance by enabling `reuse_actors`', UserWarning)\n")
    from pathlib import Path

    proc = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])  # the repository root: search/ importable
    assert proc.returncode == 0 and "Consider boosting" not in proc.stderr, proc.stderr
