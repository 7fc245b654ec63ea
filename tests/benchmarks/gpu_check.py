#!/usr/bin/env python
"""The GPU check (issue 20): what one single-GPU host measures in one go, every figure as JSON in --out.

    python tests/benchmarks/gpu_check.py --out gpu-check                  # a GPU host: <= 8 minutes (--budget-s)
    python tests/benchmarks/gpu_check.py --out /tmp/c --device cpu --tiny  # CPU, tiny shapes: the suite's run
    scripts/gpu_check.sh OUT                                               # the same, run as on a lent device

Each step runs as a subprocess under its own time limit (and the whole check's budget); a step that fails or runs
out of time is recorded as such and the next one runs. Steps, in order of what matters most:
  env              Python, torch, CUDA, GPU, driver, cores; the third-party modules the steps import (missing ones are
                   installed from wheels in --wheels into --work/site, neither Ray nor MLflow needed); a bf16
                   matmul's TFLOP/s next to the datasheet's peak (trainables/hardware.py)
  cuda_tests       the CUDA-only tests (tests/datasets/test_gpu_augment.py -k cuda: nvjpeg, CUDA crops vs CPU)
  host_syncs       device values the training loop reads per step (engine.train_one_epoch), MSE and DSL losses
  pipeline         tests/benchmarks/gpu_pipeline.py: SimpleBaseline-R50 + LJA at 256x192, data included, loader
                   processes on the host's cores; GPU and CPU pipelines; one profiler window of the training phase
  train_step:*     tests/benchmarks/train_step.py: each model, bf16 + channels_last, eager (then compiled, last)
  synthetic_data, worker:*   python -m trainables.worker, synthetic data, 2 epochs, --gpu-augment on and off
                   (and off with another seed: the AP's noise); AP, epoch times; the "on" run profiled
Written to --out: gpu_check.json (all of it, rewritten after each step), gpu_check.log (each step's command and
output), profile_*.txt and trace_*.json.gz (trainables/profiling.py) - at most 6 files, flat.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# Importable module -> its distribution: what the steps import beyond the standard library (no Ray, no MLflow).
REQUIRED = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "cv2": "opencv-python-headless",
            "scipy": "scipy", "pycocotools": "pycocotools", "albumentations": "albumentations", "timm": "timm",
            "PIL": "pillow", "yaml": "pyyaml", "pytest": "pytest"}
# Batches meant to fill an 80-141 GB card (a guess until measured: train_step.py halves one that runs out of memory).
MODELS = {"simplebaseline_r50": 512, "hrnet_w32": 256, "vitpose_b": 512}
BUDGET_S = 450.0  # the whole check on a GPU: 7.5 minutes, inside the 8
TINY_BUDGET_S, TINY_LIMIT_SCALE = 1200.0, 4  # --tiny on a loaded CPU: the step limits x4, 20 minutes in all


def last_json(out: str, err: str):
    """A command's result: its stdout's last line, where that is JSON."""
    lines = [line for line in out.strip().splitlines() if line.strip()]
    try:
        return json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        return None


def pytest_counts(out: str, err: str) -> dict:
    """pytest's summary line as {passed: n, failed: n, skipped: n, ...}."""
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?)", out)}


def worker_epochs(out: str, err: str) -> dict:
    """The per-epoch metrics a LocalReporter logged ("epoch N: {json}")."""
    epochs = [json.loads(m.group(1)) for m in re.finditer(r"epoch \d+: (\{.*\})\s*$", err, re.M)]
    keys = ("val/AP", "train/loss", "train/images_per_s", "train/data_wait_s", "time/train_s", "time/eval_s",
            "epoch_time_s", "train/mfu")
    return {"epochs": [{k: e.get(k) for k in keys} for e in epochs]}


def step_record(name: str, command: list[str], limit_s: float, log, env: dict, parse=last_json) -> dict:
    """Run `command` under `limit_s` seconds: {status ok|failed|timeout, seconds, returncode, result (parse(stdout,
    stderr)), error (the output's tail where not ok)}."""
    start = time.perf_counter()
    record: dict = {"step": name, "command": " ".join(command), "limit_s": round(limit_s, 1)}
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Its own process group, so a step out of time is ended with its children (loader workers, compile workers).
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=limit_s)
        record["status"] = "ok" if process.returncode == 0 else "failed"
        record["returncode"] = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        record["status"] = "timeout"
    record["seconds"] = round(time.perf_counter() - start, 2)
    now = resource.getrusage(resource.RUSAGE_CHILDREN)  # the step's processes' CPU time, once they are reaped
    record["cpu_s"] = round(now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime, 2)
    record["result"] = parse(out, err)
    if record["status"] != "ok":
        record["error"] = (err or out)[-2000:]
    log.write(f"===== {name}: {record['status']} in {record['seconds']} s (limit {limit_s:.0f} s)\n$ "
              f"{record['command']}\n--- stdout\n{out[-20000:]}\n--- stderr\n{err[-20000:]}\n")
    log.flush()
    return record


def older(installed: str, wanted: str) -> bool:
    try:
        from packaging.version import Version

        return Version(installed) < Version(wanted)
    except Exception:  # noqa: BLE001 - no packaging, or a version it cannot read: keep what is installed
        return False


def install_missing(wheels: list[Path], site: Path) -> dict:
    """pip-installs (no index, no dependencies) into `site` the wheels whose distributions are not installed here or
    older than the wheel's (pydantic needs a newer typing-extensions than some images hold); returns {installed,
    already_there, error}. Compiled wheels must match this Python and platform."""
    found = sorted({w for d in wheels if d.is_dir() for w in d.glob("*.whl")})
    missing, present = [], []
    for wheel in found:
        dist, version = wheel.name.split("-")[:2]
        try:
            (missing if older(importlib.metadata.version(dist), version) else present).append(wheel)
        except importlib.metadata.PackageNotFoundError:
            missing.append(wheel)
    present = [w.name for w in present]
    report = {"wheels_dirs": [str(d) for d in wheels], "installed": [w.name for w in missing],
              "already_there": present}
    if missing:
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                               "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(site),
                               *map(str, missing)], capture_output=True, text=True)
        if done.returncode:
            report["error"] = done.stderr[-2000:]
    return report


def environment(args, env: dict) -> dict:
    """The host and the modules the steps need, installing missing ones from wheels first."""
    import platform

    info: dict = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
                  "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    check = [sys.executable, str(HERE / "gpu_check_steps.py"), "imports", "--modules", ",".join(REQUIRED)]

    def imports() -> dict:
        done = subprocess.run(check, env=env, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
        return last_json(done.stdout, done.stderr) or {"missing": list(REQUIRED), "error": done.stderr[-2000:]}

    found = imports()
    info["missing_before_wheels"] = found["missing"]
    if found["missing"]:
        info["wheels"] = install_missing(args.wheels, args.work / "site")
        found = imports()
    info["missing_modules"], info["ray_or_mlflow_loaded"] = found["missing"], found.get("ray_or_mlflow")
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as err:
        info["nvidia_smi"] = f"unavailable ({err})"
    return info


def plan(args, python: list[str]) -> list[tuple[str, list[str], float]]:
    """(name, command, its own time limit in seconds) of every step after env, in the order they run."""
    tiny, dev, work = args.tiny, args.device, args.work
    me = [*python, str(HERE / "gpu_check_steps.py")]
    steps = [("probe", [*me, "probe", "--device", dev, *(["--tiny"] if tiny else [])], 60),
             ("cuda_tests", [*python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA",
                             "tests/datasets/test_gpu_augment.py", "-k", "cuda"], 120),
             ("host_syncs", [*me, "host_syncs", "--device", dev, *(["--tiny"] if tiny else [])], 90)]
    pipe = [*python, str(HERE / "gpu_pipeline.py"), "--json", "--device", dev]
    pipe += ["--profile", str(work / "profile")] if args.profile else []
    pipe += ["--batch", "4", "--steps", "1", "--warmup", "1", "--workers", "1", "--input", "64", "64",
             "--model", "simplebaseline_r18"] if tiny else ["--batch", "256", "--steps", "20", "--warmup", "3"]
    steps.append(("pipeline", pipe, 150))
    step = [*python, str(HERE / "train_step.py"), "--json", "--device", dev]
    for name, batch in list(MODELS.items())[: 1 if tiny else None]:  # tiny: the script's path, one model
        size = ["--batch", "2", "--steps", "1", "--warmup", "0", "--input", "64", "64"] if tiny else \
            ["--batch", str(batch), "--steps", "20", "--warmup", "5"]
        steps.append((f"train_step:{name}", [*step, "--models", name, *size], 60))
    steps.append(("synthetic_data", [*me, "synthetic", "--work", str(work),
                                     *(["--tiny"] if tiny else [])], 120))
    trial = ["optim.epochs=2", "loss.structure=false", f"runtime.loader_workers={1 if tiny else args.workers}"]
    trial += ["model.name=simplebaseline_r18", "model.deconv_channels=16", "data.input_h=64", "data.input_w=64",
              "optim.batch_size=4", "data.max_train_samples=8", "data.max_val_samples=8"] if tiny else \
        ["model.name=simplebaseline_r50", "model.deconv_channels=256", "data.input_h=256", "data.input_w=192",
         "optim.batch_size=64"]
    trials = [("on", ["runtime.gpu_augment=on"]), ("off", ["runtime.gpu_augment=off"]),
              ("off_seed1", ["runtime.gpu_augment=off", "runtime.seed=1"])]  # the last: the AP's seed noise
    for label, extra in trials[: 2 if tiny else None]:
        profile = ["--profile", str(work / "profile_worker")] if label == "on" and args.profile else []
        steps.append((f"worker:{label}", [*python, "-m", "trainables.worker", "--out", str(work / f"trial_{label}"),
                                          *profile, "--set", *trial, *extra, "@SYNTHETIC"], 150))
    if not tiny:  # torch.compile: minutes of compiling per model, so last
        for name, batch in MODELS.items():
            steps.append((f"train_step:{name}:compile", [*step, "--models", name, "--batch", str(batch), "--steps",
                                                         "20", "--warmup", "5", "--compile"], 150))
    return steps


def conclusions(record: dict) -> dict:
    """The issue's questions answered from the steps' results, where they ran."""
    steps = {s["step"]: s for s in record["steps"]}
    out: dict = {}
    pipe = (steps.get("pipeline") or {}).get("result") or {}
    if pipe:
        out["r50_lja_img_s"] = pipe.get("train_img_s")
        out["target_img_s"], out["meets_target"] = pipe.get("target_img_s"), pipe.get("meets_target")
        out["faster_pipeline"] = "gpu" if (pipe.get("train_img_s") or 0) >= (pipe.get("cpu_path_train_img_s") or 0) \
            else "cpu"
        out["pipeline_bound"] = (pipe.get("profile") or {}).get("bound")
    aps = {k: [e["val/AP"] for e in ((steps.get(f"worker:{k}") or {}).get("result") or {}).get("epochs", [])]
           for k in ("on", "off", "off_seed1")}
    if aps["on"] and aps["off"]:
        out["ap_on_off"] = [aps["on"][-1], aps["off"][-1]]
        if aps["off_seed1"]:
            noise = abs(aps["off"][-1] - aps["off_seed1"][-1])
            out["ap_seed_noise"] = noise
            out["ap_within_noise"] = abs(aps["on"][-1] - aps["off"][-1]) <= max(2 * noise, 0.01)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="the folder the JSON, log and profiles are written to")
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--tiny", action="store_true", help="tiny shapes and counts (the suite's CPU run)")
    p.add_argument("--budget-s", type=float, help=f"the whole check's time (default {BUDGET_S:.0f} s; --tiny {TINY_BUDGET_S:.0f})")
    p.add_argument("--no-profile", dest="profile", action="store_false",
                   help="no torch.profiler windows (by default the pipeline and the gpu-augment-on trial each record one)")
    p.add_argument("--only", default="", help="comma-separated step-name prefixes to run (default: all)")
    p.add_argument("--workers", type=int, default=max((os.cpu_count() or 2) - 2, 1), help="loader processes")
    p.add_argument("--wheels", type=Path, nargs="*", default=[REPO_ROOT / ".whl", HERE / "wheels"],
                   help="folders of wheels for modules this host lacks")
    p.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    args = p.parse_args(argv)
    if args.out is None:
        p.error("--out is required")
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out {args.out} exists and is not a directory")
    if args.budget_s is not None and args.budget_s <= 0:
        p.error(f"--budget-s must be > 0, got {args.budget_s}")
    if args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    defaults = {(REPO_ROOT / ".whl").resolve(), (HERE / "wheels").resolve()}  # optional: absent on most hosts
    if missing := [str(w) for w in args.wheels if w.resolve() not in defaults and not w.is_dir()]:
        p.error(f"--wheels: no such folder: {', '.join(missing)}")
    names = [name for name, _, _ in plan(argparse.Namespace(**{**vars(args), "work": Path("work")}), ["python"])]
    if args.only and not any(n.startswith(tuple(args.only.split(","))) for n in names):
        p.error(f"--only {args.only!r} names no step; the steps: {', '.join(names)}")
    has_cuda = subprocess.run([sys.executable, "-c", "import torch, sys; sys.exit(not torch.cuda.is_available())"],
                              capture_output=True).returncode == 0
    if args.device == "cuda" and not has_cuda:
        p.error("--device cuda: torch sees no CUDA device here (use --device cpu --tiny on a CPU)")
    args.device = ("cuda" if has_cuda else "cpu") if args.device == "auto" else args.device
    scratch = tempfile.TemporaryDirectory(prefix="gpu-check-") if args.work is None else None
    args.work = Path(scratch.name) if scratch else args.work
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + (args.budget_s or (TINY_BUDGET_S if args.tiny else BUDGET_S))
    site = args.work / "site"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), str(site),
                                                                    os.environ.get("PYTHONPATH", "")])),
           "PYTHONUNBUFFERED": "1", "OCCPOSE_CACHE": str(args.work / "cache")}
    if args.tiny:  # tiny ops on a shared CPU: one thread each, as OpenMP's spinning threads cost ten times more
        env.setdefault("OMP_NUM_THREADS", "1")
    record = {"issue": 20, "device": args.device, "tiny": args.tiny, "steps": []}
    with (args.out / "gpu_check.log").open("w") as log:
        record["env"] = environment(args, env)
        synthetic: list[str] = []
        for name, command, limit in plan(args, [sys.executable]):
            # --tiny checks that every step still runs (the suite's rot check), on a CPU that may be shared: its
            # limits catch a hang, not slowness
            limit *= TINY_LIMIT_SCALE if args.tiny else 1
            if args.only and not name.startswith(tuple(args.only.split(","))):
                continue
            left = deadline - time.perf_counter()
            if left < 10:
                record["steps"].append({"step": name, "status": "skipped", "error": "the check's budget is spent"})
                continue
            if "@SYNTHETIC" in command:
                if not synthetic:
                    record["steps"].append({"step": name, "status": "skipped", "error": "no synthetic data"})
                    continue
                command = [c for c in command if c != "@SYNTHETIC"] + synthetic
            parse = pytest_counts if name == "cuda_tests" else worker_epochs if name.startswith("worker:") \
                else last_json
            result = step_record(name, command, min(limit, left), log, env, parse)
            if name == "synthetic_data" and result["status"] == "ok" and result["result"]:
                synthetic = [f"{k}={v}" for k, v in result["result"].items()]
            record["steps"].append(result)
            record["conclusions"] = conclusions(record)
            write(args.out, record)
    # The profiles' tables and traces beside the JSON, their summaries inside it (pipeline: gpu_pipeline.py's
    # training phase; worker: the first epoch of the gpu-augment "on" trial).
    for folder, label, name in ((args.work / "profile", "pipeline", "pipeline"),
                                (args.work / "profile_worker", "train", "worker")):
        for stem, suffix in (("profile", ".txt"), ("trace", ".json.gz")):
            if (folder / f"{stem}_{label}{suffix}").is_file():
                shutil.copy(folder / f"{stem}_{label}{suffix}", args.out / f"{stem}_{name}{suffix}")
        if (folder / f"profile_{label}.json").is_file():
            record.setdefault("profiles", {})[name] = json.loads((folder / f"profile_{label}.json").read_text())
    record["conclusions"] = conclusions(record)
    write(args.out, record)
    if scratch:
        scratch.cleanup()
    failed = [s["step"] for s in record["steps"] if s["status"] != "ok"]
    print(json.dumps({"out": str(args.out), "failed_or_skipped": failed, **record["conclusions"]}))
    # 1 when a step failed or ran out of time (skipped steps - no CUDA, the budget spent - are not failures), so a
    # host without torch, say, does not read as a passed check.
    return 1 if any(s["status"] in ("failed", "timeout") for s in record["steps"]) else 0


def write(out: Path, record: dict) -> None:
    tmp = out / ".gpu_check.json.tmp"
    tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
    os.replace(tmp, out / "gpu_check.json")


if __name__ == "__main__":
    sys.exit(main())
