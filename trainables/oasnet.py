"""OASNet, written by hand from the paper (Zhou et al. 2020, "Occlusion-Aware Siamese Network for Human Pose
Estimation", ECCV) around any zoo model.

On the model's 1/4-resolution features F: an occlusion branch predicts H_o (supervised by the clamped sum of the
occluded joints' Gaussians), attention H_A = 1 - H_o erases the occluded features (F * H_A), two 3x3 dilated
convolutions (rates 2 and 4) reconstruct them, and the model's own head reads the result. Training is siamese: a
clean and an artificially occluded view of the same crop share every weight; the occluded view's reconstructed
features mimic the clean view's where the clean image is not naturally occluded:

    L = L_J + lambda_o * L_o + lambda_mimic * L_mimic

`OASNetConfig` is both the TrialConfig section `oasnet` and what `OASNetLoss.from_config` builds the loss from.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainables.losses import MIMIC_LOSSES, MimicLoss, check_choice, check_non_negative, keypoint_mse


@dataclass
class OASNetConfig:
    """The TrialConfig section `oasnet`: OASNet around the model (occlusion branch, feature erasing +
    reconstruction, siamese mimic loss). Needs an artificial occlusion (lja.enabled, occ.p_occ or occ.targeted) to
    build the occluded view, which TrialConfig.validate checks across sections; `validate()` checks this section's
    own ranges (also on construction)."""

    enabled: bool = False
    mimic: str = "l2"  # one of MIMIC_LOSSES: l2, cosine, kl, sinkhorn
    detach: bool = True  # stop the mimic loss's gradient into the clean (teacher) branch
    lambda_mimic: float = 1e-2
    lambda_o: float = 1.0

    def __post_init__(self):
        self.validate()

    def validate(self) -> "OASNetConfig":
        """ValueError naming the `oasnet.*` key that is out of range or not allowed."""
        check_choice("oasnet", self, "mimic", MIMIC_LOSSES)
        check_non_negative("oasnet", self, ("lambda_mimic", "lambda_o"))
        return self


class OASNet(nn.Module):
    def __init__(self, base: nn.Module):
        super().__init__()
        if not hasattr(base, "features") or not hasattr(base, "head"):
            raise ValueError(f"OASNet needs a model with features() and head, got {type(base).__name__}")
        self.base = base
        channels = base.head.in_channels
        self.channels = channels
        self.occlusion = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, 1, 1), nn.Sigmoid())
        self.reconstruct = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=4, dilation=4, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True))

    def forward_all(self, x: torch.Tensor, early: bool = True) -> dict:
        """{"heatmaps": the evaluated heatmaps, "occlusion": H_o (N, h, w), "features": the reconstructed
        features, "stages": the earlier supervised heatmaps of a multi-output base (the stacks before the last of
        a stacked hourglass, SRPose's intermediate stages; [] otherwise)}. The module sits after the base's last
        stage, as the paper puts it after the hourglass's last stack."""
        if hasattr(self.base, "forward_stages"):
            stages, features = self.base.forward_stages(x, early=early)
        else:
            stages, features = [], self.base.features(x)
        occlusion = self.occlusion(features)  # H_o, (N, 1, h, w) in [0, 1]
        reconstructed = self.reconstruct(features * (1 - occlusion))  # erase with H_A = 1 - H_o, then rebuild
        return {"heatmaps": self.base.head(reconstructed), "occlusion": occlusion[:, 0],
                "features": reconstructed, "stages": stages}

    def forward(self, x: torch.Tensor, all_outputs: bool = False):
        # One forward per step, both views in one batch: DDP syncs gradients of a single forward pass.
        return self.forward_all(x) if all_outputs else self.forward_all(x, early=False)["heatmaps"]


def at_size(maps: torch.Tensor, size, pool: str = "avg") -> torch.Tensor:
    """(N, h, w) occlusion maps at the features' `size` (N, h', w'): unchanged when equal, else area-averaged (or
    max-pooled) - the codec's heatmaps are finer than the features only for SRPose (1/1 against 1/4)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    resize = nn.functional.adaptive_max_pool2d if pool == "max" else nn.functional.adaptive_avg_pool2d
    return resize(maps[:, None], tuple(size))[:, 0]


@dataclass
class OASNetLoss:
    """L = L_J + lambda_o * L_o + lambda_mimic * L_mimic over a siamese batch (see __call__)."""

    mimic: MimicLoss
    lambda_o: float
    lambda_mimic: float
    codec: object = None  # the trial's HeatmapCodec: targets of a multi-output base's stages at their resolution
    stage_weights: tuple = (1.0,)

    @classmethod
    def from_config(cls, config: OASNetConfig, model: OASNet, codec=None) -> "OASNetLoss":
        """The loss of the `oasnet` section for `model` (its mimic loss is built on the model's device)."""
        mimic = MimicLoss(config.mimic, model.channels, detach=config.detach).to(next(model.parameters()).device)
        return cls(mimic, lambda_o=config.lambda_o, lambda_mimic=config.lambda_mimic, codec=codec,
                   stage_weights=tuple(getattr(model.base, "stage_weights", (1.0,))))

    def joints(self, view: dict, heatmaps: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """L_J of one view: the keypoint MSE of every supervised heatmap (the base's earlier stages, then the
        final one), each against the targets at its resolution, weighted as the base weighs its stages."""
        outputs = [*view["stages"], view["heatmaps"]]
        weights = self.stage_weights if len(outputs) > 1 else (1.0,)
        total = 0.0
        for pred, w in zip(outputs, weights):
            target = heatmaps if self.codec is None else self.codec.resample_targets(heatmaps, weight,
                                                                                     pred.shape[-2:])
            total = total + w * keypoint_mse(pred, target, weight)
        return total

    def __call__(self, model, batch: dict, progress: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """batch (TopDownDataset with siamese=True): `image` (clean view) and `image_occluded`, `heatmaps`,
        `target_weight` and `target_weight_occluded`, occlusion targets `occlusion` / `occlusion_occluded` and the
        clean view's `natural_occlusion` (N, h, w). `model` is an OASNet, possibly DDP-wrapped."""
        n = batch["image"].shape[0]
        both = model(torch.cat([batch["image"], batch["image_occluded"]]), all_outputs=True)
        clean = {k: [s[:n] for s in v] if k == "stages" else v[:n] for k, v in both.items()}
        occluded = {k: [s[n:] for s in v] if k == "stages" else v[n:] for k, v in both.items()}
        joints = self.joints(clean, batch["heatmaps"], batch["target_weight"]) + self.joints(
            occluded, batch["heatmaps"], batch["target_weight_occluded"])
        size = clean["occlusion"].shape[-2:]  # the features' resolution; the targets are at the heatmaps'
        occ = nn.functional.mse_loss(clean["occlusion"], at_size(batch["occlusion"], size)) + nn.functional.mse_loss(
            occluded["occlusion"], at_size(batch["occlusion_occluded"], size))
        keep = (at_size(batch["natural_occlusion"], size, pool="max") < 0.5).float()
        mimic = self.mimic(occluded["features"], clean["features"], keep)
        total = joints + self.lambda_o * occ + self.lambda_mimic * mimic
        return total, {"loss_joints": joints.detach(), "loss_occlusion": occ.detach(), "loss_mimic": mimic.detach()}
