"""Atomic file writes and moves: a reader (or a process started after a crash) sees the old content or the new one,
never a 0-byte or half-written file.

A write goes to a temporary file in the destination's own directory (so the final rename never crosses a file
system), is flushed and fsync'd, and is then renamed over the destination with `os.replace` (atomic on POSIX);
the directory is fsync'd so the rename itself survives a power cut. A move across file systems (EXDEV: --out on a
disk, $TMPDIR on a tmpfs) copies into such a temporary file first: `shutil.move`'s semantics, done atomically.

This lives in `datasets/`, the root of ARCHITECTURE.md's one-way imports, because `datasets/`, `trainables/` and
`search/` all write files and `datasets/` is the one package all three may import (pyproject.toml installs only the
four packages, so a top-level module would not be importable from an installed copy).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path


def _new_file_mode(path: Path) -> int:
    """The mode a plain open() would give `path`: the existing file's, else 0o666 less the umask (mkstemp's 0o600
    would hide files from the other readers a shared store has)."""
    with contextlib.suppress(OSError):
        return path.stat().st_mode & 0o7777
    umask = 0o022
    with contextlib.suppress(OSError, ValueError, StopIteration):  # Linux states it without changing it
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("Umask:"))
        umask = int(line.split()[1], 8)
    return 0o666 & ~umask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a platform or file system without directory handles: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path | str, mode: str = "w", encoding: str | None = "utf-8", permissions: int | None = None):
    """A file object whose content replaces `path` when the block ends without an exception; on an exception (or
    a failing rename) the temporary file is removed and `path` keeps its old content. `permissions` (e.g. 0o600 for a
    secret) holds from the first byte; by default the file gets the mode a plain open() would give it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _new_file_mode(path) if permissions is None else permissions)
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_text(path: Path | str, text: str) -> None:
    with atomic_writer(path, "w") as f:
        f.write(text)


def write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_writer(path, "wb") as f:
        f.write(data)


def write_json(path: Path | str, data, **dumps) -> None:
    write_text(path, json.dumps(data, **dumps))


def copy_file(source: Path | str, destination: Path | str) -> None:
    """`destination` becomes a copy of `source` (content and mode bits), atomically."""
    source = Path(source)
    with atomic_writer(destination, "wb") as f, source.open("rb") as src:
        shutil.copyfileobj(src, f, 1 << 20)
    with contextlib.suppress(OSError):
        shutil.copymode(source, destination)


def move_file(source: Path | str, destination: Path | str) -> None:
    """Move a file over `destination` atomically: a rename where both lie on one file system, else (EXDEV) a copy
    into a temporary file beside `destination`, renamed over it, and only then is `source` removed."""
    source, destination = Path(source), Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, destination)
        _fsync_dir(destination.parent)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        copy_file(source, destination)
        source.unlink()
