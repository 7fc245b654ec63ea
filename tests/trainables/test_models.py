"""The model zoo (trainables/models.py): parameter counts, output shapes, gradients, pretrained backbones.

Model tests iterate the registry (trainables.models.list_models(), as timm's tests do): a newly registered model is
tested without editing this file."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT
from trainables.models import create_model, default_input, list_models

PUBLISHED_PARAMS_M = {"simplebaseline_r50": 34.0, "simplebaseline_r152": 68.6, "hrnet_w32": 28.5, "hrnet_w48": 63.6}


@pytest.fixture(scope="module")
def table():
    """`python -m trainables.models --list --json`: {name: {"params_m", "gflops", "input"}}."""
    proc = subprocess.run([sys.executable, "-m", "trainables.models", "--list", "--json"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_model_list_json_and_published_parameter_counts(table):
    assert set(table) == set(list_models()) >= {"simplebaseline_r18", "simplebaseline_r101", "vitpose_b",
                                                *PUBLISHED_PARAMS_M}
    for name, published in PUBLISHED_PARAMS_M.items():
        assert abs(table[name]["params_m"] / published - 1) < 0.02, (name, table[name])
    assert 86 < table["vitpose_b"]["params_m"] < 92  # ViT-B/16 backbone (~86 M) plus the classic decoder
    assert table["simplebaseline_r50"]["input"] == [256, 192]
    assert 5.0 < table["simplebaseline_r50"]["gflops"] < 6.0  # the published 5.4 (multiply-adds)
    assert table["hrnet_w32"]["gflops"] < table["hrnet_w48"]["gflops"]
    for name, row in table.items():  # the table describes every model at its default input
        assert row["input"] == list(default_input(name)) and row["params_m"] > 0 and row["gflops"] > 0, name


@pytest.mark.parametrize("name", list_models())
def test_output_shape_and_gradients_reach_every_parameter(name, table):
    # stochastic depth off (models without it ignore the argument): a dropped block legitimately gets no gradient
    model = create_model(name, 17, drop_path_rate=0.0)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 3) == table[name]["params_m"]
    h, w = default_input(name)
    out = model(torch.randn(2, 3, h, w))
    assert out.shape == (2, 17, h // 4, w // 4)
    out.square().mean().backward()
    silent = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not silent, silent[:5]


def test_default_input_is_the_coco_input_and_models_import_nothing_from_datasets():
    """Registered MLflow models carry only the trainables package: unpickling one must not need `datasets`."""
    from datasets import meta
    from trainables.models import DEFAULT_INPUT_HW

    assert DEFAULT_INPUT_HW == meta.get("coco").input_hw
    code = ("import sys, trainables.models, trainables.oasnet; "
            "sys.exit(any(m == 'datasets' or m.startswith('datasets.') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, timeout=300).returncode == 0


@pytest.mark.parametrize("name", list_models())
def test_output_shape_with_another_keypoint_count(name):
    h, w = default_input(name)
    with torch.no_grad():
        assert create_model(name, 16).eval()(torch.zeros(1, 3, h, w)).shape == (1, 16, h // 4, w // 4)


def test_vitpose_simple_decoder():
    model = create_model("vitpose_b", 14, decoder="simple")
    assert model(torch.randn(1, 3, 256, 192)).shape == (1, 14, 64, 48)


def test_local_pretrained_backbone_file(tmp_path):
    donor = create_model("simplebaseline_r18", 17)
    torch.save(donor.backbone.state_dict(), tmp_path / "r18.pt")
    model = create_model("simplebaseline_r18", 17, pretrained=str(tmp_path / "r18.pt"))
    for a, b in zip(model.backbone.state_dict().values(), donor.backbone.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="no such file"):
        create_model("simplebaseline_r18", 17, pretrained=str(tmp_path / "missing.pt"))
