"""The search's state files beside its Tune experiment: the run registry and the tracking spool.

Both are written atomically (datasets/atomic.py: a temporary file renamed over the old one; the spool's appends are
fsync'd whole lines), so a driver killed at any point leaves either the old or the new content. Files torn anyway
(a disk that filled, a copy cut short, an older version of this code) are read as journals: what is whole is kept,
the rest is moved aside beside them and named in a warning, and the search goes on from what was recovered.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from datasets.atomic import write_json, write_text

log = logging.getLogger(__name__)

# The registry's sections in the order they are written: what a resume cannot do without first (a file cut short
# loses its end, and `best` is the part that grows with every epoch).
SECTIONS = (("settings", dict), ("parent", None), ("trials", dict), ("best", dict))


class CorruptStateError(ValueError):
    """A state file that cannot be used as it is; the message names the file, what was recovered and what to do."""


def _warn(message: str) -> None:
    log.warning(message)
    print(f"warning: {message}", flush=True)


def salvage_object(text: str) -> tuple[dict, list[str]]:
    """The complete entries of a JSON object cut short, and what was lost. A section (an object inside it) whose end
    is missing keeps its whole entries."""
    decoder = json.JSONDecoder()

    def skip(pos: int, chars: str = " \t\r\n") -> int:
        while pos < len(text) and text[pos] in chars:
            pos += 1
        return pos

    def entries(pos: int, nested: bool) -> tuple[dict, list[str]]:
        found: dict = {}
        if text[skip(pos):skip(pos) + 1] != "{":
            return found, ["everything"]
        pos = skip(skip(pos) + 1)
        while text[pos:pos + 1] not in ("}", ""):
            try:
                key, pos = decoder.raw_decode(text, pos)
            except ValueError:
                return found, ["the rest"]
            value_at = skip(skip(pos), ": \t\r\n")
            try:
                found[key], pos = decoder.raw_decode(text, value_at)
            except ValueError:
                if nested or text[value_at:value_at + 1] != "{":
                    return found, [str(key)]
                found[key], _ = entries(value_at, True)
                return found, [f"{key} after its first {len(found[key])} entries"]
            pos = skip(pos, ", \t\r\n")
        return found, [] if text[pos:pos + 1] == "}" else ["the end"]

    return entries(0, False)


class RunRegistry:
    """trial_id -> MLflow run id, the parent run id, the search settings and each trial's best epoch, kept as
    JSON beside the experiment state. Every edit re-reads the file first, so several holders (the driver and a
    restored callback) never overwrite each other's entries."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self) -> dict:
        data = self._load() if self.path.exists() else {}
        for key, empty in SECTIONS:
            data.setdefault(key, empty() if empty else None)
        return data

    def _load(self) -> dict:
        text = self.path.read_text(errors="replace")
        try:
            data = json.loads(text)
            if isinstance(data, dict):
                return data
        except ValueError:
            pass
        return self._recover(text)

    def _recover(self, text: str) -> dict:
        """A torn registry: its complete sections are kept, the file itself moved aside as NAME.corrupt, and a search
        that lost its settings stops with a message (its other flags would change silently otherwise). Parent and
        trial runs the registry lost are found again in MLflow by their tags (search/tracking.py ROLE_TAG)."""
        found, lost = salvage_object(text)
        found = {key: value for key, value in found.items()
                 if any(key == name and (kind is None or isinstance(value, kind)) for name, kind in SECTIONS)}
        if any(item.startswith("settings") for item in lost):
            found.pop("settings", None)  # part of the settings would resume with defaults for the rest: none
        aside = self.path.with_name(self.path.name + ".corrupt")
        os.replace(self.path, aside)
        recovered = ", ".join(f"{key} ({len(value)} entries)" if isinstance(value, dict) else key
                              for key, value in found.items() if value) or "nothing"
        write_json(self.path, self._ordered(found), indent=1)
        summary = (f"run registry {self.path} was torn ({len(text)} bytes, not valid JSON); moved it to {aside}; "
                   f"recovered {recovered}; lost {', '.join(lost) or 'nothing'}. Parent and trial runs it lost are "
                   "found again in MLflow by their tags")
        if not found.get("settings"):
            raise CorruptStateError(
                f"{summary}; the search's settings are lost: resume it by giving `--resume` with every flag it was "
                "started with (the recovered registry now takes those), or start it under a new --experiment")
        _warn(summary)
        return found

    @staticmethod
    def _ordered(data: dict) -> dict:
        return {**{key: data[key] for key, _ in SECTIONS if key in data}, **data}

    @contextlib.contextmanager
    def editing(self):
        data = self.read()
        yield data
        write_json(self.path, self._ordered(data), indent=1)


class Spool:
    """Tracking operations not yet in MLflow, as a JSON-lines file beside the registry.

    Every callback appends its operation here first and then flushes the file in order, stopping at the first
    operation MLflow refuses (the server is down): nothing is lost while the tracking server is away, and what was
    queued arrives when it returns - in this process or, after a crash, in the resumed one. A record torn by a crash
    (the last line, cut short) is dropped with a warning and kept in NAME.corrupt; every whole record is delivered."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        entries, torn = [], []
        for number, line in enumerate(self.path.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict):
                    raise ValueError("not an object")
                entries.append(entry)
            except ValueError:
                torn.append((number, line))
        if torn:
            self._set_aside(entries, torn)
        return entries

    def _set_aside(self, entries: list[dict], torn: list[tuple[int, str]]) -> None:
        aside = self.path.with_name(self.path.name + ".corrupt")
        with aside.open("a") as f:
            f.writelines(line + "\n" for _, line in torn)
        self.replace(entries)
        lines = ", ".join(str(number) for number, _ in torn)
        _warn(f"tracking spool {self.path}: dropped {len(torn)} torn record(s) (line {lines}; kept in {aside}); "
              f"the {len(entries)} whole record(s) are delivered")

    def append(self, entry: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+b") as f:
            f.seek(0, os.SEEK_END)
            start_on_new_line = b""
            if f.tell():  # a torn last line (no newline) must not swallow this record
                f.seek(-1, os.SEEK_END)
                start_on_new_line = b"" if f.read(1) == b"\n" else b"\n"
            f.write(start_on_new_line + (json.dumps(entry) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())

    def replace(self, entries: list[dict]) -> None:
        write_text(self.path, "".join(json.dumps(e) + "\n" for e in entries))
