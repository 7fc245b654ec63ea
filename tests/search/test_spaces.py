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


@pytest.mark.parametrize("name", sorted(SPACES))
def test_every_value_a_space_can_propose_is_in_range(name):
    """Each dimension at its bounds (and every categorical choice) makes a valid TrialConfig: a space whose range
    leaves what its section accepts (say lja.quantity_ratio up to 1.5) fails here, not inside a trial."""
    space = SPACES[name]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    dimensions = {}
    for _ in range(60):
        trial = study.ask()
        space.define(trial)
        dimensions.update(trial.distributions)
        study.tell(trial, 0.0)
    base = {**space.fixed, **space.paper_points[0]}
    for key, dist in dimensions.items():
        values = dist.choices if isinstance(dist, optuna.distributions.CategoricalDistribution) else (dist.low, dist.high)
        for value in values:
            TrialConfig.from_flat({**base, key: value}).validate()


def test_an_out_of_range_space_fails_validation():
    study = optuna.create_study()
    trial = study.ask()
    trial.suggest_float("lja.quantity_ratio", 0.05, 1.5)
    with pytest.raises(ValueError, match="lja.quantity_ratio"):
        TrialConfig.from_flat({"lja.quantity_ratio": trial.distributions["lja.quantity_ratio"].high}).validate()
