import math

import pytest
import torch

from datasets.skeletons import COCO17
from trainables.losses import DynamicStructureLoss, LossConfig, keypoint_mse, structure_matrix


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
