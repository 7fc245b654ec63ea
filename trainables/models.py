"""Model zoo behind one name -> factory registry (timm's idea): image batch -> K heatmaps at 1/4 resolution.

The model classes keep this import path: registered MLflow models pickle them and carry only the `trainables`
package with them, so this module imports nothing from `datasets`.
"""
from __future__ import annotations

from typing import Callable

import torch
import torchvision
from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_INPUT_HW: dict[str, tuple[int, int]] = {}  # models described at another input than DEFAULT_INPUT_HW
_STRIDE: dict[str, int] = {}  # models whose heatmaps are not at 1/4 of the input


def register(name: str, input_hw: tuple[int, int] | None = None, stride: int = 4):
    """Register a factory(num_keypoints, pretrained, **kwargs) under `name`; `input_hw` (h, w) is the input its
    paper describes it at (default DEFAULT_INPUT_HW), `stride` the input/heatmap ratio of its output."""
    def wrap(factory):
        _REGISTRY[name] = factory
        if input_hw is not None:
            _INPUT_HW[name] = tuple(input_hw)
        if stride != 4:
            _STRIDE[name] = stride
        return factory

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def check_name(name: str) -> None:
    """ValueError naming the registry's choices when `name` is no registered model."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(list_models())}")


# Every model's default input (h, w): the papers' COCO setting, datasets.meta's COCO input_hw (not imported, see
# above; tests/trainables/test_models.py checks they agree).
DEFAULT_INPUT_HW: tuple[int, int] = (256, 192)


def default_input(name: str) -> tuple[int, int]:
    """The input (h, w) `name` is described and tested at."""
    return _INPUT_HW.get(name, DEFAULT_INPUT_HW)


def output_stride(name: str) -> int:
    """Input pixels per heatmap cell of `name`'s output (4 for most; 1 for SRPose's full-resolution heatmaps)."""
    check_name(name)
    return _STRIDE.get(name, 4)


def stage_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every supervised heatmap of one forward pass, the evaluated one last: a multi-output model's (intermediate
    supervision: Hourglass stacks, SRPose stages) called as model(x, all_outputs=True) - through a DDP wrapper's
    own forward, so that gradients are synchronised - or [model(x)]."""
    bare = getattr(model, "module", model)
    return model(x, all_outputs=True) if getattr(bare, "multi_output", False) else [model(x)]


def stage_weights(model: nn.Module) -> tuple[float, ...]:
    """The loss weight of each of `stage_outputs`' heatmaps (all 1 but SRPose's 1/32 map)."""
    bare = getattr(model, "module", model)
    return tuple(getattr(bare, "stage_weights", (1.0,)))


def create_model(name: str, num_keypoints: int = 17, pretrained: bool | str = False, **kwargs) -> nn.Module:
    """`pretrained`: False; True for the backbone's ImageNet weights from the timm/torchvision hubs (needs
    internet); or a path to a local state-dict file of the backbone (e.g. downloaded once elsewhere)."""
    check_name(name)
    model = _REGISTRY[name](num_keypoints=num_keypoints, pretrained=pretrained is True, **kwargs)
    if isinstance(pretrained, str) and pretrained:
        load_backbone(model, pretrained)
    return model


def load_backbone(model: nn.Module, path: str) -> None:
    """Backbone weights from a local file: a state dict of the bare backbone (classifier keys are ignored)."""
    from pathlib import Path

    if not Path(path).is_file():
        raise ValueError(f"pretrained weights {path}: no such file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    missing, unexpected = model.backbone.load_state_dict(state, strict=False)
    loaded = len(model.backbone.state_dict()) - len(missing)
    if loaded == 0:
        raise ValueError(f"pretrained weights {path}: no key matches the {type(model.backbone).__name__} backbone")


class SimpleBaseline(nn.Module):
    """Xiao et al. 2018: ResNet backbone, three stride-2 deconvolutions, a 1x1 head."""

    def __init__(self, depth: int, num_keypoints: int, deconv_channels: int = 256, pretrained: bool = False, **_):
        super().__init__()
        weights = "DEFAULT" if pretrained else None
        resnet = getattr(torchvision.models, f"resnet{depth}")(weights=weights)
        self.backbone = nn.Sequential(*list(resnet.children())[:-2])
        self.deconv = deconv_stack(resnet.fc.in_features, deconv_channels, 3)
        self.head = nn.Conv2d(deconv_channels, num_keypoints, 1)
        init_head(self.deconv, self.head)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 1/4-resolution feature map the 1x1 head reads (OASNet works on it)."""
        return self.deconv(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def deconv_stack(in_channels: int, channels: int, count: int) -> nn.Sequential:
    """SimpleBaseline's upsampling: `count` x (4x4 stride-2 transposed conv, BN, ReLU)."""
    layers = []
    for _ in range(count):
        layers += [nn.ConvTranspose2d(in_channels, channels, 4, stride=2, padding=1, bias=False),
                   nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        in_channels = channels
    return nn.Sequential(*layers)


def init_head(*modules: nn.Module) -> None:
    """The reference initialisation: small deconv/head weights keep early heatmaps near zero."""
    for root in modules:
        for module in root.modules():
            if isinstance(module, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(module.weight, std=0.001)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


for _depth in (18, 50, 101, 152):
    register(f"simplebaseline_r{_depth}")(
        lambda num_keypoints, depth=_depth, **kw: SimpleBaseline(depth, num_keypoints, **kw)
    )


class HRNetPose(nn.Module):
    """Sun et al. 2019: timm's HRNet backbone, its highest-resolution (1/4) branch, a 1x1 head.

    timm builds HRNet for classification, so the last stage-4 module also fuses into the three lower-resolution
    branches; the pose network does not (multi_scale_output=False) and those fuse layers are dropped here, which
    is what brings the parameter count to the published pose model's.
    """

    def __init__(self, width: int, num_keypoints: int, pretrained: bool = False, **_):
        super().__init__()
        import timm

        self.backbone = timm.create_model(f"hrnet_w{width}", pretrained=pretrained, features_only=True,
                                          feature_location="", out_indices=(1,))
        last = self.backbone.stage4[-1]
        last.fuse_layers = nn.ModuleList([last.fuse_layers[0]])
        self.head = nn.Conv2d(width, num_keypoints, 1)
        init_head(self.head)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


for _width in (32, 48):
    register(f"hrnet_w{_width}")(lambda num_keypoints, width=_width, **kw: HRNetPose(width, num_keypoints, **kw))


class ViTPose(nn.Module):
    """Xu et al. 2022: a plain ViT-B/16 on the 256x192 crop (a 16x12 token grid) and a light decoder.

    drop_path_rate 0.3 is ViTPose-B's stochastic depth. decoder="classic": two 4x4 stride-2 deconvolutions (256
    channels, BN, ReLU) to 1/4 resolution, a 1x1 head; decoder="simple": bilinear x4 upsampling, ReLU, a 3x3 head.
    """

    def __init__(self, num_keypoints: int, input_hw=DEFAULT_INPUT_HW, decoder: str = "classic",
                 pretrained: bool = False, drop_path_rate: float = 0.3, **_):
        super().__init__()
        import timm

        if decoder not in ("classic", "simple"):
            raise ValueError(f"ViTPose decoder must be 'classic' or 'simple', got {decoder!r}")
        self.backbone = timm.create_model("vit_base_patch16_224", pretrained=pretrained, img_size=tuple(input_hw),
                                          num_classes=0, global_pool="", drop_path_rate=drop_path_rate)
        self.grid = (input_hw[0] // 16, input_hw[1] // 16)
        width = self.backbone.embed_dim
        if decoder == "classic":
            self.decoder = deconv_stack(width, 256, 2)
            self.head = nn.Conv2d(256, num_keypoints, 1)
        else:
            self.decoder = nn.Sequential(nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False),
                                         nn.ReLU(inplace=True))
            self.head = nn.Conv2d(width, num_keypoints, 3, padding=1)
        init_head(self.decoder, self.head)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone.forward_features(x)[:, self.backbone.num_prefix_tokens:]
        n, _, c = tokens.shape
        grid = tokens.transpose(1, 2).reshape(n, c, *self.grid)
        return self.decoder(grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


register("vitpose_b")(lambda num_keypoints, **kw: ViTPose(num_keypoints, **kw))

# Imported here, after the helpers above, and re-exported: pickled models refer to trainables.models.<Class>.
from trainables.hourglass import StackedHourglass  # noqa: E402
from trainables.srpose import OUTPUT_STRIDE as SRPOSE_STRIDE, SRPose  # noqa: E402

for _stacks in (1, 2, 4, 8):
    register(f"hourglass_{_stacks}stack", input_hw=(256, 256))(
        lambda num_keypoints, stacks=_stacks, **kw: StackedHourglass(stacks, num_keypoints, **kw))
register("srpose_hrnet_w32", stride=SRPOSE_STRIDE)(lambda num_keypoints, **kw: SRPose(num_keypoints, 32, **kw))


def inference_parameters(model: nn.Module) -> int:
    """Parameters of the network inference runs, as papers tabulate them: all but those of heads that exist only
    to supervise intermediate stages and feed nothing the evaluated output depends on (a model's
    `training_only` attribute names them: SRPose's intermediate SR heads)."""
    dropped = {id(p) for name in getattr(model, "training_only", ()) for p in getattr(model, name).parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in dropped)


def describe(name: str, num_keypoints: int = 17) -> dict:
    """{"params_m" (inference_parameters), "train_params_m" (every trained parameter), "gflops" (multiply-adds of
    one inference forward pass, in 1e9), "input": [h, w], "stride": input pixels per heatmap cell} at the default
    input (`default_input`). The model is built on torch's meta device: shapes without storage, initialisation or
    arithmetic, so that the whole zoo is described in seconds (FlopCounterMode counts by shape)."""
    with torch.device("meta"):
        model = create_model(name, num_keypoints)
    input_hw = default_input(name)
    return {"params_m": round(inference_parameters(model) / 1e6, 3),
            "train_params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
            "gflops": round(count_flops(model, input_hw) / 2 / 1e9, 3), "input": list(input_hw),
            "stride": output_stride(name)}


def count_flops(model: nn.Module, input_hw: tuple[int, int], train: bool = False) -> int:
    """FLOPs (2 x multiply-adds) of one forward pass of one image, counted by torch's own FlopCounterMode on the
    model's own device (the meta device counts without computing).

    train: a training step's instead - the forward of every supervised output (stage_outputs) and the backward to
    the parameters' gradients (not to the input's, as in training). The model's state is left as it was (eval-mode
    normalisation, torch.autograd.grad: no running statistics and no .grad touched)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.set_grad_enabled(train), counter:
        x = torch.zeros(1, 3, *input_hw, device=next(model.parameters()).device)  # meta too: shapes only
        if not train:
            model(x)
        else:
            trained = [p for p in model.parameters() if p.requires_grad]
            torch.autograd.grad(sum(out.float().sum() for out in stage_outputs(model, x)), trained, allow_unused=True)
    model.train(was_training)
    return counter.get_total_flops()


def _count(text: str) -> int:
    """An argparse type: a positive integer (this module imports nothing from datasets/, whose datasets.cli has one)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def main(argv=None) -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description="The model zoo: parameters and multiply-adds at each default input.")
    parser.add_argument("--list", action="store_true", help="describe every registered model")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--num-keypoints", type=_count, default=17)
    args = parser.parse_args(argv)
    if not args.list:
        parser.error("nothing to do: pass --list")
    table = {name: describe(name, args.num_keypoints) for name in list_models()}
    if args.json:
        print(json.dumps(table))
    else:
        for name, row in table.items():
            print(f"{name:20s} {row['params_m']:8.2f} M params  {row['gflops']:7.2f} GFLOPs  input {row['input']}")


if __name__ == "__main__":
    main()
