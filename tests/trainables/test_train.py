"""One trial trains and is scored on each real dataset's official layout (built from the fixtures), without Ray."""
import logging
import shutil

import pytest

from conftest import coco_with_unreadable_images
from datasets.layouts import resolve
from trainables.config import TrialConfig
from trainables.runtime import LocalReporter
from trainables.train import fit


def trial_config(layout, **overrides) -> TrialConfig:
    data = {"data.dataset": layout.meta.name, "data.train_ann": str(layout.train.ann),
            "data.train_images": str(layout.train.images), "data.val_ann": str(layout.val.ann),
            "data.val_images": str(layout.val.images)}
    if layout.val_occ:
        data |= {"data.val_occ_ann": str(layout.val_occ.ann), "data.val_occ_images": str(layout.val_occ.images)}
    if layout.val_gt:
        data["data.val_gt"] = str(layout.val_gt)
    small = {"data.input_h": 64, "data.input_w": 64, "model.deconv_channels": 16, "optim.epochs": 1,
             "optim.batch_size": 4, "data.flip_p": 0.5, "data.half_body_p": 0.3, "data.photometric_p": 0.5,
             "data.flip_test": True, "data.rotation_p": 0.6}
    return TrialConfig.from_flat({**data, **small, **overrides})


EXPECTED = {
    "coco": ["val/AP", "val/AR", "val/O/AP", "val/NO/AP"],
    "crowdpose": ["val/AP", "val/AP_E", "val/AP_H", "val/O/AP", "val/NO/AP"],
    "ochuman": ["val/AP", "val_occ/AP", "val_occ/O/AP", "val_occ/NO/AP"],
    "mpii": ["val/PCKh_0.5", "val/PCKh_0.1", "val/PCKh/Head", "val/PCKh/Ankle"],
}


@pytest.mark.parametrize("dataset", sorted(EXPECTED))
def test_trial_trains_and_scores_each_dataset(real_layouts, tmp_path, dataset):
    reporter = LocalReporter(tmp_path / "trial")
    cfg = trial_config(resolve(dataset, real_layouts / dataset))
    fit(cfg, reporter)
    metrics = reporter.history[-1]
    assert metrics["train/loss"] > 0 and metrics["data/skipped_samples"] == 0
    if cfg.optim.epochs == 1:  # the rate the epoch trained at, not the decayed one the scheduler set after it
        assert metrics["train/lr"] == cfg.optim.lr
    for key in EXPECTED[dataset]:
        limit = 100 if "PCKh" in key else 1
        assert -1 <= metrics[key] <= limit, key  # -1: COCOeval's "no such object" for an empty area range
    assert (tmp_path / "trial" / "model.pt").is_file()


def test_detector_boxes_evaluate_the_val_split(real_layouts, shared_data, tmp_path):
    det = str(shared_data / "coco/test_coco_det_AP_H_56.json")
    reporter = LocalReporter(tmp_path / "trial")
    fit(trial_config(resolve("coco", real_layouts / "coco"), **{"data.det_file": det}), reporter)
    assert 0 <= reporter.history[-1]["val/AP"] <= 1


def test_unreadable_images_are_skipped_counted_and_reported(shared_data, tmp_path, caplog):
    """One image corrupt, one missing: their persons are skipped in training and evaluation, the run finishes."""
    root = tmp_path / "coco"
    broken = coco_with_unreadable_images(shared_data, root, missing=("000000197388.jpg",))
    assert broken > 0

    reporter = LocalReporter(tmp_path / "trial")
    with caplog.at_level(logging.WARNING):
        fit(trial_config(resolve("coco", root), **{"optim.epochs": 2}), reporter)
    assert [m["data/skipped_samples"] for m in reporter.history] == [broken, broken]  # each sample counted once
    assert reporter.history[-1]["val/skipped_samples"] == broken
    assert "000000196141.jpg" in caplog.text and "training samples skipped" in caplog.text


def test_trial_trains_with_occluders_and_a_targeted_augmentation(real_layouts, tmp_path):
    cfg = trial_config(resolve("coco", real_layouts / "coco"), **{
        "occ.p_occ": 0.5, "occ.targeted": "partmix", "occ.targeted_p": 0.5, "occ.label_removal": True})
    reporter = LocalReporter(tmp_path / "trial")
    fit(cfg, reporter)
    assert reporter.history[-1]["train/loss"] > 0
    with pytest.raises(ValueError, match="occ.targeted"):
        fit(trial_config(resolve("coco", real_layouts / "coco"), **{"occ.targeted": "cutmix"}), reporter)


@pytest.mark.parametrize("mimic", ["l2", "cosine", "kl", "sinkhorn"])
def test_oasnet_trial_trains_siamese_with_each_mimic_loss(real_layouts, tmp_path, mimic):
    cfg = trial_config(resolve("coco", real_layouts / "coco"), **{
        "oasnet.enabled": True, "oasnet.mimic": mimic, "oasnet.detach": mimic != "l2", "oasnet.lambda_mimic": 0.1,
        "lja.enabled": True, "loss.structure": False})
    reporter = LocalReporter(tmp_path / "trial")
    fit(cfg, reporter)
    metrics = reporter.history[-1]
    assert metrics["train/loss_joints"] > 0 and metrics["train/loss_occlusion"] > 0
    assert metrics["train/loss_mimic"] >= 0 and 0 <= metrics["val/AP"] <= 1


def test_structure_aware_baseline_trains(real_layouts, tmp_path):
    cfg = trial_config(resolve("coco", real_layouts / "coco"), **{"loss.structure": False,
                                                                   "loss.structure_aware_alpha": 0.5})
    reporter = LocalReporter(tmp_path / "trial")
    fit(cfg, reporter)
    assert reporter.history[-1]["train/loss_structure"] > 0


def test_non_finite_loss_fails_the_trial_with_a_reason(real_layouts, tmp_path):
    from trainables.engine import NonFiniteLoss

    cfg = trial_config(resolve("coco", real_layouts / "coco"), **{"optim.lr": 1e30, "optim.epochs": 3})
    with pytest.raises(NonFiniteLoss, match="non-finite loss .* lower optim.lr"):
        fit(cfg, LocalReporter(tmp_path / "trial"))


def test_bf16_autocast_and_channels_last_path_runs(real_layouts, tmp_path):
    """The GPU settings forced on the CPU: the same loop runs under bf16 autocast with NHWC tensors."""
    cfg = trial_config(resolve("coco", real_layouts / "coco"), **{"runtime.amp": "on", "runtime.channels_last": "on",
                                                                   "optim.grad_clip": 1.0})
    reporter = LocalReporter(tmp_path / "trial")
    fit(cfg, reporter)
    assert reporter.history[-1]["train/loss"] > 0


def test_gpu_augment_path_trains_a_trial_and_counts_unreadable_images(shared_data, tmp_path):
    """runtime.gpu_augment=on runs the device-side pipeline (here on the CPU device) inside the real trainer, with
    a loader worker process; an unsupported setting (photometric jitter) is refused by name, and auto falls back."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        (root / "annotations" / f"person_keypoints_{split}.json").symlink_to(shared_data / "coco/test_coco.json")
    (root / "val2017").symlink_to(shared_data / "coco")
    (root / "train2017").mkdir()
    for image in sorted((shared_data / "coco").glob("*.jpg")):
        shutil.copy(image, root / "train2017" / image.name)
    (root / "train2017" / "000000196141.jpg").write_bytes(b"not a jpeg")
    on = {"runtime.gpu_augment": "on", "runtime.loader_workers": 1, "data.photometric_p": 0.0}
    reporter = LocalReporter(tmp_path / "trial")
    fit(trial_config(resolve("coco", root), **on), reporter)
    metrics = reporter.history[-1]
    assert metrics["train/loss"] > 0 and metrics["data/skipped_samples"] >= 1
    with pytest.raises(ValueError, match="photometric"):
        fit(trial_config(resolve("coco", root), **{**on, "data.photometric_p": 0.5}), LocalReporter(tmp_path / "x"))
    fit(trial_config(resolve("coco", root), **{"runtime.gpu_augment": "auto"}), LocalReporter(tmp_path / "auto"))
