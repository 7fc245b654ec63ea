"""tests/benchmarks/gpu_check.py, the GPU check of issue 20, kept from rotting between GPU hosts: its CPU mode with
tiny shapes runs every step end to end, a failing or slow step is recorded and the check goes on, and missing
modules come from wheels placed beside it."""
import importlib.util
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from conftest import REPO_ROOT

HERE = Path(__file__).resolve().parent


def load_check():
    spec = importlib.util.spec_from_file_location("gpu_check", HERE / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_check(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check") / "out"
    done = subprocess.run([sys.executable, str(HERE / "gpu_check.py"), "--out", str(out), "--device", "cpu",
                           "--tiny"], capture_output=True, text=True, timeout=1500, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "gpu_check.json").read_text()), json.loads(done.stdout.strip().splitlines()[-1])


def test_tiny_cpu_check_runs_every_step_and_writes_its_figures(tiny_check):
    out, record, printed = tiny_check
    steps = {s["step"]: s for s in record["steps"]}
    assert list(steps) == ["probe", "cuda_tests", "host_syncs", "pipeline", "train_step:simplebaseline_r50",
                           "synthetic_data", "worker:on", "worker:off"]
    assert {name: s["status"] for name, s in steps.items() if s["status"] != "ok"} == {}, \
        {name: s.get("error") for name, s in steps.items()}
    assert printed["failed_or_skipped"] == []
    env = record["env"]
    assert env["missing_modules"] == [] and env["ray_or_mlflow_loaded"] == []  # the trainer needs neither
    assert steps["probe"]["result"]["matmul"]["tflops"] > 0
    assert steps["cuda_tests"]["result"].get("skipped", 0) + steps["cuda_tests"]["result"].get("passed", 0) == 2
    syncs = steps["host_syncs"]["result"]
    assert syncs["mse_reads_per_step"] == 0 and syncs["mse_reads_per_epoch_end"] == 2
    pipe = steps["pipeline"]["result"]
    assert pipe["train_img_s"] > 0 and pipe["cpu_path_train_img_s"] > 0 and pipe["lja"]
    assert record["conclusions"]["r50_lja_img_s"] == pipe["train_img_s"]
    row = steps["train_step:simplebaseline_r50"]["result"]["models"][0]
    assert row["model"] == "simplebaseline_r50" and row["images_per_s"] > 0 and row["mfu"] > 0
    for label in ("on", "off"):
        epochs = steps[f"worker:{label}"]["result"]["epochs"]
        assert len(epochs) == 2 and all(0 <= e["val/AP"] <= 1 and e["epoch_time_s"] > 0 for e in epochs)
    assert len(record["conclusions"]["ap_on_off"]) == 2
    for name in ("pipeline", "worker"):
        assert record["profiles"][name]["steps"] >= 1 and record["profiles"][name]["bound"]
    # What a lent device hands back: at most 8 plain files, no folder.
    files = sorted(p.name for p in out.iterdir())
    assert files == ["gpu_check.json", "gpu_check.log", "profile_pipeline.txt", "profile_worker.txt",
                     "trace_pipeline.json.gz", "trace_worker.json.gz"]


def test_a_failing_and_a_slow_step_are_recorded_and_the_slow_one_ended_with_its_children(tmp_path):
    check = load_check()
    with (tmp_path / "log").open("w") as log:
        failed = check.step_record("fails", [sys.executable, "-c", "import sys; print('half'); sys.exit(3)"], 30,
                                   log, dict(os.environ))
        child = tmp_path / "child.pid"
        start = time.perf_counter()
        slow = check.step_record("slow", ["sh", "-c", f"sleep 60 & echo $! > {child}; wait"], 2, log,
                                 dict(os.environ))
    assert failed["status"] == "failed" and failed["returncode"] == 3 and "half" in failed["error"]
    assert slow["status"] == "timeout" and time.perf_counter() - start < 20
    time.sleep(0.5)
    pid = int(child.read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert "===== fails: failed" in (tmp_path / "log").read_text()


def wheel(directory: Path, dist: str, module: str, body: str) -> Path:
    """A minimal pure-Python wheel of `dist` holding `module`."""
    path = directory / f"{dist}-1.0-py3-none-any.whl"
    info = f"{dist}-1.0.dist-info"
    files = {f"{module}.py": body, f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def test_missing_distributions_are_installed_from_wheels_beside_it_and_present_ones_left_alone(tmp_path):
    check = load_check()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel(wheels, "occpose_gpu_check_probe", "occpose_gpu_check_probe", "ANSWER = 42\n")
    wheel(wheels, "numpy", "numpy_shadow", "")  # installed here: must not be installed over
    site = tmp_path / "site"
    report = check.install_missing([wheels, tmp_path / "absent"], site)
    assert "error" not in report, report
    assert report["installed"] == ["occpose_gpu_check_probe-1.0-py3-none-any.whl"]
    assert report["already_there"] == ["numpy-1.0-py3-none-any.whl"]
    done = subprocess.run([sys.executable, "-c", "import occpose_gpu_check_probe as m; print(m.ANSWER)"],
                          env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True)
    assert done.stdout.strip() == "42"
    assert not (site / "numpy_shadow.py").exists()


def test_bad_flags_are_refused_by_name_before_anything_is_written(tmp_path):
    file = tmp_path / "file"
    file.write_text("")
    for args, named in ((["--out", str(file)], "--out"), (["--out", str(tmp_path / "o"), "--only", "nope"], "--only"),
                        (["--out", str(tmp_path / "o"), "--budget-s", "-1"], "--budget-s"),
                        (["--out", str(tmp_path / "o"), "--workers", "0"], "--workers"),
                        (["--out", str(tmp_path / "o"), "--wheels", str(tmp_path / "none")], "--wheels")):
        done = subprocess.run([sys.executable, str(HERE / "gpu_check.py"), *args], capture_output=True, text=True,
                              cwd=REPO_ROOT)
        assert done.returncode == 2 and named in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
    assert not (tmp_path / "o").exists()
