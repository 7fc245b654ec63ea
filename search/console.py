"""What a search shows a person on the console, and where everything else goes.

Quiet by default (`quiet_console`): the driver's stdout and stderr file descriptors are pointed at a log file
(`<storage-path>/<experiment>.log`, beside the run registry), so Ray's trial tables, `TrainingReport(...)` result
dicts, log-deduplication banners and the worker lines Ray forwards to the driver (`log_to_driver`) land there, C++
and Python output alike. The console keeps a duplicate of the original stdout: the search's own lines, the live
progress (search/progress.py) and the summary (search/status.py) are written to it. Warnings and errors still reach
the console, once each, in one plain line: Python logging records of level WARNING and up, `warnings.warn`, and
worker lines that carry a WARNING/ERROR level or a traceback (`forward_worker_warnings`, on Ray's own dispatcher of
worker output). `--verbose` keeps Ray's output on the console, and in the log as well.

Ray's own knobs do not give this: `RunConfig(verbose=0)` silences Tune's tables but not the Train controller's and
workers' lines; `ray.init(log_to_driver=False)` drops worker lines from the driver altogether (they stay only in
Ray's session directory, where neither this log nor the console's warnings see them); `RAY_DEDUP_LOGS` only merges
repeats. Pointing the descriptors at one file keeps every line, next to the experiment.

The console is `rich` on a terminal and plain, unstyled lines otherwise (CI, `| tee`, a file).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import traceback
from pathlib import Path

from rich.console import Console as RichConsole

# Worker lines worth a person's attention: a log record of level WARNING and up (Ray's and Python's formats), or a
# trial restored from its checkpoint after a failure (trainables/train.py logs that at INFO on the worker). A trial
# that fails reaches the console through Tune (search/progress.py); Ray's internal tracebacks that it retries
# ("safe to ignore") stay in the log.
NOTABLE = re.compile(r"(^|\s)(WARNING|ERROR|CRITICAL|FATAL)[\s:]|restored from .*continuing at epoch")
# Said at every start by design, not something to act on: kept in the log only.
BENIGN = ("Token authentication is enabled", "safe to ignore", "A new study created", "Using the latest trial",
          "FutureWarning",
          "Creating initial MLflow database tables", "Updating database tables")
NUMBERS = re.compile(r"\d+(\.\d+)?")
PLAIN_WIDTH = 220  # off a terminal no line is wrapped: one table row stays one line of the log


class Console:
    """The person's view of a search: plain lines, warnings once each, and `rich` renderables (tables, live views)
    on a terminal. `stream` is where it writes (the original stdout in a quiet search)."""

    def __init__(self, stream=None, tty: bool | None = None, log_path: Path | None = None, data=None):
        self.stream = stream if stream is not None else sys.stdout
        self.data = data if data is not None else self.stream  # where `raw` writes (--json: stdout, the rest stderr)
        self.tty = self.stream.isatty() if tty is None else tty
        self.log_path = log_path
        self.rich = RichConsole(file=self.stream, force_terminal=self.tty, no_color=not self.tty, highlight=False,
                                width=self._width(), soft_wrap=not self.tty, emoji=False)
        self._said: set[str] = set()
        self._lock = threading.Lock()

    def _width(self) -> int:
        """The terminal's width, read from the console's own descriptor (in a quiet search stdout is the log, where
        rich would find none and assume 80 columns); PLAIN_WIDTH off a terminal."""
        if not self.tty:
            return PLAIN_WIDTH
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            return 80

    def line(self, text: str) -> None:
        """One plain line (above a live view, when one is shown)."""
        with self._lock:
            self.rich.print(text, markup=False)

    def raw(self, text: str) -> None:
        """Text as it is (JSON for a program), unstyled and unwrapped."""
        with self._lock:
            self.data.write(text)
            self.data.flush()

    def show(self, renderable) -> None:
        """A rich renderable (a Table): styled on a terminal, plain text otherwise."""
        if not self.tty and hasattr(renderable, "box"):
            from rich import box

            renderable.box, renderable.show_edge = box.SIMPLE, False  # no box-drawing characters in a log file
        with self._lock:
            self.rich.print(renderable)

    @contextlib.contextmanager
    def progress(self, description: str, unit: str):
        """Yield `advance(done, total)` for a long step (dataset generation, attack sweeps): a rich progress bar on a
        terminal, one line at the end otherwise; nothing at all when `advance` is never called."""
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                           TimeRemainingColumn(), console=self.rich, transient=False)
            task = None

            def advance(done: int, total: int) -> None:
                nonlocal task
                if task is None:
                    bar.start()
                    task = bar.add_task(description, total=total)
                bar.update(task, completed=done)

            try:
                yield advance
            finally:
                if task is not None:
                    bar.stop()
            return
        def advance(done: int, total: int) -> None:
            if done >= total:
                self.line(f"{description}: {done}/{total} {unit}")

        yield advance

    def once(self, kind: str, text: str) -> bool:
        """`kind: text` as one line, unless the same text (numbers aside) was already said; True if printed."""
        text = " ".join(text.split())
        key = NUMBERS.sub("#", text)
        if not text or key in self._said or any(b in text for b in BENIGN):
            return False
        self._said.add(key)
        where = f" (details: {self.log_path})" if self.log_path and kind == "error" else ""
        self.line(f"{kind}: {text[:400]}{where}")
        return True

    def warn(self, text: str) -> bool:
        return self.once("warning", text)

    def error(self, text: str) -> bool:
        return self.once("error", text)


_current: Console | None = None


def current() -> Console:
    """The search's console; a plain one on stdout when no search set one up (tools, tests)."""
    global _current
    if _current is None:
        _current = Console()
    return _current


def set_current(console: Console | None) -> None:
    global _current
    _current = console


class _ToConsole(logging.Handler):
    """Python logging records of WARNING and up, to the console once each."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage().splitlines()[0] if record.getMessage() else ""
            current().once("error" if record.levelno >= logging.ERROR else "warning", text)
        except Exception:  # noqa: BLE001 - a console problem must never break the search
            pass


def worker_message(line: str) -> str | None:
    """The part of a worker's output line a person reads, or None when the line is not for the console: its
    timestamp, level and `file.py:NN --` prefix are dropped (Ray's and Python's default log formats)."""
    if not NOTABLE.search(line):
        return None
    text = re.sub(r"^\S+ \S+\s+(WARNING|ERROR|CRITICAL|INFO)\s+\S+:\d+ -- ", "", line.strip())
    text = re.sub(r"^(WARNING|ERROR|CRITICAL|INFO)[: ]\S*?:", "", text)
    text = re.sub(r"^\S+ \S+ (WARNING|ERROR|CRITICAL|INFO) \S+: ", "", text)  # search/run.py's own format
    return text.strip() or None


def _on_worker_output(data: dict) -> None:
    who = data.get("actor_name") or data.get("task_name") or "a Ray worker"
    for line in data.get("lines", []):
        text = worker_message(line)
        if text is not None:
            level = "error" if re.search(r"ERROR|CRITICAL|FATAL", line) else \
                "warning" if "WARNING" in line else "note"
            current().once(level, f"{text} [{who} pid={data.get('pid')}]")


def forward_worker_warnings() -> None:
    """After `ray.init`: worker lines that warn, fail or restore a trial also reach the console, once each. Ray's
    dispatcher of worker output is internal; without it (another Ray) the log file still has every line."""
    try:
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return
    dispatcher.remove_handler("occpose_console")
    dispatcher.add_handler("occpose_console", _on_worker_output)


def _copy_out(source: int, targets: list, lock: threading.Lock) -> None:
    """Copy what arrives on the pipe `source` to each of `targets` (a descriptor, or the shared log file) until every
    writer has closed it."""
    with contextlib.suppress(OSError):
        while data := os.read(source, 1 << 16):
            with lock:
                for target in targets:
                    if isinstance(target, int):
                        view = memoryview(data)
                        while view:
                            view = view[os.write(target, view):]
                    else:
                        target.write(data)
    os.close(source)
    for target in targets:
        if isinstance(target, int):
            os.close(target)


@contextlib.contextmanager
def _tee_descriptors(log_path: Path):
    """Within the block, what is written to file descriptors 1 and 2 (by this process and the processes it starts:
    Ray's C++ and worker output too) still reaches where it did and is appended to `log_path` as well: each
    descriptor is pointed at a pipe that a thread copies to both. Ray is shut down at the end (its processes hold
    the pipes), and the copies are given a few seconds to drain."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    log, lock = open(log_path, "ab", buffering=0), threading.Lock()
    saved, copiers = {fd: os.dup(fd) for fd in (1, 2)}, []
    for fd in (1, 2):
        read, write = os.pipe()
        copiers.append(threading.Thread(target=_copy_out, args=(read, [os.dup(saved[fd]), log], lock), daemon=True))
        copiers[-1].start()
        os.dup2(write, fd)
        os.close(write)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            import ray

            if ray.is_initialized():
                ray.shutdown()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        for copier in copiers:
            copier.join(timeout=10)
        if not any(copier.is_alive() for copier in copiers):
            log.close()


@contextlib.contextmanager
def quiet_console(log_path: Path, verbose: bool = False, json_out: bool = False):
    """Yield the search's Console. Unless `verbose`, the process's stdout and stderr (file descriptors 1 and 2, so
    Ray's C++ and child output too) go to `log_path` (appended: a resumed search adds to it) until the block ends;
    an exception escaping the block is logged in full there and said in one line on the console. With `json_out`
    the person's lines go to stderr and stdout carries only what `Console.raw` writes (the summary JSON). With
    `verbose` everything stays on the console and is copied to `log_path` as well (`_tee_descriptors`)."""
    log_path = Path(log_path)
    if verbose:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        console = Console(sys.stderr, data=sys.stdout) if json_out else Console(sys.stdout)
        set_current(console)
        try:
            with _tee_descriptors(log_path):
                console.line(f"log: {log_path} (Ray's output, shown here too)")
                yield console
        finally:
            set_current(None)
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    human = 2 if json_out else 1
    tty = os.isatty(human)
    console = Console(open(os.dup(human), "w", buffering=1, encoding="utf-8", errors="replace", closefd=True), tty,
                      log_path, data=open(os.dup(1), "w", buffering=1, encoding="utf-8", closefd=True)
                      if json_out else None)
    log = open(log_path, "a", buffering=1, encoding="utf-8")
    for fd in (1, 2):
        os.dup2(log.fileno(), fd)
    handler, root = _ToConsole(level=logging.WARNING), logging.getLogger()
    if not root.handlers:  # every record in the log, whoever configured logging (search/run.py does)
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root.addHandler(handler)
    level = root.level
    root.setLevel(min(level, logging.INFO))  # the log has INFO; the console WARNING and up
    logging.captureWarnings(True)
    set_current(console)
    console.line(f"log: {log_path} (Ray's output; --verbose shows it here)")
    try:
        yield console
    except Exception as err:  # in full in the log, one line on the console; the exit status says it failed
        traceback.print_exc()
        console.error(f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}")
        raise SystemExit(1) from None
    finally:
        with contextlib.suppress(Exception):  # Ray's threads print worker output until it is shut down
            import ray

            if ray.is_initialized():
                ray.shutdown()
        root.removeHandler(handler)
        root.setLevel(level)
        logging.captureWarnings(False)
        with contextlib.suppress(Exception):
            from ray._private.ray_logging import global_worker_stdstream_dispatcher

            global_worker_stdstream_dispatcher.remove_handler("occpose_console")
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        log.close()
        console.stream.close()
        if console.data is not console.stream:
            console.data.close()
        set_current(None)
