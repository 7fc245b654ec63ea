"""Heatmap losses: keypoint MSE with target weights, and LJA's dynamic structure loss (DSL).

DSL is written by hand from the paper: L = L_mse + lambda(t) * L_limb, where L_limb compares *structure
heatmaps* - each chain joint's heatmap plus its chain neighbours' - of prediction and ground truth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULES = ("constant", "step", "linear", "exponential")


def keypoint_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean squared heatmap error; joints with weight 0 contribute nothing."""
    return ((pred - target) ** 2 * weight[:, :, None, None]).mean()


def structure_matrix(limb_chains, num_keypoints: int) -> torch.Tensor:
    """(S, K) 0/1 matrix: row s sums chain joint s's heatmap with its neighbours' on the chain."""
    rows = []
    for chain in limb_chains:
        for pos, joint in enumerate(chain):
            row = torch.zeros(num_keypoints)
            neighbours = chain[max(pos - 1, 0) : pos + 2]
            row[list(neighbours)] = 1.0
            row[joint] = 1.0
            rows.append(row)
    return torch.stack(rows)


def structure_heatmaps(heatmaps: torch.Tensor, weight: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    # Unlabelled joints are masked out of both sides, so a missing neighbour never becomes a target of zero.
    return torch.einsum("sk,nkhw->nshw", matrix.to(heatmaps), heatmaps * weight[:, :, None, None])


@dataclass(frozen=True)
class LambdaSchedule:
    """lambda(t) over training progress t in [0, 1] (our reading of the paper's four schedule families).

    constant: lambda_max throughout. step: 0 until t >= step_at, then lambda_max.
    linear: rises from 0 to lambda_max at t = ramp_until, then stays.
    exponential: lambda_max * (1 - exp(-exp_rate * t)) / (1 - exp(-exp_rate)): a saturating rise.
    """

    kind: str = "step"
    lambda_max: float = 1.0
    step_at: float = 0.5
    ramp_until: float = 1.0
    exp_rate: float = 5.0

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"loss.schedule must be one of {SCHEDULES}, got {self.kind!r}")

    def __call__(self, t: float) -> float:
        t = min(max(t, 0.0), 1.0)
        if self.kind == "constant":
            return self.lambda_max
        if self.kind == "step":
            return self.lambda_max if t >= self.step_at else 0.0
        if self.kind == "linear":
            return self.lambda_max * min(1.0, t / max(self.ramp_until, 1e-8))
        return self.lambda_max * (1 - math.exp(-self.exp_rate * t)) / (1 - math.exp(-self.exp_rate))


class DynamicStructureLoss(torch.nn.Module):
    def __init__(self, limb_chains, num_keypoints: int, schedule: LambdaSchedule):
        super().__init__()
        self.register_buffer("matrix", structure_matrix(limb_chains, num_keypoints), persistent=False)
        self.schedule = schedule

    def forward(self, pred, target, weight, progress: float) -> tuple[torch.Tensor, dict[str, float]]:
        mse = keypoint_mse(pred, target, weight)
        ones = torch.ones(pred.shape[0], self.matrix.shape[0], device=pred.device)
        limb = keypoint_mse(
            structure_heatmaps(pred, weight, self.matrix), structure_heatmaps(target, weight, self.matrix), ones
        )
        lam = self.schedule(progress)
        return mse + lam * limb, {"loss_mse": mse.item(), "loss_limb": limb.item(), "lambda": lam}
