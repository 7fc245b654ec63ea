#!/usr/bin/env python
"""Throughput of the GPU augmentation path (datasets/topdown/gpu.py), data included: JPEG bytes read and parameters
drawn by DataLoader workers, then decode (nvjpeg on CUDA), affine crop, LJA and heatmaps for the whole batch on the
device, then (for the training figure) SimpleBaseline's forward/backward/Adam step as trainables/engine.py runs it
(bf16 autocast and channels_last on CUDA, the engine's "auto").

    python tests/benchmarks/gpu_pipeline.py --json [--device cuda|cpu] [--batch 256] [--model simplebaseline_r50]
        [--steps 20] [--warmup 3] [--workers N] [--compile] [--no-lja] [--no-cpu-baseline] [--profile DIR]

Data: the real COCO fixture (../shared/data/coco, or --ann/--images) cycled to batch x (warmup + steps) samples
(each index draws its own augmentation); without it, synthetic 640x480 JPEGs. Prints one JSON object:
  augment_device_img_s    decode + crop + LJA + heatmaps + normalise on host batches already collated (device alone)
  source_ms_per_sample    the CPU half in one process: read the bytes, draw the parameters (divide the workers by it)
  source_img_s            the CPU half alone: DataLoader workers reading bytes and drawing parameters
  augment_img_s           both halves together: loader -> DeviceLoader (batcher), what training consumes
  train_model_only_img_s  forward/backward/step on one resident batch (the model's ceiling)
  train_img_s             the whole training step with data: loader -> DeviceLoader -> forward/backward/step
  cpu_path_img_s          the CPU pipeline (TopDownDataset + collate_skip_none, same workers) for comparison
  cpu_path_train_img_s    the whole training step fed by the CPU pipeline (pinned batches, non_blocking copies)
  profile                 with --profile: trainables/profiling.py's summary of a window of the train_img_s loop
                          (run after the timed phases, so it costs them nothing), its table and trace in DIR
Every figure is images per second over `steps` batches after `warmup` batches, with the device synchronised; the
figures fed by a DataLoader first drain the batches its workers prefetched (workers x prefetch), so they are steady
state, not the head start of a full queue.
The issue's target: train_img_s >= 5000 for simplebaseline_r50 at 256x192 with LJA on one H100.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from datasets.annotations import PersonRecord, load_records  # noqa: E402
from datasets.occlusion import LJAConfig, OcclusionConfig, build_occlusions  # noqa: E402
from datasets.skeletons import COCO17  # noqa: E402
from datasets.topdown import gpu  # noqa: E402
from datasets.topdown.augment import Augment  # noqa: E402
from datasets.topdown.codec import HeatmapCodec  # noqa: E402
from datasets.topdown.dataset import TopDownDataset, collate_skip_none  # noqa: E402
from trainables.engine import heatmap_loss  # noqa: E402
from trainables.losses import keypoint_mse  # noqa: E402
from trainables.models import create_model  # noqa: E402
from trainables.profiling import ProfileWindow  # noqa: E402

TARGET_IMG_S = 5000.0


def synthetic_records(directory: Path, images: int = 16, persons: int = 3) -> list[PersonRecord]:
    """640x480 JPEGs of smooth noise with hard-edged blocks (photo-like entropy), random persons on them."""
    rng = np.random.default_rng(0)
    records = []
    for image_id in range(images):
        pixels = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 2)
        for _ in range(40):
            x, y = int(rng.integers(640)), int(rng.integers(480))
            pixels[y: y + int(rng.integers(5, 80)), x: x + int(rng.integers(5, 80))] = rng.integers(0, 256, 3)
        file = directory / f"{image_id}.jpg"
        cv2.imwrite(str(file), pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])
        for k in range(persons):
            w, h = rng.uniform(60, 300), rng.uniform(120, 420)
            x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - min(h, 470))
            keypoints = np.stack([rng.uniform(x, x + w, 17), rng.uniform(y, y + h, 17),
                                  rng.choice([1, 2, 2, 2], 17)], axis=1)
            records.append(PersonRecord(image_id * persons + k, image_id, file, (x, y, w, h), keypoints))
    return records


def build_dataset(args, records, samples: int) -> TopDownDataset:
    records = list(records) * math.ceil(samples / len(records))
    lja = LJAConfig(0.15, 0.20, 1.0, enabled=not args.no_lja)
    # HRNet's COCO recipe: scale 0.35, rotation 45 with p 0.6, flip 0.5, half-body 0.3.
    augment = Augment(scale_factor=0.35, rotation=45.0, rotation_p=0.6, flip_p=0.5, half_body_p=0.3)
    kwargs = {}
    if "fast" in inspect.signature(TopDownDataset).parameters:
        kwargs["fast"] = not args.cpu_full_decode
    return TopDownDataset(records[:samples], COCO17, HeatmapCodec(tuple(args.input)), train=True, augment=augment,
                          occlusions=build_occlusions(lja, OcclusionConfig(), COCO17), seed=0, **kwargs)


def loader_of(dataset, args, collate):
    return torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=False, num_workers=args.workers,
                                       collate_fn=collate, drop_last=True, pin_memory=args.device.startswith("cuda"),
                                       prefetch_factor=args.prefetch if args.workers else None)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(batches, warmup: int, steps: int, device, work) -> float:
    """Images/s of `work` over `steps` batches after `warmup`, iterating `batches` (an iterator of host batches)."""
    images = 0
    start = None
    for step, batch in enumerate(batches):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        n = work(batch)
        if step >= warmup:
            images += n
        if step + 1 == warmup + steps:
            break
    sync(device)
    return images / max(time.perf_counter() - start, 1e-9) if start is not None else float("nan")


def main(argv=None) -> None:
    shared = Path(os.environ.get("OCCPOSE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--model", default="simplebaseline_r50")
    p.add_argument("--input", type=int, nargs=2, default=[256, 192], metavar=("H", "W"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--workers", type=int, default=min(12, max((os.cpu_count() or 2) - 2, 1)))
    p.add_argument("--prefetch", type=int, default=2, help="batches each DataLoader worker keeps ready")
    p.add_argument("--device-prefetch", type=int, default=None,
                   help="batches the DeviceLoader augments ahead in its thread (default: 1 on CUDA, 0 elsewhere)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--no-lja", action="store_true")
    p.add_argument("--no-cpu-baseline", action="store_true", help="skip timing the CPU pipeline")
    p.add_argument("--cpu-full-decode", action="store_true",
                   help="CPU baseline without its reduced-decode fast path (where the dataset has one)")
    p.add_argument("--profile", type=Path, help="profile a window of the data-included training loop into DIR")
    p.add_argument("--ann", type=Path, default=shared / "coco/test_coco.json")
    p.add_argument("--images", type=Path, default=shared / "coco")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.backends.cudnn.benchmark = True
    loader_warmup = max(args.warmup, args.workers * args.prefetch)
    samples = args.batch * (loader_warmup + args.steps)
    tmp = tempfile.TemporaryDirectory()
    if args.ann.is_file():
        records, data = load_records(args.ann, args.images, COCO17), f"{args.ann} (real JPEGs), cycled"
    else:
        records, data = synthetic_records(Path(tmp.name)), "synthetic 640x480 JPEGs, cycled"
    dataset = build_dataset(args, records, samples)
    codec = dataset.codec
    source = gpu.GpuTopDownSource(dataset)
    batcher = gpu.GpuTopDownBatcher(codec, device, channels_last=on_cuda)
    result = {"device": torch.cuda.get_device_name(device) if on_cuda else "cpu", "torch": torch.__version__,
              "model": args.model, "batch": args.batch, "input_hw": list(codec.input_hw), "lja": not args.no_lja,
              "steps": args.steps, "warmup": args.warmup, "loader_warmup": loader_warmup, "workers": args.workers,
              "device_prefetch": gpu.DeviceLoader(None, batcher, args.device_prefetch).prefetch,
              "compile": args.compile, "amp_bf16": on_cuda, "channels_last": on_cuda,
              "data": f"{data} to {samples} samples", "cpu_threads": torch.get_num_threads()}

    # The device half alone, on host batches collated beforehand (a few, reused).
    host = [gpu.collate_gpu([source[i] for i in range(b * args.batch, (b + 1) * args.batch)])
            for b in range(min(4, args.warmup + args.steps))]
    result["augment_device_img_s"] = timed((host[s % len(host)] for s in range(10**9)), args.warmup, args.steps,
                                           device, lambda b: batcher(b)["image"].shape[0])
    # The CPU half alone (in this process, then through the loader's workers), then both halves.
    start = time.perf_counter()
    for i in range(min(samples, 512)):
        source[i]
    result["source_ms_per_sample"] = (time.perf_counter() - start) / min(samples, 512) * 1e3
    result["source_img_s"] = timed(iter(loader_of(source, args, gpu.collate_gpu)), loader_warmup, args.steps,
                                   device, lambda b: len(b["index"]))
    def device_batches():
        return iter(gpu.DeviceLoader(loader_of(source, args, gpu.collate_gpu), batcher, args.device_prefetch))

    result["augment_img_s"] = timed(device_batches(), loader_warmup, args.steps, device,
                                    lambda b: b["image"].shape[0])

    model = create_model(args.model, COCO17.num_keypoints, input_hw=codec.input_hw).to(device)
    if on_cuda:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if args.compile else model
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    compute_loss = heatmap_loss(lambda pred, target, weight, progress: (keypoint_mse(pred, target, weight), {}))
    model.train()

    def train_step(batch) -> int:
        # trainables/engine.py's step: autocast forward + loss, zero_grad, backward, step; no host synchronisation
        # (the engine reads the loss once per logging interval).
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_cuda):
            loss, _ = compute_loss(step_model, batch, 0.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return batch["image"].shape[0]

    def host_train_step(batch) -> int:
        # As the engine takes a CPU-pipeline batch: non_blocking copies (from pinned memory on CUDA), NHWC images.
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last if on_cuda else
                                                   torch.contiguous_format)
        return train_step(batch)

    resident = batcher(host[0])
    result["train_model_only_img_s"] = timed((resident for _ in range(10**9)), args.warmup, args.steps, device,
                                             train_step)
    result["train_img_s"] = timed(device_batches(), loader_warmup, args.steps, device, train_step)
    if not args.no_cpu_baseline:
        result["cpu_path_img_s"] = timed(iter(loader_of(dataset, args, collate_skip_none)), loader_warmup,
                                         args.steps, device, lambda b: b["image"].shape[0])
        result["cpu_path_train_img_s"] = timed(iter(loader_of(dataset, args, collate_skip_none)), loader_warmup,
                                               args.steps, device, host_train_step)
    if args.profile:
        window = ProfileWindow(args.profile, device, "pipeline", skip=loader_warmup, active=min(args.steps, 8))
        timed(window.batches(device_batches()), loader_warmup, args.steps, device, train_step)
        result["profile"] = window.summary
    result["target_img_s"] = TARGET_IMG_S
    result["meets_target"] = bool(on_cuda and result["train_img_s"] >= TARGET_IMG_S)
    if on_cuda:
        result["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    tmp.cleanup()
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {round(value, 1) if isinstance(value, float) else value}")


if __name__ == "__main__":
    main()
