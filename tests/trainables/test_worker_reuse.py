"""`python -m trainables.worker --out DIR` on a DIR a run left: refused naming the settings that differ unless
told to resume; resuming with the same settings (more epochs) continues."""
import os

import pytest

from trainables import checkpoint
from trainables.presets import recipe_for
from trainables.worker import main


@pytest.fixture
def trial_settings(dataset_cache, monkeypatch):
    monkeypatch.setenv("OCCPOSE_CACHE", str(dataset_cache))
    from datasets.synthetic import SyntheticSpec, ensure_dataset
    from trainables.config import TrialConfig
    from trainables.worker import with_synthetic_paths

    paths = ensure_dataset(SyntheticSpec(seed=0, num_train_images=24, num_val_images=8))
    data = {k: v for k, v in with_synthetic_paths(TrialConfig(), paths).flat().items() if k.startswith("data.")}
    settings = {**data, **recipe_for("synthetic", True), "model.deconv_channels": 32, "optim.epochs": 1,
                "optim.batch_size": 8, "data.max_train_samples": 8, "data.max_val_samples": 4, "lja.p": 0.0}
    return lambda **changes: [f"{k}={v}" for k, v in {**settings, **changes}.items()]


def test_a_reused_out_of_other_settings_is_refused_naming_them(tmp_path, trial_settings, capsys):
    out = tmp_path / "trial"
    assert main(["--out", str(out), "--set", *trial_settings()]) == 0
    model = (out / checkpoint.MODEL_FILE).read_bytes()
    capsys.readouterr()
    for resume in ([], ["--resume"]):
        assert main(["--out", str(out), *resume, "--set", *trial_settings(**{"lja.p": 0.5})]) == 2
        err = capsys.readouterr().err
        assert "lja.p: 0.0 there, 0.5 now" in err and "Traceback" not in err
    assert (out / checkpoint.MODEL_FILE).read_bytes() == model  # the old run's model and config are kept
    assert checkpoint.config_changes(out, _cfg(trial_settings())) == {}

    # The same settings: continued only when asked to, and then for the epochs added.
    assert main(["--out", str(out), "--set", *trial_settings(**{"optim.epochs": 2})]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["--out", str(out), "--resume", "--set", *trial_settings(**{"optim.epochs": 2})]) == 0
    assert checkpoint.saved_epochs(out) == 2


def test_resume_of_an_empty_out_is_refused(tmp_path, trial_settings, capsys):
    assert main(["--out", str(tmp_path / "none"), "--resume", "--set", *trial_settings()]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "none")


def _cfg(items):
    from trainables.config import TrialConfig

    return TrialConfig.from_flat(dict(item.split("=", 1) for item in items))
