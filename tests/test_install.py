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


def test_datasets_package_is_this_repository(tmp_path):
    """The top-level package `datasets` shares its name with HuggingFace's `datasets`; in an environment holding
    both, whichever the import system finds first wins. The project must resolve to its own, from any directory."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    found = subprocess.run([sys.executable, "-c", "import datasets, sys; sys.stdout.write(datasets.__file__)"],
                           cwd=tmp_path, env=os.environ, capture_output=True, text=True, check=True).stdout
    assert Path(found).resolve().is_relative_to(repo), (
        f"`import datasets` resolves to {found}, outside {repo}: another package named datasets (HuggingFace's?) "
        "shadows the project's; uninstall it from this environment (README: Install notes)")
