"""The losses (trainables/losses.py and OASNet's in trainables/oasnet.py): the dynamic structure loss and its lambda
schedules, the Ke et al. structure-aware loss, the mimic losses (Sinkhorn against an exact LP) and OASNet's loss."""
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog

from datasets.skeletons import COCO17
from trainables.losses import (MIMIC_LOSSES, DynamicStructureLoss, LossConfig, MimicLoss, StructureAwareLoss,
                               keypoint_mse, sinkhorn_cost, structure_matrix)
from trainables.models import create_model
from trainables.oasnet import OASNet, OASNetLoss


def test_structure_matrix_follows_the_two_limb_chains():
    m = structure_matrix(COCO17.limb_chains, 17)
    assert m.shape == (12, 17)
    # left elbow (7) sums itself with left wrist (9) and left shoulder (5)
    assert torch.nonzero(m[1]).flatten().tolist() == [5, 7, 9]
    # left shoulder (5) links to the right shoulder (6) across the chain
    assert torch.nonzero(m[2]).flatten().tolist() == [5, 6, 7]
    # chain ends have one neighbour: left ankle (15) with left knee (13)
    assert torch.nonzero(m[6]).flatten().tolist() == [13, 15]
    assert m[:, :5].sum() == 0  # face points are not in any chain


def test_dsl_equals_mse_when_lambda_is_zero():
    torch.manual_seed(0)
    pred, target = torch.rand(4, 17, 24, 16), torch.rand(4, 17, 24, 16)
    weight = (torch.rand(4, 17) > 0.3).float()
    loss_fn = DynamicStructureLoss(COCO17.limb_chains, 17, LossConfig(schedule="constant", lambda_max=0.0))
    loss, parts = loss_fn(pred, target, weight, progress=0.7)
    assert torch.allclose(loss, keypoint_mse(pred, target, weight))
    assert parts["loss_limb"] > 0


def test_dsl_adds_lambda_times_limb_loss():
    torch.manual_seed(1)
    pred, target = torch.rand(2, 17, 8, 6), torch.rand(2, 17, 8, 6)
    weight = torch.ones(2, 17)
    loss_fn = DynamicStructureLoss(COCO17.limb_chains, 17, LossConfig(schedule="constant", lambda_max=0.5))
    loss, parts = loss_fn(pred, target, weight, progress=0.0)
    assert math.isclose(loss.item(), parts["loss_mse"] + 0.5 * parts["loss_limb"], rel_tol=1e-6)
    # limb loss by hand for one structure map: left elbow + left wrist + left shoulder
    s_pred = pred[:, [5, 7, 9]].sum(1)
    s_true = target[:, [5, 7, 9]].sum(1)
    matrix = structure_matrix(COCO17.limb_chains, 17)
    maps = torch.einsum("sk,nkhw->nshw", matrix, pred - target)
    assert torch.allclose(maps[:, 1], s_pred - s_true)
    assert math.isclose(parts["loss_limb"], (maps**2).mean().item(), rel_tol=1e-6)


def test_dsl_is_zero_for_a_perfect_prediction():
    target = torch.rand(2, 17, 8, 6)
    loss, _ = DynamicStructureLoss(COCO17.limb_chains, 17, LossConfig(schedule="constant"))(
        target, target, torch.ones(2, 17), 0.3)
    assert loss.item() == 0.0


@pytest.mark.parametrize(
    "schedule, t, expected",
    [
        (LossConfig(schedule="constant", lambda_max=2.0), 0.0, 2.0),
        (LossConfig(schedule="constant", lambda_max=2.0), 1.0, 2.0),
        (LossConfig(schedule="step", lambda_max=1.5, step_at=0.5), 0.49, 0.0),
        (LossConfig(schedule="step", lambda_max=1.5, step_at=0.5), 0.5, 1.5),
        (LossConfig(schedule="linear", lambda_max=1.0, ramp_until=0.5), 0.25, 0.5),
        (LossConfig(schedule="linear", lambda_max=1.0, ramp_until=0.5), 0.9, 1.0),
        (LossConfig(schedule="exponential", lambda_max=1.0, exp_rate=5.0), 0.0, 0.0),
        (LossConfig(schedule="exponential", lambda_max=1.0, exp_rate=5.0), 1.0, 1.0),
        (LossConfig(schedule="exponential", lambda_max=1.0, exp_rate=5.0), 0.2,
         (1 - math.exp(-1)) / (1 - math.exp(-5))),
    ],
)
def test_schedule_values(schedule, t, expected):
    assert math.isclose(schedule.lambda_at(t), expected, rel_tol=1e-9, abs_tol=1e-12)


def test_schedule_at_chosen_epochs_of_a_ten_epoch_run():
    schedule = LossConfig(schedule="step", lambda_max=1.0, step_at=0.3)
    assert [schedule.lambda_at(epoch / 10) for epoch in range(10)] == [0, 0, 0] + [1.0] * 7


def test_unknown_schedule_is_rejected_by_name():
    with pytest.raises(ValueError, match="loss.schedule"):
        LossConfig(schedule="cosine")


def test_structure_aware_loss_is_mse_at_alpha_zero_and_adds_neighbours():
    pred, target = torch.rand(2, 17, 16, 12), torch.rand(2, 17, 16, 12)
    weight = torch.ones(2, 17)
    assert StructureAwareLoss(COCO17.bones, 17, 0.0)(pred, target, weight)[0] == pytest.approx(
        keypoint_mse(pred, target, weight).item())
    loss, parts = StructureAwareLoss(COCO17.bones, 17, 0.5)(pred, target, weight)
    assert loss.item() == pytest.approx(float(parts["loss_mse"]) + 0.5 * float(parts["loss_structure"]), rel=1e-5)
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
