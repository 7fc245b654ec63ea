from dataclasses import fields

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
    with pytest.raises(ValueError, match="positive multiples of 32"):
        TrialConfig().replace(**{"data.input_h": 0}).validate()


@pytest.mark.parametrize("key, value", [
    ("data.flip_p", 1.5), ("data.decode", "argmax"), ("data.dataset", "lsp"), ("data.sigma", 0.0),
    ("model.deconv_channels", 0),
    ("lja.quantity_ratio", 1.5), ("lja.p", -0.1),
    ("occ.p_occ", 2.0), ("occ.targeted", "cutmix"), ("occ.occluder_count_max", 0),
    ("oasnet.mimic", "l1"), ("oasnet.lambda_o", -1.0), ("oasnet.lambda_mimic", -1e-3),
    ("loss.schedule", "cosine"), ("loss.lambda_max", -0.5), ("loss.step_at", 1.5), ("loss.ramp_until", -0.1),
    ("loss.exp_rate", 0.0), ("loss.structure_aware_alpha", -1.0),
    ("optim.epochs", 0), ("optim.lr", 0.0), ("optim.grad_clip", -1.0),
    ("runtime.amp", "maybe"), ("runtime.workers", 0), ("runtime.loader_workers", -1),
])
def test_an_out_of_range_value_in_any_section_fails_validate_naming_the_key(key, value):
    cfg = TrialConfig().replace(**{key: value})  # from_flat only converts types; ranges are validate()'s
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        cfg.validate()


def test_every_section_validates_itself_and_the_defaults_pass():
    cfg = TrialConfig()
    assert cfg.validate() is cfg
    for section in fields(cfg):
        assert getattr(cfg, section.name).validate() is getattr(cfg, section.name)


def test_sections_are_the_components_own_dataclasses():
    from datasets.occlusion import LJAConfig, OcclusionConfig
    from trainables.losses import LossConfig
    from trainables.oasnet import OASNetConfig

    cfg = TrialConfig()
    assert (type(cfg.lja), type(cfg.occ), type(cfg.oasnet), type(cfg.loss)) == (
        LJAConfig, OcclusionConfig, OASNetConfig, LossConfig)


def test_flat_keys_are_unchanged():
    """Stored experiments and MLflow params use these names."""
    keys = set(TrialConfig().flat())
    assert {"loss.schedule", "loss.lambda_max", "loss.step_at", "loss.ramp_until", "loss.exp_rate",
            "loss.structure", "loss.structure_aware_alpha", "oasnet.enabled", "oasnet.mimic", "oasnet.detach",
            "oasnet.lambda_mimic", "oasnet.lambda_o", "lja.quantity_ratio", "lja.size_ratio", "lja.p",
            "lja.enabled", "data.decode", "search.method"} <= keys
