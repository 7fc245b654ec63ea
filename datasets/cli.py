"""argparse types shared by every command line: a value the parser refuses costs the user a sentence (exit 2, the
flag named by argparse), where the same value let through costs a traceback after minutes of work, or a silently
wrong result (`--max-samples -1` evaluated all persons but one).

This lives in `datasets/`, the root of ARCHITECTURE.md's one-way imports, so that `datasets/`, `trainables/`,
`search/` and `dashboards/` command lines may all use it.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def non_negative_int(text: str) -> int:
    """An integer >= 0 (where 0 usually means "all")."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def port(text: str) -> int:
    """A TCP port, 1..65535."""
    value = _int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port in 1..65535, got {value}")
    return value


def nearest_existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists (where mkdir -p would start creating)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def directory_problem(existing: Path) -> str | None:
    """Why files cannot be created in the existing path `existing`, or None: it is not a directory, or this process
    may not write there."""
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def output_dir_problem(path: Path) -> str | None:
    """Why `path` cannot be (or become) a writable output directory, or None: an existing file or other
    non-directory, a directory that is not writable, or a nearest existing ancestor that is a file or unwritable
    (mkdir would fail there). Nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        return f"{path} exists and is not a directory"
    if path.is_dir():
        return directory_problem(path)
    problem = directory_problem(nearest_existing(path.parent))
    return f"cannot create {path}: {problem}" if problem else None


def output_dir(text: str) -> Path:
    """An output directory: an existing writable directory, or a path one can be created at."""
    path = Path(text)
    problem = output_dir_problem(path)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return path


def input_file_problem(path: Path) -> str | None:
    """Why `path` cannot be read as an input file, or None: missing, a directory, or unreadable by this process.
    Every command's file inputs are checked here, so that each says the same thing."""
    path = Path(path)
    if path.is_dir():
        return f"{path}: is a directory, not a file"
    if not path.is_file():
        return f"{path}: no such file"
    if not os.access(path, os.R_OK):
        return f"{path}: not readable"
    return None


def existing_dir(text: str) -> Path:
    """A directory that exists (an input: a dataset root, an image directory)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: is a file, not a directory")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: no such directory")
    return path
