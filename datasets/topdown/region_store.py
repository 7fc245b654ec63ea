"""A one-time person-region store: every training image's reachable region (the image_cache RegionPlan: the union of
the regions any augmented crop of its persons can sample), decoded once and stored as raw uint8 BGR on disk, read by
data-loader workers through memory maps, so a training sample costs an affine warp of mapped pixels instead of a
JPEG decode. For datasets far larger than the in-memory region cache (COCO: 57k images), where almost every sample
would otherwise decode. Measurements and COCO's disk cost: BENCHMARKS.md "Data pipeline without a warm cache".

Layout of a store directory:
  manifest.json           format version, the plan settings (input size, padding, scale range, rotation reach,
                          half-body, max reduction), the records' fingerprint, the image root, the files in entry
                          order and the shard size. Written first; a build resumes only against the same manifest.
  shard-NNNNN.bin         the regions of entries [N * shard_size, (N + 1) * shard_size), back to back, 64-byte aligned
  shard-NNNNN.json        per entry: offset, nbytes, h, w, x0, y0, reduction, image_hw (the image decoded at
                          1/reduction), full_wh (the annotation's size), crc32 of the bytes, fault (why the image could
                          not be stored; "" when stored). Written after the .bin, both atomically (rename), so a shard
                          is complete exactly when its .json exists and the .bin has the size it names.

Pixels are exact: an entry is the region the region cache would decode (same reduction, same origin), so a crop
warped from it equals, value for value, the crop the dataset computes without a store (tests/datasets/
test_region_store.py). A crop the entry does not cover, a reduction the crop does not allow, an image the build
could not store, or an entry found corrupt is decoded from the original file instead (counted: `fallbacks`,
`corrupt`), so a store never changes a sample, only its cost. Raw storage trades disk for CPU: see BENCHMARKS.md.

Build, resume and verify (region_store_build.py):
    python -m datasets.topdown.region_store build --dataset coco --ann A.json --images DIR --out STORE
    python -m datasets.topdown.region_store verify STORE
Train from it: the trial config's `data.region_store=STORE` (TopDownDataset(region_store=STORE)).
"""
from __future__ import annotations

import json
import logging
import mmap
import os
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np

from datasets.topdown.image_cache import (CachedRegion, _covers, _needed_rect, _reduced_matrix, _reduction, _shifted,
                                          _warp_rgba)

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
_FIELDS = ("offset", "nbytes", "h", "w", "x0", "y0", "reduction", "image_h", "image_w", "full_w", "full_h", "crc")


class StoreError(Exception):
    """A store directory that cannot be used (missing or unreadable manifest, another format); str() says why."""


def shard_name(shard: int, suffix: str) -> str:
    return f"shard-{shard:05d}.{suffix}"


def read_manifest(directory) -> dict:
    """The store's manifest; StoreError naming the file when it is missing or not a store manifest."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{path}: no such file (not a region store; build one with "
                         f"`python -m datasets.topdown.region_store build`)") from None
    except (OSError, ValueError) as err:
        raise StoreError(f"{path}: unreadable manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StoreError(f"{path}: not a format-{FORMAT} region store manifest")
    return manifest


class RegionStore:
    """Read side of a store directory: `lookup(path)` -> entry number (-1 absent), `read(...)` -> a crop or None.

    `check` is what a read verifies: "size" (default: the entry lies inside its shard file, whose size the index
    names; the build checksummed every entry) or "crc" (also the entry's crc32 the first time this process reads it:
    about 0.6 ms per 600 kB region, once per entry and process). Counters per process: `hits` (crops served),
    `fallbacks` (crops the caller decodes instead), `corrupt` (entries that failed a check; never read again).
    Pickles as its directory (a spawned worker or Ray task reopens it); shards are mapped lazily, read-only."""

    def __init__(self, directory, check: str = "size"):
        if check not in ("size", "crc"):
            raise ValueError(f"RegionStore check must be 'size' or 'crc', got {check!r}")
        self.directory, self.check = Path(directory), check
        self.manifest = read_manifest(self.directory)
        self.settings = self.manifest["settings"]
        files = self.manifest["files"]
        size = int(self.manifest["shard_size"])
        columns = {name: np.zeros(len(files), np.int64) for name in _FIELDS}
        self.stored = np.zeros(len(files), bool)
        self.unreadable: set[int] = set()  # shards whose index is torn or foreign: their entries count as corrupt
        for shard in range((len(files) + size - 1) // size):
            index = self.directory / shard_name(shard, "json")
            if not index.is_file():
                continue  # an unfinished build: these entries fall back to decoding
            try:
                entries = json.loads(index.read_text())["entries"]
                entries = [entry if entry["fault"] else {"fault": "", **{name: int(entry[name]) for name in _FIELDS}}
                           for entry in entries[:min(size, len(files) - shard * size)]]
            except (OSError, ValueError, KeyError, TypeError) as err:
                log.warning("region store %s: shard index %s is unreadable (%s); its entries decode the original "
                            "images (rebuild it: verify --repair)", self.directory, index, err)
                self.unreadable.add(shard)
                continue
            start = shard * size
            for k, entry in enumerate(entries):
                if not entry["fault"]:
                    self.stored[start + k] = True
                    for name in _FIELDS:
                        columns[name][start + k] = entry[name]
        self.columns = columns
        self.shard_size = size
        root = self.manifest["image_root"]
        self._by_path = {os.path.normpath(os.path.join(root, f)): i for i, f in enumerate(files)}
        self._maps: dict[int, mmap.mmap] = {}
        self._verified = np.zeros(len(files), bool)
        self._bad = np.zeros(len(files), bool)
        self._lock = threading.Lock()
        self.hits = self.fallbacks = self.corrupt = 0

    def __reduce__(self):
        return RegionStore, (str(self.directory), self.check)

    def __len__(self) -> int:
        return len(self.stored)

    def lookup(self, path: str) -> int:
        """The entry of image `path` (as the records name it, relative to the working directory or absolute), -1
        when the store lacks it. Only the same file matches: a basename alone could name another image."""
        return self._by_path.get(os.path.normpath(os.path.abspath(path)), -1)

    def entries_for(self, paths) -> np.ndarray:
        """(F,) int64 entry of each path (-1 where absent): a dataset's file index -> entry, computed once."""
        return np.array([self.lookup(p) for p in paths], np.int64).reshape(-1)

    def region(self, entry: int) -> CachedRegion | None:
        """The entry's pixels as a CachedRegion over the mapped shard (BGR, read-only), or None when the entry is
        absent, faulty or fails the store's check (then counted in `corrupt`)."""
        if entry < 0 or not self.stored[entry] or self._bad[entry]:
            return None
        c = self.columns
        shard, offset, nbytes = entry // self.shard_size, int(c["offset"][entry]), int(c["nbytes"][entry])
        mapped = self._map(shard)
        h, w = int(c["h"][entry]), int(c["w"][entry])
        if mapped is None or offset + nbytes > len(mapped) or nbytes != h * w * 3:
            return self._fail(entry, "its bytes lie outside the shard file")
        buffer = memoryview(mapped)[offset:offset + nbytes]
        if self.check == "crc" and not self._verified[entry]:
            if zlib.crc32(buffer) != int(c["crc"][entry]):
                return self._fail(entry, "crc32 mismatch")
            self._verified[entry] = True
        pixels = np.frombuffer(buffer, np.uint8).reshape(h, w, 3)
        return CachedRegion(pixels, int(c["x0"][entry]), int(c["y0"][entry]), int(c["reduction"][entry]),
                            (int(c["image_h"][entry]), int(c["image_w"][entry])))

    def read(self, entry: int, crop_size, matrix: np.ndarray, output_hw: tuple[int, int], max_reduction: int,
             image_wh=None) -> np.ndarray | None:
        """The (H, W, 3) RGB crop `matrix` (2x3, full-image pixels -> crop) draws from the entry, `crop_size` (w, h)
        source pixels, as image_cache.read_crop would compute it without a cache; None when the entry cannot serve
        it (absent, faulty, corrupt, another annotated size than `image_wh`, a reduction the crop does not allow,
        a crop outside the region): the caller decodes the original then."""
        region = self.region(entry)
        if region is None or (image_wh and self.columns["full_w"][entry] and
                              tuple(image_wh) != (self.columns["full_w"][entry], self.columns["full_h"][entry])):
            self.fallbacks += 1
            return None
        # Only a JPEG is stored reduced (the build checked its content), so its reduction bounds the crop's.
        if region.reduction > 1 and region.reduction > _reduction(crop_size, output_hw, max_reduction):
            self.fallbacks += 1
            return None
        m = _reduced_matrix(matrix, region.reduction)
        if not _covers(region, _needed_rect(m, output_hw)):
            self.fallbacks += 1
            return None
        self.hits += 1
        # OpenCV's 4-channel bilinear warp is twice as fast as its 3-channel one, with the same values; converting
        # the whole region (same origin, so the same source coordinates) costs a fifth of what that saves.
        rgba = cv2.cvtColor(region.pixels, cv2.COLOR_BGR2RGBA)
        return _warp_rgba(rgba, _shifted(m, region.x0, region.y0), output_hw)

    def verify(self) -> dict:
        """Checksum every stored entry: {"entries", "stored", "faulty", "missing", "corrupt": [entry, ...]}."""
        corrupt = []
        for entry in np.flatnonzero(self.stored):
            shard = int(entry) // self.shard_size
            mapped = self._map(shard)
            offset, nbytes = int(self.columns["offset"][entry]), int(self.columns["nbytes"][entry])
            if mapped is None or offset + nbytes > len(mapped) or \
                    zlib.crc32(memoryview(mapped)[offset:offset + nbytes]) != int(self.columns["crc"][entry]):
                corrupt.append(int(entry))
        size = self.shard_size
        complete = {s for s in range((len(self) + size - 1) // size)
                    if (self.directory / shard_name(s, "json")).is_file()}
        missing = sum(1 for e in range(len(self)) if e // size not in complete)
        torn = [e for e in range(len(self)) if e // size in self.unreadable]
        return {"entries": len(self), "stored": int(self.stored.sum()), "missing": missing,
                "faulty": len(self) - int(self.stored.sum()) - missing - len(torn), "corrupt": sorted(corrupt + torn)}

    def _map(self, shard: int) -> mmap.mmap | None:
        mapped = self._maps.get(shard)
        if mapped is None:
            with self._lock:
                mapped = self._maps.get(shard)
                if mapped is None:
                    try:
                        with open(self.directory / shard_name(shard, "bin"), "rb") as f:
                            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(
                                f.fileno()).st_size else b""
                    except OSError:
                        return None
                    self._maps[shard] = mapped
        return mapped

    def _fail(self, entry: int, why: str) -> None:
        self._bad[entry] = True
        self.corrupt += 1
        log.warning("region store %s: entry %d (%s) is corrupt (%s); decoding the original image instead",
                    self.directory, entry, self.manifest["files"][entry], why)
        return None


def open_store(store) -> RegionStore | None:
    """`store` as a RegionStore: None/"" -> None, a RegionStore as is, a directory opened (StoreError if it is
    not a store)."""
    if store is None or store == "":
        return None
    return store if isinstance(store, RegionStore) else RegionStore(store)


def store_settings(dataset) -> dict:
    """What decides a dataset's region plans, as the manifest records it (and the dataset compares on attach)."""
    a = dataset.augment
    return {"input_hw": list(dataset.codec.input_hw), "padding": dataset.padding, "scale_factor": a.scale_factor,
            "rotation": a.rotation, "rotation_p": a.rotation_p, "half_body_p": a.half_body_p,
            "half_body_min_joints": a.half_body_min_joints, "max_reduction": dataset.max_reduction}


def attach(store, dataset) -> tuple[RegionStore | None, np.ndarray | None]:
    """(the store, its entry for each of `dataset`'s files (-1 where absent)) for a TopDownDataset; (None, None)
    without a store. Warns when the store was planned for other settings than the dataset's: its entries still
    serve every crop they cover (the others decode), but pixels then match the storeless path only up to the
    fast path's one grey level (another region origin), not exactly."""
    store = open_store(store)
    if store is None:
        return None, None
    mine = store_settings(dataset)
    if {k: v for k, v in store.settings.items() if k in mine} != mine:
        log.warning("region store %s was built for %s, this dataset trains with %s: crops outside its regions "
                    "are decoded from the images", store.directory, store.settings, mine)
    records = dataset.records
    entries = store.entries_for(records.path(f) for f in range(records.num_files))
    if records.num_files and not (entries >= 0).any():
        log.warning("region store %s holds none of this dataset's %d images (its image root: %s); every crop is "
                    "decoded", store.directory, records.num_files, store.manifest["image_root"])
    return store, entries


def main(argv=None) -> int:
    from datasets.topdown.region_store_build import main as build_main

    return build_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
