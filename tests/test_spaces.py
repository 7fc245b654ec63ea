"""Every search space: its suggestions and its paper point make valid trial configs."""
import optuna
import pytest

from search.spaces import SPACES
from trainables.config import TrialConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_space_suggestions_and_paper_point_are_valid_trial_configs(name):
    space = SPACES[name]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        space.define(trial)
        TrialConfig.from_flat({**space.fixed, **trial.params}).validate()
        seen |= set(trial.params)
        study.tell(trial, 0.0)
    for point in space.paper_points:
        assert set(point) <= seen, set(point) - seen
        TrialConfig.from_flat({**space.fixed, **point}).validate()


def test_oasnet_kl_weights_use_their_own_range():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(60):
        trial = study.ask()
        SPACES["oasnet"].define(trial)
        weight = trial.params["oasnet.lambda_mimic"]
        if trial.params["oasnet.mimic"] == "kl":
            assert 1.0 <= weight <= 1000.0
        else:
            assert 1e-4 <= weight <= 1e-1
        study.tell(trial, 0.0)


def test_old_space_names_are_aliases_and_old_all_experiments_keep_their_choices():
    """`pocc`/`tilting` name the renamed spaces; `all_space` (pickled by `--space all` searches made before the
    rename) still proposes the old method names, which its stored study requires, and valid trial configs."""
    from search.spaces import ALIASES, LEGACY_METHODS, all_space, canonical, pocc_space, tilting_space

    assert canonical("pocc") == "occluders" and canonical("tilting") == "targeted" and canonical("lja") == "lja"
    assert set(ALIASES.values()) <= set(SPACES)
    assert pocc_space is SPACES["occluders"].define and tilting_space is SPACES["targeted"].define
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        fixed = all_space(trial)
        seen.add(trial.params["search.method"])
        TrialConfig.from_flat({**fixed, **trial.params}).validate()
        study.tell(trial, 0.0)
    assert seen == set(LEGACY_METHODS)
