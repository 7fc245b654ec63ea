"""A trial's model and loss from its TrialConfig: the one place a config becomes components (train.py's fit and
checkpoint.py's load_checkpoint both build through here)."""
from __future__ import annotations

from torch import nn

from datasets import meta
from datasets.skeletons import Skeleton
from trainables.config import TrialConfig
from trainables.engine import heatmap_loss
from trainables.losses import DynamicStructureLoss, StructureAwareLoss, keypoint_mse
from trainables.models import create_model
from trainables.oasnet import OASNet, OASNetLoss


def build_model(cfg: TrialConfig) -> nn.Module:
    """The model of a TrialConfig: `model.name` for the dataset's keypoints at `data.input_h/w`, its backbone's
    weights from `model.pretrained` ("" or "none": none), wrapped in OASNet when `oasnet.enabled`."""
    model = create_model(cfg.model.name, meta.get(cfg.data.dataset).skeleton.num_keypoints,
                         pretrained=cfg.model.pretrained if cfg.model.pretrained not in ("", "none") else False,
                         deconv_channels=cfg.model.deconv_channels, input_hw=(cfg.data.input_h, cfg.data.input_w))
    return OASNet(model) if cfg.oasnet.enabled else model


def build_loss(cfg: TrialConfig, skeleton: Skeleton, model):
    """compute_loss(model, batch, progress) for train_one_epoch: OASNet's siamese loss (`oasnet`), else the
    heatmap loss of the `loss` section - DSL, Ke et al.'s structure-aware loss, or the plain keypoint MSE. `model` is
    the bare model on its device."""
    if cfg.oasnet.enabled:
        return OASNetLoss.from_config(cfg.oasnet, model)
    loss = cfg.loss
    if loss.structure:
        return heatmap_loss(DynamicStructureLoss(skeleton.limb_chains, skeleton.num_keypoints, loss))
    if loss.structure_aware_alpha > 0:
        return heatmap_loss(StructureAwareLoss(skeleton.bones, skeleton.num_keypoints, loss.structure_aware_alpha))
    return heatmap_loss(lambda pred, target, weight, progress: (keypoint_mse(pred, target, weight), {}))
