"""The search's state files beside its Tune experiment: the run registry and the tracking spool.

Both are written atomically (a temporary file renamed over the old one, or an fsync'd append) and read whole, so a
driver killed at any point leaves either the old or the new content, and a resumed search continues from it.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path


class RunRegistry:
    """trial_id -> MLflow run id, the parent run id, the search settings and each trial's best epoch, kept as
    JSON beside the experiment state. Every edit re-reads the file first, so several holders (the driver and a
    restored callback) never overwrite each other's entries."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self) -> dict:
        data = json.loads(self.path.read_text()) if self.path.exists() else {}
        for key, empty in (("parent", None), ("trials", {}), ("best", {}), ("settings", {})):
            data.setdefault(key, empty)
        return data

    @contextlib.contextmanager
    def editing(self):
        data = self.read()
        yield data
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.path)


class Spool:
    """Tracking operations not yet in MLflow, as a JSON-lines file beside the registry.

    Every callback appends its operation here first and then flushes the file in order, stopping at the first
    operation MLflow refuses (the server is down): nothing is lost while the tracking server is away, and what was
    queued arrives when it returns - in this process or, after a crash, in the resumed one."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def append(self, entry: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def replace(self, entries: list[dict]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(e) + "\n" for e in entries))
        tmp.replace(self.path)
