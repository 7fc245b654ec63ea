"""The model zoo, the Ke et al. structure-aware loss, OASNet and its mimic losses (Sinkhorn against an exact LP).

Model tests iterate the registry (trainables.models.list_models(), as timm's tests do): a newly registered model is
tested without editing this file."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from conftest import REPO_ROOT
from datasets.skeletons import COCO17
from trainables.losses import MIMIC_LOSSES, MimicLoss, StructureAwareLoss, keypoint_mse, sinkhorn_cost
from trainables.models import create_model, default_input, list_models
from trainables.oasnet import OASNet, OASNetLoss

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


def test_structure_aware_loss_is_mse_at_alpha_zero_and_adds_neighbours():
    pred, target = torch.rand(2, 17, 16, 12), torch.rand(2, 17, 16, 12)
    weight = torch.ones(2, 17)
    assert StructureAwareLoss(COCO17.bones, 17, 0.0)(pred, target, weight)[0] == pytest.approx(
        keypoint_mse(pred, target, weight).item())
    loss, parts = StructureAwareLoss(COCO17.bones, 17, 0.5)(pred, target, weight)
    assert loss.item() == pytest.approx(parts["loss_mse"] + 0.5 * parts["loss_structure"], rel=1e-5)
    assert parts["loss_structure"] > parts["loss_mse"]


@pytest.mark.parametrize("kind", MIMIC_LOSSES)
def test_mimic_losses_are_zero_for_identical_features_and_positive_otherwise(kind):
    torch.manual_seed(0)
    loss = MimicLoss(kind, channels=8)
    features = torch.randn(2, 8, 12, 10)
    mask = torch.ones(2, 12, 10)
    assert loss(features, features.clone(), mask).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(features + torch.randn_like(features), features, mask).item() > 1e-4


def test_mimic_mask_excludes_positions_and_detach_stops_teacher_gradients():
    student = torch.randn(1, 4, 6, 6, requires_grad=True)
    teacher = torch.randn(1, 4, 6, 6, requires_grad=True)
    mask = torch.zeros(1, 6, 6)
    mask[0, :3] = 1
    l2 = MimicLoss("l2", 4)
    expected = ((student - teacher) ** 2).mean(dim=1)[0, :3].mean()
    assert l2(student, teacher, mask).item() == pytest.approx(expected.item())
    l2(student, teacher, mask).backward()
    assert teacher.grad is None and student.grad[0, :, 3:].abs().sum() == 0
    MimicLoss("l2", 4, detach=False)(student, teacher, mask).backward()
    assert teacher.grad is not None


def exact_transport(cost: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    n, m = cost.shape
    rows = np.kron(np.eye(n), np.ones(m))
    cols = np.kron(np.ones(n), np.eye(m))
    result = linprog(cost.reshape(-1), A_eq=np.vstack([rows, cols]), b_eq=np.concatenate([a, b]), bounds=(0, None),
                     method="highs")
    assert result.success
    return float(result.fun)


@pytest.mark.parametrize("seed", range(4))
def test_sinkhorn_agrees_with_exact_linear_programming(seed):
    rng = np.random.default_rng(seed)
    n, m = 5, 7
    cost = rng.uniform(0, 2, size=(n, m))
    a, b = rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(m))
    exact = exact_transport(cost, a, b)
    for epsilon in (0.1, 0.01):
        approx = sinkhorn_cost(None, None, torch.tensor(cost), epsilon=epsilon, iterations=2000,
                               a=torch.tensor(a), b=torch.tensor(b)).item()
        # entropic OT overshoots the exact cost by at most epsilon x the entropy of a transport plan
        assert exact - 1e-6 <= approx <= exact + epsilon * np.log(n * m) + 1e-6
    assert approx == pytest.approx(exact, abs=0.03)


def occlusion_target(heatmaps, occluded):
    return (heatmaps * occluded[:, :, None, None]).sum(dim=1).clamp(max=1.0)


def test_oasnet_forward_and_loss_reach_every_parameter():
    torch.manual_seed(0)
    model = OASNet(create_model("simplebaseline_r18", 17, deconv_channels=32))
    clean, occluded = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    out = model.forward_all(clean)
    assert out["heatmaps"].shape == (2, 17, 16, 16) and out["occlusion"].shape == (2, 16, 16)
    assert ((out["occlusion"] >= 0) & (out["occlusion"] <= 1)).all()
    heatmaps = torch.rand(2, 17, 16, 16)
    natural = torch.zeros(2, 17)
    natural[:, 3] = 1
    artificial = natural.clone()
    artificial[:, 9] = 1
    batch = {"image": clean, "image_occluded": occluded, "heatmaps": heatmaps, "target_weight": torch.ones(2, 17),
             "target_weight_occluded": torch.ones(2, 17), "occlusion": occlusion_target(heatmaps, natural),
             "occlusion_occluded": occlusion_target(heatmaps, artificial),
             "natural_occlusion": occlusion_target(heatmaps, natural)}
    for kind in MIMIC_LOSSES:
        model.zero_grad()
        mimic = MimicLoss(kind, model.channels, detach=False)
        loss, parts = OASNetLoss(mimic, lambda_o=1.0, lambda_mimic=0.1)(model, batch)
        loss.backward()
        assert set(parts) == {"loss_joints", "loss_occlusion", "loss_mimic"}
        silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
        assert not silent, (kind, silent[:5])
    assert occlusion_target(heatmaps, artificial).max() <= 1.0
