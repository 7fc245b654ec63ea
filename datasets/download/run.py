"""`python -m datasets.download {coco,crowdpose,ochuman,mpii} --root DIR` and `--verify DIR`.

`--root DIR` puts the dataset in DIR/<name>/ in the layout of `datasets/layouts.py` (give the search
`--data-root DIR/<name>`); the archives are fetched into DIR/.downloads/ (resumable), checked (size, published MD5
or, where none is published, the archive's own CRCs), unpacked atomically and removed (`--keep-archives` keeps
them). A re-run skips what the receipt lists as done. CrowdPose and OCHuman are behind drive links: the command
prints the steps to follow, then verifies what is there. Exit 0: done and verified; 1: a download, a check or the
verification failed (each message names the file); 2: a bad flag, before anything is fetched or written.
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import sys
from pathlib import Path

from datasets.cli import input_file_problem, non_negative_int, output_dir_problem
from datasets.download import manifest as manifests
from datasets.download.extract import is_done, record, unpack
from datasets.download.fetch import DownloadError, Progress, fetch, md5_of
from datasets.download.manifest import DatasetSource
from datasets.download.verify import verify

BASE_URL_ENV = "OCCPOSE_DOWNLOAD_BASE_URL"
LOCK = ".download.lock"


def download(source: DatasetSource, root: Path, keep_archives: bool = False, retries: int = 5,
             log=print) -> None:
    """Fetch, check and unpack every archive of `source` not yet in root/<name>; DownloadError on the first that
    fails (a damaged download is removed, so the next run fetches it again)."""
    dataset_dir, downloads = root / source.name, root / ".downloads"
    try:
        with _exclusive(root):
            _download(source, dataset_dir, downloads, keep_archives, retries, log)
    finally:  # a download that ends (or fails) before any byte arrived leaves no empty folder behind
        if downloads.is_dir() and not any(downloads.iterdir()):
            downloads.rmdir()


@contextlib.contextmanager
def _exclusive(root: Path):
    """Hold ROOT/.download.lock: two downloads into one root would write the same partial files."""
    with open(root / LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DownloadError(f"another download into {root} is running (it holds {root / LOCK}); "
                                "wait for it to end") from None
        try:
            yield
        finally:  # removed while still held: a download waiting on it fails its own flock and says so
            (root / LOCK).unlink(missing_ok=True)


def _download(source: DatasetSource, dataset_dir: Path, downloads: Path, keep_archives: bool, retries: int,
              log) -> None:
    for archive in source.archives:
        if is_done(dataset_dir, archive):
            log(f"{archive.name}: already in place (recorded in the receipt)")
            continue
        downloads.mkdir(parents=True, exist_ok=True)
        path = downloads / archive.name
        if path.is_file():
            log(f"{archive.name}: already downloaded, checking it")
        else:
            fetch(archive.url, path, archive.size, retries=retries, progress=Progress(archive.name))
        size = path.stat().st_size
        if archive.size is not None and size != archive.size:
            path.unlink()
            raise DownloadError(f"{archive.name}: {size} bytes, the published file has {archive.size}; removed")
        md5 = md5_of(path)
        if archive.md5 is not None and md5 != archive.md5:
            path.unlink()
            raise DownloadError(f"{archive.name}: MD5 {md5} is not the published {archive.md5} ({archive.url}); "
                                "the download was removed and nothing was extracted")
        log(f"{archive.name}: " + (f"MD5 {md5} as published" if archive.md5 else
                                   f"{archive.checksum_note or manifests.NO_CHECKSUM} (MD5 {md5})"))
        try:
            checksums = unpack(path, archive, dataset_dir, log=log)
        except DownloadError:
            path.unlink(missing_ok=True)
            raise
        record(dataset_dir, archive, md5, size, checksums)
        if not keep_archives:
            path.unlink()
    if downloads.is_dir() and not any(downloads.iterdir()):
        downloads.rmdir()


def dataset_dir_of(name: str, given: Path) -> Path:
    """`--verify DIR`: DIR/<name>, or DIR itself when it is the dataset's folder (named after it)."""
    return given if not (given / name).is_dir() and given.name == name else given / name


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m datasets.download", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", choices=manifests.DATASETS)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--root", type=_path, help="download into ROOT/<dataset>/ (created if needed)")
    where.add_argument("--verify", type=_path, metavar="DIR", help="check an existing DIR/<dataset>/ (or DIR itself)")
    p.add_argument("--manifest", type=Path, help="a JSON manifest replacing the built-in entries it names")
    p.add_argument("--base-url", default=os.environ.get(BASE_URL_ENV),
                   help=f"fetch every file from BASE_URL/<file name> (a mirror; env {BASE_URL_ENV})")
    p.add_argument("--sample", type=non_negative_int, default=100,
                   help="images decoded per annotation file by the verification (0: all; default 100)")
    p.add_argument("--retries", type=non_negative_int, default=5, help="retries after a broken connection")
    p.add_argument("--keep-archives", action="store_true", help="keep the downloaded archives in ROOT/.downloads/")
    return p


def _path(text: str) -> Path:
    """An argparse type: a non-empty path (Path("") would be the current directory)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; give a directory")
    return Path(text)


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.base_url and not args.base_url.startswith(("http://", "https://")):
        p.error(f"--base-url {args.base_url!r}: expected an http:// or https:// URL")
    if args.manifest is not None and (problem := input_file_problem(args.manifest)):
        p.error(f"--manifest {problem}")
    try:
        source = manifests.with_base_url(manifests.load(args.manifest)[args.dataset], args.base_url)
    except manifests.ManifestError as err:
        p.error(str(err))
    if args.root is not None:
        problem = output_dir_problem(args.root)
        if problem:
            p.error(f"--root {args.root}: {problem}")
        root = args.root.expanduser().resolve()
        dataset_dir = root / args.dataset
    else:
        if not args.verify.is_dir():
            p.error(f"--verify {args.verify}: no such directory")
        root, dataset_dir = None, dataset_dir_of(args.dataset, args.verify.expanduser().resolve())
    if root is not None:
        if not source.archives:
            print(source.manual.format(root=root))
            if not dataset_dir.is_dir():
                print(f"\n{args.dataset}: nothing at {dataset_dir} yet; follow the steps above", file=sys.stderr)
                return 1
            print(f"\n{dataset_dir} exists: verifying it")
        else:
            root.mkdir(parents=True, exist_ok=True)
            try:
                download(source, root, args.keep_archives, args.retries)
            except DownloadError as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
    problems = verify(source, dataset_dir, args.sample)
    if problems:
        print(f"{args.dataset}: {dataset_dir} does not verify:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{args.dataset}: {dataset_dir} verifies. Search it with: "
          f"python search/run.py --dataset {args.dataset} --data-root {dataset_dir}")
    return 0
