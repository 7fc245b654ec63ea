"""One short torch.profiler window over training steps, and what bounds them: `--profile` of trainables/worker.py
and tests/benchmarks/gpu_check.py.

A ProfileWindow wraps the batches of a training loop (engine.train_one_epoch, the benchmarks' loops): it skips the
first `skip` steps (cuDNN autotuning, torch.compile's graphs, the loader's head start), records the next `active`
steps (CPU ops, and CUDA kernels on a GPU), each batch fetch inside a "data_wait" range, then writes to `out`:

    profile_<label>.txt       the ops' table (torch.profiler key_averages), by device time on a GPU, else CPU time
    trace_<label>.json.gz     the Chrome/Perfetto trace (ui.perfetto.dev opens it as it is)
    profile_<label>.json      the summary below

The summary: steps, wall_s_per_step (the window's wall clock over its steps, the device synchronised at both
ends), data_wait_s_per_step (host time blocked on the loader), device_busy_s_per_step (the kernels' summed self
time; streams that overlap can push it past the wall time), and `bound`: "data" when the loop waits for batches
for more than 30 % of the window, else "device" when the kernels fill more than 80 % of it, else "host" (Python and
kernel-launch overhead, or host synchronisations, leave the device idle).
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

DATA_BOUND, DEVICE_BOUND = 0.30, 0.80


class ProfileWindow:
    """Records steps skip .. skip + active - 1 of the first loop whose batches go through `batches`; writes the
    files named in the module's docstring when the window closes (or the loop ends first, with fewer steps)."""

    def __init__(self, out: Path, device, label: str = "train", skip: int = 5, active: int = 10):
        if skip < 0 or active < 1:
            raise ValueError(f"profile window: skip must be >= 0 and active >= 1, got {skip} and {active}")
        self.out, self.device, self.label = Path(out), torch.device(device), label
        self.skip, self.active = skip, active
        self.summary: dict | None = None
        self._prof = None
        self._steps = 0
        self._started = 0.0

    @classmethod
    def for_steps(cls, out: Path, device, steps: int, label: str = "train") -> "ProfileWindow":
        """A window of up to 5 skipped and 10 recorded steps that fits an epoch of `steps` steps."""
        skip = min(5, steps // 3)
        return cls(out, device, label, skip=skip, active=max(1, min(10, steps - skip)))

    def batches(self, iterable):
        """`iterable`'s items; the window's steps are the loop bodies run between them."""
        if self.summary is not None:  # recorded already (a later epoch): pass through
            yield from iterable
            return
        iterator = iter(iterable)
        index = 0
        try:
            while True:
                if index == self.skip and self._prof is None:
                    self._start()
                with record_function("data_wait"):
                    batch = next(iterator, _DONE)
                if batch is _DONE:
                    return
                yield batch
                index += 1
                if self._prof is not None:
                    self._steps += 1
                    self._prof.step()
                    if self._steps >= self.active:
                        self._finish()
                        yield from iterator
                        return
        finally:
            if self._prof is not None:
                self._finish()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _start(self) -> None:
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        self._sync()
        self._prof = profile(activities=activities)
        self._prof.start()
        self._started = time.perf_counter()

    def _finish(self) -> None:
        self._sync()
        wall = time.perf_counter() - self._started
        prof, self._prof = self._prof, None
        prof.stop()
        self.summary = write_profile(prof, self.out, self.label, self.device, max(self._steps, 1), wall)


def _self_device_us(event) -> float:
    return float(getattr(event, "self_device_time_total", 0) or getattr(event, "self_cuda_time_total", 0) or 0)


def write_profile(prof, out: Path, label: str, device: torch.device, steps: int, wall_s: float) -> dict:
    """The table, the gzipped trace and the summary of a stopped profiler (module docstring); returns the
    summary."""
    out.mkdir(parents=True, exist_ok=True)
    events = prof.key_averages()
    cuda = device.type == "cuda"
    sort = ("self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total") \
        if cuda and len(events) else "self_cpu_time_total"
    (out / f"profile_{label}.txt").write_text(events.table(sort_by=sort, row_limit=40) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(raw))
        with raw.open("rb") as source, gzip.open(out / f"trace_{label}.json.gz", "wb") as target:
            shutil.copyfileobj(source, target)
    data_wait_us = sum(e.cpu_time_total for e in events if e.key == "data_wait")
    # The kernels' own rows (a CPU op's device time is its kernels' again); where a torch version lists no kernel
    # rows, the ops' self device time, which then counts each kernel once.
    kernels = [e for e in events if str(getattr(e, "device_type", "")).endswith("CUDA")]
    device_us = sum(_self_device_us(e) for e in (kernels or events)) if cuda else 0.0
    top = sorted(events, key=_self_device_us if cuda else (lambda e: e.self_cpu_time_total), reverse=True)[:10]
    wait_share = data_wait_us / 1e6 / max(wall_s, 1e-9)
    busy_share = device_us / 1e6 / max(wall_s, 1e-9) if cuda else None
    bound = "data" if wait_share > DATA_BOUND else "device" if cuda and busy_share > DEVICE_BOUND else \
        "host" if cuda else "cpu (no device: the ops below share the cores with the loader)"
    summary = {
        "label": label, "device": str(device), "steps": steps, "wall_s_per_step": wall_s / steps,
        "data_wait_s_per_step": data_wait_us / 1e6 / steps, "data_wait_share": wait_share,
        "device_busy_s_per_step": device_us / 1e6 / steps if cuda else None, "device_busy_share": busy_share,
        "bound": bound, "thresholds": {"data_wait_share": DATA_BOUND, "device_busy_share": DEVICE_BOUND},
        "top_ops": [{"name": e.key, "self_ms": round((_self_device_us(e) if cuda else e.self_cpu_time_total) / 1e3
                                                     / steps, 3), "calls_per_step": e.count / steps} for e in top],
        "files": [f"profile_{label}.txt", f"trace_{label}.json.gz"], "pid": os.getpid(),
    }
    (out / f"profile_{label}.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


_DONE = object()


def count_host_reads(fn, device=None):
    """(fn(), how many tensor values it read into Python): the aten op behind .item(), float(), int(), bool() and
    `if tensor`, counted as torch dispatches it, for tensors on `device` (any device when None). On a GPU each
    such read of a device tensor waits for the device's queue: a host synchronisation. Not counted: .tolist()
    and copies to the CPU (torch.cuda.set_sync_debug_mode sees those on a GPU)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    wanted = None if device is None else torch.device(device).type
    reads = [0]

    class Counter(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default and \
                    (wanted is None or args[0].device.type == wanted):
                reads[0] += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        result = fn()
    return result, reads[0]
