"""Model zoo behind one name -> factory registry (timm's idea): image batch -> K heatmaps at 1/4 resolution."""
from __future__ import annotations

from typing import Callable

import torch
import torchvision
from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def wrap(factory):
        _REGISTRY[name] = factory
        return factory

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, num_keypoints: int = 17, **kwargs) -> nn.Module:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose from {list_models()}")
    return _REGISTRY[name](num_keypoints=num_keypoints, **kwargs)


class SimpleBaseline(nn.Module):
    """Xiao et al. 2018: ResNet backbone, three stride-2 deconvolutions, a 1x1 head."""

    def __init__(self, depth: int, num_keypoints: int, deconv_channels: int = 256):
        super().__init__()
        resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        self.backbone = nn.Sequential(*list(resnet.children())[:-2])
        in_channels = resnet.fc.in_features
        layers = []
        for _ in range(3):
            layers += [
                nn.ConvTranspose2d(in_channels, deconv_channels, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(deconv_channels),
                nn.ReLU(inplace=True),
            ]
            in_channels = deconv_channels
        self.deconv = nn.Sequential(*layers)
        self.head = nn.Conv2d(deconv_channels, num_keypoints, 1)
        # The reference initialisation: small deconv/head weights keep early heatmaps near zero.
        for module in [*self.deconv.modules(), self.head]:
            if isinstance(module, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(module.weight, std=0.001)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.deconv(self.backbone(x)))


for _depth in (18, 50, 101, 152):
    register(f"simplebaseline_r{_depth}")(
        lambda num_keypoints, depth=_depth, **kw: SimpleBaseline(depth, num_keypoints, **kw)
    )


def count_flops(model: nn.Module, input_hw: tuple[int, int]) -> int:
    """FLOPs (2 x multiply-adds) of one forward pass of one image, counted by torch's own FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, *input_hw))
    model.train(was_training)
    return counter.get_total_flops()
