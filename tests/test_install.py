"""The environment the bootstrap builds: a torch/torchvision pair whose compiled ops load together."""
import torch
import torchvision
from torchvision.ops import nms


def test_torchvision_ops_load_against_torch():
    # Against the machine's find-links torch 2.13.0+cpu this raises "operator torchvision::nms does not exist".
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]


def test_locked_versions_are_installed():
    assert torch.__version__.startswith("2.15.0")
    assert torchvision.__version__.startswith("0.29.2")
    assert "+cpu" not in torch.__version__
