"""One file over HTTP(S), resumable: the bytes go to `<name>.part` beside the destination; a connection that breaks
(or a process that is stopped) leaves the part, and the next attempt asks for the rest with an HTTP Range request
(RFC 9110 §14: `Range: bytes=N-`, answered 206 with `Content-Range: bytes N-…/total`). A server that ignores
the range (200) is read from the start again; one that answers 416 to a part as long as the file has nothing left
to send. Only a complete file is renamed to its name, and only after its size and checksum are checked.

Progress: a rich bar on a terminal, plain lines (every 10 %) otherwise.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

CHUNK = 1 << 20
USER_AGENT = "occpose-datasets-download/1"


class DownloadError(RuntimeError):
    """A file that could not be fetched or is not the published one; str() names the file, the URL and why."""


def digest_of(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of the file at `path` (`algorithm` as hashlib names it), read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def md5_of(path: Path) -> str:
    """The MD5 the COCO site publishes for its archives."""
    return digest_of(path, "md5")


def sha256_of(path: Path) -> str:
    """What the receipt records for each annotation file."""
    return digest_of(path, "sha256")


class Progress:
    """A download's progress: rich's bar when `stream` is a terminal, else a plain line per 10 %."""

    def __init__(self, name: str, stream=None):
        self.name, self.stream = name, stream or sys.stderr
        self.bar = self.task = None
        self.total, self.done, self.next_line = None, 0, 0.0
        if self.stream.isatty():
            from rich.progress import (BarColumn, DownloadColumn, Progress as Bar, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)
            from rich.console import Console
            self.bar = Bar(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                           TimeRemainingColumn(), console=Console(file=self.stream))

    def start(self, done: int, total: int | None) -> None:
        self.done, self.total = done, total
        if self.bar is not None:
            if self.task is None:
                self.bar.start()
                self.task = self.bar.add_task(self.name, total=total, completed=done)
            else:
                self.bar.update(self.task, total=total, completed=done)
        else:
            resumed = f", resuming at {_mb(done)}" if done else ""
            print(f"{self.name}: downloading {_mb(total) if total else 'unknown size'}{resumed}", file=self.stream,
                  flush=True)
            self.next_line = (done / total if total else 0) + 0.1

    def advance(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)
        elif self.total and self.done / self.total >= self.next_line:
            print(f"{self.name}: {100 * self.done / self.total:.0f}% ({_mb(self.done)} of {_mb(self.total)})",
                  file=self.stream, flush=True)
            self.next_line = self.done / self.total + 0.1

    def close(self) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.stop()


def _mb(n) -> str:
    return f"{n / 1e6:.1f} MB" if n is not None else "?"


def _open(url: str, start: int, timeout: float):
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _total(response, start: int) -> int | None:
    """The whole file's length from a 206's Content-Range or a 200's Content-Length."""
    if response.status == 206:
        match = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != start:
            raise DownloadError(f"the server answered the range bytes={start}- with "
                                f"{response.headers.get('Content-Range')!r}")
        return int(match.group(3)) if match.group(3) != "*" else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def fetch(url: str, dest: Path, size: int | None = None, retries: int = 5, timeout: float = 60.0,
          progress: Progress | None = None, backoff: float = 1.0) -> Path:
    """Download `url` to `dest` through `dest`.part, resuming a part left by an earlier attempt; up to `retries`
    more attempts after a broken connection, each continuing where the last stopped. The file is renamed to `dest`
    when complete (its length is the server's total, and `size` where given). DownloadError otherwise; the part
    is kept for the next run unless the server's answer makes it useless."""
    part = dest.with_name(dest.name + ".part")
    progress = progress or Progress(dest.name)
    failures = 0
    try:
        while True:
            start = part.stat().st_size if part.exists() else 0
            if size is not None and start > size:
                part.unlink()  # longer than the published file: nothing in it can be trusted
                start = 0
            try:
                total = _transfer(url, part, start, timeout, progress)
            except urllib.error.HTTPError as err:
                if err.code == 416 and start and (size is None or start == size):
                    total = start  # the part already holds the whole file
                else:
                    raise DownloadError(f"{dest.name}: {url} answered HTTP {err.code} {err.reason}") from None
            except (OSError, http.client.HTTPException) as err:  # reset, timeout, short read, refused
                failures += 1
                if failures > retries:
                    kept = part.stat().st_size if part.exists() else 0
                    tail = (f"the {kept} bytes received are kept in {part} and the next run continues from there"
                            if kept else "nothing was received, nothing is kept")
                    raise DownloadError(f"{dest.name}: {url}: {err!r} after {retries} retries; {tail}") from None
                time.sleep(backoff * failures)
                continue
            got = part.stat().st_size
            if total is not None and got < total:
                failures += 1  # the server closed the connection early without an error
                if failures > retries:
                    raise DownloadError(f"{dest.name}: {url} keeps ending early ({got} of {total} bytes)")
                continue
            if size is not None and got != size:
                part.unlink()
                raise DownloadError(f"{dest.name}: {url} sent {got} bytes, the published file has {size}; "
                                    "the download was removed")
            os.replace(part, dest)
            return dest
    finally:
        progress.close()


def _transfer(url: str, part: Path, start: int, timeout: float, progress: Progress) -> int | None:
    """One request: append what the server sends to `part` (or rewrite it from 0 where it ignores the range).
    Returns the whole file's length where the server said it."""
    with _open(url, start, timeout) as response:
        if start and response.status != 206:
            start = 0  # the server sends the whole file: start over
        total = _total(response, start)
        progress.start(start, total)
        with open(part, "ab" if start else "wb") as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                progress.advance(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        return total
