"""The training loop without per-step host synchronisation (issue 20): what it reads from its tensors per step, the
non-finite-loss guard it keeps, the loader's worker processes, and the profiler window."""
import gzip
import json

import pytest
import torch
from torch import nn

from datasets.annotations import load_records
from datasets.skeletons import COCO17
from trainables.config import TrialConfig
from trainables.engine import NonFiniteLoss, heatmap_loss, train_one_epoch
from trainables.losses import keypoint_mse
from trainables.profiling import ProfileWindow, count_host_reads

K = 4
CPU = torch.device("cpu")


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, K, 3, stride=4, padding=1))  # (B, 3, 32, 32) -> (B, K, 8, 8)


def batches(n: int) -> list[dict]:
    torch.manual_seed(1)
    return [{"image": torch.randn(2, 3, 32, 32), "heatmaps": torch.rand(2, K, 8, 8),
             "target_weight": torch.ones(2, K)} for _ in range(n)]


MSE = heatmap_loss(lambda pred, target, weight, progress: (keypoint_mse(pred, target, weight), {}))


def reads(steps: int, compute_loss=MSE, print_every: int = 0) -> int:
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)  # reads nothing itself (Adam reads its CPU step count)
    return count_host_reads(lambda: train_one_epoch(model, compute_loss, optimizer, batches(steps), 0, 1, CPU,
                                                    grad_clip=1.0, print_every=print_every))[1]


def test_the_loop_reads_no_tensor_per_step_only_per_interval_and_epoch():
    """Every .item()/float()/bool() of a tensor is counted as torch dispatches it: an epoch of 6 steps reads as
    many values as one of 2 (the guard and the loss at the end), and logging every 2 steps adds its two reads
    (guard, loss) per interval, not per step. The counter sees a loss that reads a value per step."""
    at_end = reads(2)
    assert reads(6) == at_end == 2
    assert reads(6, print_every=2) == at_end + 3 * 2  # steps 0, 2 and 4
    itemised = heatmap_loss(lambda pred, target, weight, progress: (
        keypoint_mse(pred, target, weight), {"mse": keypoint_mse(pred, target, weight).item()}))
    assert reads(6, itemised) - reads(2, itemised) == 4


def test_the_default_losses_read_no_tensor_per_step():
    """The DSL (the default loss) and the structure-aware loss return their parts as device tensors: per step they
    read nothing (was: two .item() per step each, a host synchronisation on a GPU)."""
    from trainables.losses import DynamicStructureLoss, StructureAwareLoss
    from trainables.config import LossConfig

    bones = [(0, 1), (1, 2), (2, 3)]
    for loss in (DynamicStructureLoss(bones, K, LossConfig()), StructureAwareLoss(bones, K, 0.5)):
        compute = heatmap_loss(loss)
        extra = {key: float(value) for key, value in loss(torch.rand(2, K, 8, 8), torch.rand(2, K, 8, 8),
                                                          torch.ones(2, K), 0.5)[1].items()}
        assert reads(6, compute) == reads(2, compute), type(loss).__name__
        # the parts' averages are read once at the end, beside the loss and the guard
        assert reads(2, compute) == 2 + sum(1 for key in extra if key != "lambda"), type(loss).__name__


def diverging(from_step: int):
    calls = [0]

    def compute(model, batch, progress):
        loss, parts = MSE(model, batch, progress)
        calls[0] += 1
        return (loss * float("nan") if calls[0] > from_step else loss), parts

    return compute


@pytest.mark.parametrize("print_every, found_at", [(0, 5), (2, 4)])
def test_a_non_finite_loss_fails_the_epoch_naming_its_first_step(print_every, found_at):
    """The guard keeps the first non-finite step on the device and raises when it next reads (the logging
    interval or the epoch's end), before the epoch returns - so fit never checkpoints the diverged weights."""
    model = tiny_model()
    with pytest.raises(NonFiniteLoss, match=rf"non-finite loss nan at epoch 1, step 3 \(found at step {found_at}\)"
                                            r"; lower optim.lr"):
        train_one_epoch(model, diverging(3), torch.optim.SGD(model.parameters(), lr=0.01), batches(6), 0, 1, CPU,
                        print_every=print_every)


def test_epoch_stats_are_the_device_sums_averaged_and_say_how_long_data_took():
    model, data = tiny_model(), batches(3)
    with torch.no_grad():
        losses = [keypoint_mse(model(b["image"]), b["heatmaps"], b["target_weight"]).item() for b in data]
    # lr 0: the same weights at every step, so the epoch's loss is the mean of these
    stats = train_one_epoch(model, MSE, torch.optim.SGD(model.parameters(), lr=0.0), data, 0, 1, CPU, print_every=0)
    assert stats["loss"] == pytest.approx(sum(losses) / 3, rel=1e-6)
    assert 0 <= stats["data_wait_s"] <= stats["time_s"] and stats["images_per_s"] > 0


def test_profile_window_writes_the_table_trace_and_what_bounds_the_step(tmp_path):
    model = tiny_model()
    window = ProfileWindow(tmp_path, CPU, "train", skip=2, active=3)
    train_one_epoch(model, MSE, torch.optim.SGD(model.parameters(), lr=0.01), batches(8), 0, 1, CPU,
                    print_every=0, profile=window)
    summary = json.loads((tmp_path / "profile_train.json").read_text())
    assert summary == window.summary and summary["steps"] == 3
    assert summary["wall_s_per_step"] > 0 and 0 <= summary["data_wait_share"] <= 1
    assert summary["bound"].startswith("cpu") and summary["top_ops"]
    assert "aten::convolution" in (tmp_path / "profile_train.txt").read_text()
    trace = json.loads(gzip.decompress((tmp_path / "trace_train.json.gz").read_bytes()))
    assert any(e.get("name") == "data_wait" for e in trace["traceEvents"])
    # A window longer than the epoch closes with it, counting the steps it saw; later epochs pass through.
    short = ProfileWindow(tmp_path / "short", CPU, "train", skip=1, active=10)
    train_one_epoch(model, MSE, torch.optim.SGD(model.parameters(), lr=0.01), batches(3), 0, 1, CPU,
                    print_every=0, profile=short)
    assert short.summary["steps"] == 2
    stats = train_one_epoch(model, MSE, torch.optim.SGD(model.parameters(), lr=0.01), batches(3), 1, 2, CPU,
                            print_every=0, profile=short)
    assert short.summary["steps"] == 2 and stats["images_per_s"] > 0


@pytest.fixture(scope="module")
def faulty_coco(shared_data, tmp_path_factory):
    """The COCO fixture's images with one of them corrupt."""
    import shutil

    root = tmp_path_factory.mktemp("coco")
    for image in sorted((shared_data / "coco").glob("*.jpg")):
        shutil.copy(image, root / image.name)
    (root / "000000196141.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return load_records(shared_data / "coco/test_coco.json", root, COCO17)


@pytest.mark.parametrize("gpu_augment", ["off", "on"])
def test_persistent_loader_workers_give_the_in_process_batches_and_their_faults(faulty_coco, gpu_augment):
    """runtime.loader_workers for both pipelines: two epochs through persistent worker processes are the batches
    the trainer's own process makes (each epoch's own randomness), and the corrupt image a worker met is in the
    trainer's dataset's skipped samples and faults."""
    from datasets.occlusion import LJAConfig, OcclusionConfig, build_occlusions
    from datasets.topdown.augment import Augment
    from datasets.topdown.codec import HeatmapCodec
    from datasets.topdown.dataset import TopDownDataset
    from trainables.loaders import train_loader

    def run(workers: int):
        dataset = TopDownDataset(faulty_coco, COCO17, HeatmapCodec((64, 64)), train=True, seed=3,
                                 augment=Augment(0.3, 30.0, 0.6, flip_p=0.5),
                                 occlusions=build_occlusions(LJAConfig(), OcclusionConfig(), COCO17))
        cfg = TrialConfig.from_flat({"optim.batch_size": 4, "runtime.loader_workers": workers,
                                     "runtime.gpu_augment": gpu_augment, "runtime.seed": 3})
        loader, _ = train_loader(cfg, dataset, None, CPU, channels_last=False)
        epochs = []
        for epoch in (0, 1):
            dataset.set_epoch(epoch)
            epochs.append([b for b in loader if b is not None])
        return epochs, dataset

    (plain, plain_set), (workers, worker_set) = run(0), run(1)
    for epoch in (0, 1):
        assert len(plain[epoch]) == len(workers[epoch]) > 0
        for a, b in zip(plain[epoch], workers[epoch]):
            assert torch.equal(a["index"], b["index"])
            assert torch.allclose(a["image"], b["image"]) and torch.equal(a["heatmaps"], b["heatmaps"])
    assert not torch.equal(plain[0][0]["image"], plain[1][0]["image"])  # the epoch reached the workers
    assert worker_set.skipped == plain_set.skipped and len(plain_set.skipped) > 0
    assert set(worker_set.faults) == worker_set.skipped
