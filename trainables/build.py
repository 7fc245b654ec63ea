"""A trial's model, codec, loss and optimiser from its TrialConfig: the one place a config becomes components
(train.py's fit and checkpoint.py's load_checkpoint both build through here)."""
from __future__ import annotations

import torch
from torch import nn

from datasets import meta
from datasets.skeletons import Skeleton
from datasets.topdown.codec import HeatmapCodec
from trainables.config import TrialConfig
from trainables.losses import DynamicStructureLoss, StructureAwareLoss, keypoint_mse
from trainables.models import create_model, output_stride, stage_outputs, stage_weights
from trainables.oasnet import OASNet, OASNetLoss


def build_model(cfg: TrialConfig) -> nn.Module:
    """The model of a TrialConfig: `model.name` for the dataset's keypoints at `data.input_h/w`, its backbone's
    weights from `model.pretrained` ("" or "none": none), wrapped in OASNet when `oasnet.enabled`."""
    model = create_model(cfg.model.name, meta.get(cfg.data.dataset).skeleton.num_keypoints,
                         pretrained=cfg.model.pretrained if cfg.model.pretrained not in ("", "none") else False,
                         deconv_channels=cfg.model.deconv_channels, input_hw=(cfg.data.input_h, cfg.data.input_w))
    return OASNet(model) if cfg.oasnet.enabled else model


def build_codec(cfg: TrialConfig) -> HeatmapCodec:
    """The trial's heatmap codec: at the model's output stride (`trainables.models.output_stride`: 4, SRPose's 1),
    `data.sigma` given in 1/4-resolution cells and scaled with the stride (sigma 2 at 1/4 is 8 at 1/1, the SRPose
    configs' value), `data.decode`'s refinement and `data.codec`'s encoding (msra or udp)."""
    data = cfg.data
    stride = output_stride(cfg.model.name)
    return HeatmapCodec((data.input_h, data.input_w), sigma=data.sigma * 4 / stride, stride=stride,
                        decode=data.decode, encoding=data.codec)


def build_optimizer(cfg: TrialConfig, params) -> torch.optim.Optimizer:
    """`optim.optimizer` at `optim.lr`: Adam (the HRNet/SimpleBaseline recipes) or RMSprop (the stacked hourglass's
    and OASNet's: torch's defaults otherwise, alpha 0.99, eps 1e-8, as the hourglass Torch code's optim.rmsprop
    up to its eps)."""
    if cfg.optim.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.optim.lr)
    return torch.optim.Adam(params, lr=cfg.optim.lr)


def staged_loss(loss_fn, codec: HeatmapCodec):
    """compute_loss(model, batch, progress) applying loss_fn(pred, target, weight, progress) -> (loss, parts) to
    every heatmap the model supervises (`stage_outputs`: each stack of a stacked hourglass, each stage of SRPose;
    the one output of the others), each against the batch's targets at its own resolution
    (`HeatmapCodec.resample_targets`) and weighted by `stage_weights`; the sum is the loss (intermediate
    supervision, Newell et al. 2016). The parts are the last stage's, plus `loss_stage{i}` per stage when there
    are several."""

    def compute(model, batch, progress):
        outputs = stage_outputs(model, batch["image"])
        weights = stage_weights(model) if len(outputs) > 1 else (1.0,)
        total, parts, per_stage = 0.0, {}, {}
        for i, (pred, w) in enumerate(zip(outputs, weights)):
            target = codec.resample_targets(batch["heatmaps"], batch["target_weight"], pred.shape[-2:])
            loss, parts = loss_fn(pred, target, batch["target_weight"], progress)
            total = total + w * loss
            per_stage[f"loss_stage{i}"] = loss.detach()  # summed on the device by the engine: no host sync
        return total, {**parts, **(per_stage if len(outputs) > 1 else {})}

    return compute


def build_loss(cfg: TrialConfig, skeleton: Skeleton, model):
    """compute_loss(model, batch, progress) for train_one_epoch: OASNet's siamese loss (`oasnet`), else the
    heatmap loss of the `loss` section - DSL, Ke et al.'s structure-aware loss, or the plain keypoint MSE -
    applied to every supervised stage (`staged_loss`). `model` is the bare model on its device."""
    codec = build_codec(cfg)
    if cfg.oasnet.enabled:
        return OASNetLoss.from_config(cfg.oasnet, model, codec)
    loss = cfg.loss
    if loss.structure:
        return staged_loss(DynamicStructureLoss(skeleton.limb_chains, skeleton.num_keypoints, loss), codec)
    if loss.structure_aware_alpha > 0:
        return staged_loss(StructureAwareLoss(skeleton.bones, skeleton.num_keypoints, loss.structure_aware_alpha),
                           codec)
    return staged_loss(lambda pred, target, weight, progress: (keypoint_mse(pred, target, weight), {}), codec)
