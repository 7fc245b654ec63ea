"""datasets/preview.py: the contact sheet and occlusions.json for every transform and attack, on real COCO crops."""
import json
import math
import subprocess
import sys

import cv2
import pytest

from conftest import REPO_ROOT
from datasets.occlusion.attacks import ATTACKS
from datasets.preview import AUGMENTATIONS, main


def run(shared_data, out, *flags):
    argv = ["--dataset", "coco", "--data-root", str(shared_data / "coco"), "--ann",
            str(shared_data / "coco/test_coco.json"), "--n", "12", "--seed", "0", "--out", str(out), *flags]
    assert main(argv) == 0
    return json.loads((out / "occlusions.json").read_text())


def test_lja_preview_matches_the_definition(shared_data, tmp_path):
    """The issue's command: ceil(0.15 x visible limb joints) blocks of 0.2 x the body box, centred on them."""
    proc = subprocess.run([sys.executable, "datasets/preview.py", "--dataset", "coco", "--data-root",
                           str(shared_data / "coco"), "--ann", str(shared_data / "coco/test_coco.json"),
                           "--aug", "lja", "--quantity-ratio", "0.15", "--size-ratio", "0.2", "--p", "1",
                           "--n", "12", "--seed", "0", "--out", str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    samples = json.loads((tmp_path / "occlusions.json").read_text())["samples"]
    assert len(samples) == 12
    sheet = cv2.imread(str(tmp_path / "preview.png"))
    assert sheet is not None and sheet.shape[0] >= 2 * 256
    for s in samples:
        assert s["crop"] == [192, 256]
        assert len(s["occlusions"]) == math.ceil(0.15 * len(s["visible_limb_joints"]))
        x0, y0, x1, y1 = s["body_box"]
        for o in s["occlusions"]:
            assert o["joint"] in s["visible_limb_joints"] and o["part"] is None and 0 <= o["fill"] <= 255
            bx0, by0, bx1, by1 = o["box"]
            if 0 < bx0 and bx1 < 192 and 0 < by0 and by1 < 256:  # not clipped by the crop
                assert bx1 - bx0 == pytest.approx(0.2 * (x1 - x0), abs=1.01)
                assert by1 - by0 == pytest.approx(0.2 * (y1 - y0), abs=1.01)


@pytest.mark.parametrize("aug", [a for a in AUGMENTATIONS if a != "lja"])
def test_every_augmentation_previews(shared_data, tmp_path, aug):
    samples = run(shared_data, tmp_path, "--aug", aug, "--label-removal")["samples"]
    assert len(samples) == 12 and any(s["occlusions"] for s in samples)
    for s in samples:
        for o in s["occlusions"]:
            assert (o["joint"] is None) != (o["part"] is None) or aug == "occluders"
            assert 0 <= o["box"][0] <= o["box"][2] <= 192 and 0 <= o["box"][1] <= o["box"][3] <= 256


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_attack_previews(shared_data, tmp_path, attack):
    samples = run(shared_data, tmp_path, "--attack", attack, "--radius", "9", "--part", "lower_body")["samples"]
    assert all(s["occlusions"] for s in samples if len(s["visible_limb_joints"]) > 3)
    if attack.startswith("part"):
        assert {o["part"] for s in samples for o in s["occlusions"]} == {"lower_body"}
    if attack.endswith("blackout"):
        assert {o["fill"] for s in samples for o in s["occlusions"]} == {0}


def test_unknown_part_exits_2(shared_data, tmp_path, capsys):
    argv = ["--dataset", "coco", "--data-root", str(shared_data / "coco"), "--ann",
            str(shared_data / "coco/test_coco.json"), "--attack", "part-blur", "--part", "tail", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "unknown body part 'tail'" in capsys.readouterr().err
