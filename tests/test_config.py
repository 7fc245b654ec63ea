import pytest

from trainables.config import TrialConfig


def test_flat_round_trip_keeps_types():
    cfg = TrialConfig().replace(**{"lja.quantity_ratio": "0.3", "loss.structure": "false", "optim.epochs": "4"})
    assert cfg.lja.quantity_ratio == 0.3 and cfg.loss.structure is False and cfg.optim.epochs == 4
    assert TrialConfig.from_flat(cfg.flat()) == cfg


def test_unknown_keys_and_bad_values_name_the_key():
    with pytest.raises(ValueError, match="lja.quantity"):
        TrialConfig.from_flat({"lja.quantity": 0.1})
    with pytest.raises(ValueError, match="optim.epochs"):
        TrialConfig.from_flat({"optim.epochs": "ten"})
    with pytest.raises(ValueError, match="multiples of 32"):
        TrialConfig().replace(**{"data.input_w": 48}).validate()
