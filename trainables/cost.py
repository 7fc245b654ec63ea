"""What a trial cost: device-seconds, images seen and FLOPs, per epoch and since the trial began.

`fit` (trainables/train.py) adds `CostMeter.epoch`'s metrics to every epoch it reports; the search's parent run
totals the trials' final values (search/tracking.py) and the report plots the metric against them
(dashboards/cost.py). The definitions, the same on every device and worker:

- `cost/device_s`, device-seconds: the sum over the trial's workers (Ray Train's N workers, or the one local
  process) of the wall seconds the worker's `fit` has run - from its start (data loading, model building, restore)
  to the end of each epoch's evaluation - times the devices the worker holds: its GPUs (`runtime.gpus_per_worker`,
  1 for a run on a GPU outside Ray) on a GPU, its CPUs (`runtime.cpus_per_worker`) on a CPU. It is the reservation
  a cluster bills, not the use: the loader's worker processes run on the reserved CPUs and are inside it, and a
  machine shared with other work makes it larger (benchmarks measure CPU time instead: BENCHMARKS.md).
- `cost/images`: training samples the optimiser stepped on, summed over workers. Samples skipped as unreadable
  (the collate drops them: datasets/topdown/dataset.py) are not counted; an OASNet sample (two views) counts once.
- `cost/eval_images`: evaluation crops predicted (all splits; a flip test's mirror is not counted again).
- `cost/flops`: images x the training FLOPs of one sample plus eval_images x the forward FLOPs of one crop (twice
  with the flip test). Per-sample FLOPs are torch.utils.flop_counter.FlopCounterMode's count (2 x multiply-adds of
  convolutions, matmuls and attention; normalisation and activations are not counted) through
  trainables.models.count_flops: a training sample is one forward of every supervised output and its backward to
  the parameters' gradients (~3x the forward, as in Kaplan et al. 2020's 6N rule), times 2 for OASNet's two views.

Each counter is logged cumulatively (`cost/<counter>`) and for the epoch alone (`cost/epoch/<counter>`). The
cumulative values are part of the epoch's metrics, which the checkpoint keeps (trainables/checkpoint.py's
metrics.json), so a killed and resumed trial continues from its checkpoint's values: nothing counted twice, and
the work done after the last checkpoint - lost with the kill - not counted at all. A PBT member that exploits
another's checkpoint continues that member's counters: its cumulative values are its *model's* cost, lineage
included. The search's cost therefore sums the per-epoch values, each epoch once, by the trial that ran it
(search/tracking.py `cost_totals`); without exploits that equals the sum of the trials' final values.
"""
from __future__ import annotations

import copy
import time

import torch
from torch import nn

from trainables.models import count_flops

COUNTERS = ("device_s", "images", "eval_images", "flops")
_FLOPS: dict[tuple, int] = {}  # count_flops per (architecture, input size, train): counted once per process


def metric(counter: str, epoch: bool = False) -> str:
    """The metric name of `counter` (one of COUNTERS): `cost/flops`, or `cost/epoch/flops` for one epoch's."""
    if counter not in COUNTERS:
        raise ValueError(f"unknown cost counter {counter!r}; expected one of {', '.join(COUNTERS)}")
    return f"cost/epoch/{counter}" if epoch else f"cost/{counter}"


def flops_per_sample(model: nn.Module, input_hw: tuple[int, int], train: bool) -> int:
    """trainables.models.count_flops(model, input_hw, train), cached per architecture (the class and every
    parameter's name and shape) and input size. Counted on a copy of the model on the meta device (shapes only, no
    arithmetic: FlopCounterMode needs no values), or on the model itself where an operation has no meta kernel."""
    key = (type(model).__module__, type(model).__qualname__, tuple(input_hw), bool(train),
           tuple((name, tuple(p.shape)) for name, p in model.named_parameters()))
    if key not in _FLOPS:
        try:
            _FLOPS[key] = count_flops(copy.deepcopy(model).to("meta"), tuple(input_hw), train=train)
        except (NotImplementedError, RuntimeError):
            _FLOPS[key] = count_flops(model, tuple(input_hw), train=train)
    return _FLOPS[key]


def devices_held(device: torch.device, cpus_per_worker: int, gpus_per_worker: float) -> float:
    """The devices one worker holds, the factor of its wall seconds in `cost/device_s`: its GPUs on a GPU (1 where
    none were requested, a run outside Ray), else its CPUs."""
    if device.type == "cuda":
        return float(gpus_per_worker) or 1.0
    return float(cpus_per_worker)


def sum_over_workers(values: list[float], device: torch.device) -> list[float]:
    """`values` summed element-wise over the workers of the initialised torch.distributed process group (Ray Train
    sets one up for N > 1 workers; a collective, so every worker calls it at the same point), or as they are."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(values)
    # NCCL reduces only CUDA tensors, gloo CPU ones: the tensor lives on the worker's training device.
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


class CostMeter:
    """One worker's cost counters of one trial (see the module's definitions). `train_flops` and `eval_flops` are
    the FLOPs of one training sample and of one evaluation crop; `devices` the factor of the wall seconds; `started`
    the time.perf_counter() at which the worker's fit began."""

    def __init__(self, train_flops: int, eval_flops: int, device: torch.device, devices: float,
                 started: float | None = None):
        self.train_flops, self.eval_flops = int(train_flops), int(eval_flops)
        self.device, self.devices = device, float(devices)
        self.totals = dict.fromkeys(COUNTERS, 0.0)
        self._since = time.perf_counter() if started is None else started

    @classmethod
    def for_trial(cls, model: nn.Module, input_hw: tuple[int, int], device: torch.device, runtime, views: int = 1,
                  flip_test: bool = False, started: float | None = None) -> "CostMeter":
        """The meter of a trial training `model` (the bare model, before DDP) at `input_hw` under `runtime` (a
        trainables.config.RuntimeConfig); views: images per sample (2 for OASNet's siamese pair)."""
        return cls(flops_per_sample(model, input_hw, train=True) * views,
                   flops_per_sample(model, input_hw, train=False) * (2 if flip_test else 1), device,
                   devices_held(device, runtime.cpus_per_worker, runtime.gpus_per_worker), started)

    def resume(self, metrics: dict | None) -> None:
        """Continue from a restored checkpoint's epoch metrics (its cumulative `cost/...` values); a checkpoint
        without them (written before this module existed) continues from 0."""
        for counter in COUNTERS:
            self.totals[counter] = float((metrics or {}).get(metric(counter), 0.0))

    def epoch(self, images: int, eval_images: int = 0) -> dict[str, float]:
        """Close an epoch in which this worker trained `images` samples and predicted `eval_images` crops: the
        epoch's and the cumulative counters, summed over workers, as metrics. Every worker calls it (a collective
        when N > 1)."""
        now = time.perf_counter()
        wall_s, self._since = now - self._since, now
        device_s, images, eval_images = sum_over_workers([wall_s * self.devices, images, eval_images], self.device)
        epoch = {"device_s": device_s, "images": round(images), "eval_images": round(eval_images)}
        epoch["flops"] = float(epoch["images"] * self.train_flops + epoch["eval_images"] * self.eval_flops)
        out = {}
        for counter in COUNTERS:
            self.totals[counter] += epoch[counter]
            out[metric(counter, epoch=True)] = float(epoch[counter])
            out[metric(counter)] = float(self.totals[counter])
        return out
