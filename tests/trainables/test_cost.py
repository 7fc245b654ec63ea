"""trainables/cost.py: FLOPs per sample, images seen with an unreadable image skipped, counters across a resume."""
import json
import time

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from datasets.annotations import load_records
from conftest import coco_with_unreadable_images
from datasets.layouts import resolve
from datasets.meta import get
from trainables import cost
from trainables.config import TrialConfig
from trainables.models import create_model
from trainables.runtime import LocalReporter
from trainables.train import fit


def test_flops_of_a_tiny_network_are_the_analytic_count():
    """conv 3->8 (3x3) and conv 8->K (1x1) at H x W: the forward is 2 x multiply-adds; the backward computes both
    weight gradients (one forward's worth each) and the second conv's input gradient, not the first's (the image
    needs none)."""
    h, w, k = 12, 10, 5
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(8, k, 1, bias=False))
    forward = 2 * h * w * (3 * 8 * 9 + 8 * k)
    assert cost.flops_per_sample(model, (h, w), train=False) == forward
    assert cost.flops_per_sample(model, (h, w), train=True) == 2 * forward + 2 * h * w * 8 * k


def test_flops_per_sample_are_flop_counter_modes_count_of_a_real_training_step():
    model = create_model("simplebaseline_r18", 17, deconv_channels=16)
    hw = (64, 48)
    counter = FlopCounterMode(display=False)
    image = torch.zeros(1, 3, *hw)
    with counter:  # a training step of one sample, as engine.train_one_epoch runs it
        model(image).float().sum().backward()
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as forward_counter, torch.no_grad():
        model.eval()(image)
    assert cost.flops_per_sample(model, hw, train=True) == counter.get_total_flops()
    assert cost.flops_per_sample(model, hw, train=False) == forward_counter.get_total_flops()
    assert 2.9 < counter.get_total_flops() / forward_counter.get_total_flops() < 3.0  # Kaplan et al.'s ~3x

    # Cached: the same architecture and input size is counted once (a second model of it costs nothing)
    again = create_model("simplebaseline_r18", 17, deconv_channels=16)
    started = time.process_time()
    assert cost.flops_per_sample(again, hw, train=True) == counter.get_total_flops()
    assert time.process_time() - started < 0.05
    assert cost.flops_per_sample(again, (64, 64), train=True) > counter.get_total_flops()  # another input: counted


def test_metric_names_and_an_unknown_counter():
    assert [cost.metric(c) for c in cost.COUNTERS] == ["cost/device_s", "cost/images", "cost/eval_images",
                                                       "cost/flops"]
    assert cost.metric("flops", epoch=True) == "cost/epoch/flops"
    with pytest.raises(ValueError, match="unknown cost counter 'gpu_s'"):
        cost.metric("gpu_s")


def test_devices_held_is_the_gpus_on_a_gpu_and_the_cpus_on_a_cpu():
    assert cost.devices_held(torch.device("cpu"), cpus_per_worker=4, gpus_per_worker=0) == 4
    assert cost.devices_held(torch.device("cuda"), cpus_per_worker=4, gpus_per_worker=0.5) == 0.5
    assert cost.devices_held(torch.device("cuda"), cpus_per_worker=4, gpus_per_worker=0) == 1  # outside Ray


def _epoch_on_worker(rank: int, world: int, rendezvous: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    # Worker r has run (r + 1) s, holds 2 CPUs, trained 5 + r samples; only rank 0 evaluates (4 crops).
    meter = cost.CostMeter(train_flops=10, eval_flops=3, device=torch.device("cpu"), devices=2,
                           started=time.perf_counter() - (rank + 1))
    metrics = meter.epoch(images=5 + rank, eval_images=4 if rank == 0 else 0)
    dist.destroy_process_group()
    with open(f"{out}.{rank}", "w") as handle:
        json.dump(metrics, handle)


def test_a_trial_with_several_workers_sums_its_counters_over_them(tmp_path):
    """Two torch.distributed (gloo) workers, as Ray Train runs a trial with runtime.workers = 2: both report the
    sums, device-seconds included (each worker's wall seconds x the devices it holds)."""
    context = torch.multiprocessing.get_context("fork")
    workers = [context.Process(target=_epoch_on_worker, args=(r, 2, str(tmp_path / "rdv"), str(tmp_path / "out")))
               for r in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    reported = [json.loads((tmp_path / f"out.{r}").read_text()) for r in range(2)]
    assert reported[0] == reported[1]
    metrics = reported[0]
    assert metrics["cost/images"] == metrics["cost/epoch/images"] == 11 and metrics["cost/eval_images"] == 4
    assert metrics["cost/flops"] == 11 * 10 + 4 * 3
    assert 2 * (1 + 2) <= metrics["cost/device_s"] < 2 * (1 + 2) + 2 * 2 * 60


def trial_config(layout, epochs: int) -> TrialConfig:
    # batch_size above the training set: one batch an epoch, none dropped (trainables/loaders.py drop_last)
    return TrialConfig.from_flat({
        "data.dataset": "coco", "data.train_ann": str(layout.train.ann), "data.train_images": str(layout.train.images),
        "data.val_ann": str(layout.val.ann), "data.val_images": str(layout.val.images), "data.input_h": 64,
        "data.input_w": 64, "data.flip_test": True, "model.deconv_channels": 16, "optim.epochs": epochs,
        "optim.batch_size": 64, "runtime.cpus_per_worker": 2, "runtime.threads_per_worker": 1})


class Killed(Exception):
    pass


class KilledAfterFirstEpoch(LocalReporter):
    """A trial whose process dies right after its first epoch's checkpoint and report."""

    def report(self, metrics, checkpoint_dir):
        super().report(metrics, checkpoint_dir)
        raise Killed


def test_images_seen_skip_the_corrupt_sample_and_a_resumed_trial_continues_its_counters(shared_data, tmp_path):
    broken = coco_with_unreadable_images(shared_data, tmp_path / "coco")
    layout = resolve("coco", tmp_path / "coco")
    persons = len(load_records(str(layout.train.ann), str(layout.train.images), get("coco").skeleton))
    assert broken > 0 and persons > broken
    trained = persons - broken  # every sample but the unreadable image's, each epoch

    whole = LocalReporter(tmp_path / "whole")
    started = time.perf_counter()
    fit(trial_config(layout, epochs=2), whole)
    fit_wall_s = time.perf_counter() - started
    first, last = whole.history
    model = create_model("simplebaseline_r18", 17, deconv_channels=16)
    train_flops = cost.flops_per_sample(model, (64, 64), train=True)
    eval_flops = 2 * cost.flops_per_sample(model, (64, 64), train=False)  # the flip test's two forwards
    for epoch, metrics in enumerate(whole.history, 1):
        assert metrics["data/skipped_samples"] == broken
        assert metrics["cost/epoch/images"] == trained and metrics["cost/images"] == epoch * trained
        assert metrics["cost/epoch/eval_images"] == trained and metrics["cost/eval_images"] == epoch * trained
        assert metrics["cost/flops"] == epoch * trained * (train_flops + eval_flops)
    # device-seconds: the wall seconds of fit x the devices the worker holds (its 2 CPUs; 1 GPU where there is one);
    # the first epoch includes the setup
    held = cost.devices_held(whole.device(), cpus_per_worker=2, gpus_per_worker=0)
    assert first["cost/device_s"] >= held * (first["time/setup_s"] + first["time/train_s"] + first["time/eval_s"])
    assert last["cost/device_s"] == pytest.approx(first["cost/device_s"] + last["cost/epoch/device_s"])
    assert last["cost/device_s"] <= held * fit_wall_s

    directory = tmp_path / "resumed"
    with pytest.raises(Killed):
        fit(trial_config(layout, epochs=2), KilledAfterFirstEpoch(directory))
    resumed = LocalReporter(directory)
    fit(trial_config(layout, epochs=2), resumed)
    restored, second = resumed.history  # the checkpoint's epoch reported again, then epoch 2
    assert restored["epoch"] == 1 and second["epoch"] == 2
    for counter in ("images", "eval_images", "flops"):  # not restarted at 0, nothing counted twice
        assert second[f"cost/{counter}"] == last[f"cost/{counter}"]
    assert second["cost/device_s"] == pytest.approx(restored["cost/device_s"] + second["cost/epoch/device_s"])
    # the resumed process's setup (its data loading, model and restore) is part of epoch 2's device-seconds
    assert second["cost/epoch/device_s"] >= held * (second["time/setup_s"] + second["time/train_s"])

