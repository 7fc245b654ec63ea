"""OASNet (occlusion-aware siamese network), written by hand from the paper around any zoo model.

On the model's 1/4-resolution features F: an occlusion branch predicts H_o (supervised by the clamped sum of the
occluded joints' Gaussians), attention H_A = 1 - H_o erases the occluded features (F * H_A), two 3x3 dilated
convolutions (rates 2 and 4) reconstruct them, and the model's own head reads the result. Training is siamese: a
clean and an artificially occluded view of the same crop share every weight; the occluded view's reconstructed
features mimic the clean view's where the clean image is not naturally occluded:

    L = L_J + lambda_o * L_o + lambda_mimic * L_mimic
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainables.losses import MimicLoss, keypoint_mse


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

    def forward_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.base.features(x)
        occlusion = self.occlusion(features)  # H_o, (N, 1, h, w) in [0, 1]
        reconstructed = self.reconstruct(features * (1 - occlusion))  # erase with H_A = 1 - H_o, then rebuild
        return {"heatmaps": self.base.head(reconstructed), "occlusion": occlusion[:, 0],
                "features": reconstructed}

    def forward(self, x: torch.Tensor, all_outputs: bool = False):
        # One forward per step, both views in one batch: DDP syncs gradients of a single forward pass.
        return self.forward_all(x) if all_outputs else self.forward_all(x)["heatmaps"]


@dataclass
class OASNetLoss:
    mimic: MimicLoss
    lambda_o: float = 1.0
    lambda_mimic: float = 1e-2

    def __call__(self, model, batch: dict, progress: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
        """batch (TopDownDataset with siamese=True): `image` (clean view) and `image_occluded`, `heatmaps`,
        `target_weight` and `target_weight_occluded`, occlusion targets `occlusion` / `occlusion_occluded` and the
        clean view's `natural_occlusion` (N, h, w). `model` is an OASNet, possibly DDP-wrapped."""
        n = batch["image"].shape[0]
        both = model(torch.cat([batch["image"], batch["image_occluded"]]), all_outputs=True)
        clean = {k: v[:n] for k, v in both.items()}
        occluded = {k: v[n:] for k, v in both.items()}
        joints = keypoint_mse(clean["heatmaps"], batch["heatmaps"], batch["target_weight"]) + keypoint_mse(
            occluded["heatmaps"], batch["heatmaps"], batch["target_weight_occluded"])
        occ = nn.functional.mse_loss(clean["occlusion"], batch["occlusion"]) + nn.functional.mse_loss(
            occluded["occlusion"], batch["occlusion_occluded"])
        keep = (batch["natural_occlusion"] < 0.5).float()
        mimic = self.mimic(occluded["features"], clean["features"], keep)
        total = joints + self.lambda_o * occ + self.lambda_mimic * mimic
        return total, {"loss_joints": joints.item(), "loss_occlusion": occ.item(), "loss_mimic": mimic.item()}
