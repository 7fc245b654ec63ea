"""Heatmap losses: keypoint MSE with target weights, LJA's dynamic structure loss (DSL), Ke et al.'s structure-aware
loss and OASNet's mimic losses.

DSL is written by hand from the LJA paper (Han et al. 2024, "Occluded Human Pose Estimation based on Limb Joint
Augmentation", arXiv:2410.09885): L = L_mse + lambda(t) * L_limb, where L_limb compares *structure heatmaps* - each
chain joint's heatmap plus its chain neighbours' - of prediction and ground truth. `LossConfig` is both the
TrialConfig section `loss` and the parameters the DSL and its lambda(t) schedule take.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULES = ("constant", "step", "linear", "exponential")


def check_choice(section: str, config, name: str, choices) -> None:
    """ValueError naming `section.name` when its value is not one of `choices`."""
    if getattr(config, name) not in choices:
        raise ValueError(f"{section}.{name} must be one of {tuple(choices)}, got {getattr(config, name)!r}")


def check_non_negative(section: str, config, names) -> None:
    """ValueError naming `section.name` for the first of `names` below 0 (a loss weight of 0 switches its term
    off: an ablation point, so allowed)."""
    for name in names:
        if not getattr(config, name) >= 0.0:
            raise ValueError(f"{section}.{name} must be >= 0, got {getattr(config, name)}")


@dataclass
class LossConfig:
    """The TrialConfig section `loss`: which structure term is added to the keypoint MSE, and DSL's lambda(t).

    lambda(t) over training progress t in [0, 1] (`lambda_at`; our reading of the paper's four schedule families):
    constant: lambda_max throughout. step: 0 until t >= step_at, then lambda_max.
    linear: rises from 0 to lambda_max at t = ramp_until, then stays.
    exponential: lambda_max * (1 - exp(-exp_rate * t)) / (1 - exp(-exp_rate)): a saturating rise.
    Ranges and allowed values are checked by `validate()` (also on construction).
    """

    structure: bool = True  # DSL on top of the keypoint MSE
    schedule: str = "step"  # one of SCHEDULES
    lambda_max: float = 0.25
    step_at: float = 0.5  # step schedule: fraction of training after which lambda = lambda_max
    ramp_until: float = 1.0  # linear schedule: fraction of training at which lambda reaches lambda_max
    exp_rate: float = 5.0  # exponential schedule: rise rate
    structure_aware_alpha: float = 0.0  # > 0 (with structure off): Ke et al.'s structure-aware loss, the baseline

    def __post_init__(self):
        self.validate()

    def validate(self) -> "LossConfig":
        """ValueError naming the `loss.*` key that is out of range or not allowed."""
        check_choice("loss", self, "schedule", SCHEDULES)
        check_non_negative("loss", self, ("lambda_max", "structure_aware_alpha"))
        for name in ("step_at", "ramp_until"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"loss.{name} must be a fraction of training in [0, 1], got {getattr(self, name)}")
        if not self.exp_rate > 0.0:  # the exponential schedule divides by 1 - exp(-exp_rate)
            raise ValueError(f"loss.exp_rate must be > 0, got {self.exp_rate}")
        if self.structure and self.structure_aware_alpha > 0:
            raise ValueError("loss.structure (DSL) and loss.structure_aware_alpha (Ke et al.) are alternatives")
        return self

    def lambda_at(self, t: float) -> float:
        """DSL's weight lambda(t) of the limb loss at training progress t (clamped to [0, 1])."""
        t = min(max(t, 0.0), 1.0)
        if self.schedule == "constant":
            return self.lambda_max
        if self.schedule == "step":
            return self.lambda_max if t >= self.step_at else 0.0
        if self.schedule == "linear":
            return self.lambda_max * min(1.0, t / max(self.ramp_until, 1e-8))
        return self.lambda_max * (1 - math.exp(-self.exp_rate * t)) / (1 - math.exp(-self.exp_rate))


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


class DynamicStructureLoss(torch.nn.Module):
    """LJA's DSL: keypoint MSE + lambda(progress) x the MSE of the limb chains' structure heatmaps; lambda(t) is
    `config.lambda_at` (the `loss` section)."""

    def __init__(self, limb_chains, num_keypoints: int, config: LossConfig):
        super().__init__()
        self.register_buffer("matrix", structure_matrix(limb_chains, num_keypoints), persistent=False)
        self.config = config

    def forward(self, pred, target, weight, progress: float) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        mse = keypoint_mse(pred, target, weight)
        ones = torch.ones(pred.shape[0], self.matrix.shape[0], device=pred.device)
        limb = keypoint_mse(
            structure_heatmaps(pred, weight, self.matrix), structure_heatmaps(target, weight, self.matrix), ones
        )
        lam = self.config.lambda_at(progress)
        return mse + lam * limb, {"loss_mse": mse.detach(), "loss_limb": limb.detach(), "lambda": lam}


def neighbour_matrix(bones, num_keypoints: int) -> torch.Tensor:
    """(K, K) 0/1 matrix: row i sums joint i's heatmap with those of the joints a bone links it to."""
    matrix = torch.eye(num_keypoints)
    for a, b in bones:
        matrix[a, b] = matrix[b, a] = 1.0
    return matrix


class StructureAwareLoss(torch.nn.Module):
    """Ke et al. 2018 (multi-scale structure-aware network), the DSL's comparison baseline: keypoint MSE plus
    alpha x the MSE of every joint's structure heatmap (itself plus its skeleton neighbours), at all times."""

    def __init__(self, bones, num_keypoints: int, alpha: float = 1.0):
        super().__init__()
        self.register_buffer("matrix", neighbour_matrix(bones, num_keypoints), persistent=False)
        self.alpha = alpha

    def forward(self, pred, target, weight, progress: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        mse = keypoint_mse(pred, target, weight)
        ones = torch.ones_like(weight)
        structure = keypoint_mse(structure_heatmaps(pred, weight, self.matrix),
                                 structure_heatmaps(target, weight, self.matrix), ones)
        return mse + self.alpha * structure, {"loss_mse": mse.detach(), "loss_structure": structure.detach()}


# --- OASNet's mimic losses -------------------------------------------------------------------------------------------
# Written by hand from the paper: the occluded branch's reconstructed features (student) are pulled towards the
# clean branch's features (teacher) at the positions the mask keeps (naturally occluded regions excluded).

MIMIC_LOSSES = ("l2", "cosine", "kl", "sinkhorn")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (N, h, w) values over the positions where the (N, h, w) mask is 1."""
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def mimic_l2(student, teacher, mask):
    return _masked_mean(((student - teacher) ** 2).mean(dim=1), mask)


def mimic_cosine(student, teacher, mask):
    return _masked_mean(1 - torch.nn.functional.cosine_similarity(student, teacher, dim=1, eps=1e-8), mask)


def mimic_kl(student, teacher, mask):
    """KL(teacher || student) of the per-position distributions over channels (softmax)."""
    log_s = torch.log_softmax(student, dim=1)
    log_t = torch.log_softmax(teacher, dim=1)
    return _masked_mean((log_t.exp() * (log_t - log_s)).sum(dim=1), mask)


def sinkhorn_cost(x: torch.Tensor, y: torch.Tensor, cost: torch.Tensor | None = None, epsilon: float = 0.1,
                  iterations: int = 5, a: torch.Tensor | None = None, b: torch.Tensor | None = None) -> torch.Tensor:
    """Transport cost <T, C> of the entropic optimal transport between point sets x (n, d) and y (m, d) with
    weights a, b (uniform by default), cost 1 - cosine similarity unless given; `iterations` log-domain Sinkhorn
    updates at regularisation epsilon."""
    if cost is None:
        cost = 1 - torch.nn.functional.normalize(x, dim=-1) @ torch.nn.functional.normalize(y, dim=-1).T
    n, m = cost.shape
    log_a = torch.log(a) if a is not None else torch.full((n,), -math.log(n), dtype=cost.dtype, device=cost.device)
    log_b = torch.log(b) if b is not None else torch.full((m,), -math.log(m), dtype=cost.dtype, device=cost.device)
    f = torch.zeros(n, dtype=cost.dtype, device=cost.device)
    g = torch.zeros(m, dtype=cost.dtype, device=cost.device)
    for _ in range(iterations):
        f = -epsilon * torch.logsumexp((g[None, :] - cost) / epsilon + log_b[None, :], dim=1)
        g = -epsilon * torch.logsumexp((f[:, None] - cost) / epsilon + log_a[:, None], dim=0)
    plan = torch.exp((f[:, None] + g[None, :] - cost) / epsilon + log_a[:, None] + log_b[None, :])
    return (plan * cost).sum()


class SinkhornMimic(torch.nn.Module):
    """Optimal-transport mimic loss: a critic convolution downsamples both feature maps (stride 2); each sample's
    kept positions become a point set; the cost is 1 - cosine; epsilon 0.1, 5 iterations. Debiased as a Sinkhorn
    divergence, OT(s, t) - (OT(s, s) + OT(t, t)) / 2, so identical features cost exactly 0.

    The critic is a fixed random projection: trained jointly with the loss it minimises, it could collapse every
    feature to one direction and make the loss vanish."""

    def __init__(self, channels: int, epsilon: float = 0.1, iterations: int = 5):
        super().__init__()
        self.critic = torch.nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.critic.requires_grad_(False)
        self.epsilon, self.iterations = epsilon, iterations

    def forward(self, student, teacher, mask):
        s, t = self.critic(student), self.critic(teacher)
        keep = torch.nn.functional.max_pool2d(mask[:, None].float(), 2, ceil_mode=True)[:, 0] > 0
        losses = []
        for i in range(s.shape[0]):
            xs = s[i].flatten(1).T[keep[i].flatten()]
            xt = t[i].flatten(1).T[keep[i].flatten()]
            if len(xs) == 0:
                continue
            ot = lambda u, v: sinkhorn_cost(u, v, epsilon=self.epsilon, iterations=self.iterations)  # noqa: E731
            losses.append(ot(xs, xt) - 0.5 * (ot(xs, xs) + ot(xt, xt)))
        return torch.stack(losses).mean() if losses else s.sum() * 0.0


class MimicLoss(torch.nn.Module):
    def __init__(self, kind: str, channels: int, detach: bool = True):
        super().__init__()
        if kind not in MIMIC_LOSSES:
            raise ValueError(f"mimic loss must be one of {MIMIC_LOSSES}, got {kind!r}")
        self.kind, self.detach = kind, detach
        self.sinkhorn = SinkhornMimic(channels) if kind == "sinkhorn" else None

    def forward(self, student, teacher, mask):
        """student, teacher (N, C, h, w); mask (N, h, w), 1 where the loss applies."""
        if self.detach:
            teacher = teacher.detach()
        if self.sinkhorn is not None:
            return self.sinkhorn(student, teacher, mask)
        return {"l2": mimic_l2, "cosine": mimic_cosine, "kl": mimic_kl}[self.kind](student, teacher, mask)
