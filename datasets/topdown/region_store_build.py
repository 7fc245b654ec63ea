"""Building a region store (region_store.py): in parallel (a process pool over shards), resumable (a shard is
written to a temporary file and renamed, its index last, so an interrupted build keeps every finished shard and
redoes only the rest), verified (each entry's crc32 in its shard index; a re-run checksums the finished shards and
rebuilds any with a corrupt entry; `verify --repair` does the same from the manifest alone).

    python -m datasets.topdown.region_store build --dataset coco --ann person_keypoints_train2017.json \\
        --images train2017 --out /data/coco-regions-256x192 --workers 16
    python -m datasets.topdown.region_store verify /data/coco-regions-256x192 [--repair]

The augmentation flags set the region each image keeps (the reach of every crop the trainer can draw); they default
to HRNet's COCO recipe (scale 0.35, rotation 45 degrees with p 0.6, half-body 0.3) at 256x192. A store built for a
wider reach serves a narrower one (its crops fall inside); a crop outside an entry is decoded from the original.
Exit status: 0 done, 1 corrupt entries found by `verify`, 2 bad input (named) before anything is written.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from datasets import meta
from datasets.atomic import write_bytes
from datasets.annotations import load_records
from datasets.validation.base import AnnotationError
from datasets.cli import existing_dir, non_negative_float, output_dir, positive_int
from datasets.topdown.augment import Augment
from datasets.topdown.codec import HeatmapCodec
from datasets.topdown.dataset import TopDownDataset
from datasets.topdown.image_check import ImageFault, decode_bgr
from datasets.topdown.region_store import (FORMAT, MANIFEST, RegionStore, StoreError, read_manifest, shard_name,
                                           store_settings)

HRNET = {"scale_factor": 0.35, "rotation": 45.0, "rotation_p": 0.6, "half_body_p": 0.3}
_ALIGN = 64
_STATE: dict = {}  # the dataset and paths of the build in progress, inherited by the forked pool's processes


def plan_dataset(records, dataset: str, settings: dict) -> TopDownDataset:  # settings: store_settings' keys
    """The training dataset whose region plans the store holds (no cache: the build decodes each image once)."""
    augment = Augment(settings["scale_factor"], settings["rotation"], settings["rotation_p"],
                      half_body_p=settings["half_body_p"], half_body_min_joints=settings["half_body_min_joints"])
    return TopDownDataset(records, meta.get(dataset).skeleton, HeatmapCodec(tuple(settings["input_hw"])), train=True,
                          augment=augment, padding=settings["padding"], cache_mb=0,
                          max_reduction=settings["max_reduction"])


def fingerprint(records) -> str:
    """sha256 of the annotations a plan depends on (paths, boxes, keypoints): a resumed build must see the same."""
    digest = hashlib.sha256()
    for array in (records.path_blob, records.path_offsets, records.file_index, records.bbox, records.keypoints):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def build_store(dataset: str, ann, images, out, settings: dict | None = None, workers: int = 0,
                shard_size: int = 256, verify: bool = True, stop_after: int | None = None, progress=None) -> dict:
    """Build (or finish, or repair) the store at `out` for the training records of `ann` over `images`.

    `settings`: store_settings' keys (input_hw, padding, the augmentation reach, max_reduction), HRNet's COCO
    recipe at 256x192 by default. `workers` processes (0 = all CPUs). `verify`: checksum the shards an earlier run
    finished and rebuild those with a corrupt entry. `stop_after`: finish at most that many shards, then return
    (an interrupted build, for tests). StoreError when `out` holds a store of other records or settings.
    Returns {"entries", "shards", "built", "kept", "rebuilt", "faulty", "bytes", "seconds"}."""
    started = time.perf_counter()
    settings = {"input_hw": [256, 192], "padding": 1.25, **HRNET, "half_body_min_joints": 8, "max_reduction": 8,
                **(settings or {})}
    records = load_records(ann, images, meta.get(dataset).skeleton)
    plans = plan_dataset(records, dataset, settings)
    settings = store_settings(plans)
    table, root = plans.records, os.path.abspath(images)
    files = [os.path.relpath(os.path.abspath(table.path(f)), root) for f in range(table.num_files)]
    manifest = {"format": FORMAT, "settings": settings, "fingerprint": fingerprint(table), "image_root": root,
                "files": files, "shard_size": int(shard_size),
                "source": {"dataset": dataset, "ann": os.path.abspath(ann), "images": root}}
    out = Path(out)
    if (out / MANIFEST).exists():
        existing = read_manifest(out)
        for key in ("settings", "fingerprint", "files", "shard_size"):
            if existing.get(key) != manifest[key]:
                raise StoreError(f"{out} holds a region store of other {key} than this build's; build into a new "
                                 f"--out (or delete {out})")
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_bytes(out / MANIFEST, json.dumps(manifest).encode())
    for stale in out.glob(".shard-*.tmp"):  # what a killed build was writing (datasets/atomic.py's temporary names)
        stale.unlink(missing_ok=True)
    shards = (len(files) + shard_size - 1) // shard_size
    kept, rebuilt = [], 0
    corrupt = set()
    if verify and any((out / shard_name(s, "json")).exists() for s in range(shards)):
        corrupt = {e // shard_size for e in RegionStore(out).verify()["corrupt"]}
    for s in range(shards):
        if s not in corrupt and _complete(out, s):
            kept.append(s)
        elif s in corrupt:
            rebuilt += 1
    todo = [s for s in range(shards) if s not in kept][:stop_after]
    _STATE.update(dataset=plans, out=out, shard_size=shard_size, files=len(files))
    faulty = nbytes = 0
    context = multiprocessing.get_context("fork")
    workers = min(workers or os.cpu_count() or 1, max(1, len(todo)))
    with context.Pool(workers) if workers > 1 else _Serial() as pool:
        for done, (shard_faults, shard_bytes) in enumerate(pool.imap_unordered(_build_shard, todo), 1):
            faulty, nbytes = faulty + shard_faults, nbytes + shard_bytes
            if progress:
                progress(f"region store {out}: {done}/{len(todo)} shards built ({len(kept)} kept), "
                         f"{nbytes / 2**20:.0f} MiB, {time.perf_counter() - started:.0f} s")
    _STATE.clear()
    return {"entries": len(files), "shards": shards, "built": len(todo), "kept": len(kept), "rebuilt": rebuilt,
            "faulty": faulty, "bytes": nbytes, "seconds": round(time.perf_counter() - started, 2)}


def repair(out, workers: int = 0, progress=None) -> dict:
    """Rebuild the store's missing shards and those with a corrupt entry, from the manifest's source and settings."""
    manifest = read_manifest(out)
    source = manifest["source"]
    return build_store(source["dataset"], source["ann"], source["images"], out, manifest["settings"], workers,
                       manifest["shard_size"], verify=True, progress=progress)


def _build_shard(shard: int) -> tuple[int, int]:
    """Decode the shard's images at their plans' reduction, keep the planned regions; (faulty entries, bytes)."""
    dataset, out, size = _STATE["dataset"], _STATE["out"], _STATE["shard_size"]
    table = dataset.records
    entries, chunks, offset, faults = [], [], 0, 0
    for f in range(shard * size, min((shard + 1) * size, _STATE["files"])):
        path = table.path(f)
        first = int(dataset._by_image[dataset._image_starts[f]])
        image_wh = table.size_of(first)
        entry = {"fault": ""}
        try:
            plan = dataset._image_plan(f, path)
            image = decode_bgr(path, image_wh, plan.reduction)
            h, w = image.shape[:2]
            x0, y0, x1, y1 = plan.rect(plan.reduction)
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            if x1 <= x0 or y1 <= y0:
                raise ImageFault("the planned region is empty")
            region = np.ascontiguousarray(image[y0:y1, x0:x1]).tobytes()
        except ImageFault as fault:
            faults += 1
            entry["fault"] = str(fault) or "unreadable"
        else:
            entry |= {"offset": offset, "nbytes": len(region), "h": y1 - y0, "w": x1 - x0, "x0": x0, "y0": y0,
                      "reduction": plan.reduction, "image_h": h, "image_w": w,
                      "full_w": image_wh[0] if image_wh else 0, "full_h": image_wh[1] if image_wh else 0,
                      "crc": zlib.crc32(region)}
            pad = -len(region) % _ALIGN
            chunks += [region, b"\0" * pad]
            offset += len(region) + pad
        entries.append(entry)
    data = b"".join(chunks)
    write_bytes(out / shard_name(shard, "bin"), data)
    write_bytes(out / shard_name(shard, "json"), json.dumps({"size": len(data), "entries": entries}).encode())
    return faults, len(data)


def _complete(out: Path, shard: int) -> bool:
    """A shard an earlier run finished: its index exists and its data file has the size the index names."""
    try:
        size = json.loads((out / shard_name(shard, "json")).read_text())["size"]
        return (out / shard_name(shard, "bin")).stat().st_size == size
    except (OSError, ValueError, KeyError, TypeError):
        return False


class _Serial:
    """A pool of one: the shards built in this process (no fork for a single worker)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap_unordered(fn, items):
        return map(fn, items)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m datasets.topdown.region_store",
                                description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build or finish a store (resumes an interrupted build)")
    b.add_argument("--dataset", required=True, choices=sorted(meta.DATASETS))
    b.add_argument("--ann", required=True, type=Path, help="training annotation file (COCO json or MPII json)")
    b.add_argument("--images", required=True, type=existing_dir, help="directory the annotation's file names are in")
    b.add_argument("--out", required=True, type=output_dir, help="store directory (created; resumed if it exists)")
    b.add_argument("--input-h", type=positive_int, default=256, help="crop height in pixels (data.input_h)")
    b.add_argument("--input-w", type=positive_int, default=192, help="crop width in pixels (data.input_w)")
    for name, value in HRNET.items():
        b.add_argument(f"--{name.replace('_', '-')}", type=non_negative_float, default=value,
                       help=f"data.{name} of the training the store serves (default {value}: HRNet's COCO recipe)")
    b.add_argument("--max-reduction", type=int, choices=(1, 2, 4, 8), default=8,
                   help="largest libjpeg DCT reduction an entry may be stored at (1: always full resolution)")
    b.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1, help="build processes")
    b.add_argument("--shard-size", type=positive_int, default=256, help="images per shard file")
    b.add_argument("--no-verify", action="store_true", help="do not checksum the shards an earlier run finished")
    v = sub.add_parser("verify", help="checksum every entry; exit 1 if any is corrupt")
    v.add_argument("store", type=existing_dir)
    v.add_argument("--repair", action="store_true", help="rebuild shards with corrupt entries from the manifest")
    v.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        if args.command == "verify":
            report = RegionStore(args.store).verify()
            if report["corrupt"] and args.repair:
                report["repair"] = repair(args.store, args.workers, progress)
                report["after_repair"] = RegionStore(args.store).verify()
            print(json.dumps({**report, "corrupt": len(report["corrupt"])}, default=str))
            final = report.get("after_repair", report)
            return 1 if final["corrupt"] else 0
        if not args.ann.is_file():
            p.error(f"--ann {args.ann}: no such file")
        for name in ("rotation_p", "half_body_p"):
            if getattr(args, name) > 1:
                p.error(f"--{name.replace('_', '-')} must be a probability in [0, 1], got {getattr(args, name)}")
        if args.scale_factor >= 1:
            p.error(f"--scale-factor must be in [0, 1), got {args.scale_factor}")
        settings = {"input_hw": [args.input_h, args.input_w], "max_reduction": args.max_reduction,
                    **{name: getattr(args, name) for name in HRNET}}
        summary = build_store(args.dataset, args.ann, args.images, args.out, settings, args.workers,
                              args.shard_size, verify=not args.no_verify, progress=progress)
    except (StoreError, AnnotationError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the environment: --out cannot be created or written, a disk that fills
        print(f"error: region store {getattr(args, 'out', None) or args.store}: {err.strerror or err} "
              f"({err.filename or 'writing'})", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0
