"""The model zoo (trainables/models.py): parameter counts, output shapes, gradients, pretrained backbones.

Model tests iterate the registry (trainables.models.list_models(), as timm's tests do): a newly registered model is
tested without editing this file."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import REPO_ROOT
from trainables.models import create_model, default_input, inference_parameters, list_models, output_stride, \
    stage_outputs

# Newell et al. 2016 (as HRNet's Table 1 quotes it): 8-stack hourglass 25.1 M. SRPose (Wang et al. 2023, the
# authors' table): HRNet-W32 backbone 29.30 M + head 0.65 M, 8.28 GFLOPs at 256x192.
PUBLISHED_PARAMS_M = {"simplebaseline_r50": 34.0, "simplebaseline_r152": 68.6, "hrnet_w32": 28.5, "hrnet_w48": 63.6,
                      "hourglass_8stack": 25.1, "srpose_hrnet_w32": 29.30 + 0.65}
PUBLISHED_GFLOPS = {"srpose_hrnet_w32": 8.28}


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
    for name, published in PUBLISHED_GFLOPS.items():
        assert abs(table[name]["gflops"] / published - 1) < 0.02, (name, table[name])
    # The stacks share one architecture: each adds the same ~3.14 M, on the 1-stack's stem and head.
    stacks = [table[f"hourglass_{n}stack"]["params_m"] for n in (1, 2, 4, 8)]
    per_stack = (stacks[3] - stacks[0]) / 7
    assert 3.0 < per_stack < 3.3 and abs(stacks[1] - stacks[0] - per_stack) < 0.01
    assert abs(stacks[2] - stacks[0] - 3 * per_stack) < 0.01
    for n in (1, 2, 4, 8):
        assert table[f"hourglass_{n}stack"]["input"] == [256, 256] and table[f"hourglass_{n}stack"]["stride"] == 4
    # SRPose: its training-only intermediate SR heads (0.32 M) are not in the authors' table; heatmaps at 1/1
    assert table["srpose_hrnet_w32"]["train_params_m"] - table["srpose_hrnet_w32"]["params_m"] > 0.3
    assert table["srpose_hrnet_w32"]["stride"] == 1 and table["srpose_hrnet_w32"]["input"] == [256, 192]
    for name, row in table.items():  # the table describes every model at its default input
        assert row["input"] == list(default_input(name)) and row["params_m"] > 0 and row["gflops"] > 0, name


def test_hourglass_8stack_gflops_at_hrnets_256x192(table):
    """HRNet's table gives 14.3 GFLOPs for the 8-stack at 256x192; the network that has its 25.1 M parameters
    costs more: per stack about 2.36 G of multiply-adds - eleven 256-channel bottleneck residuals at 1/4..1/64
    resolution, 0.65 G each at 64x48 - on a 1.75 G stem (README "Models and losses"). Every level of 256x192 and of
    256x256 halves exactly (64x48 .. 4x3, 64x64 .. 4x4), so the cost scales with the area: 20.6 G at 256x192."""
    gflops_256x192 = table["hourglass_8stack"]["gflops"] * 192 / 256
    assert 20.0 < gflops_256x192 < 21.0


@pytest.mark.parametrize("name", list_models())
def test_output_shape_and_gradients_reach_every_parameter(name, table):
    # stochastic depth off (models without it ignore the argument): a dropped block legitimately gets no gradient
    model = create_model(name, 17, drop_path_rate=0.0)
    assert round(inference_parameters(model) / 1e6, 3) == table[name]["params_m"]
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 3) == table[name].get("train_params_m",
                                                                                          table[name]["params_m"])
    h, w = default_input(name)
    stride = output_stride(name)
    outputs = stage_outputs(model, torch.randn(2, 3, h, w))  # every supervised heatmap, the evaluated one last
    assert outputs[-1].shape == (2, 17, h // stride, w // stride)
    sum(out.square().mean() for out in outputs).backward()
    silent = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not silent, silent[:5]
    with torch.no_grad():  # inference reads the last stage
        assert torch.equal(model.eval()(torch.ones(1, 3, h, w)), stage_outputs(model, torch.ones(1, 3, h, w))[-1])


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
    """On the meta device: the same shapes, without the initialisation and arithmetic of a full-size forward."""
    h, w = default_input(name)
    stride = output_stride(name)
    with torch.device("meta"):
        model = create_model(name, 16).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, h, w, device="meta"))
    assert out.shape == (1, 16, h // stride, w // stride) and out.is_meta


def test_intermediate_outputs():
    """A stacked hourglass supervises each stack at 1/4; SRPose its 1/32 map, three 1/4 maps and the 1/1 one."""
    x = torch.zeros(2, 3, 64, 64)
    for stacks in (1, 2, 4):
        outputs = stage_outputs(create_model(f"hourglass_{stacks}stack", 5, channels=32), x)
        assert [tuple(o.shape) for o in outputs] == [(2, 5, 16, 16)] * stacks
    outputs = stage_outputs(create_model("srpose_hrnet_w32", 5), torch.zeros(1, 3, 96, 64))
    assert [tuple(o.shape[-2:]) for o in outputs] == [(3, 2), (24, 16), (24, 16), (24, 16), (96, 64)]
    assert [tuple(o.shape[-2:]) for o in stage_outputs(create_model("simplebaseline_r18", 5), x)] == [(16, 16)]


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
