"""Archives into the dataset's layout, all or nothing: each archive is first tested whole (every zip member's CRC-32;
every tar member read through, so gzip checks its CRC), then unpacked into a temporary folder inside the dataset's
own directory (the same file system), and only then are its members renamed into place — a rename is atomic, so a
reader sees a member absent or whole. A failure removes the temporary folder: nothing half-extracted is left.

Members whose names would leave the folder (absolute paths, `..`, links) are refused (CVE-2007-4559's tar path
traversal; zip slip).

The receipt `<dataset>/.download-receipt.json` records each archive unpacked (URL, size, MD5) and the SHA-256 of
every annotation file it gave; a re-run skips an archive its receipt lists whose members are all in place, and
`--verify` re-computes the recorded checksums.
"""
from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from datasets.atomic import write_json
from datasets.download.fetch import DownloadError, sha256_of
from datasets.download.manifest import Archive

RECEIPT = ".download-receipt.json"
CHECKSUMMED = (".json", ".mat")  # annotation files: their checksums are recorded and verified


def read_receipt(dataset_dir: Path) -> dict:
    try:
        return json.loads((dataset_dir / RECEIPT).read_text())
    except (OSError, ValueError):
        return {"archives": {}, "files": {}}


def is_done(dataset_dir: Path, archive: Archive) -> bool:
    """Whether the receipt lists `archive` (by name, and by its published MD5 where there is one) and all its
    members are in place."""
    entry = read_receipt(dataset_dir)["archives"].get(archive.name)
    return bool(entry) and (archive.md5 is None or entry.get("md5") == archive.md5) \
        and all((dataset_dir / dest).exists() for dest in archive.members.values())


def _safe_name(name: str, archive: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise DownloadError(f"{archive}: member {name!r} would be written outside the dataset's folder; refused")
    return path


def test_archive(path: Path, archive: Archive) -> list[str]:
    """The member names of a whole archive; DownloadError naming the archive (and the member) if it is damaged."""
    try:
        if archive.kind == "zip":
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
                if bad is not None:
                    raise DownloadError(f"{archive.name}: member {bad} fails its CRC check: the archive is damaged")
                return [str(_safe_name(n, archive.name)) for n in z.namelist()]
        if archive.kind == "tar":
            names = []
            with _decompressed(path) as stream:
                with tarfile.open(fileobj=stream, mode="r|") as t:
                    for member in t:
                        _safe_name(member.name, archive.name)
                        if member.issym() or member.islnk() or member.isdev():
                            raise DownloadError(f"{archive.name}: member {member.name!r} is a link or a device; "
                                                "refused")
                        if member.isfile():
                            f = t.extractfile(member)
                            while f.read(1 << 20):
                                pass
                        names.append(member.name)
                # tarfile stops at the end-of-archive blocks; the compressor's trailer (gzip's CRC-32 and length,
                # bzip2's and xz's checks) lies after them and is checked only when the stream is read to its end
                while stream.read(1 << 20):
                    pass
            return names
        json.loads(path.read_bytes())  # kind "file": the json files this tool fetches must at least parse
        return [archive.name]
    except DownloadError:
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError, zlib.error, lzma.LZMAError) as err:
        raise DownloadError(f"{archive.name}: the archive is damaged ({err})") from None


def _decompressed(path: Path):
    """The tar stream inside `path`: gzip, bzip2 or xz by their magic numbers, else the file itself."""
    with open(path, "rb") as f:
        magic = f.read(6)
    for prefix, opener in ((b"\x1f\x8b", gzip.open), (b"BZh", bz2.open), (b"\xfd7zXZ", lzma.open)):
        if magic.startswith(prefix):
            return opener(path, "rb")
    return open(path, "rb")


def _find(root: Path, names: list[str], key: str) -> Path | None:
    """Where `key` (a member path from the manifest; a folder if it ends in "/") lies in the unpacked archive: at
    the top, or below one top-level folder."""
    want = key.rstrip("/")
    for name in sorted({n.rstrip("/") for n in names}, key=len):
        if name == want or name.endswith("/" + want):
            if len(PurePosixPath(name).parts) - len(PurePosixPath(want).parts) <= 1:
                return root / name
    # a folder the archive lists only through its files
    for name in names:
        parts = PurePosixPath(name).parts
        for depth in (0, 1):
            if tuple(parts[depth:depth + len(PurePosixPath(want).parts)]) == PurePosixPath(want).parts:
                return root.joinpath(*parts[:depth], want)
    return None


def unpack(path: Path, archive: Archive, dataset_dir: Path, log=print) -> dict[str, str]:
    """Test, unpack and move `archive`'s members into `dataset_dir`; returns {relative path: sha256} of the
    annotation files it placed. Nothing is left in `dataset_dir` but whole members on any failure."""
    names = test_archive(path, archive)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".extract-{archive.name}-", dir=dataset_dir))
    try:
        if archive.kind == "zip":
            with zipfile.ZipFile(path) as z:
                z.extractall(tmp)
        elif archive.kind == "tar":
            with tarfile.open(path) as t:
                t.extractall(tmp, filter="data")
        else:
            shutil.copyfile(path, tmp / archive.name)
        sources = {}
        for key, dest in archive.members.items():
            found = _find(tmp, names, key)
            if found is None or not found.exists():
                raise DownloadError(f"{archive.name}: holds no {key!r} (its top-level entries: "
                                    f"{sorted({PurePosixPath(n).parts[0] for n in names})[:10]})")
            sources[dest] = found
        checksums = {}
        for dest, found in sources.items():
            target = dataset_dir / dest.rstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if found.is_file() and found.suffix in CHECKSUMMED:
                checksums[dest] = sha256_of(found)
            _replace(found, target)
            log(f"{archive.name}: {dest}")
        return checksums
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace(source: Path, target: Path) -> None:
    """Rename `source` over `target`; an existing folder is moved aside first and removed after the rename."""
    if target.is_dir() and not target.is_symlink():
        old = target.with_name(f".old-{target.name}-{os.getpid()}")
        os.replace(target, old)
        os.replace(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(source, target)


def record(dataset_dir: Path, archive: Archive, md5: str, size: int, checksums: dict[str, str]) -> None:
    """Add `archive` and its files' checksums to the receipt (written atomically)."""
    receipt = read_receipt(dataset_dir)
    receipt["archives"][archive.name] = {"url": archive.url, "md5": md5, "size": size,
                                         "published_md5": archive.md5 is not None}
    receipt["files"].update(checksums)
    write_json(dataset_dir / RECEIPT, receipt, indent=1, sort_keys=True)

