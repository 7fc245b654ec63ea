"""What a search shows a person (search/console.py, progress.py, status.py): the quiet console and its log, the
live board's lines and table, the summary table, the dataset's progress hook; and, end to end, a 2-trial smoke search
in a real terminal (tmux) read back with `capture-pane`."""
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from rich.console import Console as RichConsole

from conftest import REPO_ROOT
from search.console import Console, worker_message
from search.progress import Board
from search.status import SearchStatus, TrialRow, next_commands, table


def plain_console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(out, tty=False), out


def rendered(renderable, width: int = 200) -> str:
    out = io.StringIO()
    RichConsole(file=out, width=width, force_terminal=False, no_color=True).print(renderable)
    return out.getvalue()


def cells(text: str) -> list[list[str]]:
    """The rows of a rendered rich table (header first), each as its cells' text."""
    rows = [line.strip().strip("│┃") for line in text.splitlines() if line.strip()[:1] in "│┃"]
    return [[cell.strip() for cell in row.replace("┃", "│").split("│")] for row in rows if row]


def test_board_prints_epoch_lines_and_a_header_per_ended_trial():
    console, out = plain_console()
    board = Board(console, "val_occ/AP", epochs=2, num_samples=3, time_budget_min=13, base={"lja.p": 1.0},
                  searched=("lja.quantity_ratio",))
    board.start("aaaa1111", {"lja.quantity_ratio": 0.15, "lja.p": 1.0, "optim.lr": 1e-3})
    board.start("bbbb2222", {"lja.quantity_ratio": 0.3, "lja.p": 0.5, "optim.lr": 1e-3})
    board.result("aaaa1111", {}, {"epoch": 1, "val/AP": 0.5, "val_occ/AP": 0.25, "train/loss": 0.01,
                                  "train/images_per_s": 40.0, "ray_node": "0123456789abcdef"})
    board.result("bbbb2222", {}, {"epoch": 1, "val/AP": 0.6, "val_occ/AP": 0.375, "train/images_per_s": 50.0})
    board.result("aaaa1111", {}, {"epoch": 2, "val/AP": 0.5, "val_occ/AP": 0.125, "train/images_per_s": 40.0})
    board.end("aaaa1111", {})
    lines = out.getvalue().splitlines()
    # the searched parameters: the space's paper-point keys and what differs from the base config
    assert lines[0] == "[aaaa1111] started: lja.quantity_ratio=0.15"
    assert lines[1] == "[bbbb2222] started: lja.p=0.5 lja.quantity_ratio=0.3"
    assert lines[2] == ("[aaaa1111] epoch 1: val/AP=0.500 val_occ/AP=0.250 train/loss=0.010 (40 img/s) "
                        "on node 0123456789ab")
    assert lines[5] == "[aaaa1111] done at epoch 2/2: best val_occ/AP=0.250"  # its best, not its last
    header = lines[6]
    assert header.startswith("progress: 1/3 trials done, 1 running; 0:00 elapsed of 13:00 budget; ")
    assert header.endswith("best [bbbb2222] val_occ/AP=0.375 lja.p=0.5 lja.quantity_ratio=0.3")

    board.end("bbbb2222", {}, error="RuntimeError: CUDA out of memory")
    assert out.getvalue().splitlines()[-2] == "error: trial bbbb2222 failed: RuntimeError: CUDA out of memory"
    assert board.rows["bbbb2222"].state == "failed"


def test_a_restarted_trial_prints_the_config_it_goes_on_with():
    """A PBT member restarted after an exploit goes on with the donor's perturbed config: its line says so and
    shows that config, not its first one again (which the table keeps: Optuna's and MLflow's params)."""
    console, out = plain_console()
    board = Board(console, "val_occ/AP", epochs=3, num_samples=2, time_budget_min=0, base={"lja.p": 1.0},
                  searched=("loss.lambda_max",))
    board.start("aaaa1111", {"loss.lambda_max": 0.25, "lja.p": 1.0})
    board.result("aaaa1111", {}, {"epoch": 1, "val_occ/AP": 0.25})
    board.start("aaaa1111", {"loss.lambda_max": 0.776, "lja.p": 0.8})
    lines = out.getvalue().splitlines()
    assert lines[-1] == "[aaaa1111] continues after epoch 1: lja.p=0.8 loss.lambda_max=0.776"
    assert board.rows["aaaa1111"].params == {"loss.lambda_max": 0.25}
    # a --resume's process sees a restored member first at its restart: the epoch Tune has of it, not 0
    board.start("cccc3333", {"loss.lambda_max": 0.5}, epoch=2)
    assert out.getvalue().splitlines()[-1] == "[cccc3333] continues after epoch 2: loss.lambda_max=0.5"
    board.start("dddd4444", {"loss.lambda_max": 0.5}, epoch=None)
    assert out.getvalue().splitlines()[-1] == "[dddd4444] started: loss.lambda_max=0.5"


def test_board_table_has_a_row_per_trial_with_epoch_eta_and_the_best_marked():
    console, _ = plain_console()
    board = Board(console, "val_occ/AP", epochs=4, num_samples=2, time_budget_min=0, base={})
    board.start("aaaa1111", {"lja.p": 0.5})
    board.rows["aaaa1111"].started -= 30  # its first epoch took 30 s
    board.result("aaaa1111", {}, {"epoch": 1, "val_occ/AP": 0.5, "train/images_per_s": 41.6})
    text = rendered(board.render())
    assert "progress: 0/2 trials done, 1 running; 0:00 elapsed; best [aaaa1111] val_occ/AP=0.500 lja.p=0.5" in text
    header, row = cells(text)
    assert header == ["trial", "state", "epoch", "val_occ/AP now", "best", "img/s", "ETA"]
    assert row == ["aaaa1111", "running", "1/4", "0.500", "0.500", "42", "1:30"]  # 3 more epochs of 30 s
    board.settle()  # the search ended (time budget) without Tune reporting this trial's end
    assert cells(rendered(board.render()))[1] == ["aaaa1111", "stopped", "1/4", "0.500", "0.500", "42", "—"]


def test_worker_lines_reach_the_console_only_when_they_warn_fail_or_restore():
    assert worker_message("Reporting training result 1: TrainingReport(checkpoint=..., metrics={'epoch': 1})") is None
    assert worker_message("Setting up process group for: env:// [rank=0, world_size=1]") is None
    assert worker_message("2026-11-30 10:58:50,652\tWARNING worker.py:85 -- Disk is 95% full") == "Disk is 95% full"
    assert worker_message("restored from /r/ckpt, continuing at epoch 2") == \
        "restored from /r/ckpt, continuing at epoch 2"
    # Ray Train's own retried errors: in the log only (a trial that fails reaches the console through Tune)
    assert worker_message("Traceback (most recent call last):") is None
    assert worker_message("ray.exceptions.GetTimeoutError: Get timed out: some object(s) not ready.") is None
    assert worker_message("WARNING:trainables.loaders:3 images skipped") == "3 images skipped"


def test_a_restored_trial_and_a_worker_warning_reach_the_console_once(monkeypatch):
    """Worker output as Ray's log monitor hands it to the driver (search/console.py hooks its dispatcher)."""
    import search.console as console_module

    console, out = plain_console()
    monkeypatch.setattr(console_module, "_current", console)
    batch = {"pid": 4242, "actor_name": "RayTrainWorker", "is_err": True, "lines": [
        "2026-11-30 10:58:50,652\tINFO train.py:101 -- restored from /r/ab12/ckpt_1, continuing at epoch 2",
        "2026-11-30 10:58:51,001\tINFO train.py:120 -- epoch 2 step 0/2 loss 0.03",
        "2026-11-30 10:58:52,101\tWARNING loaders.py:40 -- 3 images could not be decoded; skipped"]}
    console_module._on_worker_output(batch)
    console_module._on_worker_output({**batch, "pid": 4243})  # the same warning from another worker
    assert out.getvalue().splitlines() == [
        "note: restored from /r/ab12/ckpt_1, continuing at epoch 2 [RayTrainWorker pid=4242]",
        "warning: 3 images could not be decoded; skipped [RayTrainWorker pid=4242]"]


def test_console_says_each_warning_once_numbers_aside():
    console, out = plain_console()
    assert console.warn("disk 91% full on node 3")
    assert not console.warn("disk 92% full on node 4")
    assert not console.warn("Token authentication is enabled for this Ray cluster")  # by design: the log only
    assert out.getvalue() == "warning: disk 91% full on node 3\n"


QUIET_SCRIPT = textwrap.dedent("""
    import logging, os, sys
    from pathlib import Path
    from search.console import quiet_console
    log = Path(sys.argv[1])
    with quiet_console(log) as console:
        print("Trial status: 2 RUNNING")                   # Ray's table, Python-level
        os.write(2, b"(RayTrainWorker pid=1) TrainingReport(...)\\n")  # C++ / forwarded output, fd-level
        logging.getLogger("ray.tune").warning("trial 3 is slow")
        logging.getLogger("ray.tune").warning("trial 4 is slow")
        console.line("mine")
        if sys.argv[2] == "fail":
            raise RuntimeError("the tracking store went away")
    print("after")
""")


@pytest.mark.parametrize("ending", ["ok", "fail"])
def test_quiet_console_sends_ray_to_the_log_and_warnings_once(tmp_path, ending):
    log = tmp_path / "exp.log"
    proc = subprocess.run([sys.executable, "-c", QUIET_SCRIPT, str(log), ending], capture_output=True, text=True,
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=120)
    shown = proc.stdout.splitlines()
    assert shown[:3] == [f"log: {log} (Ray's output; --verbose shows it here)", "warning: trial 3 is slow", "mine"]
    assert proc.stderr == ""
    logged = log.read_text()
    assert "Trial status: 2 RUNNING" in logged and "TrainingReport(...)" in logged and "trial 4 is slow" in logged
    if ending == "ok":
        assert proc.returncode == 0 and shown[3:] == ["after"]  # the console is the process's own again
    else:
        assert proc.returncode == 1
        assert shown[3:] == [f"error: RuntimeError: the tracking store went away (details: {log})"]
        assert "Traceback (most recent call last)" in logged and "RuntimeError: the tracking store went away" in logged


VERBOSE_SCRIPT = textwrap.dedent("""
    import os, subprocess, sys
    from pathlib import Path
    from search.console import quiet_console
    with quiet_console(Path(sys.argv[1]), verbose=True) as console:
        print("Trial status: 2 RUNNING")                   # Ray's table, Python-level
        os.write(2, b"(RayTrainWorker pid=1) TrainingReport(...)\\n")  # C++ / forwarded output, fd-level
        subprocess.run([sys.executable, "-c", "print('from a child process')"], check=True)  # Ray's processes
        console.line("mine")
    print("after")
""")


def test_verbose_console_shows_ray_and_keeps_it_in_the_log_too(tmp_path):
    log = tmp_path / "ray" / "exp.log"
    proc = subprocess.run([sys.executable, "-c", VERBOSE_SCRIPT, str(log)], capture_output=True, text=True,
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"},
                          timeout=120)  # unbuffered as search/run.py runs in the tests: lines in the order written
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"log: {log} (Ray's output, shown here too)", "Trial status: 2 RUNNING",
                                        "from a child process", "mine", "after"]
    assert proc.stderr == "(RayTrainWorker pid=1) TrainingReport(...)\n"
    logged = log.read_text()
    for line in ("Trial status: 2 RUNNING", "TrainingReport(...)", "from a child process"):
        assert line in logged
    assert "after" not in logged  # the descriptors are the process's own again


def test_summary_table_best_first_with_the_paper_point_and_the_floor():
    rows = [TrialRow("paper001", "done", 6, 5, 0.31, 0.52, {"lja.quantity_ratio": 0.15}, paper_point=True),
            TrialRow("best0002", "stopped early", 2, 2, 0.42, 0.61, {"lja.quantity_ratio": 0.3}),
            TrialRow("fresh003", "pending")]
    rows.sort(key=lambda r: (r.score is None, -(r.score or 0.0)))
    status = SearchStatus("exp", "lja", "val_occ/AP", "val/AP", 6, 3, "p1", "finished", rows,
                          ["lja.quantity_ratio"], {"val/AP": 0.089, "val_occ/AP": 0.152})
    header, *rows, floor = cells(rendered(table(status)))
    assert header == ["#", "trial", "state", "epochs", "quantity_ratio", "val/AP", "val_occ/AP", "note"]
    assert rows == [["1", "best0002", "stopped early", "2/6", "0.3", "0.610", "0.420", ""],
                    ["2", "paper001", "done", "6/6", "0.15", "0.520", "0.310", "paper point"],
                    ["3", "fresh003", "pending", "0/6", "—", "—", "—", ""]]
    assert floor == ["", "mean pose", "floor", "", "", "0.089", "0.152", "train-set mean pose in each box"]
    commands = dict(next_commands(status, "/r", "sqlite:///m.db"))
    assert commands["browse the runs"].startswith("mlflow ui --backend-store-uri sqlite:///m.db")
    assert commands["build the report"] == "python dashboards/report.py --experiment exp --tracking-uri sqlite:///m.db"
    assert commands["status again"] == "python search/run.py --experiment exp --storage-path /r --status"
    status.parent_state = "interrupted"
    assert dict(next_commands(status, "/r", "sqlite:///m.db"))["resume"] == \
        "python search/run.py --space lja --experiment exp --storage-path /r --resume"


def test_dataset_generation_reports_its_progress(tmp_path):
    from datasets.synthetic import SyntheticSpec, ensure_dataset

    seen = []
    spec = SyntheticSpec(seed=7, num_train_images=5, num_val_images=3)
    ensure_dataset(spec, tmp_path, workers=1, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (8, 8) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    seen.clear()
    ensure_dataset(spec, tmp_path, workers=1, progress=lambda done, total: seen.append((done, total)))
    assert seen == []  # cached: nothing to show


def tmux(socket: str, *args) -> str:
    return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=30).stdout


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_smoke_search_in_a_terminal_shows_the_live_table_and_the_summary(tmp_path, dataset_cache):
    """A person's view: the search run in a real terminal (tmux), its screen read with capture-pane while it runs
    (the live table with its header) and at its end (the summary table and the next commands)."""
    socket = f"occpose-test-{uuid.uuid4().hex[:8]}"
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "OCCPOSE_CACHE": str(dataset_cache),
           "PYTHONPATH": str(REPO_ROOT), "TERM": "xterm-256color"}
    command = " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.quote(sys.executable),
                        shlex.quote(str(REPO_ROOT / "search" / "run.py")), "--space lja --smoke --storage-path",
                        shlex.quote(str(tmp_path / "ray")), "--experiment tty; echo EXIT=$?; sleep 600"])
    tmux(socket, "new-session", "-d", "-x", "220", "-y", "70", "-c", str(tmp_path), "bash", "-c", command)
    screens, running = [], None
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            screen = tmux(socket, "capture-pane", "-p", "-J", "-S", "-200", "-t", "0")
            screens.append(screen)
            if "EXIT=" in screen:
                break
            if running is None and "] started: " in screen:  # --status of the running search, once, beside it
                running = subprocess.Popen(
                    [sys.executable, str(REPO_ROOT / "search" / "run.py"), "--status", "--experiment", "tty",
                     "--storage-path", str(tmp_path / "ray")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True, cwd=tmp_path, env={**os.environ, **env})
            time.sleep(1)
    finally:
        tmux(socket, "kill-server")
    if running is not None:
        out, err = running.communicate(timeout=300)
        running = subprocess.CompletedProcess(running.args, running.returncode, out, err)
    final = screens[-1]
    assert "EXIT=0" in final, final
    # the live table: its header line, its columns, a row per running trial
    header = re.compile(r"^progress: [01]/2 trials done, [12] running; \d+:\d\d elapsed", re.M)
    live = [s for s in screens if header.search(s)
            and re.search(r"[0-9a-f]{8}\s*│\s*running\s*│\s*[01]/1\s*│", s)]
    assert live, "the live table was never on screen:\n" + "\n".join(screens[-3:])
    columns = ("trial", "state", "epoch", "val_occ/AP now", "best", "img/s", "ETA")
    assert re.search(r"\s*┃\s*".join(map(re.escape, columns)), live[0])
    assert f"log: {tmp_path / 'ray' / 'tty.log'} (Ray's output; --verbose shows it here)" in final  # one line: 220
    for needle in ("tty: trials best first by val_occ/AP", "paper point", "mean pose", "browse the runs:",
                   "build the report:", "status again:", f"summary JSON: {tmp_path / 'ray' / 'tty.summary.json'}"):
        assert needle in final, needle
    assert running is not None and running.returncode == 0, running and running.stderr[-2000:]
    assert running.stdout.startswith("experiment tty: running, ") and "status again:" in running.stdout
    assert len(re.findall(r"^[12]\s+[0-9a-f]{8}\s+(running|pending|done)\s", running.stdout, re.M)) == 2
    assert "TrainingReport" not in final and "Trial status" not in final  # Ray's output is in the log
    assert "TrainingReport" in (tmp_path / "ray" / "tty.log").read_text()


def test_the_table_shows_only_the_parameters_a_trial_drew():
    """A conditional parameter of another branch (a linear schedule's step_at) holds the base config's value, not a
    choice of the trial: the summary table and --status leave it blank (search/status.py)."""
    from search.status import trial_parameters

    base = {"lja.quantity_ratio": 0.2, "lja.size_ratio": 0.2, "lja.p": 0.5, "loss.lambda_max": 1.0,
            "loss.step_at": 0.5, "loss.ramp_until": 1.0, "loss.exp_rate": 5.0}
    assert trial_parameters("lja", {**base, "loss.schedule": "linear"}) == {
        "lja.quantity_ratio", "lja.size_ratio", "lja.p", "loss.schedule", "loss.lambda_max", "loss.ramp_until"}
    assert "loss.step_at" in trial_parameters("lja", {**base, "loss.schedule": "step"})
    assert trial_parameters("no-such-space", base) == set(base)
