#!/usr/bin/env python
"""The training pipeline on a dataset ten times larger than the region cache (issue 17 item 3): CPU seconds per
sample of one process (torch and OpenCV on one thread) for each candidate, and its ratio to the reference
(SimpleBaseline's per-sample decode + warp, tests/benchmarks/pipeline.py) measured in the same run.

    python tests/benchmarks/no_cache.py --json                    # 256x192, the COCO fixture's JPEGs x 25
    python tests/benchmarks/no_cache.py --input-hw 96x64          # the trial config's default crop size

Data: `--copies` copies of each real COCO val2017 fixture JPEG (../shared/data or $OCCPOSE_SHARED_DATA) as distinct
files, with their annotations repeated, so no two images share a cache entry; samples are drawn in a fresh random
order each round (a shuffling loader). The region cache budget is a tenth of what the images' regions take in it.
Variants, timed in interleaved rounds (rotating order; round 0 warms up, fills the caches), medians:
  reference        SimpleBaseline's JointsDataset.__getitem__ + LJA (pipeline.py), every sample decodes
  a_cache          TopDownDataset as it is, cache budget 1/10 of the dataset's regions: mostly misses
  a_no_cache       cache_mb=0: every sample decodes its image's region (reduced where the crop allows)
  c_no_reduce      cache_mb=0, max_reduction=1: no reduced (DCT-scaled) JPEG decoding
  b_store          the region store (datasets/topdown/region_store.py), raw BGR regions memory-mapped, exact
  b_store_crc      the same, each entry crc32-checked on its first read (a fresh store reader per round: the cost
                   a non-persistent worker pays every epoch)
  d_jpeg_store     a lossy store: the same regions re-encoded as quality-95 JPEGs (in memory), decoded per sample
CPU seconds are time.process_time() of this process (user + system, page faults of the mapped store included), so a
machine shared with other work slows every variant alike. The store is read from the OS page cache here.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from pipeline import AUGMENT, LJA_PARAMS, REPO_ROOT, ReferencePipeline, _cpu_name  # noqa: E402

from datasets.annotations import load_records  # noqa: E402
from datasets.occlusion import OcclusionConfig, build_occlusions  # noqa: E402
from datasets.skeletons import COCO17  # noqa: E402
from datasets.topdown.codec import HeatmapCodec  # noqa: E402
from datasets.topdown.dataset import TopDownDataset  # noqa: E402
from datasets.topdown.image_cache import _reduced_matrix, _shifted, _warp_bgr  # noqa: E402
from datasets.topdown.region_store import RegionStore  # noqa: E402
from datasets.topdown.region_store_build import build_store  # noqa: E402

VARIANTS = ("reference", "a_cache", "a_no_cache", "c_no_reduce", "b_store", "b_store_crc", "d_jpeg_store")
COCO_TRAIN = {"persons": 149_813, "images": 56_599}  # person_keypoints_train2017, persons with keypoints


class JpegRegionDataset(TopDownDataset):
    """Candidate (d): each image's stored region re-encoded as a JPEG; a sample decodes it (smaller than the image)
    and warps it. Benchmark only: lossy, so its crops differ from the exact path (`d_jpeg_error` says by how much)."""

    def __init__(self, *args, jpegs: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.jpegs = jpegs

    def _warped(self, index, geom, matrix):
        data, x0, y0, reduction = self.jpegs[int(self.records.file_index[index])]
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
        return _warp_bgr(bgr, _shifted(_reduced_matrix(matrix, reduction), x0, y0), self.codec.input_hw)


def make_dataset(shared: Path, root: Path, copies: int) -> Path:
    """`copies` copies of every fixture JPEG under `root` (distinct files), with the fixture's persons repeated."""
    data = json.loads((shared / "coco/test_coco.json").read_text())
    images, annotations = [], []
    for k in range(copies):
        for image in data["images"]:
            name = f"{k:03d}_{image['file_name']}"
            shutil.copyfile(shared / "coco" / image["file_name"], root / name)
            images.append({**image, "id": k * 10**7 + image["id"], "file_name": name})
        for ann in data["annotations"]:
            annotations.append({**ann, "id": len(annotations) + 1, "image_id": k * 10**7 + ann["image_id"]})
    ann_file = root / "train.json"
    ann_file.write_text(json.dumps({**data, "images": images, "annotations": annotations}))
    return ann_file


def cpu_epoch(pipeline, epoch: int, order: np.ndarray) -> float:
    """CPU seconds per sample of one pass over `order`."""
    pipeline.set_epoch(epoch)
    start = time.process_time()
    for i in order:
        pipeline[int(i)]
    return (time.process_time() - start) / len(order)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--copies", type=int, default=25, help="copies of each fixture image (distinct files)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--input-hw", default="256x192", help="crop HxW (256x192: HRNet's COCO; 96x64: config default)")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    args = p.parse_args(argv)
    hw = tuple(int(v) for v in args.input_hw.lower().split("x"))
    shared = Path(os.environ.get("OCCPOSE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not (shared / "coco/test_coco.json").is_file():
        raise SystemExit(f"needs the COCO fixture under {shared}")
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    codec = HeatmapCodec(hw)
    with tempfile.TemporaryDirectory(prefix="occpose-nocache-") as tmp:
        root = Path(tmp) / "images"
        root.mkdir()
        ann = make_dataset(shared, root, args.copies)
        records = load_records(ann, root, COCO17)
        settings = {"input_hw": list(hw), "scale_factor": AUGMENT.scale_factor, "rotation": AUGMENT.rotation,
                    "rotation_p": AUGMENT.rotation_p, "half_body_p": AUGMENT.half_body_p}
        store_dir = Path(tmp) / "store"
        build = build_store("coco", ann, root, store_dir, settings, workers=min(4, os.cpu_count() or 1),
                            shard_size=16)
        store = RegionStore(store_dir)
        c = store.columns
        region_bytes = int(c["nbytes"][store.stored].sum())
        cache_mb = region_bytes * 4 / 3 / 10 / 2**20  # the cache holds RGBA: a tenth of the regions it would hold

        def ours(**kwargs):
            return TopDownDataset(records, COCO17, codec, train=True, augment=AUGMENT,
                                  occlusions=build_occlusions(LJA_PARAMS, OcclusionConfig(), COCO17), **kwargs)

        fixed = {"reference": ReferencePipeline(records, COCO17, codec), "a_cache": ours(cache_mb=cache_mb),
                 "a_no_cache": ours(cache_mb=0), "c_no_reduce": ours(cache_mb=0, max_reduction=1),
                 "b_store": ours(cache_mb=0, region_store=store)}
        jpegs, jpeg_bytes = {}, 0
        table, entries = fixed["b_store"].records, fixed["b_store"]._store_entry
        for f in range(table.num_files):
            region = store.region(int(entries[f]))
            data = cv2.imencode(".jpg", np.ascontiguousarray(region.pixels), [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
            jpegs[f] = (data, region.x0, region.y0, region.reduction)
            jpeg_bytes += data.nbytes
        jpeg_set = JpegRegionDataset(records, COCO17, codec, train=True, augment=AUGMENT, jpegs=jpegs,
                                     occlusions=build_occlusions(LJA_PARAMS, OcclusionConfig(), COCO17))
        factories = {name: (lambda d=d: d) for name, d in fixed.items()}
        factories["b_store_crc"] = lambda: ours(cache_mb=0, region_store=RegionStore(store_dir, check="crc"))
        factories["d_jpeg_store"] = lambda: jpeg_set
        times = {name: [] for name in VARIANTS}
        rng = np.random.default_rng(0)
        for round_ in range(args.rounds + 1):
            order = rng.permutation(len(records))
            for name in VARIANTS[round_ % len(VARIANTS):] + VARIANTS[:round_ % len(VARIANTS)]:
                seconds = cpu_epoch(factories[name](), round_, order)
                if round_:
                    times[name].append(seconds)
        exact = fixed["b_store"]
        errors = []
        for i in range(0, len(records), 7):
            a, b = exact[i]["image"], jpeg_set[i]["image"]
            errors.append(float((a - b).abs().mean()) * 58.0)  # normalised units back to ~grey levels (std ~58)
        warm = fixed["a_cache"].cache
        hit_rate = warm.hits / max(1, warm.hits + warm.misses)
        store_hits = fixed["b_store"].store.hits, fixed["b_store"].store.fallbacks
    ms = {name: float(np.median(t)) * 1e3 for name, t in times.items()}
    ref = ms["reference"]
    per_image = region_bytes / max(1, int(store.stored.sum()))
    result = {
        "ms_cpu_per_sample": {k: round(v, 3) for k, v in ms.items()},
        "ratio_to_reference": {k: round(ref / v, 2) for k, v in ms.items() if k != "reference"},
        "input_hw": list(hw), "images": len(store), "samples": len(records),
        "cache_mb": round(cache_mb, 2), "cache_hit_rate": round(hit_rate, 3),
        "store": {"bytes": region_bytes, "mib_per_image": round(per_image / 2**20, 3),
                  "mib_per_person": round(region_bytes / len(records) / 2**20, 3),
                  "hits": store_hits[0], "fallbacks": store_hits[1],
                  "build_s": build["seconds"], "build_workers": min(4, os.cpu_count() or 1),
                  "jpeg95_bytes": jpeg_bytes, "d_jpeg_error_grey_levels_mean": round(float(np.mean(errors)), 2)},
        "coco_train_disk_gib_estimate": {
            "raw_by_image": round(per_image * COCO_TRAIN["images"] / 2**30, 1),
            "raw_by_person": round(region_bytes / len(records) * COCO_TRAIN["persons"] / 2**30, 1),
            "jpeg95_by_image": round(jpeg_bytes / len(store) * COCO_TRAIN["images"] / 2**30, 1)},
        "unit": "CPU ms per sample of one process (process_time; torch and OpenCV threads = 1), median of rounds",
        "augment": "scale 0.25, rotation 30 (p 0.6), flip 0.5, LJA 0.15/0.20 p=1", "rounds": args.rounds,
        "cpu": _cpu_name(), "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    if not args.json:
        print(f"{'variant':14s} {'CPU ms/sample':>14s} {'x reference':>12s}", file=sys.stderr)
        for name in VARIANTS:
            print(f"{name:14s} {ms[name]:14.3f} {ref / ms[name]:12.2f}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
