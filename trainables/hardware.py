"""Peak FLOP/s of the device a trainer runs on, the denominator of MFU (model FLOPs utilisation).

GPU peaks are the datasheets' dense tensor-core numbers for the dtype the trainer computes in (bf16 under AMP,
TF32/FP32 otherwise). A CPU's peak is estimated from its vector width: cores x clock x FP32 FLOPs per cycle.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

# Dense (no sparsity) tensor-core TFLOP/s: (bf16, tf32). Matched by substring of torch.cuda.get_device_name().
GPU_PEAK_TFLOPS = {
    "H200": (989.4, 494.7),
    "H100 PCIe": (756.0, 378.0),
    "H100": (989.4, 494.7),  # SXM5
    "A100": (312.0, 156.0),
    "L40S": (362.1, 183.0),
    "A10G": (70.0, 35.0),  # AWS g5: the A10's chip at lower clocks
    "A10": (125.0, 62.5),
    "L4": (121.0, 60.0),
    "V100": (125.0, 15.7),  # fp16 tensor cores; no bf16
}


def gpu_peak_flops(name: str, bf16: bool) -> float:
    for key in sorted(GPU_PEAK_TFLOPS, key=len, reverse=True):  # "H100 PCIe" before "H100"
        if key in name:
            return GPU_PEAK_TFLOPS[key][0 if bf16 else 1] * 1e12
    return 0.0


def _cpuinfo(field: str) -> list[str]:
    """The values of a /proc/cpuinfo field, one per logical CPU ([] where the file is absent)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []
    return [line.split(":", 1)[1].strip() for line in lines if line.split(":", 1)[0].strip() == field]


def cpu_peak_flops(threads: int | None = None) -> float:
    """threads x clock x FP32 FLOPs per cycle (2 FMA pipes: 32 with AVX2, 64 with AVX-512 on Intel); 0 if
    unreadable."""
    flags = (_cpuinfo("flags") or [""])[0].split()
    # The nominal maximum where the kernel exposes it; /proc/cpuinfo's "cpu MHz" is often the current clock.
    maximum = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    mhz = [int(maximum.read_text()) / 1000] if maximum.exists() else [float(v) for v in _cpuinfo("cpu MHz")]
    if not mhz:
        return 0.0
    intel = "GenuineIntel" in _cpuinfo("vendor_id")
    per_cycle = 64 if "avx512f" in flags and intel else 32 if "fma" in flags else 8
    return (threads or torch.get_num_threads() or os.cpu_count() or 1) * max(mhz) * 1e6 * per_cycle


def peak_flops(device: torch.device, amp: bool) -> float:
    if device.type == "cuda":
        return gpu_peak_flops(torch.cuda.get_device_name(device), bf16=amp)
    return cpu_peak_flops()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {(_cpuinfo('model name') or [''])[0]} x {torch.get_num_threads()} threads"
