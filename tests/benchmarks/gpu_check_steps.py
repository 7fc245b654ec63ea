#!/usr/bin/env python
"""The steps of tests/benchmarks/gpu_check.py that are no benchmark script of their own; each prints its result as
one JSON line (the check runs them as subprocesses, each under its own time limit).

    python tests/benchmarks/gpu_check_steps.py probe --device cuda        # torch, the device, a matmul's TFLOP/s
    python tests/benchmarks/gpu_check_steps.py host_syncs --device cuda   # host reads per training step
    python tests/benchmarks/gpu_check_steps.py synthetic --work DIR       # the synthetic set the trials train on
    python tests/benchmarks/gpu_check_steps.py imports                    # which modules import; Ray/MLflow loaded?

--tiny: the CPU check's shapes.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

def probe(device: str, tiny: bool) -> dict:
    """torch, the device, and a bf16 (CUDA) or fp32 (CPU) matmul's achieved TFLOP/s (the measured ceiling)."""
    import torch

    from trainables.hardware import device_name, peak_flops

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    n, reps = (8192, 10) if cuda and not tiny else (512, 3)
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16 if cuda else torch.float32)
    for _ in range(3):
        a @ a
    if cuda:
        torch.cuda.synchronize(dev)
    start = time.perf_counter()
    for _ in range(reps):
        a @ a
    if cuda:
        torch.cuda.synchronize(dev)
    tflops = 2 * n**3 * reps / (time.perf_counter() - start) / 1e12
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "device": device_name(dev), "datasheet_peak_tflops": round(peak_flops(dev, amp=cuda) / 1e12, 1),
            "matmul": {"n": n, "dtype": "bf16" if cuda else "fp32", "tflops": round(tflops, 2)}}


def host_syncs(device: str, tiny: bool) -> dict:
    """Host reads of device values per training step: trainables.profiling.count_host_reads over epochs of 2 and 6
    (--tiny: 1 and 3) resident batches (SGD, whose updates read nothing), the difference per step; on CUDA also
    torch.cuda.set_sync_debug_mode's count with Adam, the trainer's optimizer."""
    import warnings

    import torch

    from datasets import meta
    from trainables.build import build_loss
    from trainables.config import TrialConfig
    from trainables.engine import heatmap_loss, train_one_epoch
    from trainables.losses import keypoint_mse
    from trainables.models import create_model
    from trainables.profiling import count_host_reads

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    name, hw, batch = ("simplebaseline_r18", (64, 64), 2) if tiny else ("simplebaseline_r50", (256, 192), 32)
    skeleton = meta.get("synthetic").skeleton
    k = skeleton.num_keypoints
    model = create_model(name, k, deconv_channels=16 if tiny else 256, input_hw=hw).to(dev)
    data = {"image": torch.randn(batch, 3, *hw), "heatmaps": torch.rand(batch, k, hw[0] // 4, hw[1] // 4),
            "target_weight": torch.ones(batch, k)}
    if cuda:  # as the trainer's loader hands them over: pinned, so the copies need not wait
        data = {key: value.pin_memory() for key, value in data.items()}
    losses = {"mse": heatmap_loss(lambda p, t, w, progress: (keypoint_mse(p, t, w), {})),
              "dsl": build_loss(TrialConfig(), skeleton, model)}
    result: dict = {"model": name, "input_hw": list(hw), "batch": batch}
    for label, loss in losses.items():
        counts, lengths = [], (1, 3) if tiny else (2, 6)
        for steps in lengths:
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
            _, reads = count_host_reads(lambda: train_one_epoch(model, loss, optimizer, [data] * steps, 0, 1, dev,
                                                                amp=cuda, channels_last=cuda, print_every=0), dev)
            counts.append(reads)
        result[f"{label}_reads_per_step"] = (counts[1] - counts[0]) / (lengths[1] - lengths[0])
        result[f"{label}_reads_per_epoch_end"] = counts[0] - lengths[0] * result[f"{label}_reads_per_step"]
        if cuda:
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    train_one_epoch(model, loss, optimizer, [data] * 6, 0, 1, dev, amp=True, channels_last=True,
                                    print_every=0)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            result[f"{label}_cuda_syncs_6_steps_adam"] = sum("synchroniz" in str(w.message) for w in caught)
    return result


def imports(modules: list[str]) -> dict:
    """{missing: the modules that fail to import, ray_or_mlflow: what of Ray or MLflow the trainer's modules load}."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - any failure to import is a missing module here
            missing.append(name)
    loaded = []
    if not missing:
        for name in ("trainables.worker", "trainables.train", "trainables.loaders", "datasets.synthetic",
                     "datasets.topdown.gpu"):
            importlib.import_module(name)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("ray", "mlflow"))
    return {"missing": missing, "ray_or_mlflow": loaded}


def synthetic(work: Path, tiny: bool) -> dict:
    """The synthetic set (datasets/synthetic.py; 24 + 8 images with --tiny) as the worker's --set data.* items."""
    from datasets.synthetic import SyntheticSpec, ensure_dataset
    from trainables.config import TrialConfig
    from trainables.worker import with_synthetic_paths

    spec = SyntheticSpec(num_train_images=24, num_val_images=8) if tiny else SyntheticSpec()
    paths = ensure_dataset(spec, work / "cache", workers=1 if tiny else max((os.cpu_count() or 2) - 1, 1))
    flat = with_synthetic_paths(TrialConfig(), paths).flat()
    return {k: flat[k] for k in ("data.root", "data.train_ann", "data.val_ann", "data.val_occ_ann",
                                 "data.train_images", "data.val_images", "data.val_occ_images")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=("probe", "host_syncs", "synthetic", "imports"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--work", type=Path, default=Path("."))
    p.add_argument("--modules", default="torch", help="imports: comma-separated module names")
    args = p.parse_args(argv)
    if args.step == "probe":
        result = probe(args.device, args.tiny)
    elif args.step == "host_syncs":
        result = host_syncs(args.device, args.tiny)
    elif args.step == "synthetic":
        result = synthetic(args.work, args.tiny)
    else:
        result = imports(args.modules.split(","))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
