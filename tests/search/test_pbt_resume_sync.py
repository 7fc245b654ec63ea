"""A resumed population: the scheduler's state rebuilt so that no member trains past the next sync epoch and no
member is exploited from a donor behind it (it would train, and report, an epoch again)."""
from types import SimpleNamespace

import pytest


def restored(trial_id: str, epoch: int | None, score: float = 0.0, status: str = "PENDING"):
    from ray.train import Checkpoint
    from ray.train._internal.session import _TrainingResult
    from ray.tune.experiment import Trial

    trial = Trial("run_trial", stub=True, trial_id=trial_id, config={"x": 0.5})
    if epoch:
        trial.run_metadata.last_result = {"epoch": epoch, "score": score}
        trial.run_metadata.checkpoint_manager._latest_checkpoint_result = _TrainingResult(
            checkpoint=Checkpoint(f"/tmp/{trial_id}_e{epoch}"), metrics={"epoch": epoch})
    trial.set_status(status)
    return trial


def scheduler(interval: int = 1):
    from ray import tune

    from search import pbt

    return pbt.SynchPBT(time_attr="epoch", metric="score", mode="max", perturbation_interval=interval, synch=True,
                        hyperparam_mutations={"x": tune.uniform(0.0, 1.0)}, quantile_fraction=0.34)


def controller(trials):
    return SimpleNamespace(search_alg=None, get_trials=lambda: trials,
                           get_live_trials=lambda: [t for t in trials if not t.is_finished()])


def test_a_resume_syncs_at_the_member_furthest_behind_and_holds_those_at_the_sync():
    # Ctrl-C after the sync at epoch 1 and one member's epoch 2; a member that never reported (epoch 0) in a
    # second population. Tune adds the restored trials latest result first.
    for trials, sync in (([restored("a", 2), restored("b", 1), restored("c", 1)], 2),
                         ([restored("a", 1), restored("b", None), restored("c", None)], 1)):
        pbt_scheduler, tune_controller = scheduler(), controller(trials)
        for trial in trials:
            pbt_scheduler.on_trial_add(tune_controller, trial)
        assert pbt_scheduler._next_perturbation_sync == sync
        # Tune would start any PENDING member as resources allow: those at the sync epoch wait PAUSED.
        assert [t.status for t in trials if t.last_result.get("epoch", 0) >= sync] == ["PAUSED"]
        assert pbt_scheduler.choose_trial_to_run(tune_controller).last_result.get("epoch", 0) < sync


@pytest.mark.parametrize("donor_epoch, exploited", [(2, False), (3, True)])
def test_a_member_is_not_exploited_from_a_donor_behind_it(donor_epoch, exploited):
    member, donor = restored("m", 3, score=0.1, status="PAUSED"), restored("d", donor_epoch, 0.9, "PAUSED")
    pbt_scheduler, tune_controller = scheduler(), controller([member, donor])
    for trial in (member, donor):
        pbt_scheduler.on_trial_add(tune_controller, trial)
    calls = []
    pbt_scheduler._exploit = lambda controller, trial, clone: calls.append((trial.trial_id, clone.trial_id))
    lower, upper = pbt_scheduler._quantiles()
    assert (lower, upper) == ([member], [donor])
    for trial in upper + lower:
        pbt_scheduler._checkpoint_or_exploit(trial, tune_controller, upper, lower)
    assert calls == ([("m", "d")] if exploited else [])
