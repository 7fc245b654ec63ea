"""The live view of a running search, driven by Tune's callbacks in the driver process.

One row per trial (id, state, epoch / max, the searched metric now and at its best, img/s, ETA) under a header (trials
done / total, elapsed against `--time-budget`, the best trial so far with its searched parameters). On a terminal it
is a `rich` live table with the event lines scrolling above it; off a terminal only the event lines are printed: a
trial's start with its parameters, each epoch's one-line summary (`[3f7b7561] epoch 3: val/AP=0.359 ...`, which
tests and people grep), and its end followed by the header as one line.

`ProgressPrinter` is the Tune callback. It holds no state (Tune pickles it into the experiment state, and experiments
made before this module pickled it as `search.tracking.ProgressPrinter`, re-exported there): it feeds the `Board`
that `search/tuner.py` sets up for the search with `board_for`.
"""
from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field

from ray import tune
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from datasets.meta import DATASETS, SPLITS, metric_name

MAIN_KEYS = tuple(dict.fromkeys(meta.main_key for meta in DATASETS.values()))  # ("AP", "PCKh_0.5")
# Each evaluation split's main metric (val/AP, val_occ/AP, val/PCKh_0.5, ...): the epoch line and the summary show
# those a trial reports.
HEADLINE_METRICS = tuple(metric_name(split, key) for key in MAIN_KEYS for split in SPLITS)
SEARCHED_SECTIONS = ("search.", "lja.", "loss.", "occ.", "oasnet.", "model.")


def best_first(score, trial_id) -> tuple:
    """The sort key of trials best first, the one order of the summary table, the progress line, the summary JSON
    and the parent run: the higher score first, no score last, ties to the lower trial id (common in smoke runs)."""
    return score is None, -(score or 0.0), str(trial_id)


def fmt(value) -> str:
    """A number as people read it in a table: 3 significant digits, ints and text as they are, '—' for none."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def score(value) -> str:
    """A metric (AP, PCKh) with the 3 decimals the papers' tables use."""
    return "—" if value is None else f"{value:.3f}"


def clock(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def params_text(params: dict) -> str:
    return " ".join(f"{k}={fmt(v)}" for k, v in params.items())


@dataclass
class Row:
    trial_id: str
    params: dict
    state: str = "running"
    epoch: int = 0
    now: float | None = None
    best: float | None = None
    img_s: float | None = None
    started: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)

    def eta_s(self, epochs: int) -> float | None:
        """Seconds left at this trial's mean pace so far, if it runs to its last epoch."""
        if self.state != "running" or not self.epoch:
            return None
        return (self.last - self.started) / self.epoch * (epochs - self.epoch)


class Board:
    """The search's trials as the driver sees them; `searched` picks each trial's searched parameters out of its
    config (the space's paper-point keys and whatever differs from the base config)."""

    def __init__(self, console, metric: str, epochs: int, num_samples: int, time_budget_min: float, base: dict,
                 searched: tuple[str, ...] = ()):
        self.console, self.metric, self.epochs, self.num_samples = console, metric, epochs, num_samples
        self.budget_s, self.base, self.searched_keys = time_budget_min * 60, base, searched
        self.started = time.monotonic()
        self.rows: dict[str, Row] = {}
        self._lock = threading.Lock()

    def searched(self, config: dict) -> dict:
        return {k: v for k, v in sorted(config.items()) if k.startswith(SEARCHED_SECTIONS)
                and (k in self.searched_keys or v != self.base.get(k))}

    # -- events ---------------------------------------------------------------------------------------------------

    def start(self, trial_id: str, config: dict, epoch: int | None = None) -> None:
        """`epoch`: the last epoch Tune has of the trial (a trial restored by `--resume` has one before this
        process saw any)."""
        with self._lock:
            row = self.rows.get(trial_id)
            restarted = row is not None or bool(epoch)
            if row is None:
                self.rows[trial_id] = row = Row(trial_id, self.searched(config))
            row.state, row.epoch = "running", max(row.epoch, int(epoch or 0))
        if restarted:  # after a pause, an exploit (PBT: the config it goes on with, not its first) or a resume
            now = params_text(self.searched(config)) or "(base config)"
            self.console.line(f"[{trial_id}] continues after epoch {row.epoch}: {now}")
        else:
            self.console.line(f"[{trial_id}] started: {params_text(row.params) or '(base config)'}")

    def result(self, trial_id: str, config: dict, result: dict) -> None:
        with self._lock:
            row = self.rows.get(trial_id) or self.rows.setdefault(trial_id, Row(trial_id, self.searched(config)))
            row.epoch, row.last = int(result.get("epoch") or row.epoch), time.monotonic()
            row.img_s = result.get("train/images_per_s", row.img_s)
            score = result.get(self.metric)
            if isinstance(score, (int, float)):
                row.now = float(score)
                row.best = row.now if row.best is None else max(row.best, row.now)
        parts = [f"{k}={result[k]:.3f}" for k in (*HEADLINE_METRICS, "train/loss")
                 if isinstance(result.get(k), (int, float))]
        node = f" on node {result['ray_node'][:12]}" if result.get("ray_node") else ""
        self.console.line(f"[{trial_id}] epoch {result.get('epoch')}: {' '.join(parts)} "
                          f"({result.get('train/images_per_s', 0):.0f} img/s){node}")

    def end(self, trial_id: str, config: dict, error: str | None = None) -> None:
        with self._lock:
            row = self.rows.get(trial_id) or self.rows.setdefault(trial_id, Row(trial_id, self.searched(config)))
            row.state = "failed" if error else "done" if row.epoch >= self.epochs else "stopped early"
        if error:
            self.console.error(f"trial {trial_id} failed: {error}")
        else:
            self.console.line(f"[{trial_id}] {row.state} at epoch {row.epoch}/{self.epochs}: best "
                              f"{self.metric}={score(row.best)}")
        if not self.console.tty:
            self.console.line(self.header())

    def settle(self, state: str = "stopped") -> None:
        """At the search's end: the trials Tune stopped without reporting their end (time budget, Ctrl-C)."""
        with self._lock:
            for row in self.rows.values():
                if row.state == "running":
                    row.state = state

    # -- views ----------------------------------------------------------------------------------------------------

    def best_row(self) -> Row | None:
        scored = [r for r in self.rows.values() if r.best is not None]
        return min(scored, key=lambda r: best_first(r.best, r.trial_id)) if scored else None

    def header(self) -> str:
        done = sum(r.state != "running" for r in self.rows.values())
        elapsed = time.monotonic() - self.started
        budget = f" of {clock(self.budget_s)} budget" if self.budget_s else ""
        best = self.best_row()
        best_text = f"best [{best.trial_id}] {self.metric}={score(best.best)} {params_text(best.params)}" \
            if best else "best: none scored yet"
        return (f"progress: {done}/{self.num_samples} trials done, {len(self.rows) - done} running; "
                f"{clock(elapsed)} elapsed{budget}; {best_text}")

    def render(self):
        with self._lock:
            table = Table(title=None, expand=False, pad_edge=False)
            for column in ("trial", "state", "epoch", f"{self.metric} now", "best", "img/s", "ETA"):
                table.add_column(column, justify="left" if column in ("trial", "state") else "right")
            best = self.best_row()
            for row in self.rows.values():
                table.add_row(row.trial_id, row.state, f"{row.epoch}/{self.epochs}", score(row.now), score(row.best),
                              fmt(round(row.img_s)) if row.img_s else "—", clock(row.eta_s(self.epochs)),
                              style="bold green" if row is best else None)
            return Group(Text(self.header()), table)

    @contextlib.contextmanager
    def live(self):
        """While the search runs: the live table on a terminal, nothing extra off one."""
        if not self.console.tty:
            yield self
            return
        # Not redirecting stdout/stderr: in a quiet search they are the log (search/console.py).
        with Live(get_renderable=self.render, console=self.console.rich, refresh_per_second=2, transient=False,
                  redirect_stdout=False, redirect_stderr=False):
            yield self


_board: Board | None = None


def board_for(console, args, base: dict, searched: tuple[str, ...]) -> Board:
    """The search's board, which `ProgressPrinter` feeds from now on."""
    global _board
    _board = Board(console, args.metric, args.epochs, args.num_samples, args.time_budget_min, base, searched)
    return _board


class ProgressPrinter(tune.Callback):
    """Feeds the search's live view (`Board`) from Tune's trial events, in the driver process."""

    def _board(self) -> Board:
        global _board
        if _board is None:  # not set up by search/tuner.py (a tool driving Tune itself): plain lines on stdout
            from search.console import current

            _board = Board(current(), "val_occ/AP", 0, 0, 0.0, {})
        return _board

    def on_trial_start(self, iteration, trials, trial, **info):
        self._board().start(trial.trial_id, trial.config, (trial.last_result or {}).get("epoch"))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._board().result(trial.trial_id, trial.config, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._board().end(trial.trial_id, trial.config)

    def on_trial_error(self, iteration, trials, trial, **info):
        error = str(getattr(trial, "error_msg", None) or "unknown error").strip().splitlines()
        self._board().end(trial.trial_id, trial.config, error=(error[-1] if error else "unknown error")[:300])
