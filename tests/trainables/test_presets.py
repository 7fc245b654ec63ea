"""Recipes: one set of augmentation defaults each; the synthetic one is DataConfig's defaults, HRNet's its numbers."""
import pytest

from datasets import meta
from trainables.config import TrialConfig
from trainables.presets import RECIPES, recipe, recipe_for, recipe_name


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_is_a_valid_trial_config(name):
    TrialConfig().replace(**recipe(name)).validate()


def test_synthetic_recipe_is_the_data_config_defaults():
    assert TrialConfig().replace(**recipe("synthetic")) == TrialConfig()
    assert recipe_for("synthetic", smoke=True) == recipe("synthetic")


def test_hrnet_recipes_use_hrnet_numbers_at_the_dataset_input():
    for dataset in ("coco", "crowdpose", "ochuman", "mpii"):
        cfg = TrialConfig().replace(**recipe_for(dataset))
        d = cfg.data
        # HRNet's experiments/coco and experiments/mpii configs (SCALE_FACTOR, ROT_FACTOR, PROB_HALF_BODY; FLIP),
        # with its JointsDataset's rotation probability 0.6.
        expected = (0.25, 30.0, 0.6, 0.5, 0.0, True) if dataset == "mpii" else (0.35, 45.0, 0.6, 0.5, 0.3, True)
        assert (d.scale_factor, d.rotation, d.rotation_p, d.flip_p, d.half_body_p, d.flip_test) == expected
        assert (d.input_h, d.input_w) == meta.get(dataset).input_hw
        assert cfg.model.name == "simplebaseline_r50"
    assert recipe_name("mpii") == "hrnet_mpii" and recipe_name("coco") == "hrnet_coco"
    assert (recipe("hrnet_coco")["data.input_h"], recipe("hrnet_coco")["data.input_w"]) == (256, 192)
    assert (recipe("hrnet_mpii")["data.input_h"], recipe("hrnet_mpii")["data.input_w"]) == (256, 256)


def test_smoke_recipe_is_small_and_runs_every_transform():
    cfg = TrialConfig().replace(**recipe_for("coco", smoke=True))
    assert cfg.model.name == TrialConfig().model.name and (cfg.data.input_h, cfg.data.input_w) == (96, 64)
    assert cfg.data.flip_p > 0 and cfg.data.half_body_p > 0 and cfg.data.rotation_p > 0


def test_unknown_recipe_names_the_choices():
    with pytest.raises(ValueError, match="hrnet_coco"):
        recipe("mmpose")
