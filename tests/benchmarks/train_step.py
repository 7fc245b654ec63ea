#!/usr/bin/env python
"""Training-step throughput (img/s) and MFU of the zoo's models at 256x192, data excluded.

    python tests/benchmarks/train_step.py --json                      # CPU here; a GPU when there is one
    python tests/benchmarks/train_step.py --models simplebaseline_r50 --batch 128 --compile
    python tests/benchmarks/train_step.py --device cpu --batch 2 --input 64 64   # tiny (gpu_check.py --tiny)

One step = forward, keypoint MSE, backward, Adam, as trainables/engine.py runs it; on a GPU with bf16 autocast and
channels_last (the trainer's "auto" settings), optionally torch.compile. Inputs are random tensors already on the
device, so the number is the model's ceiling; tests/benchmarks/gpu_pipeline.py measures it with data included.
MFU = (3 x forward FLOPs per image) x img/s / the device's peak (trainables/hardware.py). A batch that runs out of
device memory is halved until it fits (the row's out_of_memory_at_batch); peak_memory_gib is the timed steps'.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from trainables.hardware import device_name, peak_flops  # noqa: E402
from trainables.losses import keypoint_mse  # noqa: E402
from trainables.models import count_flops, create_model  # noqa: E402

MODELS = ("simplebaseline_r50", "hrnet_w32", "vitpose_b")
INPUT_HW = (256, 192)


def measure(name: str, device: torch.device, batch: int, steps: int, warmup: int, compile_model: bool,
            input_hw: tuple[int, int] = INPUT_HW) -> dict:
    """One model's row; a batch the device has no memory for is halved until it fits (the row says so)."""
    first_oom = None
    while True:
        try:
            row = measure_batch(name, device, batch, steps, warmup, compile_model, input_hw)
            return {**row, "out_of_memory_at_batch": first_oom} if first_oom else row
        except torch.cuda.OutOfMemoryError:
            if batch <= 1:
                raise
            first_oom = first_oom or batch
        # Out of the except clause: the failed attempt's frames (model, activations) are released now.
        batch //= 2
        gc.collect()
        torch.cuda.empty_cache()


def measure_batch(name: str, device: torch.device, batch: int, steps: int, warmup: int, compile_model: bool,
                  input_hw: tuple[int, int]) -> dict:
    gpu = device.type == "cuda"
    model = create_model(name, 17, input_hw=input_hw).to(device)
    flops_per_image = 3 * count_flops(model, input_hw)
    memory_format = torch.channels_last if gpu else torch.contiguous_format
    model = model.to(memory_format=memory_format).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    step_model = torch.compile(model) if compile_model else model
    images = torch.randn(batch, 3, *input_hw, device=device).contiguous(memory_format=memory_format)
    targets = torch.rand(batch, 17, input_hw[0] // 4, input_hw[1] // 4, device=device)
    weights = torch.ones(batch, 17, device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
            loss = keypoint_mse(step_model(images).float(), targets, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):  # cudnn autotuning, torch.compile's first graphs
        step()
    if gpu:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if gpu:
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    images_per_s = batch * steps / elapsed
    peak = peak_flops(device, amp=gpu)
    return {"model": name, "batch": batch, "steps": steps, "images_per_s": round(images_per_s, 2),
            "gflops_per_image_train": round(flops_per_image / 1e9, 2),
            "achieved_tflops": round(flops_per_image * images_per_s / 1e12, 3),
            "mfu": round(flops_per_image * images_per_s / peak, 4) if peak else None,
            "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if gpu else None}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--device", default="auto", help="auto (cuda if available), cuda or cpu")
    p.add_argument("--batch", type=int, help="images per step (default 128 on a GPU, 8 on a CPU)")
    p.add_argument("--steps", type=int, help="timed steps (default 30 on a GPU, 3 on a CPU)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default 5 on a GPU, 1 on a CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--input", type=int, nargs=2, default=list(INPUT_HW), metavar=("H", "W"))
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    args = p.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    batch, steps, warmup = args.batch or (128 if gpu else 8), args.steps or (30 if gpu else 3), \
        args.warmup if args.warmup is not None else (5 if gpu else 1)
    results = {"device": device_name(device), "peak_tflops": round(peak_flops(device, amp=gpu) / 1e12, 2),
               "amp": "bf16" if gpu else "off", "channels_last": gpu, "compile": args.compile,
               "torch": torch.__version__, "input_hw": list(args.input), "models": []}
    for name in args.models.split(","):
        row = measure(name, device, batch, steps, warmup, args.compile, tuple(args.input))
        results["models"].append(row)
        if not args.json:
            mfu = f"{100 * row['mfu']:.1f} %" if row["mfu"] is not None else "n/a"
            print(f"{name:20s} {row['images_per_s']:9.1f} img/s  {row['achieved_tflops']:8.3f} TFLOP/s  MFU {mfu}",
                  file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
